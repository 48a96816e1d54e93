"""Removes HTML markup, URLs and boilerplate lines.

HTML: only documents that are mostly markup lose their tags. Code and docs
that merely mention a tag (`"<div>"` in a test of an HTML parser, `a<b and
c>d` in C) would be corrupted by stripping every angle-bracketed word, so tags
are removed only from text with three closing tags ("</") or more where tags
make up at least `min_markup_fraction` of the text, or that starts like an
HTML page. <script> and <style> elements go with
their content; entities (&amp;) are decoded.

Boilerplate: short lines that contain a phrase from `boilerplate_phrases`
(cookie banners, "all rights reserved", navigation links), as C4 does for
web text; long lines are kept since a paragraph may mention cookies.

Code keeps its tags and URLs by default (`CORPUS_OVERRIDES`): in a program
they are string literals and references that the code uses.
"""
from __future__ import annotations

import dataclasses
import html
import re

import gin

from data.clean.report import StageLog
from data.clean.spans import JoinedBatch, extend_left, lower_aligned, overlaps, replace_spans
from data.clean.stage import DocumentStage, PerSource, with_text

_TAG_NAMES = ("a|abbr|article|aside|b|blockquote|body|br|button|center|code|dd|div|dl|dt|em|font|footer|"
              "form|h[1-6]|head|header|hr|html|i|iframe|img|input|label|li|link|main|meta|nav|noscript|ol|"
              "option|p|pre|section|select|small|span|strong|sub|sup|table|tbody|td|textarea|th|thead|"
              "title|tr|u|ul")
_TAG = re.compile(rf"</?(?:{_TAG_NAMES})(?:\s+[\w:-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?)*\s*/?>",
                  re.IGNORECASE)
_SCRIPT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->|<![A-Za-z][^>]*>", re.DOTALL)  # and <!DOCTYPE ...>
_DOCTYPE = re.compile(r"\s*<!doctype html|\s*<html", re.IGNORECASE)
# URLs are found from their literal "://" or "www." (see data/clean/spans.py), then the scheme is checked.
_URL_TAILS = (re.compile(r"://[^\s<>\"'`)\]}]+"), re.compile(r"www\.[^\s<>\"'`)\]}]+"))
_SCHEMES = ("https", "http", "ftp")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")

BOILERPLATE_PHRASES = (
    "all rights reserved", "cookie policy", "use of cookies", "uses cookies", "accept cookies",
    "privacy policy", "terms of use", "terms of service", "enable javascript", "javascript is disabled",
    "javascript must be enabled", "click here", "subscribe to our newsletter", "sign up for our newsletter",
    "share this article", "skip to content", "skip to main content", "back to top", "powered by wordpress",
)


CORPUS_OVERRIDES = {"python_stdlib": {"html": False, "urls": False}}


@gin.configurable
@dataclasses.dataclass
class StripMarkup(DocumentStage, PerSource):
    name = "strip_markup"
    html: bool = True
    min_markup_fraction: float = 0.05
    urls: bool = True
    boilerplate_phrases: tuple = BOILERPLATE_PHRASES
    boilerplate_max_line_chars: int = 200
    overrides: dict = dataclasses.field(default_factory=lambda: dict(CORPUS_OVERRIDES))

    def process(self, docs: list[dict], log: StageLog) -> list[dict]:
        # A few searches of the whole batch find the documents with anything to strip.
        batch = JoinedBatch([doc["text"] for doc in docs])
        settings = {source: self.for_source(source) for source in {doc["source"] for doc in docs}}
        candidates = set(batch.docs_with("</")) | set(batch.docs_with("://")) | set(batch.docs_with("www."))
        lowered = batch.lowered()
        for phrase in {p for s in settings.values() for p in s.boilerplate_phrases}:
            candidates.update(lowered.docs_with(phrase))
        candidates.update(i for i, doc in enumerate(docs) if _DOCTYPE.match(doc["text"]))
        return [with_text(doc, settings[doc["source"]].strip(doc, log)) if i in candidates else doc
                for i, doc in enumerate(docs)]

    def strip(self, doc: dict, log: StageLog) -> str:
        text = doc["text"]
        # HTML has closing tags; code and pod ("C<...>") rarely do. A cheap test first.
        if self.html and (text.count("</") >= 3 or _DOCTYPE.match(text)):
            text = self._without_html(doc, text, log)
        if self.urls and ("://" in text or "www." in text):
            urls = _urls(text)
            text = replace_spans(text, [(start, end, "") for start, end in urls])
            log.edited(doc, "urls_removed", len(urls))
        if self.boilerplate_phrases:
            lowered = lower_aligned(text)
            if any(phrase in lowered for phrase in self.boilerplate_phrases):
                text = self._without_boilerplate(doc, text, lowered, log)
        return text

    def _without_html(self, doc: dict, text: str, log: StageLog) -> str:
        markup = sum(len(m) for m in _TAG.findall(text)) + sum(
            m.end() - m.start() for m in _SCRIPT.finditer(text))
        if markup < self.min_markup_fraction * len(text) and not _DOCTYPE.match(text):
            return text
        text = _COMMENT.sub("", _SCRIPT.sub("", text))
        text, n = _TAG.subn("", text)
        log.edited(doc, "html_tags_removed", n)
        # Removed block elements leave runs of blank lines behind.
        return _BLANK_RUNS.sub("\n\n", html.unescape(text))

    def _without_boilerplate(self, doc: dict, text: str, lowered: str, log: StageLog) -> str:
        """Removes each short line that contains a phrase; `lowered` is aligned with `text`."""
        spans = []
        for phrase in self.boilerplate_phrases:
            at = lowered.find(phrase)
            while at >= 0:
                start, end = lowered.rfind("\n", 0, at) + 1, lowered.find("\n", at)
                end = len(text) if end < 0 else end + 1
                if end - start <= self.boilerplate_max_line_chars + 1 and not overlaps(start, end, spans):
                    spans.append((start, end, ""))
                at = lowered.find(phrase, end)
        log.edited(doc, "boilerplate_lines_removed", len(spans))
        return replace_spans(text, spans)


def _urls(text: str) -> list[tuple[int, int]]:
    """Spans of http(s)/ftp URLs and of bare www. addresses."""
    found = []
    for match in _URL_TAILS[0].finditer(text) if "://" in text else ():
        start = extend_left(text, match.start(), _SCHEME_CHARS, 5)
        if text[start:match.start()].lower() in _SCHEMES:
            found.append((start, match.end()))
    for match in _URL_TAILS[1].finditer(text) if "www." in text else ():
        start = match.start()
        # Not inside a word, nor inside a URL found above.
        if not (start and (text[start - 1].isalnum() or text[start - 1] in "./")):
            found.append((start, match.end()))
    return found
