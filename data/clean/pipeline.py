"""The cleaning pipeline: a gin-configurable list of stages run over a stream of documents.

    pipeline = CleaningPipeline()                 # stages and settings from gin
    for doc in pipeline.run(documents, heldout):  # documents: dicts of source, id, text
        ...
    print(pipeline.report.to_text())

Documents are read in chunks (about `chunk_bytes` each). Each run of
consecutive document stages, plus the fingerprints of the stateful stages that
follow it, is applied to a chunk in a worker process; chunks go out in order
and come back in order, at most two per worker in flight, so memory stays
bounded however long the stream. The stateful stages (dedup, perplexity
percentiles) then decide in the parent process, in document order, from the
fingerprints alone.

Held-out text (validation and evaluation documents) is read first: stages
prepare from it (decontamination, perplexity calibration) before the workers
start. Pass dicts with a "source" where you can; plain strings count as source
"heldout". A pipeline remembers what it has seen: calling run() again continues
the same dedup state and adds the new held-out text, so a corpus can be fed
in parts; use a new pipeline for an unrelated corpus.

Workers are started with "spawn" (fork is unsafe once JAX's threads run), so a
script that runs the pipeline with workers > 1 needs the usual
`if __name__ == "__main__":` guard.
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import time
from typing import Iterable, Iterator, Sequence

import gin
import numpy as np
import tqdm

from data.clean.decontaminate import Decontaminate
from data.clean.dedup import ExactDedup
from data.clean.generated import DropGenerated
from data.clean.gopher import GopherRules
from data.clean.hashing import utf8_len
from data.clean.lines import RemoveRepeatedLines
from data.clean.markup import StripMarkup
from data.clean.minhash import NearDedup
from data.clean.perplexity import PerplexityFilter
from data.clean.pii import ScrubPII
from data.clean.report import Report, StageLog, count_sizes, cpu_time
from data.clean.sanitize import Sanitize
from data.clean.script import ScriptFilter
from data.clean.stage import StatefulStage


def default_stages() -> list:
    """Every stage, each configured by gin, cheapest repairs first and stateful stages last."""
    return [Sanitize(), DropGenerated(), StripMarkup(), ScrubPII(), RemoveRepeatedLines(), ScriptFilter(),
            GopherRules(), Decontaminate(), ExactDedup(), NearDedup(), PerplexityFilter()]


def settings_changed(stages: Sequence) -> list[str]:
    """Where `stages` differ from the code's defaults, as sorted 'Stage.field = value' lines (and the list of
    stages, if that differs): what a corpus built through them must be named by, so that a cached corpus
    cleaned otherwise is never served in its place. Empty for the default pipeline."""
    changed = []
    names, default_names = ([type(stage).__name__ for stage in group] for group in (stages, default_stages()))
    if names != default_names:
        changed.append(f"CleaningPipeline.stages = {names}")
    for stage in stages:
        if not dataclasses.is_dataclass(stage):
            changed.append(f"{type(stage).__name__} = {stage!r}")
            continue
        for field in dataclasses.fields(stage):
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default
            if field.init and getattr(stage, field.name) != default:
                changed.append(f"{type(stage).__name__}.{field.name} = {getattr(stage, field.name)!r}")
    return sorted(changed)


def as_document(item) -> dict:
    """A dict with str source, id and text, whatever arrives (bytes, None, a bare string)."""
    if isinstance(item, str):
        item = {"text": item}
    elif not isinstance(item, dict):
        item = {"text": item if isinstance(item, bytes) else ""}
    text = item.get("text")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return {**item, "source": str(item.get("source") or "unknown"), "id": str(item.get("id", "")),
            "text": text if isinstance(text, str) else ""}


class _Segment:
    """Document stages and the stateful stages after them: one trip to a worker and back."""

    def __init__(self, document_stages: list, stateful_stages: list):
        self.document_stages, self.stateful_stages = document_stages, stateful_stages

    def work(self, docs: list[dict]) -> tuple[list[dict], list, collections.Counter]:
        """The worker's part: document stages, then the stateful stages' fingerprints."""
        counts: collections.Counter = collections.Counter()
        for stage in self.document_stages:
            count_sizes(counts, stage.name, docs, "in")
            with cpu_time(counts, stage.name):
                docs = stage.process(docs, StageLog(stage.name, counts))
            count_sizes(counts, stage.name, docs, "out")
        texts = [doc["text"] for doc in docs]
        fingerprints = []
        for stage in self.stateful_stages:
            with cpu_time(counts, stage.name):
                fingerprints.append(stage.fingerprints(texts))
        return docs, fingerprints, counts

    def decide(self, docs: list[dict], fingerprints: list, counts: collections.Counter) -> list[dict]:
        """The parent's part: each stateful stage keeps or drops documents, in order."""
        alive = np.arange(len(docs))
        for stage, rows in zip(self.stateful_stages, fingerprints):
            current = [docs[i] for i in alive]
            count_sizes(counts, stage.name, current, "in")
            if current:
                with cpu_time(counts, stage.name):
                    alive = alive[stage.keep(current, rows[alive], StageLog(stage.name, counts))]
            count_sizes(counts, stage.name, [docs[i] for i in alive], "out")
        return [docs[i] for i in alive]


