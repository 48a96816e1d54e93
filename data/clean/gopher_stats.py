"""Gopher's document statistics (Rae et al. 2021, appendix A), for a batch at once.

Computed with numpy on the UTF-8 bytes of the whole batch: words are runs of
non-whitespace (their length counted in bytes), a line runs from its first
word's first byte to its last word's last byte, lines compare
case-insensitively, and the n-gram statistics use the normalised words of
data/clean/hashing.py.
"""
from __future__ import annotations

import numpy as np

from data.clean import hashing

TOP_NGRAMS = (2, 3, 4)
DUPLICATED_NGRAMS = (5, 6, 7, 8, 9, 10)


def document_stats(texts: list[str]) -> dict[str, np.ndarray]:
    """Gopher's statistics for each text, as arrays over the batch."""
    batch = hashing.encode(texts)
    data = batch.data
    edges = np.diff(hashing.in_table(_SPACE, data).view(np.int8), prepend=np.int8(1), append=np.int8(1))
    starts, ends = np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)  # [start, end) of each word
    words_per_doc = np.diff(np.searchsorted(starts, np.append(batch.doc_starts, len(data))))
    word_doc = np.repeat(np.arange(batch.num_docs), words_per_doc)
    stats = _word_stats(batch, starts, ends, words_per_doc)
    stats.update(_line_stats(batch, starts, ends, word_doc))
    stats.update(_ngram_stats(batch.words))
    return stats


_SPACE = hashing.byte_table(b" \t\n\r\x0b\x0c")
_LETTER = hashing.byte_table(hashing.ASCII_LETTERS + bytes(range(0x80, 0x100)))
_LINE_END_PUNCTUATION = hashing.byte_table(b".!?:;\"')")
_ELLIPSIS, _CLOSING_QUOTES = 0xA6, (0x9D, 0x99)  # last bytes of U+2026 and U+201D, U+2019 (E2 80 xx)


def _per_doc(batch: hashing.EncodedBatch, positions: np.ndarray) -> np.ndarray:
    """How many of the sorted byte `positions` fall in each document."""
    return np.diff(np.searchsorted(positions, np.append(batch.doc_starts, len(batch.data))))


def _word_stats(batch, starts, ends, words_per_doc) -> dict[str, np.ndarray]:
    data = batch.data
    n_words = np.maximum(words_per_doc, 1)
    word_bounds = np.concatenate([[0], np.cumsum(words_per_doc)])
    word_bytes = np.concatenate([[0], np.cumsum(ends - starts)])
    letters = hashing.running_count(hashing.in_table(_LETTER, data))
    alpha = np.concatenate([[0], np.cumsum(letters[ends] > letters[starts])])
    # A symbol is a run of '#' (so that a "#####" heading rule counts once), "..." or U+2026.
    hashes = np.flatnonzero(data == ord("#"))
    dots = np.flatnonzero(data[2:] == ord(".")) + 2
    symbols = np.sort(np.concatenate([
        hashes[np.diff(hashes, prepend=-2) > 1],
        dots[(data[dots - 1] == ord(".")) & (data[dots - 2] == ord("."))],
        _unicode_chars(data, _ELLIPSIS)]))
    return {
        "words": words_per_doc,
        "mean_word_length": np.diff(word_bytes[word_bounds]) / n_words,
        "symbol_word_ratio": _per_doc(batch, symbols) / n_words,
        "alpha_word_fraction": np.diff(alpha[word_bounds]) / n_words,
    }


def _unicode_chars(data: np.ndarray, final_byte: int) -> np.ndarray:
    """Positions of the last bytes of the UTF-8 encoding of U+20xx that ends in `final_byte`."""
    last = np.flatnonzero(data == final_byte)
    return last[(last >= 2) & (data[last - 1] == 0x80) & (data[last - 2] == 0xE2)]


