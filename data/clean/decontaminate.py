"""Drops training documents that overlap the held-out (validation/eval) text.

As in GPT-3 (Brown et al. 2020, appendix C): a training document is
contaminated when it shares a normalised word n-gram (default 13 words) with
any held-out text. Held-out texts shorter than n words can share no n-gram, so
a training document whose normalised words equal one of them (as ExactDedup
compares) is contaminated too.

An n-gram that occurs in several held-out documents is boilerplate shared by
the whole corpus (a licence header, a citation formula), not a leak of one
document; by default n-grams in more than `max_heldout_docs` held-out
documents are ignored.

The default drops a document for a single shared n-gram. Measured on the
default corpus with a 1% validation split, that removes 4% of python_stdlib
and python_docs, 0.03% of gcide, and 59% of perl_pod, whose release notes
(perl5NNNdelta) share templated paragraphs and whose files are installed
twice (5.36/ and 5.36.0/). `max_shared_fraction = 0.1` keeps documents whose
overlap is a shared paragraph and still drops copies (perl_pod loses 21%).

The held-out n-grams are sorted uint64 arrays (8 bytes each), shipped once to
every worker.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import gin
import numpy as np

from data.clean import hashing
from data.clean.dedup import KeyStore
from data.clean.report import StageLog
from data.clean.stage import DocumentStage

_PREPARE_BATCH = 256  # held-out documents hashed at a time


@gin.configurable
@dataclasses.dataclass
class Decontaminate(DocumentStage):
    name = "decontaminate"
    ngram: int = 13
    max_heldout_docs: int = 1          # ignore n-grams found in more held-out documents than this
    max_shared_fraction: float = 0.0   # drop documents with more of their n-grams in held-out text

    def __post_init__(self):
        self._ngrams = KeyStore()   # n-grams of the held-out texts
        self._digests = KeyStore()  # normalised-text digests of held-out texts shorter than n words

    def prepare(self, heldout: Sequence[dict]) -> None:
        texts = [doc["text"] for doc in heldout]
        grams = []
        for lo in range(0, len(texts), _PREPARE_BATCH):
            batch = texts[lo:lo + _PREPARE_BATCH]
            words = hashing.EncodedBatch(batch).words
            hashes, starts = words.ngrams(self.ngram)
            # Each n-gram once per document, so that counting them counts documents.
            _, once_per_doc = np.unique(hashes ^ hashing.mix64(words.doc[starts].astype(np.uint64)),
                                        return_index=True)
            grams.append(hashes[once_per_doc])
            self._digests.add(self._short_text_digests(words))
        unique, doc_counts = np.unique(np.concatenate(grams or [np.zeros(0, np.uint64)]), return_counts=True)
        self._ngrams.add(unique[doc_counts <= self.max_heldout_docs])

    def _short_text_digests(self, words: hashing.Words) -> np.ndarray:
        """Digests of the texts with 1 to n - 1 words (only those can equal a short held-out text)."""
        n_words = np.bincount(words.doc, minlength=words.num_docs)
        return words.doc_digests()[(n_words > 0) & (n_words < self.ngram)]

    def process(self, docs: list[dict], log: StageLog) -> list[dict]:
        if not len(self._ngrams) and not len(self._digests):
            return docs
        texts = [doc["text"] for doc in docs]
        words = hashing.encode(texts).words
        hashes, starts = words.ngrams(self.ngram)
        shared = np.bincount(words.doc[starts[self._ngrams.contains(hashes)]], minlength=len(docs))
        shares = shared > self.max_shared_fraction * np.bincount(words.doc[starts], minlength=len(docs))
        n_words = np.bincount(words.doc, minlength=len(docs))
        short = (n_words > 0) & (n_words < self.ngram)
        equals = short & self._digests.contains(words.doc_digests())
        kept = []
        for doc, shares_ngram, equals_text in zip(docs, shares, equals):
            if shares_ngram:
                log.removed(doc, "shares_heldout_ngram")
            elif equals_text:
                log.removed(doc, "equals_heldout_text")
            else:
                kept.append(doc)
        return kept
