"""Shared fixtures: a small real corpus built once per session, a way to run train.main,
and the tiny IsoFLOP sweep run once per session (its checks in test_sweep.py; the
notebooks are executed on its results in test_notebooks.py).

Tests train through `python -m train.main` in a subprocess, the path users
take, with XLA_FLAGS simulating as many CPU devices as a mesh needs.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The tests compile the same tiny models over and over, in this process and in train.main
# subprocesses (which inherit the environment): a persistent compilation cache, empty at the
# start of every session so that no test leans on an earlier one, halves a run's start-up.
# Set before any test module imports jax, which reads these once.
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="jax_compilation_cache_")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _COMPILATION_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Compiling, not running, is most of what these tiny models cost, and XLA's optimization passes are
# most of the compiling. The suite turns them off (jax's flag for programs that cost more to optimize
# than to run: backend optimization level 0, no expensive LLVM passes), which took a quarter off its
# time on two cores. The tests pass either way; JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs them on the
# optimized programs users get.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# The CPU's peak FLOP/s for MFU, measured once per session (not taken from a user's cache).
os.environ.setdefault("SCALINGLM_PEAK_CACHE", os.path.join(_COMPILATION_CACHE, "peak_flops.json"))

# A corpus of real text small enough to build in seconds: part of the Python docs
# (python_stdlib stands in where python3.x-doc is not installed) and a 512-piece BPE.
TINY_MODEL = [
    "TransformerConfig.vocab_size = 512", "DataConfig.vocab_size = 512",
    "TransformerConfig.d_model = 32", "TransformerConfig.n_layers = 2", "TransformerConfig.n_heads = 4",
    "TransformerConfig.d_ff = 64", "TransformerConfig.max_len = 32", "DataConfig.seq_len = 32",
    "DataConfig.batch_size = 8", "DataConfig.eval_batches = 2", "TrainConfig.log_every = 1",
    "lr_schedule.warmup_steps = 2", "lr_schedule.peak_lr = 1e-2",
]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> list[str]:
    """gin bindings that point a run at a small real corpus built once for the whole session."""
    from data import sources
    data_dir = tmp_path_factory.mktemp("data")
    source = "python_docs" if sources.available(["python_docs"])[0] else "python_stdlib"
    bindings = [f"DataConfig.data_dir = '{data_dir}'", f"build_corpus.sources = ('{source}',)",
                "build_corpus.max_bytes_per_source = 400000", "build_corpus.validation_percent = 10.0"]
    result = run_main(data_dir / "warmup", bindings + TINY_MODEL + ["TrainConfig.train_steps = 1"])
    assert result.returncode == 0, result.stderr
    return bindings


def main_env(devices: int = 1) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))


def main_command(workdir, bindings: list[str], extra_args: list[str] = (), gin_file: str = "base.gin") -> list[str]:
    return [sys.executable, "-m", "train.main", f"--gin_file={gin_file}", f"--workdir={workdir}", "--no_progress",
            *[f"--gin_bindings={b}" for b in bindings], *extra_args]


def run_main(workdir, bindings: list[str], devices: int = 1, extra_args: list[str] = (),
             gin_file: str = "base.gin") -> subprocess.CompletedProcess:
    return subprocess.run(main_command(workdir, bindings, extra_args, gin_file), cwd=REPO, env=main_env(devices),
                          capture_output=True, text=True, timeout=600)


def metrics_rows(workdir) -> list[dict]:
    with open(Path(workdir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def train_losses(workdir) -> list[float]:
    return [row["loss"] for row in metrics_rows(workdir) if "loss" in row]


# The tests' sweep: two tiny models at two compute budgets.
SWEEP = "sweeps/tiny.gin"


def sweep_args(workdir, bindings, *extra, gin_file=SWEEP) -> list[str]:
    return [f"--gin_file={gin_file}", f"--workdir={workdir}", *[f"--gin_bindings={b}" for b in bindings], *extra]


def run_sweep(*args) -> subprocess.CompletedProcess:
    """train.sweep's main in this process (its runs are train.main subprocesses, as always)."""
    import gin
    from train import sweep
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = sweep.main(list(args))
        except SystemExit as exit:  # command-line errors leave through argparse
            code = exit.code
    gin.clear_config()
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def rows(workdir) -> list[dict]:
    with open(Path(workdir) / "results.jsonl") as f:
        return [json.loads(line) for line in f]


def metrics_lines(run_dir) -> list[str]:
    with open(Path(run_dir) / "metrics.jsonl") as f:
        return f.readlines()


