"""Near-duplicate removal with MinHash and locality-sensitive hashing (Broder 1997).

A document's shingles are the hashes of its normalised word n-grams (default
5); a document shorter than n words has one shingle, its whole word sequence.
`num_perm` MinHash values estimate the Jaccard similarity of two shingle
sets; they are cut into `bands` bands of `rows` values and each band hashed to
one 64-bit key. Two documents share a key with probability
1 - (1 - J^rows)^bands, an S-curve in J; (bands, rows) are chosen so that the
curve steps at the gin-set `threshold`, as in datasketch: the pair that
minimises the area of false positives below the threshold plus false
negatives above it. A document sharing any key with a kept one is dropped.

The i-th permutation is x -> a_i x modulo 2**64 with odd a_i, a bijection of
the (already mixed) 64-bit shingle hashes, and the minimum compares the high
bits first, which depend on all bits of x (multiply-shift hashing). The a_i
come from a seeded numpy Generator, so signatures are the same in every
process and run.
"""
from __future__ import annotations

import dataclasses
import functools

import gin
import numpy as np

from data.clean import hashing
from data.clean.dedup import KeyStore, keep_first_seen
from data.clean.report import StageLog
from data.clean.stage import StatefulStage

_BLOCK = 1 << 12  # shingles hashed at a time: the (num_perm, block) matrix stays in cache


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm whose S-curve best separates at `threshold`."""
    s = np.linspace(0, 1, 1001)
    best, best_error = (1, num_perm), np.inf
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        candidate = 1 - (1 - s ** rows) ** bands
        error = (np.trapezoid(np.where(s < threshold, candidate, 0), s)
                 + np.trapezoid(np.where(s >= threshold, 1 - candidate, 0), s))
        if error < best_error:
            best, best_error = (bands, rows), error
    return best


@gin.configurable
@dataclasses.dataclass
class NearDedup(StatefulStage):
    name = "near_dedup"
    threshold: float = 0.8  # Jaccard similarity of shingle sets above which documents are near-duplicates
    ngram: int = 5
    num_perm: int = 128
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ValueError(f"NearDedup.threshold must be in (0, 1), got {self.threshold}")
        self.bands, self.rows = lsh_bands(self.threshold, self.num_perm)
        rng = np.random.default_rng(self.seed)
        self._multipliers = rng.integers(0, 2**63, self.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._store = KeyStore()

    def fingerprints(self, texts: list[str]) -> np.ndarray:
        """(len(texts), bands) band keys; zeros (no key) for a text without words."""
        words = hashing.encode(texts).words
        shingles, doc = self._shingles(words)
        keys = self._band_keys(self.signatures(shingles, doc, len(texts)))
        keys[np.bincount(doc, minlength=len(texts)) == 0] = 0
        return keys

    def keep(self, docs: list[dict], fingerprints: np.ndarray, log: StageLog) -> np.ndarray:
        return keep_first_seen(self._store, docs, fingerprints, "near_duplicate", log)

    def _shingles(self, words: hashing.Words) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes sorted by document, and their document."""
        grams, starts = words.ngrams(self.ngram)
        parts, docs = [grams], [words.doc[starts]]
        counts = np.bincount(words.doc, minlength=words.num_docs)
        first_word = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for length in range(1, self.ngram):
            short = np.flatnonzero(counts == length)
            parts.append(words.polynomial(length)[first_word[short]])
            docs.append(short)
        doc = np.concatenate(docs)
        order = np.argsort(doc, kind="stable")
        return hashing.mix64(np.concatenate(parts)[order]), doc[order]

    def signatures(self, shingles: np.ndarray, doc: np.ndarray, num_docs: int) -> np.ndarray:
        """(num_perm, num_docs) MinHash values; shingles must be sorted by document."""
        signatures = np.full((self.num_perm, num_docs), np.iinfo(np.uint64).max, np.uint64)
        hashed = np.empty((self.num_perm, _BLOCK), np.uint64)
        for lo in range(0, len(shingles), _BLOCK):
            block, block_doc = shingles[lo:lo + _BLOCK], doc[lo:lo + _BLOCK]
            segment = np.flatnonzero(np.concatenate([[True], block_doc[1:] != block_doc[:-1]]))
            np.multiply(block[None, :], self._multipliers[:, None], out=hashed[:, :len(block)])
            minima = np.minimum.reduceat(hashed[:, :len(block)], segment, axis=1)
            docs = block_doc[segment]
            # A document split between two blocks keeps the smaller of its two minima.
            signatures[:, docs] = np.minimum(signatures[:, docs], minima)
        return signatures

    def _band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(num_docs, bands) keys: each band's rows hashed together with the band's index."""
        used = signatures[:self.bands * self.rows].reshape(self.bands, self.rows, -1)
        keys = np.zeros(used.shape[::2], np.uint64) + _band_salts(self.bands)[:, None]
        for r in range(self.rows):
            keys = hashing.mix64(keys ^ used[:, r])
        return keys.T.copy()


@functools.lru_cache(maxsize=None)
def _band_salts(bands: int) -> np.ndarray:
    return hashing.mix64(np.arange(1, bands + 1, dtype=np.uint64))
