"""Every model and optimizer option trains: a few steps on real text, and the loss falls."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import train_in_process

STEPS = 12


def train_losses(text, **options):
    return train_in_process(text, STEPS, **{"n_layers": 2, **options})[0]


OPTIONS = [
    {"dtype": "bfloat16"}, {"activation": "swiglu"}, {"position": "alibi"}, {"optimizer": "adafactor"},
    {}, {"activation": "relu"}, {"activation": "geglu"},
    {"norm": "layernorm"}, {"norm_position": "post"}, {"position": "learned"}, {"position": "sinusoidal"},
    {"use_bias": True, "norm": "layernorm"}, {"tie_embeddings": False},
    {"dropout": 0.1}, {"n_kv_heads": 2}, {"n_kv_heads": 1}, {"remat": True},
    {"attention_mask": "prefix"}, {"accum": 2},
    {"z_loss": 1e-4},
]
# Each option compiles a model of its own (~5 s on two cores): the default suite trains the first
# four, `pytest -m slow` the rest (the default model trains in most of the suite's other tests).
IN_DEFAULT_SUITE = 4


@pytest.mark.parametrize("options", [options if i < IN_DEFAULT_SUITE else pytest.param(options, marks=pytest.mark.slow)
                                     for i, options in enumerate(OPTIONS)],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_option_trains_and_loss_falls(stdlib_text, options):
    losses = train_losses(stdlib_text, **options)
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < losses[0] - 0.5, losses


def test_gradient_accumulation_matches_one_big_batch(stdlib_text):
    np.testing.assert_allclose(train_losses(stdlib_text, accum=4), train_losses(stdlib_text, accum=1), rtol=2e-5)


def test_a_step_with_non_finite_gradients_leaves_the_state_as_it_was(stdlib_text):
    """The poisoned step's update is skipped and flagged: parameters and optimizer moments stay bit for
    bit what the steps before it made them (only the step counter, which the schedule reads, moves on)."""
    import jax
    clean_losses, _, clean = train_in_process(stdlib_text, 3)
    losses, _, poisoned = train_in_process(stdlib_text, 4, poisoned_steps=(3,))
    assert bool(poisoned["update_skipped"]) and not bool(clean["update_skipped"])
    assert np.isnan(losses[3]) and losses[:3] == clean_losses
    for a, b in zip(jax.tree.leaves(clean["state"].params), jax.tree.leaves(poisoned["state"].params)):
        np.testing.assert_array_equal(a, b)  # bit for bit: the NaN step changed nothing
    for a, b in zip(jax.tree.leaves(clean["state"].opt_state), jax.tree.leaves(poisoned["state"].opt_state)):
        np.testing.assert_array_equal(a, b)
