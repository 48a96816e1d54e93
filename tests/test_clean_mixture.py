"""Mixing per-source streams of real documents by weight."""
from __future__ import annotations

import collections

import pytest

from data.clean import mix_sources
from data.clean.hashing import utf8_len
from tests.test_clean_pipeline import real_documents


@pytest.fixture(scope="module")
def streams():
    """Factories of fresh iterators over small real sources of very different document sizes."""
    docs = {"gcide": real_documents("gcide", 400), "python_docs": real_documents("python_docs", 40),
            "python_stdlib": real_documents("python_stdlib", 10, min_words=200)}
    return {name: (lambda d=d: iter(d)) for name, d in docs.items()}


def sources_of(docs):
    return collections.Counter(d["source"] for d in docs)


def test_same_seed_same_mixture_other_seed_other_order(streams):
    weights = {"gcide": 1.0, "python_docs": 1.0}
    first = [d["id"] for d in mix_sources(streams, weights, seed=3)]
    assert first == [d["id"] for d in mix_sources(streams, weights, seed=3)]
    other = [d["id"] for d in mix_sources(streams, weights, seed=4)]
    assert other != first and sorted(other) == sorted(first)


def test_without_total_every_source_is_read_once_with_the_cap(streams):
    mixture = mix_sources(streams, {"gcide": 5.0, "python_docs": 1.0, "python_stdlib": 1.0}, max_per_source=30)
    docs = list(mixture)
    assert sources_of(docs) == {"gcide": 30, "python_docs": 30, "python_stdlib": 10}
    assert len({(d["source"], d["id"]) for d in docs}) == len(docs)
    assert mixture.epochs() == {"gcide": 1.0, "python_docs": 1.0, "python_stdlib": 1.0}


def test_document_shares_follow_the_weights_and_epochs_count_repeats(streams):
    mixture = mix_sources(streams, {"gcide": 3.0, "python_docs": 1.0}, seed=1, total=4000)
    counts = sources_of(mixture)
    assert sum(counts.values()) == 4000
    assert counts["gcide"] / 4000 == pytest.approx(0.75, abs=0.03)
    epochs = mixture.epochs()
    assert epochs["gcide"] == pytest.approx(counts["gcide"] / 400)
    assert epochs["python_docs"] == pytest.approx(counts["python_docs"] / 40)
    assert epochs["python_docs"] > 20  # the small source is repeated


def test_byte_shares_follow_the_weights(streams):
    mixture = mix_sources(streams, {"gcide": 1.0, "python_stdlib": 1.0}, seed=2, total=3_000_000, unit="bytes")
    size = collections.Counter()
    for d in mixture:
        size[d["source"]] += utf8_len(d["text"])
    assert sum(size.values()) >= 3_000_000
    assert size["gcide"] / sum(size.values()) == pytest.approx(0.5, abs=0.05)


def test_an_epoch_count_before_the_source_runs_out(streams):
    mixture = mix_sources(streams, {"gcide": 1.0, "python_docs": 1.0}, seed=0, total=100)
    counts = sources_of(mixture)
    assert mixture.epochs()["gcide"] == pytest.approx(counts["gcide"] / 400)


def test_bad_weights_are_errors(streams):
    with pytest.raises(ValueError, match="unknown source"):
        mix_sources(streams, {"wikipedia": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        mix_sources(streams, {"gcide": -1.0, "python_docs": 2.0})
    with pytest.raises(ValueError, match="unit"):
        mix_sources(streams, {"gcide": 1.0}, unit="tokens")
