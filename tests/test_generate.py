"""KV-cache decoding against the full forward pass, and the samplers against their definitions.

The reference for every cached logit is the model run on the whole sequence at once (the training
path): a prompt fed in one call, then one token per call, must give the logits of every position
within 1e-5 (f32), for each position scheme, the prefix LM, grouped-query attention and scanned
layers, and for rows left-padded to share a batch. For the encoder-decoder the prompt is the
encoder's input, encoded once on the first call, and the decoder's tokens come one per call."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data.pipeline import DECODER_START_ID
from evaluation.generate import Sampling, _decode, decode_text, generate, prompt_batch, sample
from model import build_model
from model.transformer import TransformerConfig
from tests.test_model_variants import random_values

BASE = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=24)
VARIANTS = {
    "rope": dict(),
    "learned_untied": dict(position="learned", tie_embeddings=False),
    "sinusoidal": dict(position="sinusoidal"),
    "alibi_gqa": dict(position="alibi", n_kv_heads=2),
    "t5_bias": dict(position="t5_bias", t5_bias_buckets=8, t5_bias_max_distance=16),
    "prefix_lm": dict(attention_mask="prefix"),
    "scanned_swiglu": dict(scan_layers=True, activation="swiglu", norm_position="sandwich"),
}


def model_and_params(options, seed=0):
    model = build_model(TransformerConfig(**BASE, **options))
    batch = {"inputs": jnp.zeros((1, 8), jnp.int32), "prefix_len": jnp.ones(1, jnp.int32)}
    return model, model.init(jax.random.PRNGKey(seed), batch)["params"]


@partial(jax.jit, static_argnums=0)
def _apply(model, params, batch):
    return model.apply({"params": params}, batch)


def full_logits(model, params, tokens, prefix_len):
    batch = {"inputs": jnp.asarray(tokens, jnp.int32)[None], "prefix_len": jnp.asarray([prefix_len])}
    return np.asarray(_apply(model, params, batch)[0])


# Each variant compiles three programs: rope, the prefix LM and scanned layers in the default suite.
@pytest.mark.parametrize("variant", [v if v in ("rope", "prefix_lm", "scanned_swiglu") else
                                     pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS])
def test_cached_logits_equal_the_full_forward_pass_at_every_position(variant):
    model, params = model_and_params(VARIANTS[variant])
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, 64, 5), rng.integers(0, 64, 9)]  # different lengths: left-padded together
    continuations = rng.integers(0, 64, (2, 8))
    longest = max(map(len, prompts))
    inputs = np.zeros((2, longest), np.int32)
    for row, prompt in enumerate(prompts):
        inputs[row, longest - len(prompt):] = prompt
    batch = {"inputs": jnp.asarray(inputs), "start": jnp.asarray([longest - len(p) for p in prompts]),
             "prefix_len": jnp.asarray([len(p) for p in prompts])}
    last, cache = _decode(model, params, None, batch)
    cached = [np.asarray(last)]
    for t in range(continuations.shape[1]):
        last, cache = _decode(model, params, cache, {**batch, "inputs": jnp.asarray(continuations[:, t:t + 1])})
        cached.append(np.asarray(last))
    cached = np.stack(cached, axis=1)  # (row, the prompt's last position and each continuation token, vocab)
    for row, prompt in enumerate(prompts):
        sequence = np.concatenate([prompt, continuations[row]])
        reference = full_logits(model, params, sequence, len(prompt))[len(prompt) - 1:]
        np.testing.assert_allclose(cached[row], reference, atol=1e-5)


def test_greedy_decoding_is_deterministic_and_follows_the_argmax():
    model, params = model_and_params({})
    prompts = [[3, 9, 27], [5]]
    first = generate(model, params, prompts, 10)
    assert first == generate(model, params, prompts, 10) and all(len(t) == 10 for t in first)
    for prompt, tokens in zip(prompts, first):  # each token is the argmax of the full forward pass
        sequence = np.zeros(len(prompt) + 10, np.int32)  # causal: the zeros after the tokens so far change nothing
        sequence[:len(prompt)] = prompt
        for at, token in enumerate(tokens, start=len(prompt)):
            assert token == int(np.argmax(full_logits(model, params, sequence, len(prompt))[at - 1]))
            sequence[at] = token


def test_a_seed_fixes_the_draws():
    model, params = model_and_params({})
    hot = Sampling(temperature=1.5)
    a, b, c = (generate(model, params, [[1, 2, 3]] * 3, 12, hot, seed=s) for s in (4, 4, 5))
    assert a == b and a != c


@pytest.mark.parametrize("seed", range(3))
def test_top_k_and_top_p_draw_only_inside_their_cut(seed):
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(0, 2, (4, 50)), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(seed), 400)
    probs = np.asarray(jax.nn.softmax(logits, -1))
    top5 = np.argsort(-probs, axis=-1)[:, :5]
    order = np.argsort(-probs, axis=-1)
    nucleus = [set(order[r, :np.searchsorted(np.cumsum(probs[r, order[r]]), 0.6) + 1]) for r in range(4)]
    drawn_k = np.stack([np.asarray(sample(logits, k, Sampling(1.0, top_k=5))) for k in keys])
    drawn_p = np.stack([np.asarray(sample(logits, k, Sampling(1.0, top_p=0.6))) for k in keys])
    for r in range(4):
        assert set(drawn_k[:, r]) <= set(top5[r]) and len(set(drawn_k[:, r])) > 1
        assert set(drawn_p[:, r]) <= nucleus[r]
    greedy = np.asarray(sample(logits, keys[0], Sampling()))
    assert (greedy == order[:, 0]).all()
    assert (np.asarray(sample(logits, keys[0], Sampling(1.0, top_k=1))) == greedy).all()


def test_stop_and_eos_end_a_row():
    model, params = model_and_params({})
    free = generate(model, params, [[7, 8]], 10)[0]
    stopped = generate(model, params, [[7, 8]], 10, stop=lambda row, tokens: len(tokens) == 3)[0]
    assert stopped == free[:3]
    assert generate(model, params, [[7, 8]], 10, eos_id=free[2])[0] == free[:free.index(free[2])]


def test_too_long_a_request_is_refused():
    model, params = model_and_params({})
    with pytest.raises(ValueError, match="max_len"):
        generate(model, params, [[1] * 20], 10)


def _generate_twice(workdir, prompts: list[str], new_tokens: int):
    """evaluation.generate's command line run twice on a trained run: (first, second) results."""
    import subprocess
    import sys

    from tests.conftest import REPO, main_env
    command = [sys.executable, "-m", "evaluation.generate", f"--workdir={workdir}",
               *[f"--prompt={p}" for p in prompts], f"--max_new_tokens={new_tokens}"]
    return [subprocess.run(command, cwd=REPO, env=main_env(), capture_output=True, text=True, timeout=300)
            for _ in range(2)]


