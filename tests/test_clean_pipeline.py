"""The cleaning pipeline end to end on a small corpus of real documents with planted problems.

Every planted document is made from real text (the Python docs, the standard
library, GCIDE, Perl's pod, the Python binary); each test checks that the
planted one is removed or repaired for the expected reason and that the
clean real documents come through unchanged.
"""
from __future__ import annotations

import base64
import functools
import itertools
import json
import sys

import gin
import pytest

from data import sources
from data.clean import (CleaningPipeline, Decontaminate, ExactDedup, GopherRules, NearDedup, PerplexityFilter,
                        RemoveRepeatedLines, Sanitize, ScriptFilter, ScrubPII, StripMarkup)


@functools.lru_cache(maxsize=None)
def _all(source: str) -> tuple:
    return tuple(sources.iter_documents(source)) if sources.available([source])[0] else ()


def real_documents(source: str, count: int, min_words: int = 0, max_chars: int = 20_000, skip: int = 0,
                   stride: int = 1) -> list:
    """`count` real ASCII documents of `source` without e-mail addresses or URLs, from the
    `skip`-th on, every `stride`-th (the Python docs fall back to the standard library)."""
    if not _all(source) and source == "python_docs":
        source = "python_stdlib"
    found = (d for d in _all(source) if len(d["text"].split()) >= min_words and len(d["text"]) <= max_chars
             and d["text"].isascii() and "@" not in d["text"] and "://" not in d["text"])
    return [dict(d) for d in itertools.islice(found, skip, skip + count * stride, stride)]


def doc(source: str, id_: str, text: str) -> dict:
    return {"source": source, "id": id_, "text": text}


def small_pipeline(workers: int = 1) -> CleaningPipeline:
    stages = [Sanitize(), StripMarkup(), ScrubPII(), RemoveRepeatedLines(), ScriptFilter(), GopherRules(),
              Decontaminate(), ExactDedup(), NearDedup(), PerplexityFilter(reference_bytes=300_000)]
    return CleaningPipeline(stages, workers=workers, chunk_bytes=20_000)


