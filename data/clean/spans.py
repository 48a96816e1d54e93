"""Finding and replacing character spans fast with Python's `re`.

`re` scans quickly only for a pattern that starts with a literal ("@", "://"):
it then jumps between occurrences of the literal. A pattern that starts with
a character class (\\w, \\d) or a lookbehind is tried at every position,
50-100x slower. So the scrubbers search for a literal anchor and extend the
match to the left by hand, then rebuild the text from the accepted spans.
Searching a whole batch joined into one string (`JoinedBatch`) also saves the
per-call cost on the many tiny documents (dictionary entries).
"""
from __future__ import annotations

import bisect
import collections
import copy
import itertools
from typing import Iterable


def extend_left(text: str, start: int, allowed: str | frozenset, limit: int) -> int:
    """The leftmost index <= start such that text[index:start] is at most `limit` allowed chars."""
    lowest = max(start - limit, 0)
    while start > lowest and text[start - 1] in allowed:
        start -= 1
    return start


def lower_aligned(text: str) -> str:
    """`text` lower-cased, same length: the rare letter that lowers to two characters (such
    as 'İ') keeps the first, so that positions in the result are positions in `text`."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else "".join(c.lower()[0] for c in text)


def replace_spans(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    """`text` with each (start, end, replacement) span replaced; spans must not overlap."""
    pieces, last = [], 0
    for start, end, replacement in sorted(spans):
        pieces += [text[last:start], replacement]
        last = end
    return "".join(pieces) + text[last:] if pieces else text


def overlaps(start: int, end: int, taken: list[tuple[int, int, str]]) -> bool:
    return any(start < t_end and t_start < end for t_start, t_end, _ in taken)


class JoinedBatch:
    """The texts of a batch joined by newlines, so that one C-speed search covers them all;
    positions found in `text` map back to (document index, offset in that document)."""

    def __init__(self, texts: list[str]):
        self.text = "\n".join(texts)
        self.starts = list(itertools.accumulate((len(t) + 1 for t in texts[:-1]), initial=0))

    def lowered(self) -> "JoinedBatch":
        """The batch lower-cased, positions unchanged."""
        other = copy.copy(self)
        other.text = lower_aligned(self.text)
        return other

    def locate(self, position: int) -> tuple[int, int]:
        doc = bisect.bisect_right(self.starts, position) - 1
        return doc, position - self.starts[doc]

    def docs_with(self, needle: str) -> collections.Counter:
        """How often `needle` occurs in each document (by index), for documents where it does."""
        found: collections.Counter = collections.Counter()
        at = self.text.find(needle)
        while at >= 0:
            found[self.locate(at)[0]] += 1
            at = self.text.find(needle, at + 1)
        return found