# A worker process's own copy of the segments, sent once when the pool starts.
_worker_segments: list[_Segment] = []


def _init_worker(segments: list[_Segment]) -> None:
    global _worker_segments
    _worker_segments = segments


def _work(segment_index: int, docs: list[dict]):
    return _worker_segments[segment_index].work(docs)


@gin.configurable
class CleaningPipeline:
    def __init__(self, stages: Sequence | None = None, workers: int = 0, chunk_bytes: int = 1_000_000,
                 progress: bool = False):
        """workers: processes for the document stages (0: one per CPU core; 1: none, all in this one)."""
        self.stages = list(stages) if stages is not None else default_stages()
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline stages must have distinct names, got {names}")
        self.workers = workers or os.cpu_count() or 1
        self.chunk_bytes, self.progress = chunk_bytes, progress
        self.report = Report(names)

    def run(self, documents: Iterable, heldout: Iterable = ()) -> Iterator[dict]:
        """The documents that pass every stage, in input order; fills `self.report` as it goes."""
        heldout_docs = [as_document({"source": "heldout", **h} if isinstance(h, dict) else
                                    {"source": "heldout", "text": h}) for h in heldout]
        for stage in self.stages:
            stage.prepare(heldout_docs)
        segments = _segments(self.stages)
        start = time.perf_counter()
        bar = tqdm.tqdm(total=None, unit="B", unit_scale=True, desc="cleaning", disable=not self.progress)
        pool = (multiprocessing.get_context("spawn").Pool(self.workers, _init_worker, (segments,))
                if self.workers > 1 else None)
        try:
            chunks = self._chunks(map(as_document, documents), bar)
            for index, segment in enumerate(segments):
                chunks = self._through(index, segment, chunks, pool)
            for chunk in chunks:
                yield from chunk
        finally:
            if pool is not None:
                pool.terminate()
            bar.close()
            self.report.seconds += time.perf_counter() - start

    def _chunks(self, documents: Iterator[dict], bar) -> Iterator[list[dict]]:
        chunk, size = [], 0
        for doc in documents:
            chunk.append(doc)
            size += utf8_len(doc["text"])
            if size >= self.chunk_bytes:
                bar.update(size)
                yield chunk
                chunk, size = [], 0
        if chunk:
            bar.update(size)
            yield chunk

    def _through(self, index: int, segment: _Segment, chunks: Iterator[list[dict]], pool) -> Iterator[list[dict]]:
        """Chunks after `segment`: worked on in the pool (two per worker ahead), decided here."""
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_work, (index, chunk)) if pool else segment.work(chunk))
            while len(pending) > (2 * self.workers if pool else 0):
                yield self._decided(segment, pending.popleft())
        while pending:
            yield self._decided(segment, pending.popleft())

    def _decided(self, segment: _Segment, result) -> list[dict]:
        # An AsyncResult from the pool, or the result itself when there are no workers.
        docs, fingerprints, counts = result.get() if hasattr(result, "get") else result
        docs = segment.decide(docs, fingerprints, counts)
        self.report.add(counts)
        return docs


def _segments(stages: list) -> list[_Segment]:
    """Splits the stages into runs of document stages, each with the stateful stages after it."""
    segments = [_Segment([], [])]
    for stage in stages:
        if isinstance(stage, StatefulStage):
            segments[-1].stateful_stages.append(stage)
        else:
            if segments[-1].stateful_stages:
                segments.append(_Segment([], []))
            segments[-1].document_stages.append(stage)
    return segments
