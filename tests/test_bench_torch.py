"""train/bench_torch.py, the PyTorch reference of train.bench --torch, against the flax model and optax.

The flax Transformer, trainer.loss_sums and trainer.train_step with make_optimizer's AdamW are the
references: on random small configs, random parameters and random batches, the torch model must give
the same logits and loss, and the torch AdamW loop the same parameters after a few steps. Those tests
need PyTorch, an optional extra, and are in the slow suite; the one-line error without it is not.
"""
from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import numpy as np
import pytest

from tests.conftest import REPO, TINY_MODEL, main_env

# Option combinations of the configs the quickstart and CPU sweeps use, and the other ones implemented.
OPTIONS = [
    dict(position="rope", norm="rmsnorm", activation="gelu"),
    dict(position="learned", norm="layernorm", activation="swiglu", tie_embeddings=False),
    dict(position="rope", norm="rmsnorm", activation="swiglu", gqa=True),
    dict(position="sinusoidal", norm="layernorm", activation="geglu", gqa=True, use_bias=True, scan_layers=True),
    dict(position="learned", norm="rmsnorm", activation="relu", gqa=True, tie_embeddings=False),
]


def random_config(rng: np.random.Generator, gqa: bool = False, **options):
    from model.transformer import TransformerConfig
    n_heads = int(rng.choice([2, 3, 4, 6]))
    kv_heads = int(rng.choice([d for d in range(1, n_heads) if n_heads % d == 0])) if gqa else None
    head_dim = int(rng.choice([4, 6, 8]))  # even, for rope
    return TransformerConfig(vocab_size=int(rng.integers(40, 300)), d_model=n_heads * head_dim,
                             n_layers=int(rng.integers(1, 4)), n_heads=n_heads, n_kv_heads=kv_heads,
                             d_ff=int(rng.integers(8, 100)), max_len=24, **options)


def random_params(cfg, rng: np.random.Generator) -> dict:
    """model.init's parameters, every leaf then moved at random so that norm scales are not all 1 and
    biases not all 0 (a parameter loaded into the wrong place would then go unnoticed)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from model import build_model
    init = jax.jit(build_model(cfg).init)
    params = nn.unbox(init(jax.random.PRNGKey(int(rng.integers(1 << 31))), {"inputs": jnp.zeros((1, 4), jnp.int32)}))
    return jax.tree.map(lambda x: np.asarray(x) + 0.1 * rng.standard_normal(x.shape, np.float32), params["params"])


def random_batch(rng: np.random.Generator, cfg, rows: int, length: int) -> dict:
    """Random tokens and weights, some of them 0 (as padding would be)."""
    return {"inputs": rng.integers(0, cfg.vocab_size, (rows, length)).astype(np.int32),
            "targets": rng.integers(0, cfg.vocab_size, (rows, length)).astype(np.int32),
            "weights": (rng.random((rows, length)) < 0.8).astype(np.float32)}


def torch_model(cfg, params):
    from train import bench_torch
    model = bench_torch.Transformer(cfg)
    bench_torch.load_flax_params(model, params)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(len(OPTIONS) * 2))
def test_torch_model_gives_the_flax_logits_and_loss(seed):
    torch = pytest.importorskip("torch")
    import jax

    from model import build_model
    from train import bench_torch, trainer
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, **OPTIONS[seed % len(OPTIONS)])
    params = random_params(cfg, rng)
    batch = random_batch(rng, cfg, rows=int(rng.integers(1, 4)), length=int(rng.integers(2, cfg.max_len + 1)))
    z_loss = float(rng.choice([0.0, 1e-2]))
    flax_model = build_model(cfg)
    expected_logits = np.asarray(jax.jit(flax_model.apply)({"params": params}, {"inputs": batch["inputs"]}))
    flax_loss_sums = jax.jit(partial(trainer.loss_sums, rng=None, model=flax_model, z_loss=z_loss, train=False))
    total, (nll_sum, weight, _) = flax_loss_sums(params, batch)

    model, tensors = torch_model(cfg, params), bench_torch.torch_batch(batch)
    with torch.no_grad():
        logits = model(tensors["inputs"]).numpy()
        torch_total, torch_nll_sum, torch_weight = bench_torch.loss_sums(model, **tensors, z_loss=z_loss)
    np.testing.assert_allclose(logits, expected_logits, rtol=0, atol=1e-4)
    assert float(torch_weight) == float(weight)
    np.testing.assert_allclose(float(torch_total) / float(torch_weight), float(total) / float(weight), rtol=1e-5)
    np.testing.assert_allclose(float(torch_nll_sum), float(nll_sum), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_torch_adamw_steps_give_the_optax_parameters(seed):
    """A few steps of trainer.train_step with make_optimizer's AdamW (warm-up then cosine schedule,
    weight decay on matrices only, clipping small enough to act, micro-batches) against bench_torch's loop."""
    pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    from model import build_model
    from train import bench_torch, trainer
    from train.optimizer import lr_schedule, make_optimizer
    rng = np.random.default_rng(100 + seed)
    cfg = random_config(rng, **OPTIONS[seed % len(OPTIONS)])
    steps, accum, rows = 3, int(rng.choice([1, 2])), 4
    settings = dict(b1=float(rng.uniform(0.8, 0.95)), b2=float(rng.uniform(0.9, 0.999)),
                    eps=float(10.0 ** rng.uniform(-8, -3)), weight_decay=float(rng.uniform(0.0, 0.3)),
                    clip_norm=float(rng.choice([0.0, rng.uniform(0.05, 0.5)])))
    schedule = lr_schedule(steps + 1, peak_lr=float(rng.uniform(1e-3, 1e-2)), warmup_steps=1)
    z_loss = float(rng.choice([0.0, 1e-3]))
    batches = [random_batch(rng, cfg, rows, 16) for _ in range(steps)]
    params = random_params(cfg, rng)

    model, optimizer = build_model(cfg), make_optimizer(schedule, **settings)
    state = trainer.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                               rng=jax.random.PRNGKey(0))
    step = jax.jit(partial(trainer.train_step, model=model, optimizer=optimizer, schedule=schedule, z_loss=z_loss,
                           accum_steps=accum))
    torch_net = torch_model(cfg, params)
    adamw = bench_torch.make_adamw(torch_net, params, schedule, steps, **settings)
    for batch in batches:
        state, metrics = step(state, batch)
        loss = bench_torch.train_step(bench_torch.loss_sums, torch_net, adamw, bench_torch.torch_batch(batch),
                                      accum, z_loss)
        np.testing.assert_allclose(float(loss), float(metrics["loss"]), rtol=1e-5)

    expected, start = dict(torch_model(cfg, state.params).named_parameters()), dict(torch_model(cfg, params)
                                                                                     .named_parameters())
    moved = 0.0
    for name, value in torch_net.named_parameters():
        np.testing.assert_allclose(value.detach().numpy(), expected[name].detach().numpy(), rtol=0, atol=1e-5,
                                   err_msg=name)
        moved = max(moved, float((value - start[name]).abs().max().detach()))
    assert moved > 1e-3  # the steps changed the parameters by far more than the tolerance


