"""What each stage did to each source: documents and bytes in and out, why
documents were removed, what was edited (PII replaced, lines removed, ...),
and the CPU time each stage took.

Counts live in one Counter keyed by (stage, source, field) so that the reports
of many batches, made in different processes, add up with `+`. Fields:
docs_in, docs_out, bytes_in, bytes_out, removed:<reason>, edited:<kind>; and
under source "" the stage's cpu_seconds.
"""
from __future__ import annotations

import collections
import json
import time
from contextlib import contextmanager

from data.clean.hashing import utf8_len

_SIZE_FIELDS = ("docs_in", "docs_out", "bytes_in", "bytes_out")


class StageLog:
    """How a stage tells the report what it removed or edited."""

    def __init__(self, stage: str, counts: collections.Counter):
        self.stage, self.counts = stage, counts

    def removed(self, doc: dict, reason: str) -> None:
        self.counts[(self.stage, doc["source"], "removed:" + reason)] += 1

    def edited(self, doc: dict, kind: str, count: int = 1) -> None:
        if count:
            self.counts[(self.stage, doc["source"], "edited:" + kind)] += count


def count_sizes(counts: collections.Counter, stage: str, docs: list[dict], direction: str) -> None:
    texts_by_source = collections.defaultdict(list)
    for doc in docs:
        texts_by_source[doc["source"]].append(doc["text"])
    for source, texts in texts_by_source.items():
        counts[(stage, source, "docs_" + direction)] += len(texts)
        counts[(stage, source, "bytes_" + direction)] += utf8_len("".join(texts))  # one C-speed pass


@contextmanager
def cpu_time(counts: collections.Counter, stage: str):
    start = time.process_time()
    yield
    counts[(stage, "", "cpu_seconds")] += time.process_time() - start


class Report:
    def __init__(self, stage_names: list[str]):
        self.stage_names = list(stage_names)
        self.counts: collections.Counter = collections.Counter()
        self.seconds = 0.0  # wall time of the runs

    def add(self, counts: collections.Counter) -> None:
        self.counts.update(counts)

    def to_dict(self) -> dict:
        """{stage: {cpu_seconds, sources: {source: {docs_in, docs_out, bytes_in, bytes_out,
        removed: {reason: n}, edited: {kind: n}}}}}"""
        stages: dict = {name: {"cpu_seconds": 0.0, "sources": {}} for name in self.stage_names}
        for (stage, source, field), n in sorted(self.counts.items()):
            entry = stages.setdefault(stage, {"cpu_seconds": 0.0, "sources": {}})
            if not source:
                entry[field] = round(n, 3)
                continue
            numbers = entry["sources"].setdefault(source, {**{f: 0 for f in _SIZE_FIELDS}, "removed": {}, "edited": {}})
            kind, _, name = field.partition(":")
            if name:
                numbers[kind][name] = n
            else:
                numbers[field] = n
        return stages

    def to_json(self, **kwargs) -> str:
        return json.dumps({"stages": self.to_dict(), "wall_seconds": round(self.seconds, 3)}, **kwargs)

    def totals(self, stage: str) -> dict:
        """Size fields of `stage` summed over sources."""
        return {f: sum(n for (s, _, field), n in self.counts.items() if s == stage and field == f)
                for f in _SIZE_FIELDS}

    def to_text(self) -> str:
        """A table: one row per stage and source with its removal reasons and edits."""
        header = (f"{'stage':<15} {'source':<14} {'docs in':>8} {'docs out':>8} {'MB in':>8} {'MB out':>8} "
                  f"{'cpu s':>6}  details")
        rows = [header, "-" * len(header)]
        for stage, entry in self.to_dict().items():
            cpu = f"{entry['cpu_seconds']:>6.1f}"
            for source, e in entry["sources"].items():
                details = ", ".join([f"-{n} {r}" for r, n in e["removed"].items()] +
                                    [f"{n} {k}" for k, n in e["edited"].items()])
                rows.append(f"{stage:<15} {source:<14} {e['docs_in']:>8} {e['docs_out']:>8} "
                            f"{e['bytes_in'] / 1e6:>8.2f} {e['bytes_out'] / 1e6:>8.2f} {cpu}  {details}")
                cpu = " " * 6  # once per stage
        return "\n".join(rows)
