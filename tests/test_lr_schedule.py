"""The learning-rate schedule: linear warm-up, then cosine decay to final_lr_fraction of the peak."""
import math

import numpy as np
import pytest

from train.optimizer import lr_schedule


def reference(step, total, peak, warmup, final_fraction):
    """The schedule written out by hand, independently of optax."""
    if step < warmup:
        return peak * step / warmup
    progress = min((step - warmup) / (total - warmup), 1.0)
    return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


@pytest.mark.parametrize("seed", range(5))
def test_schedule_matches_the_formula_with_a_warmup_floor(seed):
    rng = np.random.default_rng(seed)
    total, peak = int(rng.integers(50, 400)), float(rng.uniform(1e-4, 3e-2))
    warmup_steps, fraction = int(rng.integers(1, 10)), float(rng.uniform(0.05, 0.5))
    final = float(rng.uniform(0.0, 0.2))
    schedule = lr_schedule(total, peak, warmup_steps, final, min_warmup_fraction=fraction)
    warmup = max(warmup_steps, round(fraction * total))
    assert warmup > warmup_steps  # the floor, not warmup_steps, sets the warm-up here
    for step in rng.permutation(total + 1)[:40]:
        assert float(schedule(int(step))) == pytest.approx(reference(int(step), total, peak, warmup, final),
                                                          rel=1e-5, abs=1e-9)


def test_a_longer_warmup_than_the_floor_is_kept():
    schedule = lr_schedule(100, peak_lr=1.0, warmup_steps=40, final_lr_fraction=0.1, min_warmup_fraction=0.1)
    assert float(schedule(20)) == pytest.approx(0.5)
    assert float(schedule(40)) == pytest.approx(1.0)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_a_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(ValueError, match="min_warmup_fraction"):
        lr_schedule(100, min_warmup_fraction=fraction)
