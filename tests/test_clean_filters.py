"""Quality filters, scrubbers and the n-gram model, on real documents."""
from __future__ import annotations

import base64
import collections
import random
import re

import numpy as np
import pytest

from data.clean import (GopherRules, NgramModel, PerplexityFilter, RemoveRepeatedLines, ScrubPII, Sanitize,
                        ScriptFilter, StripMarkup)
from data.clean import hashing
from data.clean.gopher_stats import document_stats
from data.clean.report import StageLog
from tests.test_clean_pipeline import _all, real_documents


def run(stage, docs):
    """(kept documents, {(source, field): n}) of one document stage."""
    counts = collections.Counter()
    kept = stage.process([dict(d) for d in docs], StageLog(stage.name, counts))
    return kept, {(source, field): n for (_, source, field), n in counts.items()}


def doc(text, source="python_docs", id_="x"):
    return {"source": source, "id": id_, "text": text}


# --- Gopher ------------------------------------------------------------------

def test_gopher_statistics_by_hand():
    stats = document_stats(["the cat sat the cat sat the cat sat dog", "Spam spam\nspam spam\neggs."])
    # 5-grams at word 0 and 3, and at 1 and 4, repeat: they cover the first nine words (27 of 30 letters).
    assert stats["duplicate_5gram_char_fraction"][0] == pytest.approx(27 / 30)
    # "the cat" and "cat sat" occur 3 times, 6 letters each.
    assert stats["top_2gram_char_fraction"][0] == pytest.approx(18 / 30)
    assert stats["words"].tolist() == [10, 5]
    assert stats["mean_word_length"][1] == pytest.approx(21 / 5)
    # Lines compare case-insensitively: "spam spam" repeats "Spam spam".
    assert stats["duplicate_line_fraction"][1] == pytest.approx(1 / 3)
    assert stats["duplicate_line_char_fraction"][1] == pytest.approx(9 / 23)
    assert stats["punctuated_line_fraction"][1] == pytest.approx(1 / 3)
    assert stats["duplicate_5gram_char_fraction"][1] == 0


def test_gopher_statistics_do_not_depend_on_the_batch():
    docs = [d["text"] for d in real_documents("python_docs", 6, min_words=100)]
    together = document_stats(docs)
    for i, text in enumerate(docs):
        alone = document_stats([text])
        assert {k: v[0] for k, v in alone.items()} == pytest.approx({k: v[i] for k, v in together.items()})


@pytest.mark.parametrize("source, stride", [("gcide", 40), ("python_stdlib", 20), ("python_docs", 6)])
def test_gopher_defaults_keep_code_and_dictionary_entries(source, stride):
    docs = real_documents(source, 120, stride=stride)  # spread over the whole source
    kept_by_default = len(run(GopherRules(), docs)[0]) / len(docs)
    kept_by_plain_gopher = len(run(GopherRules(overrides={}), docs)[0]) / len(docs)
    assert kept_by_default >= 0.9
    if source != "python_docs":  # Gopher's web-text thresholds throw most of these away
        assert kept_by_plain_gopher < 0.5


def test_gopher_removes_repetition_and_symbol_soup_from_real_text():
    text = real_documents("python_docs", 1, min_words=400)[0]["text"]
    sentence = " ".join(text.split()[:12]) + "."
    docs = [doc(text, id_="real"), doc("\n".join([sentence] * 30), id_="repeated"),
            doc(" ".join("#" + w for w in text.split()[:300]), id_="hashes")]
    kept, counts = run(GopherRules(), docs)
    assert [d["id"] for d in kept] == ["real"]
    assert counts[("python_docs", "removed:duplicate_lines")] == 1
    assert counts[("python_docs", "removed:symbol_word_ratio")] == 1


# --- bad input -----------------------------------------------------------------