@pytest.mark.slow
@pytest.mark.parametrize("option", [dict(position="alibi"), dict(position="t5_bias"), dict(norm_position="post"),
                                    dict(moe_every=1), dict(dtype="bfloat16"), dict(dropout=0.1),
                                    dict(architecture="encoder_decoder"), dict(attention_mask="prefix")])
def test_options_the_reference_does_not_implement_are_refused(option):
    pytest.importorskip("torch")
    from model.transformer import TransformerConfig
    from train import bench_torch
    name = next(iter(option))
    with pytest.raises(ValueError, match=f"PyTorch reference implements.*{name}"):
        bench_torch.Transformer(TransformerConfig(d_model=32, n_heads=4, **option))


@pytest.mark.slow
def test_adamw_settings_are_make_optimizers_as_gin_binds_them():
    pytest.importorskip("torch")
    import gin

    from train import bench_torch
    try:
        gin.parse_config(["make_optimizer.b1 = 0.8", "make_optimizer.clip_norm = 0.5"])
        # train/optimizer.py's defaults for the rest
        assert bench_torch.adamw_settings() == dict(b1=0.8, b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=0.5)
        gin.parse_config(["make_optimizer.name = 'adafactor'"])
        with pytest.raises(ValueError, match="make_optimizer.name = 'adamw' only"):
            bench_torch.adamw_settings()
    finally:
        gin.clear_config()


def bench(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.bench", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)


def test_torch_flag_without_pytorch_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "torch.py").write_text("raise ImportError('No module named torch (simulated)')\n")
    result = bench("--gin_file=quickstart.gin", "--steps=2", "--torch",
                   env=dict(main_env(), PYTHONPATH=f"{tmp_path}:{REPO}"))
    assert result.returncode == 2
    assert result.stderr == "error: --torch needs PyTorch: pip install torch==2.13.0\n"
    assert result.stdout == ""


@pytest.mark.slow
def test_bench_with_torch_reports_both_and_their_ratios(tiny_corpus):
    pytest.importorskip("torch")
    bindings = [f"--gin_bindings={b}" for b in tiny_corpus + TINY_MODEL + ["TrainConfig.grad_accum_steps = 2"]]
    result = bench("--gin_file=base.gin", "--steps=2", "--torch", *bindings, env=main_env())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    jax_step, jax_loop = report["step"]["tokens_per_s"], report["loop"]["tokens_per_s"]
    ours = report["torch"]
    compiled, eager = ours["compile"]["tokens_per_s"], ours["eager"]["tokens_per_s"]
    assert compiled > 0 and eager > 0
    assert ours["jax_loop_over_torch_compile"] == pytest.approx(jax_loop / compiled)
    assert ours["jax_step_over_torch_compile"] == pytest.approx(jax_step / compiled)
    assert ours["jax_step_over_torch_eager"] == pytest.approx(jax_step / eager)
    assert ours["compile"]["mfu"] == pytest.approx(report["step"]["mfu"] * compiled / jax_step)


@pytest.mark.slow
def test_bench_with_torch_refuses_a_model_it_does_not_implement_in_one_line(tiny_corpus):
    pytest.importorskip("torch")
    bindings = [f"--gin_bindings={b}" for b in tiny_corpus + TINY_MODEL + ["TransformerConfig.position = 'alibi'"]]
    result = bench("--gin_file=base.gin", "--steps=2", "--torch", *bindings, env=main_env())
    assert result.returncode == 2
    assert result.stderr.startswith("error: --torch: the PyTorch reference implements")
    assert result.stderr.count("\n") == 1
