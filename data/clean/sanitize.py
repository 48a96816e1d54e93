"""Bad input: empty documents, binary content, text that was not valid UTF-8,
and gigantic lines. Each is either repaired or removed, and counted; nothing
here raises on odd text.

Sources decode their files with errors="replace", so invalid UTF-8 arrives as
U+FFFD; a few of those (a stray Latin-1 byte) are deleted, many mean the file
was not text. Lone surrogates (text decoded with surrogateescape) count the
same way. Lines longer than `max_line_chars` are data (minified code, base64,
tables) rather than language, so they are removed.
"""
from __future__ import annotations

import dataclasses
import re

import gin

from data.clean.hashing import utf8
from data.clean.report import StageLog
from data.clean.stage import DocumentStage, PerSource, with_text

# C0 controls other than tab, newline, vertical tab, form feed and carriage return, plus DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F])
_INVALID = re.compile(r"[\ufffd\ud800-\udfff]")
_SURROGATE_BYTES = re.compile(rb"\xed[\xa0-\xbf]")  # a surrogate, as surrogatepass encodes it

# Counting is done on the UTF-8 bytes: bytes.translate and bytes.count are plain C loops,
# far faster than a regex over the str, and none of these bytes occurs inside the encoding
# of another character. The (rare) repairs then use the regexes.


def _count_control(encoded: bytes) -> int:
    return len(encoded) - len(encoded.translate(None, _CONTROL_BYTES))


def _count_invalid(encoded: bytes) -> int:
    return encoded.count("\ufffd".encode()) + len(_SURROGATE_BYTES.findall(encoded))


@gin.configurable
@dataclasses.dataclass
class Sanitize(DocumentStage, PerSource):
    name = "sanitize"
    max_control_fraction: float = 0.001  # above: binary; below: the control characters are deleted
    max_invalid_fraction: float = 0.01   # above: not text; below: the replacement characters are deleted
    max_line_chars: int = 20_000
    overrides: dict = dataclasses.field(default_factory=dict)

    def process(self, docs: list[dict], log: StageLog) -> list[dict]:
        kept = []
        for doc in docs:
            text = self.for_source(doc["source"]).clean(doc, log)
            if text is not None:
                kept.append(with_text(doc, text))
        return kept

    def clean(self, doc: dict, log: StageLog) -> str | None:
        """The repaired text of `doc`, or None (with the reason logged) to remove it."""
        text = doc["text"]
        if "\x00" in text:
            log.removed(doc, "binary")
            return None
        encoded = utf8(text)
        for reason, count_in, pattern, limit, repair in (
                ("binary", _count_control, _CONTROL, self.max_control_fraction, "control_chars_deleted"),
                ("invalid_utf8", _count_invalid, _INVALID, self.max_invalid_fraction, "invalid_chars_deleted")):
            count = count_in(encoded)
            if count > limit * len(text):
                log.removed(doc, reason)
                return None
            if count:
                text = pattern.sub("", text)
                log.edited(doc, repair, count)
        if len(text) > self.max_line_chars:
            text = self._without_long_lines(doc, text, log)
        if not text or text.isspace():
            log.removed(doc, "empty")
            return None
        return text

    def _without_long_lines(self, doc: dict, text: str, log: StageLog) -> str:
        lines = text.split("\n")
        short = [line for line in lines if len(line) <= self.max_line_chars]
        if len(short) == len(lines):
            return text
        log.edited(doc, "long_lines_removed", len(lines) - len(short))
        return "\n".join(short)
