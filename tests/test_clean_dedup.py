"""Exact and near-duplicate removal, decontamination and deterministic hashing, on real documents."""
from __future__ import annotations

import collections
import multiprocessing
import re

import numpy as np
import pytest

from data.clean import Decontaminate, ExactDedup, NearDedup, hashing
from data.clean.dedup import KeyStore
from data.clean.minhash import lsh_bands
from data.clean.report import StageLog
from tests.test_clean_pipeline import real_documents


def doc(text, id_="x", source="python_docs"):
    return {"source": source, "id": id_, "text": text}


def keep(stage, docs, batch=7):
    """Ids kept by a stateful stage fed in batches, and its counts."""
    counts = collections.Counter()
    kept = []
    for lo in range(0, len(docs), batch):
        part = docs[lo:lo + batch]
        mask = stage.keep(part, stage.fingerprints([d["text"] for d in part]), StageLog(stage.name, counts))
        kept += [d["id"] for d, k in zip(part, mask) if k]
    return kept, {(source, field): n for (_, source, field), n in counts.items()}


def shingles(text: str, n: int = 5) -> set:
    words = re.findall(r"[a-z0-9_]+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def edited(text: str, every: int) -> str:
    """The text with every `every`-th word dropped (a lighter or heavier edit)."""
    return " ".join(w for i, w in enumerate(text.split()) if i % every != every - 1)


def test_exact_duplicates_differ_only_in_case_space_and_punctuation():
    texts = [d["text"] for d in real_documents("python_docs", 6, min_words=200)]
    variants = [texts[0].upper(), "  " + texts[1].replace(" ", "   "), texts[2].replace(",", "").replace(".", " ")]
    docs = [doc(t, f"real{i}") for i, t in enumerate(texts)] + [doc(t, f"copy{i}") for i, t in enumerate(variants)]
    docs.append(doc(texts[3] + " One more sentence.", "longer"))
    kept, counts = keep(ExactDedup(), docs)
    assert kept == [f"real{i}" for i in range(6)] + ["longer"]
    assert counts[("python_docs", "removed:exact_duplicate")] == 3


def test_near_duplicates_above_the_threshold_go_and_those_below_stay():
    texts = [d["text"] for d in real_documents("python_docs", 20, min_words=400)]
    close = [edited(t, 150) for t in texts]  # one word in 150 dropped
    far = [edited(t, 3) for t in texts]       # one word in 3 dropped
    assert min(jaccard(t, c) for t, c in zip(texts, close)) > 0.9
    assert max(jaccard(t, f) for t, f in zip(texts, far)) < 0.3
    docs = ([doc(t, f"real{i}") for i, t in enumerate(texts)] + [doc(t, f"close{i}") for i, t in enumerate(close)]
            + [doc(t, f"far{i}") for i, t in enumerate(far)])
    kept, counts = keep(NearDedup(threshold=0.7), docs)
    assert kept == [f"real{i}" for i in range(20)] + [f"far{i}" for i in range(20)]
    assert counts == {("python_docs", "removed:near_duplicate"): 20}


def test_minhash_agreement_estimates_jaccard():
    stage = NearDedup()
    texts = [d["text"] for d in real_documents("python_docs", 10, min_words=400)]
    for every in (4, 8, 20):
        pairs = [(t, edited(t, every)) for t in texts]
        words = [t for pair in pairs for t in pair]
        shingle_hashes, owner = stage._shingles(hashing.EncodedBatch(words).words)
        signatures = stage.signatures(shingle_hashes, owner, len(words))
        estimates = (signatures[:, 0::2] == signatures[:, 1::2]).mean(axis=0)
        truth = np.array([jaccard(a, b) for a, b in pairs])
        assert np.abs(estimates - truth).max() < 0.15  # 128 permutations: sd <= 0.045
        assert abs((estimates - truth).mean()) < 0.03


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_lsh_s_curve_steps_near_the_threshold(threshold):
    bands, rows = lsh_bands(threshold, 128)
    assert bands * rows <= 128

    def candidate(s):
        return 1 - (1 - s ** rows) ** bands
    assert candidate(threshold - 0.2) < 0.1 and candidate(min(threshold + 0.1, 0.99)) > 0.7


def _fingerprints(texts):
    return NearDedup().fingerprints(texts), ExactDedup().fingerprints(texts)


def test_fingerprints_are_the_same_in_another_process():
    texts = [d["text"] for d in real_documents("python_docs", 5, min_words=100)]
    here = _fingerprints(texts)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        there = pool.apply(_fingerprints, (texts,))
    assert all(np.array_equal(a, b) for a, b in zip(here, there))


def test_decontamination_drops_documents_that_share_a_13_gram_with_heldout_text():
    heldout = real_documents("python_docs", 2, min_words=300, skip=30)
    train = real_documents("python_docs", 8, min_words=300)
    passage = re.findall(r"[a-z0-9_]+", heldout[0]["text"].lower())[50:70]  # normalised words
    entry = next(d["text"] for d in real_documents("gcide", 300, skip=100)
                 if len(re.findall(r"[a-z0-9_]+", d["text"].lower())) < 13)  # too short for a 13-gram
    short_heldout = {"source": "gcide", "id": "h", "text": entry}
    docs = [doc(t["text"], f"real{i}") for i, t in enumerate(train)]
    docs += [doc(train[0]["text"] + "\n" + " ".join(passage[:13]) + "\n", "13 words"),
             doc(train[1]["text"] + "\n" + " ".join(passage[:12]) + "\n", "12 words"),
             doc(entry.upper().replace(" ", "  "), "same entry", "gcide")]
    stage = Decontaminate()
    stage.prepare(heldout + [short_heldout])
    counts = collections.Counter()
    kept = stage.process(docs, StageLog(stage.name, counts))
    assert [d["id"] for d in kept] == [f"real{i}" for i in range(8)] + ["12 words"]
    assert counts[("decontaminate", "python_docs", "removed:shares_heldout_ngram")] == 1
    assert counts[("decontaminate", "gcide", "removed:equals_heldout_text")] == 1


def test_ngrams_shared_by_several_heldout_documents_are_boilerplate():
    heldout = real_documents("python_docs", 3, min_words=300, skip=30)
    boilerplate = " ".join(heldout[2]["text"].split()[10:30])
    stage = Decontaminate()
    stage.prepare([doc(h["text"] + "\n" + boilerplate) for h in heldout[:2]])
    train = real_documents("python_docs", 1, min_words=300)[0]["text"]
    kept = stage.process([doc(train + "\n" + boilerplate)], StageLog(stage.name, collections.Counter()))
    assert len(kept) == 1
    strict = Decontaminate(max_heldout_docs=2)
    strict.prepare([doc(h["text"] + "\n" + boilerplate) for h in heldout[:2]])
    assert strict.process([doc(train + "\n" + boilerplate)], StageLog(stage.name, collections.Counter())) == []


def test_key_store_matches_a_python_set_across_merges():
    rng = np.random.default_rng(0)
    store, reference = KeyStore(), set()
    for size in [10, 1000, 70_000, 5, 20_000, 3]:
        keys = rng.integers(0, 2**63, size, dtype=np.uint64) * np.uint64(2) + np.uint64(size % 2)
        queries = np.concatenate([keys, rng.integers(0, 2**63, 50, dtype=np.uint64)])
        assert store.contains(queries).tolist() == [int(q) in reference for q in queries]
        store.add(keys)
        reference.update(int(k) for k in keys)
        assert store.contains(keys).all()