def test_sanitize_repairs_a_few_bad_characters_and_removes_many():
    text = real_documents("python_docs", 1, min_words=400)[0]["text"]
    docs = [doc(text[:2000] + "\x1b[0m" + text[2000:], id_="escape"), doc(text.replace("e", "\x07"), id_="bells"),
            doc(text + "\f\n"), doc(text[:1000] + "\n" + "x" * 30_000 + "\n" + text[1000:], id_="giant")]
    kept, counts = run(Sanitize(), docs)
    assert [d["id"] for d in kept] == ["escape", "x", "giant"]
    assert kept[0]["text"] == text[:2000] + "[0m" + text[2000:]
    assert kept[1]["text"] == text + "\f\n"  # form feeds are text
    assert kept[2]["text"] == text[:1000] + "\n" + text[1000:]
    assert counts[("python_docs", "removed:binary")] == 1
    assert counts[("python_docs", "edited:long_lines_removed")] == 1


# --- markup ------------------------------------------------------------------

def test_markup_is_stripped_only_from_html_and_urls_and_boilerplate_go():
    code = [d for d in _all("python_stdlib") if d["id"].startswith("html/parser.py")][0]["text"]
    text = real_documents("python_docs", 1, min_words=400)[0]["text"]
    first, rest = text.split("\n", 1)
    long_line = "This site mentions cookies in a long paragraph, " + " ".join(rest.split()[:40])
    assert "</" in code and "<div>" not in code.replace("<", "")  # tags in strings and comments
    assert run(StripMarkup(urls=False), [doc(code, "python_stdlib")])[0][0]["text"] == code
    docs = [doc(first + " See https://docs.python.org/3/library/re.html or www.python.org for more.\n" + rest),
            doc("Copyright 2024 Example Corp. All Rights Reserved.\n" + text + "\n" + long_line
                + "\nSkip to content\n")]
    kept, counts = run(StripMarkup(), docs)
    assert kept[0]["text"] == first + " See  or  for more.\n" + rest
    assert kept[1]["text"] == text + "\n" + long_line + "\n"
    assert counts[("python_docs", "edited:urls_removed")] == 2
    assert counts[("python_docs", "edited:boilerplate_lines_removed")] == 2


# --- PII ---------------------------------------------------------------------

def test_pii_placeholders_and_counts():
    text = real_documents("python_docs", 1, min_words=300)[0]["text"]
    planted = (text + "\nMail bob.smith+news@mail.example.org, phone 020 7946 0958 or 415.555.2671, from "
               "203.0.113.9 (documentation) and 8.8.4.4 and 151.101.1.69 and 2a00:1450:4001:82b::200e;"
               " pay with 5500-0000-0000-0004 or 378282246310005.\n")
    kept, counts = run(ScrubPII(), [doc(planted)])
    assert kept[0]["text"] == text + (
        "\nMail <EMAIL>, phone <PHONE> or <PHONE>, from 203.0.113.9 (documentation) and 8.8.4.4 and <IP> and <IP>;"
        " pay with <CARD> or <CARD>.\n")
    assert counts == {("python_docs", "edited:pii_email"): 1, ("python_docs", "edited:pii_phone"): 2,
                      ("python_docs", "edited:pii_ip"): 1, ("python_docs", "edited:pii_ipv6"): 1,
                      ("python_docs", "edited:pii_card"): 2}


def test_pii_leaves_numbers_that_are_not_personal():
    lines = ["zlib 1.2.3.4 and Firefox 2.0.0.11", "copyright 2001-2007, 2010-2023", "127.0.0.1 and 10.0.0.8",
             "x = a[1::2] + m[::3]", "For example::", "sub DB::DB {}", "version 3.11.2, 4111 1111 1111 1112",
             "4111 1111 11 1111 1111 and 1234567890123", "isbn 978-3-16-148410-0"]
    text = "\n".join(lines) + "\n"
    kept, counts = run(ScrubPII(), [doc(text)])
    assert kept[0]["text"] == text and not counts


# --- repeated lines, script -----------------------------------------------------