def _line_stats(batch, starts, ends, word_doc) -> dict[str, np.ndarray]:
    data = batch.data
    line_of_word = np.searchsorted(np.flatnonzero(data == ord("\n")), starts)
    new_line = np.concatenate([[True], line_of_word[1:] != line_of_word[:-1]])
    first, last = starts[new_line], ends[np.concatenate([new_line[1:], [True]])] - 1
    doc = word_doc[new_line]
    n = batch.num_docs
    n_lines = np.maximum(np.bincount(doc, minlength=n), 1)
    before = data[np.maximum(last - 2, 0)], data[np.maximum(last - 1, 0)]
    ellipsis = ((data[last] == ord(".")) & (before[0] == ord(".")) & (before[1] == ord("."))
                | np.isin(last, _unicode_chars(data, _ELLIPSIS)))
    punctuated = hashing.in_table(_LINE_END_PUNCTUATION, data[last]) | np.isin(
        last, np.concatenate([_unicode_chars(data, b) for b in _CLOSING_QUOTES]))
    lengths = last - first + 1
    order, repeat = hashing.repeats_within_docs(batch.range_hashes(first, last + 1), doc)
    repeated = order[repeat]
    return {
        "ellipsis_line_fraction": np.bincount(doc[ellipsis], minlength=n) / n_lines,
        "punctuated_line_fraction": np.bincount(doc[punctuated], minlength=n) / n_lines,
        "duplicate_line_fraction": np.bincount(doc[repeated], minlength=n) / n_lines,
        "duplicate_line_char_fraction": (np.bincount(doc[repeated], lengths[repeated], minlength=n)
                                         / np.maximum(np.bincount(doc, lengths, minlength=n), 1)),
    }


def _ngram_stats(words: hashing.Words) -> dict[str, np.ndarray]:
    """Top and duplicated n-gram character fractions for every n in one sweep over n.

    An n-gram can only repeat where the (n-1)-gram at the same start repeats, so
    each n looks only at the starts of repeated (n-1)-grams: usually few.
    """
    n_docs = words.num_docs
    total_chars = np.maximum(np.bincount(words.doc, weights=words.lengths, minlength=n_docs), 1)
    word_offsets = np.concatenate([[0], np.cumsum(words.lengths)])
    stats, candidates = {}, None
    for n in range(min(TOP_NGRAMS), max(DUPLICATED_NGRAMS) + 1):
        grams, start = words.ngrams(n, candidates)
        order, repeat = hashing.repeats_within_docs(grams, words.doc[start])
        duplicated = repeat.copy()
        duplicated[:-1] |= repeat[1:]  # a group's first occurrence is a duplicate too
        if n in TOP_NGRAMS:
            stats[f"top_{n}gram_char_fraction"] = _top_ngram_chars(
                words, word_offsets, n, start[order], repeat) / total_chars
        candidates = np.sort(start[order[duplicated]])
        if n in DUPLICATED_NGRAMS:
            stats[f"duplicate_{n}gram_char_fraction"] = _covered_chars(words, word_offsets, n, candidates) / total_chars
    return stats


def _top_ngram_chars(words: hashing.Words, word_offsets: np.ndarray, n: int, sorted_starts: np.ndarray,
                     repeat: np.ndarray) -> np.ndarray:
    """Per document: characters covered by its most frequent repeated n-gram, once per occurrence.

    An n-gram that occurs once is not counted: Gopher's rule is about repetition,
    and in a 3-word dictionary entry any single 2-gram covers most of the text.
    """
    result = np.zeros(words.num_docs)
    if len(repeat) == 0:
        return result
    group_sizes = np.bincount(np.cumsum(~repeat) - 1)
    first_word = sorted_starts[~repeat]
    chars = (word_offsets[first_word + n] - word_offsets[first_word]) * group_sizes
    repeated = group_sizes > 1
    # Largest per document: sort (document, chars) packed in one int64, take each document's last.
    doc = words.doc[first_word[repeated]]
    packed = np.sort((doc << 32) | chars[repeated])
    last = np.concatenate([packed[1:] >> 32 != packed[:-1] >> 32, [True]]) if len(packed) else packed
    result[packed[last] >> 32] = packed[last] & 0xFFFFFFFF
    return result


def _covered_chars(words: hashing.Words, word_offsets: np.ndarray, n: int, starts: np.ndarray) -> np.ndarray:
    """Per document: characters of the words covered by the n-grams beginning at sorted `starts`.

    The spans [start, start + n) are merged where they overlap (a new span begins
    where its start is past every earlier end), so a word counts once; the work is
    proportional to the number of spans, not of words.
    """
    if len(starts) == 0:
        return np.zeros(words.num_docs)
    reach = np.maximum.accumulate(starts + n)
    begins = np.concatenate([[True], starts[1:] >= reach[:-1]])
    span_starts = starts[begins]
    span_ends = reach[np.concatenate([begins[1:], [True]])]
    chars = word_offsets[span_ends] - word_offsets[span_starts]
    return np.bincount(words.doc[span_starts], weights=chars, minlength=words.num_docs)
