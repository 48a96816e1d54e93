"""Deterministic, numpy-vectorised views of a batch of documents: its bytes,
hashes of byte ranges, normalised words and their n-grams.

Dedup, decontamination, the Gopher rules and the perplexity filter all look at
many documents at once this way, because most documents (dictionary entries)
are too small to amortise per-document numpy calls. Python's `hash()` of a str
is salted per process, so it would differ between worker processes and runs;
everything here is integer arithmetic on UTF-8 bytes (uint64 wraps silently).

A normalised word is a maximal run of ASCII letters, digits, '_' or non-ASCII
bytes, lower-cased: punctuation, whitespace and markup characters separate
words, so "Hello, World!" and "hello world" have the same words.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

_U64 = np.uint64
_BASE = 0x9E3779B97F4A7C15  # odd, so it is invertible modulo 2**64
_NGRAM_BASE = _U64(0xC2B2AE3D27D4EB4F)



def byte_table(members: bytes) -> np.ndarray:
    """A 256-entry lookup table, 1 for the byte values in `members`."""
    table = np.zeros(256, np.uint8)
    table[list(members)] = 1
    return table


def in_table(table: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Which bytes of `data` the table marks. take() on uint8 is ~2x faster than fancy indexing."""
    return table.take(data).view(bool)


def running_count(mask: np.ndarray) -> np.ndarray:
    """counts[i] = how many of mask[:i] are True (length len(mask) + 1), as int32."""
    counts = np.zeros(len(mask) + 1, np.int32)
    np.cumsum(mask.view(np.int8), dtype=np.int32, out=counts[1:])
    return counts


ASCII_LETTERS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
WORD_BYTE = byte_table(ASCII_LETTERS + b"0123456789_" + bytes(range(0x80, 0x100)))
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A"):ord("Z") + 1] += 32

# Powers of _BASE and of its inverse, grown on demand to the longest batch seen.
_powers = _inverse_powers = np.ones(1, np.uint64)


def utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (bad input not yet repaired) must not raise.
    return text.encode("utf-8", "surrogatepass")


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(utf8(text))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over all output bits."""
    x = x ^ (x >> _U64(30))
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


def _grown_powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    global _powers, _inverse_powers
    if len(_powers) < n:
        size = max(n, 2 * len(_powers), 1 << 20)
        inverse = pow(_BASE, -1, 1 << 64)
        # cumprod gives exponents 1..size; one factor of the inverse brings them to 0..size-1.
        _powers = np.cumprod(np.full(size, _BASE, np.uint64)) * _U64(inverse)
        _inverse_powers = np.cumprod(np.full(size, inverse, np.uint64)) * _U64(_BASE)
    return _powers[:n], _inverse_powers[:n]


def repeats_within_docs(hashes: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups equal hashes of the same document: returns `order`, a permutation that makes
    each group contiguous, and `repeat`, True (in that order) for all but a group's first.

    Sorting a packed int64 (hash bits above, position below) is several times faster
    than argsort; the hash keeps 63 - log2(len) bits, plenty for one batch.
    """
    n = len(hashes)
    bits = max(n.bit_length(), 1)
    keys = hashes ^ (doc.astype(np.uint64) * _NGRAM_BASE)  # equal hashes of different documents differ
    packed = ((keys >> _U64(bits + 1)) << _U64(bits)) | np.arange(n, dtype=np.uint64)
    packed = np.sort(packed.view(np.int64))
    order = packed & ((1 << bits) - 1)
    repeat = np.zeros(n, bool)
    repeat[1:] = (packed[1:] >> bits) == (packed[:-1] >> bits)
    return order, repeat


