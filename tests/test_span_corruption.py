"""T5 span corruption: noise density, span lengths, sentinels, and the inverse."""
from __future__ import annotations

import numpy as np
import pytest

from data.span_corruption import corrupt_spans, corrupted_lengths, noise_mask, sentinels_from_vocab, uncorrupt_spans

VOCAB = 32_000
SENTINELS = sentinels_from_vocab(VOCAB, 100)


def tokens(length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB - 100, length).astype(np.int32)


def runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()


def test_sentinels_are_the_last_ids():
    assert sentinels_from_vocab(10, 3).tolist() == [9, 8, 7]


@pytest.mark.parametrize("length", [2, 3, 10, 37, 512, 1000])
def test_inputs_and_targets_give_back_the_tokens(length):
    for seed in range(5):
        original = tokens(length, seed)
        inputs, targets = corrupt_spans(original, SENTINELS, np.random.default_rng(seed))
        assert np.array_equal(uncorrupt_spans(inputs, targets, SENTINELS), original)
        assert (len(inputs), len(targets)) == corrupted_lengths(length)


def test_noise_density_and_span_lengths():
    length = 1000
    masks = [noise_mask(length, np.random.default_rng(seed)) for seed in range(200)]
    # round(1000 * 0.15) = 150 noise tokens in round(150 / 3) = 50 spans, exactly, every time.
    assert all(m.sum() == 150 for m in masks)
    assert all(len(runs(m)) == 50 for m in masks)
    assert all(not m[0] for m in masks)  # a kept span comes first
    lengths = np.concatenate([runs(m) for m in masks])
    assert lengths.mean() == pytest.approx(3.0)
    assert lengths.min() >= 1 and lengths.max() > 6  # random lengths, not all 3
    # Where the spans fall is uniform: every position is noise about 15% of the time.
    assert np.mean(masks, axis=0)[100:].mean() == pytest.approx(0.15, abs=0.01)


def test_other_settings():
    mask = noise_mask(200, np.random.default_rng(0), noise_density=0.5, mean_noise_span_length=10)
    assert mask.sum() == 100 and len(runs(mask)) == 10


def test_inputs_and_targets_layout():
    original = np.arange(1, 21, dtype=np.int32)
    inputs, targets = corrupt_spans(original, SENTINELS, 7, noise_density=0.3)
    mask = noise_mask(20, np.random.default_rng(7), noise_density=0.3)  # the same draw from the same seed
    spans = runs(mask)
    assert [t for t in inputs if t in SENTINELS] == SENTINELS[:len(spans)].tolist()
    assert [t for t in targets if t in SENTINELS] == SENTINELS[:len(spans)].tolist()
    assert [t for t in inputs if t not in SENTINELS] == original[~mask].tolist()
    assert [t for t in targets if t not in SENTINELS] == original[mask].tolist()
    assert targets[0] == SENTINELS[0] and inputs[0] == original[0]


def test_same_seed_same_corruption_other_seed_other():
    original = tokens(300)
    a = corrupt_spans(original, SENTINELS, 5)
    b = corrupt_spans(original, SENTINELS, np.random.default_rng(5))
    c = corrupt_spans(original, SENTINELS, 6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="sentinel ids"):
        corrupt_spans(np.array([1, 2, SENTINELS[3], 4]), SENTINELS, 0)
    with pytest.raises(ValueError, match="only 2 sentinel"):
        corrupt_spans(tokens(1000), SENTINELS[:2], 0)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        corrupt_spans(np.array([5]), SENTINELS, 0)
    with pytest.raises(ValueError, match="noise_density"):
        corrupt_spans(tokens(10), SENTINELS, 0, noise_density=1.5)
