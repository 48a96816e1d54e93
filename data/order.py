"""The order in which a run reads the train split's documents, epoch by epoch.

By default each epoch is a fresh seeded permutation of the split. With mixture
weights (`DataConfig.mixture`), an epoch is as many documents as the split
holds, drawn source by source in those proportions by data/clean/mixture.py:
a source with more weight than its share is read more than once (each pass in
a new order), one with less is only partly read, and `max_docs_per_source`
limits a source to a fixed subset of that many documents. Either way the order of epoch e
depends only on the seed and e, so a resumed run reads the same documents.

`source_epochs` says how many passes over each source a run has made.
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from data.clean.mixture import mix_sources


class DocumentOrder:
    def __init__(self, doc_sources: np.ndarray, source_names: list[str], seed: int,
                 weights: Optional[dict] = None, max_docs_per_source: int = 0):
        """doc_sources: each train document's index into source_names."""
        self.doc_sources, self.source_names, self.seed = np.asarray(doc_sources), list(source_names), seed
        self.weights, self.max_docs_per_source = dict(weights or {}), max_docs_per_source
        if self.weights:
            unknown = sorted(set(self.weights) - set(self.source_names))
            if unknown:
                raise ValueError(f"DataConfig.mixture names source(s) {unknown} that the corpus does not have; "
                                 f"it has {self.source_names}")

    @functools.lru_cache(maxsize=4)
    def __call__(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if not self.weights:
            return rng.permutation(len(self.doc_sources))

        def stream(members: np.ndarray):
            return lambda: ({"text": "", "index": int(i)} for i in rng.permutation(members))

        streams = {name: stream(members) for name, members in zip(self.source_names, self._members())}
        mixture = mix_sources(streams, self.weights, seed=int(rng.integers(2 ** 31)), total=len(self.doc_sources))
        return np.array([doc["index"] for doc in mixture], np.int64)

    @functools.cache
    def _members(self) -> list[np.ndarray]:
        """Each source's documents; with max_docs_per_source, a seeded subset that every pass and epoch reuses."""
        rng = np.random.default_rng(self.seed)
        members = [np.flatnonzero(self.doc_sources == s) for s in range(len(self.source_names))]
        if self.max_docs_per_source:
            members = [rng.permutation(m)[:self.max_docs_per_source] for m in members]
        return members

    def source_epochs(self, positions: list[tuple[int, int]]) -> dict[str, float]:
        """Passes over each source (its documents read / its documents) by streams at these positions.

        positions[i] = (epoch, index) of stream i of len(positions), which reads documents
        i, i + len(positions), ... of each epoch's order (data/pipeline.py); one stream: the
        documents before position `index` of `epoch`.
        """
        read = np.zeros(len(self.source_names))
        step = len(positions)
        for first, (epoch, index) in enumerate(positions):
            for e in range(epoch + 1):
                share = self(e)[first::step]
                order = share if e < epoch else share[:index]
                read += np.bincount(self.doc_sources[order], minlength=len(self.source_names))
        sizes = [len(members) for members in self._members()]
        return {name: float(r / n) if n else 0.0 for name, r, n in zip(self.source_names, read, sizes)}