@pytest.mark.slow  # two generate subprocesses; tests/test_tasks.py loads a trained run in-process
def test_the_command_line_samples_from_a_trained_run(tiny_corpus, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO, TINY_MODEL, main_env, run_main
    workdir = tmp_path / "run"
    assert run_main(workdir, tiny_corpus + TINY_MODEL + ["TrainConfig.train_steps = 3"]).returncode == 0
    first, second = _generate_twice(workdir, ["def ", "The module"], 5)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # greedy: the same samples every time
    assert first.stdout.count("(step 3) ---") == 2 and "tokens/s" in first.stderr
    missing = subprocess.run([sys.executable, "-m", "evaluation.generate", f"--workdir={tmp_path / 'none'}",
                              "--prompt=x"], cwd=REPO,
                             env=main_env(), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none'} holds no run (no config.gin)"]


# --- the encoder-decoder -----------------------------------------------------

ENCODER_DECODER = dict(BASE, architecture="encoder_decoder", n_encoder_layers=1)
ENCODER_DECODER_VARIANTS = {
    "rope": dict(),
    "scanned_t5_bias_gqa": dict(scan_layers=True, position="t5_bias", t5_bias_buckets=8, t5_bias_max_distance=16,
                                n_kv_heads=2),
    "learned_untied_post": dict(position="learned", tie_embeddings=False, norm_position="post"),
    "scanned_alibi_swiglu": dict(scan_layers=True, position="alibi", activation="swiglu"),
}
PROMPT_LENGTHS = (5, 11)  # one batch, its encoder inputs right-padded: every test compiles the same shapes


def encoder_decoder_and_params(options):
    model = build_model(TransformerConfig(**ENCODER_DECODER, **options))
    batch = {"encoder_inputs": jnp.zeros((1, 8), jnp.int32), "inputs": jnp.zeros((1, 8), jnp.int32)}
    return model, random_values(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))["params"]


def full_decoder_logits(model, params, prompt, decoder_tokens):
    """The training path: the prompt alone (no padding) as the encoder's input, all decoder tokens at once."""
    batch = {"encoder_inputs": jnp.asarray(prompt, jnp.int32)[None],
             "inputs": jnp.asarray(decoder_tokens, jnp.int32)[None]}
    return np.asarray(_apply(model, params, batch)[0])


def encoded_prompts(rng):
    """Random prompts and their first decoding call, whose padding holds random tokens (to be hidden)."""
    prompts = [rng.integers(0, 64, n) for n in PROMPT_LENGTHS]
    real = np.arange(max(PROMPT_LENGTHS))[None] < np.array(PROMPT_LENGTHS)[:, None]
    encoder_inputs = rng.integers(0, 64, real.shape).astype(np.int32)
    for row, prompt in enumerate(prompts):
        encoder_inputs[row, :len(prompt)] = prompt
    first = {"encoder_inputs": encoder_inputs, "encoder_mask": real,
             "inputs": np.full((len(prompts), 1), DECODER_START_ID, np.int32)}
    return prompts, first


@pytest.mark.parametrize("variant", [v if v in ("rope", "scanned_t5_bias_gqa") else
                                     pytest.param(v, marks=pytest.mark.slow) for v in ENCODER_DECODER_VARIANTS])
def test_encoder_decoder_cached_logits_equal_the_full_forward_pass_at_every_position(variant):
    model, params = encoder_decoder_and_params(ENCODER_DECODER_VARIANTS[variant])
    rng = np.random.default_rng(2)
    prompts, first = encoded_prompts(rng)
    decoder_tokens = np.concatenate([first["inputs"], rng.integers(0, 64, (len(prompts), 7), np.int32)], axis=1)
    last, cache = _decode(model, params, None, first)
    cached = [np.asarray(last)]
    for t in range(1, decoder_tokens.shape[1]):  # later calls: the next decoder token only
        last, cache = _decode(model, params, cache, {"inputs": jnp.asarray(decoder_tokens[:, t:t + 1])})
        cached.append(np.asarray(last))
    cached = np.stack(cached, axis=1)  # (row, decoder position, vocab)
    for row, prompt in enumerate(prompts):
        np.testing.assert_allclose(cached[row], full_decoder_logits(model, params, prompt, decoder_tokens[row]),
                                   atol=1e-5)


@pytest.mark.parametrize("variant", ["rope", "scanned_t5_bias_gqa"])
def test_encoder_decoder_computes_cross_attention_keys_and_values_once(variant):
    """After the first call, neither the encoder nor cross-attention's key and value projections are run:
    with those parameters NaN the later calls' logits are unchanged, while a first call turns NaN."""
    model, params = encoder_decoder_and_params(ENCODER_DECODER_VARIANTS[variant])
    prompts, first = encoded_prompts(np.random.default_rng(3))

    def poison(path, value):
        names = [getattr(key, "key", None) for key in path]
        encoding = "encoder" in names or "cross_attention" in names and ("key" in names or "value" in names)
        return value * np.nan if encoding else value
    poisoned = jax.tree_util.tree_map_with_path(poison, params)
    _, cache = _decode(model, params, None, first)
    step = {"inputs": jnp.asarray([[5], [42]], jnp.int32)}
    clean, dirty = (np.asarray(_decode(model, p, cache, step)[0]) for p in (params, poisoned))
    assert np.isfinite(clean).all()
    np.testing.assert_array_equal(dirty, clean)
    assert np.isnan(np.asarray(_decode(model, poisoned, None, first)[0])).all()


def test_encoder_decoder_greedy_decoding_is_deterministic_and_equals_a_brute_force_greedy_decode():
    model, params = encoder_decoder_and_params({})
    rng = np.random.default_rng(4)
    prompts = [list(rng.integers(0, 64, n)) for n in PROMPT_LENGTHS]
    first = generate(model, params, prompts, 7)
    assert first == generate(model, params, prompts, 7) and all(len(t) == 7 for t in first)
    for prompt, tokens in zip(prompts, first):  # rerun the whole model for every token
        decoded = np.zeros(8, np.int32)  # causal: the zeros after the tokens so far change nothing before them
        decoded[0] = DECODER_START_ID
        for t in range(7):
            decoded[t + 1] = np.argmax(full_decoder_logits(model, params, prompt, decoded)[t])
        assert tokens == list(decoded[1:])


def test_encoder_decoder_refuses_a_prompt_or_an_output_longer_than_max_len():
    model, params = encoder_decoder_and_params({})
    with pytest.raises(ValueError, match="max_len"):
        generate(model, params, [[1] * 25], 2)
    with pytest.raises(ValueError, match="max_len"):
        generate(model, params, [[1] * 20], 25)
    fits = prompt_batch(model.cfg, [[1] * 24, [2]], 24)  # max_len each: the decoder's slots 0 .. 23
    assert fits["encoder_inputs"].shape == (2, 24) and fits["encoder_mask"].sum() == 25


class Letters:
    """A stand-in tokenizer: ids 0 .. 25 are the letters a .. z."""
    vocab_size = 26

    def decode(self, ids):
        return "".join(chr(ord("a") + i) for i in ids)


def test_sentinels_are_written_as_t5_extra_ids():
    assert decode_text(Letters(), [27, 0, 1, 26, 26, 2]) == "<extra_id_1> ab <extra_id_0> <extra_id_0> c"
    assert decode_text(Letters(), [7, 8]) == "hi"


@pytest.mark.slow  # trains an encoder-decoder and samples from it in subprocesses
def test_the_command_line_samples_from_a_trained_encoder_decoder_run(tiny_corpus, tmp_path):
    from tests.conftest import SENTINELS, TINY_MODEL, run_main
    workdir = tmp_path / "run"
    bindings = TINY_MODEL + ["TransformerConfig.architecture = 'encoder_decoder'",
                             f"TransformerConfig.vocab_size = {512 + SENTINELS}", "TrainConfig.train_steps = 3"]
    result = run_main(workdir, tiny_corpus + bindings)
    assert result.returncode == 0, result.stderr
    first, second = _generate_twice(workdir, ["def f(x): return x", "The module"], 6)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # greedy: the same samples every time
    assert first.stdout.count("(step 3) ---") == 2 and "tokens/s" in first.stderr
