"""Every model and optimizer option trains: a few steps on real text, and the loss falls."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import train_in_process

STEPS = 12


def train_losses(text, **options):
    return train_in_process(text, STEPS, **{"n_layers": 2, **options})[0]


OPTIONS = [
    {}, {"dtype": "bfloat16"}, {"activation": "swiglu"}, {"position": "alibi"}, {"optimizer": "adafactor"},
    {"activation": "relu"}, {"activation": "geglu"},
    {"norm": "layernorm"}, {"norm_position": "post"}, {"position": "learned"}, {"position": "sinusoidal"},
    {"use_bias": True, "norm": "layernorm"}, {"tie_embeddings": False},
    {"dropout": 0.1}, {"n_kv_heads": 2}, {"n_kv_heads": 1}, {"remat": True},
    {"attention_mask": "prefix"}, {"accum": 2},
    {"z_loss": 1e-4},
]
# Each option compiles a model of its own (~9 s on two cores): the default suite trains the first
# five, `pytest -m slow` the rest.
IN_DEFAULT_SUITE = 5


@pytest.mark.parametrize("options", [options if i < IN_DEFAULT_SUITE else pytest.param(options, marks=pytest.mark.slow)
                                     for i, options in enumerate(OPTIONS)],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_option_trains_and_loss_falls(stdlib_text, options):
    losses = train_losses(stdlib_text, **options)
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < losses[0] - 0.5, losses


def test_gradient_accumulation_matches_one_big_batch(stdlib_text):
    np.testing.assert_allclose(train_losses(stdlib_text, accum=4), train_losses(stdlib_text, accum=1), rtol=2e-5)
