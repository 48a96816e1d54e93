"""Keeps documents written mostly in the Latin script, the offline stand-in for
a language-id model: the default corpus is English prose, English dictionary
entries and code, so a document whose letters are mostly not Latin (Perl's
Chinese, Japanese and Korean manual pages) is in another language.

Letters are classified by the first byte of their UTF-8 encoding, for the
whole batch at once with numpy (a regex over every character is ~50x
slower). Latin: ASCII letters, U+00C0-U+024F (lead bytes C3-C9) and U+1E00-
U+1EFF (E1 B8-BB). Not letters: other ASCII, U+0080-U+00BF (C2: symbols such
as (c) and guillemets), U+2000-U+2FFF (E2: punctuation, arrows, maths, box
drawing) and 4-byte characters (emoji). Every other character counts as a
non-Latin letter: an approximation that is right for the scripts that
matter here (Greek, Cyrillic, Hebrew, Arabic, CJK, Hangul).
"""
from __future__ import annotations

import dataclasses

import gin
import numpy as np

from data.clean import hashing
from data.clean.report import StageLog
from data.clean.stage import DocumentStage, PerSource

# Lead byte -> 1: Latin letter, 2: another script's letter, 0: anything else.
_SCRIPT_OF_LEAD = np.zeros(256, np.uint8)
_SCRIPT_OF_LEAD[list(hashing.ASCII_LETTERS)] = 1
_SCRIPT_OF_LEAD[0xC3:0xCA] = 1
_SCRIPT_OF_LEAD[0xCA:0xE0] = 2
_SCRIPT_OF_LEAD[0xE1] = 2  # but U+1E00-U+1EFF (E1 B8-BB) is Latin, fixed below
_SCRIPT_OF_LEAD[0xE3:0xF0] = 2


def latin_fractions(texts: list[str]) -> np.ndarray:
    """Per text, the fraction of its letters that are Latin (1.0 for a text without letters)."""
    batch = hashing.encode(texts)
    data = batch.data
    script = _SCRIPT_OF_LEAD.take(data)
    extended = np.flatnonzero(data[:-1] == 0xE1)
    script[extended[(data[extended + 1] >= 0xB8) & (data[extended + 1] <= 0xBB)]] = 1
    latin_count = batch.per_doc_sum(script == 1)
    letters = latin_count + batch.per_doc_sum(script == 2)
    return np.where(letters > 0, latin_count / np.maximum(letters, 1), 1.0)


@gin.configurable
@dataclasses.dataclass
class ScriptFilter(DocumentStage, PerSource):
    name = "script"
    min_latin_fraction: float = 0.8
    overrides: dict = dataclasses.field(default_factory=dict)

    def process(self, docs: list[dict], log: StageLog) -> list[dict]:
        fractions = latin_fractions([doc["text"] for doc in docs])
        kept = []
        for doc, fraction in zip(docs, fractions):
            if fraction >= self.for_source(doc["source"]).min_latin_fraction:
                kept.append(doc)
            else:
                log.removed(doc, "not_latin_script")
        return kept
