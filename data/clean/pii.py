"""Replaces personal data with placeholders: <EMAIL>, <IP>, <CARD>, <PHONE>, counted per kind.

The patterns are tuned against code and technical prose, where most
number-like strings are not personal data:
* IP addresses (v4 and v6) are replaced only when public
  (`ipaddress.is_global`): 127.0.0.1, 10.x.x.x and the documentation ranges
  are what examples use. Dotted numbers next to another dot (an OID) or
  starting with two numbers below 10 (a version, 1.2.3.4) are left, and an
  IPv6 address needs six hex digits ("be::" ends a reStructuredText line).
* card numbers need 13 to 19 digits, in one run or in groups of four, with a
  card network's prefix and a valid Luhn check digit.
* phone numbers need the separator layout of a phone number and 10 to 15
  digits; dates (2001-2007), versions and plain integers do not match.

Speed (see data/clean/spans.py): e-mail and IPv6 searches start from the
literal '@' and ':'. The digit patterns would be tried at every digit, so
they run only on the few stretches of text that could hold one: runs of
digits and separators with 10+ digits, or 4+ digits and 3 dots, found with
numpy over the whole batch.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re

import gin
import numpy as np

from data.clean import hashing
from data.clean.report import StageLog
from data.clean.spans import JoinedBatch, extend_left, overlaps, replace_spans
from data.clean.stage import DocumentStage, PerSource, with_text

_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")
_IPV6_COLONS = re.compile(r":[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]*")
_HEX = frozenset("0123456789abcdefABCDEF")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                   r"(?!\w|\.\d)")
# 13-19 digits in one run, or in groups of 4 (Amex: 4-6-5) with one kind of separator.
_CARD = re.compile(r"(?<![\d.-])(?:\d{13,19}|\d{4}([ -])\d{4,6}\1\d{4,5}(?:\1\d{1,4})?)(?![\d.-]?\d)")
_CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[47]|6(?:011|5)")
# Not next to another group of digits: "4111 1111 1111 1112" is a card number (or nothing).
_PHONE = re.compile(r"(?<![\w+.-])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}"
                    r"[ .-]\d{3,5}(?![ .-]?\d|\w)")

_NUMBER_BYTE = hashing.byte_table(b"0123456789 ().+-")
_MARGIN = 2  # characters of context kept around a number run, for the patterns' look-arounds


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _is_public_ip(candidate: str) -> bool:
    try:
        return ipaddress.ip_address(candidate).is_global
    except ValueError:
        return False


def _emails(text: str) -> list[tuple[int, int]]:
    found = []
    for match in _EMAIL_DOMAIN.finditer(text):
        start = extend_left(text, match.start(), _EMAIL_LOCAL, 64)
        while start < match.start() and text[start] == ".":
            start += 1
        if start < match.start():
            found.append((start, match.end()))
    return found


def _ipv6(text: str) -> list[tuple[int, int]]:
    found, position = [], 0
    while match := _IPV6_COLONS.search(text, position):
        start, end = extend_left(text, match.start(), _HEX, 4), match.end()
        position = end
        clear = (start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "_:.")) and (
            end == len(text) or not (text[end].isalnum() or text[end] in "_."))
        # Six hex digits and a group of three at least: not "be::" (reStructuredText), "m[1::2]"
        # (a slice), "DB::DB" (Perl) or "3:6::8:16" (a proportion).
        groups = text[start:end].split(":")
        long_enough = sum(map(len, groups)) >= 6 and max(map(len, groups)) >= 3
        if clear and long_enough and _is_public_ip(text[start:end]):
            found.append((start, end))
    return found


def _in_windows(pattern: re.Pattern, text: str, windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(lo + m.start(), lo + m.end()) for lo, hi in windows for m in pattern.finditer(text[lo:hi])]


def _ipv4(text, windows):
    def is_address(candidate: str) -> bool:
        # a.b.c.d with a, b < 10 reads as a version (zlib 1.2.3.4, Firefox 2.0.0.11); the
        # public addresses of that form are DNS resolvers (8.8.8.8), not personal data.
        first, second = candidate.split(".")[:2]
        return (int(first) >= 10 or int(second) >= 10) and _is_public_ip(candidate)
    return [(s, e) for s, e in _in_windows(_IPV4, text, windows) if is_address(text[s:e])]


def _cards(text, windows):
    def is_card(digits: str) -> bool:
        return bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)
    return [(s, e) for s, e in _in_windows(_CARD, text, windows) if is_card(re.sub(r"[ -]", "", text[s:e]))]


def _phones(text, windows):
    return [(s, e) for s, e in _in_windows(_PHONE, text, windows)
            if 10 <= sum(c.isdigit() for c in text[s:e]) <= 15]


# kind -> (finder, whether it searches only the number windows). Earlier kinds win overlaps:
# a card number is also a run of digit groups that the phone pattern would take.
_FINDERS = {"EMAIL": (_emails, False), "IP": (_ipv4, True), "IPV6": (_ipv6, False),
            "CARD": (_cards, True), "PHONE": (_phones, True)}
_PLACEHOLDER = {"EMAIL": "<EMAIL>", "IP": "<IP>", "IPV6": "<IP>", "CARD": "<CARD>", "PHONE": "<PHONE>"}


def number_windows(texts: list[str]) -> list[list[tuple[int, int]]]:
    """Per text, the (start, end) stretches that could hold an IP, card or phone number."""
    batch = hashing.encode(texts)
    data = batch.data
    edges = np.diff(hashing.in_table(_NUMBER_BYTE, data).view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    digits = hashing.running_count(data - np.uint8(ord("0")) < 10)
    dots = hashing.running_count(data == ord("."))
    n_digits, n_dots = digits[ends] - digits[starts], dots[ends] - dots[starts]
    candidate = (n_digits >= 10) | ((n_digits >= 4) & (n_dots >= 3))
    starts, ends = starts[candidate], ends[candidate]
    doc = batch.doc_of(starts)
    offsets = (starts - batch.doc_starts[doc]).tolist(), (ends - batch.doc_starts[doc]).tolist()
    windows: list[list[tuple[int, int]]] = [[] for _ in texts]
    for d, s, e in zip(doc.tolist(), *offsets):
        windows[d].append((s, e))
    return [[(max(s - _MARGIN, 0), e + _MARGIN) for s, e in (w if text.isascii() else _char_offsets(text, w))]
            for text, w in zip(texts, windows)]


def _char_offsets(text: str, byte_windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Increasing byte offsets into the UTF-8 of a non-ASCII text as character offsets.
    They fall between ASCII bytes and others, so each cut is a character boundary."""
    encoded, chars, last, result = hashing.utf8(text), 0, 0, []
    for offset in (o for window in byte_windows for o in window):
        chars += len(encoded[last:offset].decode("utf-8", "surrogatepass"))
        last = offset
        result.append(chars)
    return list(zip(result[::2], result[1::2]))


