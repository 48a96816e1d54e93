"""Gopher's quality rules (Rae et al. 2021, appendix A), with per-source settings.

Each rule compares one statistic of a document (data/clean/gopher_stats.py)
with a bound; the first rule a document breaks is the reason it is removed.

The defaults are Gopher's, made for web prose. The default corpus is half code
and dictionary entries, which they would mostly throw away (measured on a
spread sample: under half of python_stdlib and of gcide would stay), so
`CORPUS_OVERRIDES` relaxes them per source (each entry says why). The values
sit near the 99th percentile of each source's statistics, so that they catch
outliers: documents that are mostly repetition, symbols or tables. On the
default corpus they keep 91% (perl_pod: its tables of code points) to 99.7%
(gcide) of each source's documents.
"""
from __future__ import annotations

import dataclasses

import gin
import numpy as np

from data.clean.gopher_stats import DUPLICATED_NGRAMS, TOP_NGRAMS, document_stats
from data.clean.report import StageLog
from data.clean.stage import DocumentStage, PerSource

# Manuals (reStructuredText, pod): long documents that repeat phrases ("the value of the"),
# markup lines (".. versionadded::", "=item") and code examples without punctuation. Their
# sources cut long files into sections, and a short last section is still part of the page.
_MANUAL = {"min_words": 5, "max_mean_word_length": 12.0, "max_symbol_word_ratio": 0.5,
           "min_punctuated_line_fraction": 0.05, "min_alpha_word_fraction": 0.7,
           "max_duplicate_line_fraction": 0.5, "max_duplicate_line_char_fraction": 0.3,
           "max_duplicate_ngram_char_fraction": (0.6,) * 6}
CORPUS_OVERRIDES = {
    # Code: a small file or the last section of a long one is still program text; lines end in
    # ':' or ')' or nothing; '#' starts every comment; identifiers are long; tests repeat
    # statements. What stays catches generated tables and files that are one repeated block.
    "python_stdlib": {"min_words": 1, "max_mean_word_length": 15.0, "max_symbol_word_ratio": 0.5,
                      "min_punctuated_line_fraction": 0.0, "min_alpha_word_fraction": 0.5,
                      "max_duplicate_line_fraction": 0.6, "max_duplicate_line_char_fraction": 0.5,
                      "max_top_ngram_char_fraction": (0.4, 0.4, 0.4),
                      "max_duplicate_ngram_char_fraction": (0.8,) * 6},
    # Dictionary entries: a headword, its pronunciation (which repeats the headword) and a short
    # definition; most have fewer than 50 words, many lines are citations ("--Shak."), and in a
    # short entry the repeated headword alone is the "top n-gram".
    "gcide": {"min_words": 3, "max_mean_word_length": 12.0, "min_punctuated_line_fraction": 0.0,
              "min_alpha_word_fraction": 0.7, "max_duplicate_line_fraction": 0.4,
              "max_top_ngram_char_fraction": (1.0, 1.0, 1.0), "max_duplicate_ngram_char_fraction": (0.3,) * 6},
    "python_docs": _MANUAL,
    "perl_pod": _MANUAL,
}


@gin.configurable
@dataclasses.dataclass
class GopherRules(DocumentStage, PerSource):
    name = "gopher"
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1        # (runs of '#' + ellipses) per word
    max_ellipsis_line_fraction: float = 0.3
    min_punctuated_line_fraction: float = 0.1  # non-empty lines that end in . ! ? : ; quote or )
    min_alpha_word_fraction: float = 0.8       # words with at least one letter
    max_duplicate_line_fraction: float = 0.3
    max_duplicate_line_char_fraction: float = 0.2
    max_top_ngram_char_fraction: tuple = (0.20, 0.18, 0.16)                    # for n in TOP_NGRAMS
    max_duplicate_ngram_char_fraction: tuple = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)  # DUPLICATED_NGRAMS
    overrides: dict = dataclasses.field(default_factory=lambda: dict(CORPUS_OVERRIDES))

    def process(self, docs: list[dict], log: StageLog) -> list[dict]:
        stats = document_stats([doc["text"] for doc in docs])
        sources = np.array([doc["source"] for doc in docs], object)
        reasons = np.full(len(docs), None, object)
        for source in set(sources):
            which = np.flatnonzero(sources == source)
            reasons[which] = self.for_source(source).broken_rules({k: v[which] for k, v in stats.items()})
        for doc, reason in zip(docs, reasons):
            if reason:
                log.removed(doc, reason)
        return [doc for doc, reason in zip(docs, reasons) if not reason]

    def broken_rules(self, s: dict[str, np.ndarray]) -> np.ndarray:
        """Per document, the name of the first rule its statistics `s` break, or None."""
        checks = [
            ("too_few_words", s["words"] < self.min_words),
            ("too_many_words", s["words"] > self.max_words),
            ("mean_word_length", (s["mean_word_length"] < self.min_mean_word_length)
             | (s["mean_word_length"] > self.max_mean_word_length)),
            ("symbol_word_ratio", s["symbol_word_ratio"] > self.max_symbol_word_ratio),
            ("ellipsis_lines", s["ellipsis_line_fraction"] > self.max_ellipsis_line_fraction),
            ("unpunctuated_lines", s["punctuated_line_fraction"] < self.min_punctuated_line_fraction),
            ("non_alpha_words", s["alpha_word_fraction"] < self.min_alpha_word_fraction),
            ("duplicate_lines", s["duplicate_line_fraction"] > self.max_duplicate_line_fraction),
            ("duplicate_line_chars", s["duplicate_line_char_fraction"] > self.max_duplicate_line_char_fraction),
        ]
        checks += [(f"top_{n}gram", s[f"top_{n}gram_char_fraction"] > bound)
                   for n, bound in zip(TOP_NGRAMS, self.max_top_ngram_char_fraction)]
        checks += [(f"duplicate_{n}grams", s[f"duplicate_{n}gram_char_fraction"] > bound)
                   for n, bound in zip(DUPLICATED_NGRAMS, self.max_duplicate_ngram_char_fraction)]
        names = np.array([None] + [name for name, _ in checks], object)
        broken = np.stack([mask for _, mask in checks])
        return names[np.where(broken.any(axis=0), broken.argmax(axis=0) + 1, 0)]