@pytest.fixture(scope="session")
def plan(tiny_corpus):
    import gin
    from train import sweep_plan
    plan = sweep_plan.plan_sweep([SWEEP], tiny_corpus)
    gin.clear_config()
    return plan


@pytest.fixture(scope="session")
def swept(tiny_corpus, plan, tmp_path_factory):
    """The sweep's workdir after three passes: with one run interrupted and one broken beforehand,
    again once the broken run is mended, and once more with nothing left to do. After the second
    pass it is an ordinary finished sweep: every run's directory and one results row per run."""
    from train import sweep
    workdir = tmp_path_factory.mktemp("sweep")
    interrupted, broken = plan.runs[1], plan.runs[2]
    command = sweep.train_command(plan, interrupted, str(workdir), sys.executable)
    subprocess.run([*command, "--stop_after_steps=2"], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                   check=True, capture_output=True)
    before_resume = metrics_lines(workdir / interrupted.name)
    (workdir / broken.name).mkdir()
    (workdir / broken.name / "stray.txt").write_text("train.main refuses a workdir that holds files but no config.gin")
    first = run_sweep(*sweep_args(workdir, tiny_corpus, "--workers=2"))
    rows_after_first = rows(workdir)
    (workdir / broken.name / "stray.txt").unlink()
    second = run_sweep(*sweep_args(workdir, tiny_corpus))
    summaries = {run.name: os.stat(workdir / run.name / "summary.json").st_mtime_ns for run in plan.runs}
    third = run_sweep(*sweep_args(workdir, tiny_corpus))
    return dict(workdir=workdir, interrupted=interrupted, broken=broken, before_resume=before_resume,
                first=first, rows_after_first=rows_after_first, second=second, third=third, summaries=summaries)


@pytest.fixture(scope="session")
def stdlib_text(tmp_path_factory):
    """A 384-piece tokenizer and 40 documents of real Python source, for tests that train in-process."""
    from data import sources
    from data.tokenizer import train_tokenizer
    docs = [d for _, d in zip(range(40), sources.iter_documents("python_stdlib"))]
    tokenizer = train_tokenizer((d["text"] for d in docs), str(tmp_path_factory.mktemp("tok") / "spm.model"),
                                vocab_size=384)
    return tokenizer, docs


SENTINELS = 16  # an encoder-decoder's ids past the tokenizer's: span corruption's sentinels


def train_in_process(text, steps: int, optimizer: str = "adamw", accum: int = 1, z_loss: float = 0.0,
                     poisoned_steps: tuple = (), **model_options):
    """`steps` steps of the trainer's own train_step on 4 fixed batches (8 rows of 32 tokens) of `text`,
    with the objective train.main would give the model; returns the losses, the initial parameters and
    the last step's metrics (and its state, as `metrics["state"]`). poisoned_steps: steps (from 0) whose
    batch has NaN weights, so NaN loss and gradients. One layer unless told otherwise: compiling is
    most of what these tests spend."""
    import dataclasses
    from functools import partial

    import jax
    import jax.numpy as jnp
    import numpy as np

    from data.loader import DataConfig
    from data.pipeline import PackedBatches
    from model import build_model
    from model.transformer import TransformerConfig
    from train.optimizer import lr_schedule, make_optimizer
    from train.trainer import create_state, objective_options, train_step
    tokenizer, docs = text
    cfg = TransformerConfig(**{**dict(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=4, d_ff=64,
                                      max_len=32), **model_options})
    if cfg.architecture == "encoder_decoder":
        cfg = dataclasses.replace(cfg, vocab_size=tokenizer.vocab_size + SENTINELS)
    stream = PackedBatches(docs, tokenizer, 32, 8, **objective_options(cfg, DataConfig(), tokenizer.vocab_size))
    data = [stream.next_batch() for _ in range(4)]
    model = build_model(cfg)
    schedule = lr_schedule(steps, peak_lr=1e-2, warmup_steps=2)
    tx = make_optimizer(schedule, name=optimizer)
    example = {k: jnp.asarray(v[:1]) for k, v in data[0].items()}
    state = jax.jit(partial(create_state, model=model, optimizer=tx, example_batch=example, unbox=True))(
        jax.random.PRNGKey(0))
    initial_params = state.params
    step = jax.jit(partial(train_step, model=model, optimizer=tx, schedule=schedule, z_loss=z_loss,
                           accum_steps=accum))
    losses = []
    for i in range(steps):
        batch = data[i % len(data)]
        if i in poisoned_steps:
            batch = {**batch, "weights": np.full_like(batch["weights"], np.nan)}
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses, initial_params, {**metrics, "state": state}
