"""Removes repeated lines within a document, keeping each line's first occurrence.

Aimed at boilerplate that a scraper or converter repeats (page headers and
footers, navigation, a disclaimer after every section). Short lines are left
alone because prose and markup legitimately repeat them ("[1913 Webster]",
"}"). Code and manuals are exempt by default: deleting a repeated statement
changes what a program does, and in reStructuredText and pod the repeated
long lines are structure (table borders, a ".. availability::" note under
every function), not boilerplate.
"""
from __future__ import annotations

import dataclasses

import gin

from data.clean.report import StageLog
from data.clean.stage import DocumentStage, PerSource, with_text

CORPUS_EXEMPT = {source: {"enabled": False} for source in ("python_stdlib", "python_docs", "perl_pod")}


@gin.configurable
@dataclasses.dataclass
class RemoveRepeatedLines(DocumentStage, PerSource):
    name = "repeated_lines"
    enabled: bool = True
    min_chars: int = 40  # lines shorter than this (stripped) are never removed
    overrides: dict = dataclasses.field(default_factory=lambda: dict(CORPUS_EXEMPT))

    def process(self, docs: list[dict], log: StageLog) -> list[dict]:
        return [with_text(doc, self.for_source(doc["source"]).deduplicate(doc, log)) for doc in docs]

    def deduplicate(self, doc: dict, log: StageLog) -> str:
        text = doc["text"]
        if not self.enabled:
            return text
        lines = text.split("\n")
        # Cheap test first: most documents repeat no long line at all.
        long_lines = [line.strip() for line in lines if len(line) >= self.min_chars]
        if len(set(long_lines)) == len(long_lines):
            return text
        seen: set[str] = set()
        kept = []
        for line in lines:
            key = line.strip()
            if len(key) >= self.min_chars:
                if key in seen:
                    continue
                seen.add(key)
            kept.append(line)
        log.edited(doc, "repeated_lines_removed", len(lines) - len(kept))
        return text if len(kept) == len(lines) else "\n".join(kept)
