"""The prefix decoder: bidirectional inside the prefix, causal after it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import build_model
from model.transformer import TransformerConfig

LENGTH, PREFIX = 12, 5


@pytest.fixture(scope="module")
def model_and_params():
    cfg = TransformerConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=LENGTH,
                            attention_mask="prefix")
    model = build_model(cfg)
    batch = {"inputs": jnp.arange(LENGTH, dtype=jnp.int32)[None] % 50, "prefix_len": jnp.array([PREFIX])}
    return model, model.init(jax.random.PRNGKey(0), batch)


def logits_after_changing(model_and_params, position):
    model, params = model_and_params
    tokens = np.arange(LENGTH, dtype=np.int32)[None] % 50
    changed = tokens.copy()
    changed[0, position] = (changed[0, position] + 7) % 50
    out = [model.apply(params, {"inputs": jnp.asarray(t), "prefix_len": jnp.array([PREFIX])})[0]
           for t in (tokens, changed)]
    return np.asarray(out[0]), np.asarray(out[1])


@pytest.mark.parametrize("position", range(PREFIX, LENGTH))
def test_no_output_depends_on_a_later_token_outside_the_prefix(model_and_params, position):
    before, after = logits_after_changing(model_and_params, position)
    np.testing.assert_array_equal(before[:position], after[:position])
    assert not np.allclose(before[position:], after[position:])


@pytest.mark.parametrize("position", range(1, PREFIX))
def test_earlier_outputs_depend_on_later_prefix_tokens(model_and_params, position):
    before, after = logits_after_changing(model_and_params, position)
    assert not np.allclose(before[0], after[0])  # the first token sees the whole prefix
    assert not np.allclose(before[:position], after[:position])


def test_causal_mask_ignores_prefix_len():
    cfg = TransformerConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=4, d_ff=64, max_len=LENGTH)
    model = build_model(cfg)
    tokens = jnp.arange(LENGTH, dtype=jnp.int32)[None]
    params = model.init(jax.random.PRNGKey(0), {"inputs": tokens})
    changed = tokens.at[0, 3].set(40)
    a, b = (np.asarray(model.apply(params, {"inputs": t})[0]) for t in (tokens, changed))
    np.testing.assert_array_equal(a[:3], b[:3])
