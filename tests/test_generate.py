"""KV-cache decoding against the full forward pass, and the samplers against their definitions.

The reference for every cached logit is the model run on the whole sequence at once (the training
path): a prompt fed in one call, then one token per call, must give the logits of every position
within 1e-5 (f32), for each position scheme, the prefix LM, grouped-query attention and scanned
layers, and for rows left-padded to share a batch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evaluation.generate import Sampling, _decode, empty_cache, generate, sample
from model import build_model
from model.transformer import TransformerConfig

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


def full_logits(model, params, tokens, prefix_len):
    batch = {"inputs": jnp.asarray(tokens)[None], "prefix_len": jnp.asarray([prefix_len])}
    return np.asarray(model.apply({"params": params}, batch)[0])


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
    last, cache = _decode(model, params, empty_cache(model, 2), batch)
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
        sequence = list(prompt)
        for token in tokens:
            assert token == int(np.argmax(full_logits(model, params, sequence, len(prompt))[-1]))
            sequence.append(token)


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


@pytest.mark.slow  # two generate subprocesses; tests/test_tasks.py loads a trained run in-process
def test_the_command_line_samples_from_a_trained_run(tiny_corpus, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO, TINY_MODEL, main_env, run_main
    workdir = tmp_path / "run"
    assert run_main(workdir, tiny_corpus + TINY_MODEL + ["TrainConfig.train_steps = 3"]).returncode == 0
    command = [sys.executable, "-m", "evaluation.generate", f"--workdir={workdir}", "--prompt=def ",
               "--prompt=The module", "--max_new_tokens=5"]
    first, second = (subprocess.run(command, cwd=REPO, env=main_env(), capture_output=True, text=True, timeout=300)
                     for _ in range(2))
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # greedy: the same samples every time
    assert first.stdout.count("(step 3) ---") == 2 and "tokens/s" in first.stderr
    missing = subprocess.run([*command[:3], f"--workdir={tmp_path / 'none'}", "--prompt=x"], cwd=REPO,
                             env=main_env(), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none'} holds no run (no config.gin)"]