@pytest.fixture(scope="module")
def planted():
    """(documents, heldout, {planted id: expected removal reason}, ids of clean documents)."""
    prose = real_documents("python_docs", 16, min_words=300, max_chars=8_000)
    code = real_documents("python_stdlib", 4, min_words=300, max_chars=8_000, skip=20)
    entries = real_documents("gcide", 30, min_words=12, skip=5_000)
    heldout = real_documents("python_docs", 2, min_words=300, max_chars=8_000, skip=40)
    clean, spare = prose[:8] + code + entries, [d["text"] for d in prose[8:]]
    copied = " ".join(heldout[0]["text"].split()[100:125])
    binary = open(sys.executable, "rb").read(6_000).decode("utf-8", errors="replace")
    garbled = bytes(x if i % 15 else 0xFF for i, x in enumerate(spare[2].encode())).decode("utf-8", "replace")
    sentence = max((line for line in spare[7].split("\n") if line.endswith(".")), key=len)
    words = clean[1]["text"].split()
    planted_docs = [
        doc("python_docs", "exact-copy", "  " + clean[0]["text"].upper().replace("\n", "\n\n")),
        doc("python_docs", "near-copy", " ".join(words[:40] + words[41:120] + ["indeed"] + words[120:])),
        doc("python_docs", "contaminated", spare[0][:3000] + "\n\n" + copied + "\n"),
        doc("python_docs", "repeated-line", "\n".join([sentence] * 200)),
        doc("python_docs", "base64", base64.encodebytes(spare[1].encode() * 3).decode()),
        doc("python_docs", "binary", binary),
        doc("python_docs", "garbled-utf8", garbled),
        doc("python_docs", "empty", ""),
        doc("python_docs", "whitespace", " \n\t \n"),
    ]
    expected = {"exact-copy": "exact_duplicate", "near-copy": "near_duplicate",
                "contaminated": "shares_heldout_ngram", "repeated-line": "duplicate_lines",
                "base64": "mean_word_length", "binary": "binary", "garbled-utf8": "invalid_utf8",
                "empty": "empty", "whitespace": "empty"}
    japanese = [d for d in _all("perl_pod") if "perljp.pod" in d["id"]][:1]
    if japanese:
        planted_docs.append(doc("perl_pod", "japanese", japanese[0]["text"]))
        expected["japanese"] = "not_latin_script"
    latin1 = (spare[3] + "\nCaf\xe9 cr\xe8me.\n").encode("latin-1").decode("utf-8", errors="replace")
    repaired = [doc("python_docs", "latin1-byte", latin1),
                doc("python_docs", "giant-line", spare[4] + "\n" + base64.b64encode(spare[4].encode() * 8).decode()),
                doc("python_docs", "pii", spare[5] + "\nWrite to jane.doe@example.com or call +1 (415) 555-2671;"
                    " the server is 93.184.216.34 and the card 4111 1111 1111 1111.\n"),
                doc("python_docs", "html", "<!DOCTYPE html><html><head><title>t</title><script>var x = 1;</script>"
                    "</head><body><div class=\"main\"><p>" + spare[6][:2000].replace("\n\n", "</p>\n<p>")
                    + "</p></div></body></html>")]
    documents = clean[:len(clean) // 2] + planted_docs + repaired + clean[len(clean) // 2:]
    return documents, heldout, expected, [d["id"] for d in clean], spare


@pytest.fixture(scope="module")
def cleaned(planted):
    documents, heldout, *_ = planted
    pipeline = small_pipeline()
    return list(pipeline.run(documents, heldout=heldout)), pipeline.report


def _removal_reasons(report) -> dict:
    """{reason: count} over all stages and sources."""
    reasons: dict = {}
    for entry in report.to_dict().values():
        for numbers in entry["sources"].values():
            for reason, n in numbers["removed"].items():
                reasons[reason] = reasons.get(reason, 0) + n
    return reasons


def test_every_planted_document_is_removed_for_its_reason(planted, cleaned):
    _, _, expected, _, _ = planted
    kept, report = cleaned
    kept_ids = {d["id"] for d in kept}
    assert not kept_ids & set(expected), f"planted documents kept: {kept_ids & set(expected)}"
    reasons = _removal_reasons(report)
    for reason in set(expected.values()):
        assert reasons.get(reason, 0) >= list(expected.values()).count(reason), (reason, reasons)


def test_clean_real_documents_are_kept_unchanged_and_in_order(planted, cleaned):
    documents, _, _, clean_ids, _ = planted
    kept, _ = cleaned
    by_id = {d["id"]: d for d in kept}
    assert [i for i in (d["id"] for d in kept) if i in clean_ids] == clean_ids
    originals = {d["id"]: d["text"] for d in documents}
    assert all(by_id[i]["text"] == originals[i] for i in clean_ids)


def test_repairable_documents_are_repaired_not_removed(planted, cleaned):
    *_, spare = planted
    kept, report = cleaned
    by_id = {d["id"]: d["text"] for d in kept}
    assert by_id["latin1-byte"] == spare[3] + "\nCaf crme.\n"  # the two undecodable bytes deleted
    assert by_id["giant-line"] == spare[4]
    pii = by_id["pii"]
    assert pii.startswith(spare[5])
    assert "jane.doe" not in pii and "555-2671" not in pii and "93.184" not in pii and "4111" not in pii
    assert pii.endswith("\nWrite to <EMAIL> or call <PHONE>; the server is <IP> and the card <CARD>.\n")
    html = by_id["html"]
    assert "<" not in html and "var x" not in html
    assert " ".join(spare[6][:2000].split()[:50]) in " ".join(html.split())
    edits = {k: n for e in report.to_dict().values() for s in e["sources"].values() for k, n in s["edited"].items()}
    assert edits["invalid_chars_deleted"] == 2 and edits["long_lines_removed"] == 1
    assert edits["pii_email"] == edits["pii_phone"] == edits["pii_ip"] == edits["pii_card"] == 1


def test_report_adds_up_and_renders(planted, cleaned):
    documents, _, _, _, _ = planted
    kept, report = cleaned
    stages = report.to_dict()
    names = list(stages)
    assert report.totals(names[0])["docs_in"] == len(documents)
    assert report.totals(names[-1])["docs_out"] == len(kept)
    for before, after in zip(names, names[1:]):
        assert report.totals(before)["docs_out"] == report.totals(after)["docs_in"]
        assert report.totals(before)["bytes_out"] == report.totals(after)["bytes_in"]
    for entry in stages.values():
        for numbers in entry["sources"].values():
            assert numbers["docs_in"] - numbers["docs_out"] == sum(numbers["removed"].values())
    assert json.loads(report.to_json())["stages"]["exact_dedup"]["sources"]["python_docs"]["removed"] == {
        "exact_duplicate": 1}
    text = report.to_text()
    assert "near_duplicate" in text and "gopher" in text and "pii_email" in text


def test_worker_processes_give_the_same_documents_and_report(planted, cleaned):
    documents, heldout, *_ = planted
    kept, report = cleaned
    pipeline = small_pipeline(workers=2)
    assert list(pipeline.run(documents, heldout=heldout)) == kept
    strip_time = {key: n for key, n in pipeline.report.counts.items() if key[2] != "cpu_seconds"}
    assert strip_time == {key: n for key, n in report.counts.items() if key[2] != "cpu_seconds"}


def test_odd_items_never_crash():
    long_enough = " in a line of text that goes on for long enough that one bad character is under 1% of it."
    items = [None, 42, b"one stray byte \xff" + long_enough.encode(), "a bare string.", {"text": None},
             {"source": 7, "text": ["not", "text"]}, {"text": "a lone surrogate \ud800" + long_enough}]
    pipeline = CleaningPipeline([Sanitize(), ScrubPII(), GopherRules(min_words=1), ExactDedup(), NearDedup()],
                                workers=1)
    kept = list(pipeline.run(items))
    assert [d["text"] for d in kept] == ["one stray byte " + long_enough, "a bare string.",
                                         "a lone surrogate " + long_enough]
    assert pipeline.report.totals("sanitize")["docs_in"] == len(items)


def test_stages_and_settings_come_from_gin():
    gin.clear_config()
    try:
        gin.parse_config("""
            CleaningPipeline.stages = [@Sanitize(), @GopherRules(), @NearDedup()]
            CleaningPipeline.workers = 1
            GopherRules.min_words = 7
            GopherRules.overrides = {'gcide': {'min_words': 2}}
            NearDedup.threshold = 0.6
        """)
        pipeline = CleaningPipeline()
    finally:
        gin.clear_config()
    gopher, near = pipeline.stages[1], pipeline.stages[2]
    assert [s.name for s in pipeline.stages] == ["sanitize", "gopher", "near_dedup"]
    assert gopher.min_words == 7 and gopher.for_source("gcide").min_words == 2
    assert gopher.for_source("python_docs").min_words == 7
    assert near.threshold == 0.6 and near.bands * near.rows <= near.num_perm


def test_unknown_override_field_is_an_error():
    with pytest.raises(ValueError, match="min_wrods"):
        GopherRules(overrides={"gcide": {"min_wrods": 3}}).for_source("gcide")
