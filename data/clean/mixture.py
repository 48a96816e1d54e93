"""Interleaves per-source document streams by sampling proportions.

Each step draws a source with probability proportional to its weight and
takes that source's next document, so the mixture is a seeded random
interleaving. Weights are shares of documents (`unit='documents'`) or of
UTF-8 bytes (`unit='bytes'`): then a source is drawn with probability
proportional to weight / mean document size so far, which makes its expected
share of bytes its weight, whatever the size of its documents.

Without `total`, every source is read once (up to `max_per_source`
documents) and leaves the draw when it runs out. With `total`, exactly that
many documents are produced (with `unit='bytes'`: documents until `total`
bytes are reached) and a source that runs out starts again from its factory:
`epochs()` then says how many times each was repeated. Iterating again starts
over and yields the same documents.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Mapping

import gin
import numpy as np

from data.clean.hashing import utf8_len

_DRAWS = 4096  # uniform numbers drawn from the Generator at a time


@dataclasses.dataclass
class SourceProgress:
    taken_docs: int = 0
    taken_bytes: int = 0
    passes_finished: int = 0
    docs_per_pass: int | None = None  # known once the source has run out


class Mixture:
    """An iterator of documents; `progress` and `epochs` tell how far each source was read."""

    def __init__(self, streams: Mapping[str, Callable[[], Iterator[dict]]], weights: Mapping[str, float],
                 seed: int, max_per_source: int | None, total: int | None, unit: str):
        if unit not in ("documents", "bytes"):
            raise ValueError(f"mixture unit must be 'documents' or 'bytes', got {unit!r}")
        unknown = sorted(set(weights) - set(streams))
        if unknown:
            raise ValueError(f"mixture weights name unknown source(s) {unknown}; known: {sorted(streams)}")
        self.names = [name for name in streams if weights.get(name, 0) > 0]
        if not self.names or any(weights[n] < 0 for n in weights):
            raise ValueError(f"mixture weights must be non-negative with one positive, got {dict(weights)}")
        self.streams, self.max_per_source, self.total, self.unit = streams, max_per_source, total, unit
        self.weights = np.array([weights[n] for n in self.names], float)
        self.seed = seed
        self.progress = {name: SourceProgress() for name in self.names}

    def epochs(self) -> dict[str, float]:
        """Passes over each source so far (2.5: read twice and half again). A source that has
        not run out yet is counted against its size, which this call then counts."""
        result = {}
        for name, p in self.progress.items():
            size = p.docs_per_pass if p.docs_per_pass is not None else sum(1 for _ in self._capped(name))
            result[name] = p.taken_docs / size if size else 0.0
        return result

    def _capped(self, name: str) -> Iterator[dict]:
        for i, doc in enumerate(self.streams[name]()):
            if self.max_per_source is not None and i >= self.max_per_source:
                return
            yield doc

    def _draw(self, active: list[int]) -> int:
        if not self._uniforms:
            self._uniforms = self._rng.random(_DRAWS).tolist()[::-1]
        shares = self.weights[active].copy()
        if self.unit == "bytes":
            shares /= [self._mean_bytes(self.names[i]) for i in active]
        cumulative = np.cumsum(shares)
        return active[int(np.searchsorted(cumulative, self._uniforms.pop() * cumulative[-1], side="right"))]

    def _mean_bytes(self, name: str) -> float:
        p = self.progress[name]
        if p.taken_docs:
            return p.taken_bytes / p.taken_docs
        # Not sampled yet: assume the mean of the others so that its first draw is fair.
        taken = [q for q in self.progress.values() if q.taken_docs]
        return sum(q.taken_bytes for q in taken) / sum(q.taken_docs for q in taken) if taken else 1.0

    def __iter__(self) -> Iterator[dict]:
        # Every iteration starts afresh, so iterating twice gives the same documents.
        self.progress = {name: SourceProgress() for name in self.names}
        self._rng, self._uniforms = np.random.default_rng(self.seed), []
        iterators = {name: self._capped(name) for name in self.names}
        active = list(range(len(self.names)))
        produced = 0
        while active and (self.total is None or produced < self.total):
            i = self._draw(active)
            name = self.names[i]
            doc = next(iterators[name], None)
            if doc is None:
                p = self.progress[name]
                p.passes_finished += 1
                p.docs_per_pass = p.taken_docs // p.passes_finished
                if self.total is None or p.docs_per_pass == 0:
                    active.remove(i)
                else:
                    iterators[name] = self._capped(name)
                continue
            size = utf8_len(doc["text"])
            self.progress[name].taken_docs += 1
            self.progress[name].taken_bytes += size
            produced += size if self.unit == "bytes" else 1
            yield doc


@gin.configurable
def mix_sources(streams: Mapping[str, Callable[[], Iterator[dict]]], weights: Mapping[str, float],
                seed: int = 0, max_per_source: int | None = None, total: int | None = None,
                unit: str = "documents") -> Mixture:
    """A seeded interleaving of `streams` (name -> factory of a fresh iterator) in the
    proportions `weights` (name -> weight); see the module docstring."""
    return Mixture(streams, weights, seed, max_per_source, total, unit)