@gin.configurable
@dataclasses.dataclass
class ScrubPII(DocumentStage, PerSource):
    name = "scrub_pii"
    kinds: tuple = tuple(_FINDERS)
    overrides: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.kinds) - set(_FINDERS))
        if unknown:
            raise ValueError(f"ScrubPII.kinds has unknown kind(s) {unknown}; known: {list(_FINDERS)}")

    def process(self, docs: list[dict], log: StageLog) -> list[dict]:
        texts = [doc["text"] for doc in docs]
        windows = number_windows(texts)
        anchored = _anchored_spans(texts, [kind for kind in _FINDERS if kind in self._all_kinds(docs)])
        return [with_text(doc, self.for_source(doc["source"]).scrub(doc, windows[i], anchored[i], log))
                if windows[i] or anchored[i] else doc for i, doc in enumerate(docs)]

    def _all_kinds(self, docs: list[dict]) -> set:
        return {kind for source in {doc["source"] for doc in docs} for kind in self.for_source(source).kinds}

    def scrub(self, doc: dict, windows: list[tuple[int, int]], anchored: list[tuple[int, int, str]],
              log: StageLog) -> str:
        """The text with the PII found in the number `windows` and the `anchored` spans replaced."""
        text = doc["text"]
        taken: list[tuple[int, int, str]] = []
        for kind in (k for k in _FINDERS if k in self.kinds):
            finder, in_windows = _FINDERS[kind]
            spans = finder(text, windows) if in_windows else [(s, e) for s, e, k in anchored if k == kind]
            found = [(s, e, _PLACEHOLDER[kind]) for s, e in spans if not overlaps(s, e, taken)]
            taken += found
            log.edited(doc, f"pii_{kind.lower()}", len(found))
        return replace_spans(text, taken)


def _anchored_spans(texts: list[str], kinds: list[str]) -> list[list[tuple[int, int, str]]]:
    """Per text, the (start, end, kind) of e-mail and IPv6 addresses, found with one search of
    the joined batch (no match can span the newline between two texts)."""
    batch = JoinedBatch(texts)
    spans: list[list[tuple[int, int, str]]] = [[] for _ in texts]
    for kind in kinds:
        finder, in_windows = _FINDERS[kind]
        if not in_windows:
            for start, end in finder(batch.text):
                doc, offset = batch.locate(start)
                spans[doc].append((offset, offset + end - start, kind))
    return spans
