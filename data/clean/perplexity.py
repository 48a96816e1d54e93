"""Drops documents that a word n-gram model finds unusually surprising for their source.

The model (data/clean/ngram_model.py) is trained on a reference source, by
default the Python docs: edited English prose. Perplexity under it differs a
lot between sources (code and dictionary entries use other words than the
manual), so one global threshold would remove whole sources. Instead a
document is compared with its own source: it is dropped when its perplexity
is above the `max_percentile`-th percentile of the documents of that source
seen so far (held-out documents of the source included). That removes each
source's tail: gibberish, base64, tables of numbers, another language.

The percentile is read from a histogram of log-perplexities per source, so the
state is a few kilobytes per source however many documents pass; it is
updated once per batch, before the batch is judged. A source is judged only
once `min_docs` of its documents have been scored; until then they are kept.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Sequence

import gin
import numpy as np

from data import sources as sources_lib
from data.clean.ngram_model import NgramModel
from data.clean.report import StageLog
from data.clean.stage import PerSource, StatefulStage

_BIN_EDGES = np.linspace(0.0, 25.0, 2501)  # log-perplexity (nats per word), 0.01 wide bins


@gin.configurable
@dataclasses.dataclass
class PerplexityFilter(StatefulStage, PerSource):
    name = "perplexity"
    reference_source: str = "python_docs"
    reference_bytes: int = 2_000_000
    order: int = 3
    max_percentile: float = 99.0
    min_docs: int = 100
    overrides: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.model: NgramModel | None = None
        self._histograms: dict[str, np.ndarray] = {}

    def train(self, texts: list[str]) -> None:
        self.model = NgramModel(self.order).train(texts)

    def prepare(self, heldout: Sequence[dict]) -> None:
        if self.model is None:
            self.train(self._reference_texts(heldout))
        for source, group in itertools.groupby(sorted(heldout, key=lambda d: d["source"]), lambda d: d["source"]):
            self._histogram(source)[:] += self._counts(self.fingerprints([d["text"] for d in group])[:, 0])

    def _reference_texts(self, heldout: Sequence[dict]) -> list[str]:
        if sources_lib.available([self.reference_source])[0]:
            documents = sources_lib.iter_documents(self.reference_source)
        else:
            logging.warning("perplexity reference source %s is not installed; training on the held-out text",
                            self.reference_source)
            documents = iter(heldout)
        texts, size = [], 0
        for doc in documents:
            if size >= self.reference_bytes:
                break
            texts.append(doc["text"])
            size += len(doc["text"])
        return texts

    def fingerprints(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 1) log-perplexities, nats per word."""
        return self.model.log_perplexities(texts)[:, None]

    def keep(self, docs: list[dict], fingerprints: np.ndarray, log: StageLog) -> np.ndarray:
        scores = fingerprints[:, 0]
        sources = np.array([doc["source"] for doc in docs], object)
        limits = np.full(len(docs), np.inf)
        for source in set(sources):
            which = sources == source
            histogram = self._histogram(source)
            histogram += self._counts(scores[which])
            limits[which] = self._limit(histogram, self.for_source(source))
        drop = scores > limits
        for doc in itertools.compress(docs, drop):
            log.removed(doc, "perplexity")
        return ~drop

    def _histogram(self, source: str) -> np.ndarray:
        return self._histograms.setdefault(source, np.zeros(len(_BIN_EDGES) + 1, np.int64))

    @staticmethod
    def _counts(scores: np.ndarray) -> np.ndarray:
        # Bin 0 holds scores below the first edge, the last bin those above the last (inf: no words).
        return np.bincount(np.searchsorted(_BIN_EDGES, scores, side="right"), minlength=len(_BIN_EDGES) + 1)

    @staticmethod
    def _limit(histogram: np.ndarray, settings: "PerplexityFilter") -> float:
        """The upper edge of the bin holding the source's max_percentile-th percentile."""
        total = histogram.sum()
        if total < settings.min_docs:
            return np.inf
        rank = int(np.searchsorted(np.cumsum(histogram), settings.max_percentile / 100 * total))
        return float(_BIN_EDGES[rank]) if rank < len(_BIN_EDGES) else np.inf
