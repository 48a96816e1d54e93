"""A word n-gram language model with interpolated Kneser-Ney smoothing, in numpy.

Words are the normalised words of data/clean/hashing.py and n-grams are their
64-bit hashes, so scoring a batch reuses the word hashes that the other stages
already computed. A word model is about six times cheaper per byte than a
character model, and still tells prose from gibberish, base64 and tables.

    P_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h .) + D_k N1+(h .) / c_k(h .) * P_{k-1}(w | h')

with c_k the raw count at the highest order and the continuation count
N1+(. h w) below it (Chen & Goodman 1999), D_k = n1 / (n1 + 2 n2), and
P_0 uniform over the training vocabulary plus one unknown word. An unseen
context backs off fully to the lower order.

Probabilities live in hash tables indexed by the n-gram hash, one slot per
key plus a 16-bit tag to recognise it. Where two training n-grams want one
slot the more frequent keeps it and the other counts as unseen; at the
default load (<= 0.35 keys per slot) that loses about 15% of the n-grams,
nearly all seen once, which only nudges perplexities.
"""
from __future__ import annotations

import numpy as np

from data.clean import hashing

class HashTable:
    """float32 values by uint64 key; missing keys read as `default`. `lost` counts the keys
    that found their slot taken by a higher-priority key and so read as missing."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, priority: np.ndarray, default: float,
                 max_load: float):
        self.bits = max(int(np.ceil(np.log2(max(len(keys), 1) / max_load))), 4)
        self.default = np.float32(default)
        slots, tags = self._slots_and_tags(keys)
        # The highest-priority key of each slot wins it; lexsort makes that deterministic.
        order = np.lexsort((priority, slots))
        winners = order[np.concatenate([slots[order][1:] != slots[order][:-1], [True]])]
        self.values = np.full(1 << self.bits, self.default, np.float32)
        self.tags = np.zeros(1 << self.bits, np.uint16)
        self.values[slots[winners]] = values[winners]
        self.tags[slots[winners]] = tags[winners]
        self.lost = len(keys) - len(winners)

    def _slots_and_tags(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mixed = hashing.mix64(keys)
        # Tag 0 marks an empty slot, so tags are drawn from 1..65535.
        tags = ((mixed & np.uint64(0xFFFF)) % np.uint64(0xFFFF) + np.uint64(1)).astype(np.uint16)
        return (mixed >> np.uint64(64 - self.bits)).astype(np.int64), tags

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        slots, tags = self._slots_and_tags(keys)
        return np.where(self.tags[slots] == tags, self.values[slots], self.default)


def _distinct(hashes: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct n-gram hashes, how often each occurs, and the start of one occurrence."""
    unique, first, counts = np.unique(hashes, return_index=True, return_counts=True)
    return unique, counts, starts[first]


class NgramModel:
    def __init__(self, order: int = 3, max_load: float = 0.35):
        """max_load: keys per slot of the hash tables; lower loses fewer n-grams, costs memory."""
        if order < 1:
            raise ValueError(f"n-gram order must be at least 1, got {order}")
        self.order, self.max_load = order, max_load
        self.alpha: list[HashTable] = []  # order k = 1..order: discounted probability by k-gram hash
        self.gamma: list[HashTable] = []  # order k = 2..order: back-off weight by context hash
        self.unseen_unigram = 0.0         # probability of a word never seen in training

    def train(self, texts: list[str]) -> "NgramModel":
        words = hashing.EncodedBatch(texts).words
        if len(words.hashes) == 0:
            raise ValueError("cannot train an n-gram model on text without words")
        for k in range(1, self.order + 1):
            if k == self.order:
                unique, counts, starts = _distinct(*words.ngrams(k))
            else:
                # Continuation count of g: how many distinct (k+1)-grams end in it.
                _, _, longer_starts = _distinct(*words.ngrams(k + 1))
                unique, counts, starts = _distinct(words.polynomial(k)[longer_starts + 1], longer_starts + 1)
            self._add_order(k, unique, counts, words.polynomial(k - 1)[starts] if k > 1 else None)
        return self

    def _add_order(self, k: int, grams: np.ndarray, counts: np.ndarray, contexts: np.ndarray | None) -> None:
        n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
        discount = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
        if contexts is None:
            context_of, totals, types = np.zeros(len(grams), np.int64), counts.sum(keepdims=True), [len(grams)]
        else:
            unique_contexts, context_of = np.unique(contexts, return_inverse=True)
            totals, types = np.bincount(context_of, counts), np.bincount(context_of)
        alpha = np.maximum(counts - discount, 0) / totals[context_of]
        self.alpha.append(HashTable(grams, alpha, counts, 0.0, self.max_load))
        gamma = discount * np.asarray(types) / totals
        if contexts is None:
            self.unseen_unigram = float(gamma[0]) / (len(grams) + 1)  # P_0: the vocabulary plus one unknown
        else:
            self.gamma.append(HashTable(unique_contexts, gamma, totals, 1.0, self.max_load))

    def word_log_probs(self, words: hashing.Words) -> np.ndarray:
        """Natural log-probability of each word given up to order-1 earlier words of its document."""
        n = len(words.hashes)
        index = np.arange(n)
        doc_start = np.concatenate([[True], words.doc[1:] != words.doc[:-1]]) if n else np.zeros(0, bool)
        position_in_doc = index - np.maximum.accumulate(np.where(doc_start, index, 0))
        p = self.alpha[0].lookup(words.hashes).astype(np.float64) + self.unseen_unigram
        for k in range(2, self.order + 1):
            ends = np.flatnonzero(position_in_doc >= k - 1)
            starts = ends - (k - 1)
            alpha = self.alpha[k - 1].lookup(words.polynomial(k)[starts])
            gamma = self.gamma[k - 2].lookup(words.polynomial(k - 1)[starts])
            p[ends] = alpha + gamma * p[ends]
        return np.log(p)

    def log_perplexities(self, texts: list[str]) -> np.ndarray:
        """Per text: mean negative log-probability per word (inf for a text without words)."""
        words = hashing.encode(texts).words
        nll = np.bincount(words.doc, -self.word_log_probs(words), minlength=len(texts))
        n_words = np.bincount(words.doc, minlength=len(texts))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n_words > 0, nll / n_words, np.inf)
