"""What a cleaning stage is, and per-source settings.

Two kinds of stage, both dataclasses so that gin can set every field:

* `DocumentStage`: looks at each document on its own (filters, scrubbers).
  `process(docs, log)` gets a batch of documents and returns those it keeps,
  possibly with edited text; it holds no state that changes while it runs, so
  the pipeline runs it in worker processes.
* `StatefulStage`: judges a document by what came before it (dedup, a running
  perplexity percentile), so its decision runs in the parent process, in
  document order. Its expensive part, `fingerprints(texts)`, is pure and runs
  in the workers; `keep(docs, fingerprints, log)` then only compares small
  fingerprints. Such a stage drops documents and never edits text, which is
  what lets the workers fingerprint the final text of a batch up front.

Stages that need the held-out text (decontamination, perplexity calibration)
get it in `prepare(heldout)` before any document flows.

Per-source settings: the default corpus mixes code, dictionary entries and
prose, and a threshold that suits prose would throw away most code. Any
field of a `PerSource` stage can be overridden for one source:

    GopherRules.overrides = {'python_stdlib': {'max_symbol_word_ratio': 1.0}}
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from data.clean.report import StageLog


class PerSource:
    """Mixin for dataclass stages with an `overrides: dict[source, dict[field, value]]` field."""

    def for_source(self, source: str):
        """This stage with the fields that `overrides` sets for `source`."""
        cache = self.__dict__.setdefault("_by_source", {})
        if source not in cache:
            changes = self.overrides.get(source, {})
            fields = {f.name for f in dataclasses.fields(self)}
            unknown = sorted(set(changes) - fields)
            if unknown:
                raise ValueError(f"{type(self).__name__}.overrides[{source!r}] sets unknown field(s) {unknown}")
            cache[source] = dataclasses.replace(self, overrides={}, **changes) if changes else self
        return cache[source]

    def __getstate__(self):
        # The per-source cache is rebuilt on demand; workers need not receive it.
        return {k: v for k, v in self.__dict__.items() if k != "_by_source"}


class DocumentStage:
    name: str = ""

    def prepare(self, heldout: Sequence[dict]) -> None:
        """Called once with the held-out documents before any document is processed."""

    def process(self, docs: list[dict], log: StageLog) -> list[dict]:
        raise NotImplementedError


class StatefulStage:
    name: str = ""

    def prepare(self, heldout: Sequence[dict]) -> None:
        """Called once with the held-out documents before any document is processed."""

    def fingerprints(self, texts: list[str]) -> np.ndarray:
        """One small row of numbers per text; pure, so it runs in worker processes."""
        raise NotImplementedError

    def keep(self, docs: list[dict], fingerprints: np.ndarray, log: StageLog) -> np.ndarray:
        """Which documents to keep (bool per document); updates the state that later batches
        are judged by. `fingerprints` has one row per document."""
        raise NotImplementedError


def with_text(doc: dict, text: str) -> dict:
    return doc if text is doc["text"] else {**doc, "text": text}
