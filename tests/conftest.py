"""Shared fixtures: a small real corpus built once per session, and a way to run train.main.

Tests train through `python -m train.main` in a subprocess, the path users
take, with XLA_FLAGS simulating as many CPU devices as a mesh needs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

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


def run_main(workdir, bindings: list[str], devices: int = 1, extra_args: list[str] = (),
             gin_file: str = "base.gin") -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "train.main", f"--gin_file={gin_file}", f"--workdir={workdir}", "--no_progress",
           *[f"--gin_bindings={b}" for b in bindings], *extra_args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def metrics_rows(workdir) -> list[dict]:
    with open(Path(workdir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def train_losses(workdir) -> list[float]:
    return [row["loss"] for row in metrics_rows(workdir) if "loss" in row]