@dataclasses.dataclass
class Words:
    """The normalised words of a batch of documents, in order."""
    hashes: np.ndarray   # uint64, one per word
    lengths: np.ndarray  # int64, bytes per word
    doc: np.ndarray      # int64, index of the document each word belongs to
    num_docs: int

    def __post_init__(self):
        self._polynomials = {1: self.hashes}

    def ngrams(self, n: int, starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of the n-grams that begin at word `starts` (default: every word) and stay
        inside one document, and the starts they begin at.

        The hash is a polynomial in the word hashes; the (n-1)-gram's is kept, so asking
        for n = 2, 3, ..., 10 in turn costs one pass over the words per n.
        """
        if len(self.hashes) < n:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        last = len(self.hashes) - n + 1
        starts = np.arange(last) if starts is None else starts[starts < last]
        starts = starts[self.doc[starts] == self.doc[starts + n - 1]]
        return self.polynomial(n)[starts], starts

    def doc_digests(self) -> np.ndarray:
        """Per document, a 64-bit hash of its whole sequence of normalised words: equal for
        texts that differ only in case, whitespace and punctuation; 0 for a text without words."""
        counts = np.bincount(self.doc, minlength=self.num_docs)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        powers, inverse_powers = _grown_powers(len(self.hashes) + 1)
        prefix = np.concatenate([np.zeros(1, np.uint64), np.cumsum(self.hashes * powers[:len(self.hashes)])])
        first = np.minimum(bounds[:-1], len(self.hashes))
        digests = mix64((prefix[bounds[1:]] - prefix[bounds[:-1]]) * inverse_powers[first]
                        + counts.astype(np.uint64))
        digests[counts == 0] = 0
        return digests

    def polynomial(self, n: int) -> np.ndarray:
        """Hashes of the n-grams at every start, including those that span two documents."""
        if n not in self._polynomials:
            self._polynomials[n] = self.polynomial(n - 1)[:-1] * _NGRAM_BASE + self.hashes[n - 1:]
        return self._polynomials[n]


class EncodedBatch:
    """The UTF-8 bytes of a batch of texts, each followed by one '\\n'.

    The newline keeps words and lines from running from one document into the
    next, and gives every document at least one byte (for np.add.reduceat).
    """

    def __init__(self, texts: list[str]):
        encoded = [utf8(t) for t in texts]
        self.num_docs = len(texts)
        self.data = np.frombuffer(b"\n".join(encoded) + b"\n", np.uint8)
        self.doc_starts = np.cumsum([0] + [len(e) + 1 for e in encoded[:-1]])

    def doc_of(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.doc_starts, positions, side="right") - 1

    def per_doc_sum(self, values: np.ndarray) -> np.ndarray:
        """Sums of a per-byte array over each document's bytes."""
        if self.num_docs == 0:
            return np.zeros(0)
        return np.add.reduceat(values, self.doc_starts)

    @functools.cached_property
    def _prefix(self) -> np.ndarray:
        powers, _ = _grown_powers(len(self.data))
        codes = _LOWER.take(self.data).astype(np.uint64)
        np.multiply(codes, powers, out=codes)  # in place: fresh large arrays cost page faults
        prefix = np.zeros(len(self.data) + 1, np.uint64)
        np.cumsum(codes, out=prefix[1:])
        return prefix

    def range_hashes(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Case-insensitive hashes of the byte ranges [start, end); equal bytes hash equal
        wherever they are (the polynomial prefix sum is shifted back to position 0)."""
        _, inverse_powers = _grown_powers(len(self.data))
        return mix64((self._prefix[ends] - self._prefix[starts]) * inverse_powers[starts])

    @functools.cached_property
    def words(self) -> Words:
        edges = np.diff(in_table(WORD_BYTE, self.data).view(np.int8), prepend=np.int8(0))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)  # the final '\n' closes the last word
        return Words(self.range_hashes(starts, ends), ends - starts, self.doc_of(starts), self.num_docs)


    def subset(self, keep: np.ndarray) -> "EncodedBatch":
        """The batch of the documents where `keep` is True, reusing the word hashes."""
        if not keep.any():
            return EncodedBatch([])
        sizes = np.diff(np.append(self.doc_starts, len(self.data)))  # each with its '\n'
        part = EncodedBatch([])
        part.num_docs = int(keep.sum())
        part.data = self.data[np.repeat(keep, sizes)]
        part.doc_starts = np.concatenate([[0], np.cumsum(sizes[keep])[:-1]])
        if "words" in self.__dict__:
            words, new_index = self.words, np.cumsum(keep) - 1
            kept = keep[words.doc]
            part.words = Words(words.hashes[kept], words.lengths[kept], new_index[words.doc[kept]], part.num_docs)
        return part


_last: tuple[list, EncodedBatch] | None = None


def encode(texts: list[str]) -> EncodedBatch:
    """The encoded batch of `texts`. Stages ask in turn about the same texts, or about those
    that the stage before kept, so the last answer is kept and subsets of it are cut from it
    (texts are matched by identity; the cache holds them so that their ids stay theirs)."""
    global _last
    if _last is not None:
        cached_texts, cached = _last
        keep = _kept_from(cached_texts, texts)
        if keep is not None:
            if keep.all():
                return cached
            _last = (list(texts), cached.subset(keep))
            return _last[1]
    _last = (list(texts), EncodedBatch(texts))
    return _last[1]


def _kept_from(earlier: list[str], texts: list[str]) -> np.ndarray | None:
    """Which of `earlier` are `texts`, when `texts` is `earlier` with some left out; else None."""
    keep = np.zeros(len(earlier), bool)
    j = 0
    for text in texts:
        while j < len(earlier) and earlier[j] is not text:
            j += 1
        if j == len(earlier):
            return None
        keep[j] = True
        j += 1
    return keep