def test_repeated_long_lines_are_removed_except_in_exempt_sources():
    entry = real_documents("gcide", 1, min_words=30)[0]["text"]
    lines = entry.rstrip("\n").split("\n")
    long_line = max(lines, key=len)
    assert len(long_line.strip()) >= 40
    text = "\n".join(lines + [long_line, "[1913 Webster]", long_line]) + "\n"
    kept, counts = run(RemoveRepeatedLines(), [doc(text, "gcide"), doc(text, "python_stdlib")])
    assert kept[0]["text"] == "\n".join(lines + ["[1913 Webster]"]) + "\n"
    assert kept[1]["text"] == text
    assert counts == {("gcide", "edited:repeated_lines_removed"): 2}


def test_script_filter_removes_japanese_and_keeps_accented_latin():
    japanese = [d for d in _all("perl_pod") if "perljp.pod" in d["id"]]
    if not japanese:
        pytest.skip("perl-doc is not installed")
    text = real_documents("python_docs", 1, min_words=300)[0]["text"]
    accented = text.replace("e", "\u00e9").replace("a", "\u00e0")
    kept, counts = run(ScriptFilter(), [doc(japanese[0]["text"], "perl_pod", "jp"), doc(accented, id_="fr")])
    assert [d["id"] for d in kept] == ["fr"]
    assert counts == {("perl_pod", "removed:not_latin_script"): 1}


# --- perplexity ------------------------------------------------------------------

def _shuffled_words(text: str, seed: int) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


def test_kneser_ney_distributions_sum_to_one():
    texts = [d["text"] for d in real_documents("gcide", 25, min_words=15)]
    model = NgramModel(order=3, max_load=0.001).train(texts)
    assert sum(t.lost for t in model.alpha + model.gamma) == 0  # no hash collisions, so exact
    tokens = [re.findall(r"[a-z0-9_]+", t.lower()) for t in texts]
    # The unigram level holds continuation counts: the words seen after another word.
    vocabulary = sorted({w for words in tokens for w in words[1:]})
    context = " ".join(tokens[0][1:3])
    candidates = [f"{context} {w}" for w in vocabulary] + [f"{context} qqqunseenqqq"]
    log_probs = model.word_log_probs(hashing.EncodedBatch(candidates).words).reshape(len(candidates), 3)
    # The one unseen word stands for the whole mass that the model leaves to unseen words.
    assert np.exp(log_probs[:, 2]).sum() == pytest.approx(1.0, abs=1e-5)


def test_perplexity_is_higher_for_scrambled_and_encoded_text():
    reference = [d["text"] for d in real_documents("python_docs", 60, min_words=200)]
    unseen = [d["text"] for d in real_documents("python_docs", 10, min_words=200, skip=60)]
    model = NgramModel().train(reference)
    real = model.log_perplexities(unseen)
    scrambled = model.log_perplexities([_shuffled_words(t, i) for i, t in enumerate(unseen)])
    encoded = model.log_perplexities([base64.encodebytes(t.encode()).decode() for t in unseen])
    assert (scrambled > real).all() and (encoded > scrambled).all()


def test_perplexity_filter_drops_the_tail_of_each_source():
    entries = real_documents("gcide", 400, min_words=15)
    reference = [d["text"] for d in real_documents("gcide", 300, min_words=15, skip=2000)]
    stage = PerplexityFilter(max_percentile=95.0, min_docs=100)
    stage.train(reference)
    stage.prepare([])
    junk = [doc(base64.encodebytes(e["text"].encode()).decode(), "gcide", f"junk{i}")
            for i, e in enumerate(entries[300:310])]
    docs = entries[:200] + junk + entries[200:300]
    scores = stage.fingerprints([d["text"] for d in docs])
    counts = collections.Counter()
    keep = np.concatenate([stage.keep(docs[i:i + 50], scores[i:i + 50], StageLog("perplexity", counts))
                           for i in range(0, len(docs), 50)])
    kept_ids = {d["id"] for d, k in zip(docs, keep) if k}
    assert not any(f"junk{i}" in kept_ids for i in range(10))
    real_dropped = sum(1 for d in entries[:300] if d["id"] not in kept_ids)
    assert real_dropped <= 0.06 * 300
    assert counts[("perplexity", "gcide", "removed:perplexity")] == len(docs) - len(kept_ids)
