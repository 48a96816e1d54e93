"""Faults injected into real train.main and train.sweep processes: nothing is lost beyond the step
in flight, and a rerun of the same command finishes what an uninterrupted run would have.

The reference is the same run trained once without a fault, in this module: after a fault and a
rerun, every training row's loss must equal it bit for bit, each step logged exactly once.
Rows are logged every 10 steps and checkpoints taken every 5, so a checkpoint falls between logs.
"""
from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (REPO, SWEEP, TINY_MODEL, main_command, main_env, metrics_rows, rows, run_main,
                            sweep_args)

pytestmark = pytest.mark.slow

STEPS = 300
BETWEEN_LOGS = ["TrainConfig.log_every = 10", "TrainConfig.checkpoint_every = 5"]


def run_bindings(tiny_corpus, *extra) -> list[str]:
    return tiny_corpus + TINY_MODEL + BETWEEN_LOGS + [f"TrainConfig.train_steps = {STEPS}", *extra]


def train_rows(workdir) -> list[tuple[int, float]]:
    return [(row["step"], row["loss"]) for row in metrics_rows(workdir) if "loss" in row]


def latest_checkpoint(workdir) -> int:
    steps = [int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit()]
    return max(steps, default=0)


@pytest.fixture(scope="module")
def reference(tiny_corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference") / "run"
    start = time.monotonic()
    result = run_main(workdir, run_bindings(tiny_corpus))
    assert result.returncode == 0, result.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    return dict(rows=train_rows(workdir), eval_loss=summary["final_eval_loss"], wall=time.monotonic() - start)


def assert_finishes_as_the_reference(workdir, bindings, reference):
    result = run_main(workdir, bindings)
    assert result.returncode == 0, result.stderr
    assert train_rows(workdir) == reference["rows"]  # every step once, each loss bit for bit
    summary = json.loads((Path(workdir) / "summary.json").read_text())
    assert summary["final_eval_loss"] == reference["eval_loss"]
    assert summary["final_loss"] == reference["rows"][-1][1]
    return result


def start(workdir, bindings) -> subprocess.Popen:
    return subprocess.Popen(main_command(workdir, bindings), cwd=REPO, env=main_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("seed", range(3))
def test_sigterm_at_a_random_moment_checkpoints_and_the_rerun_loses_nothing(tiny_corpus, reference, tmp_path, seed):
    workdir, bindings = tmp_path / "run", run_bindings(tiny_corpus)
    process = start(workdir, bindings)
    time.sleep(random.Random(seed).uniform(0.5, 1.0) * reference["wall"])
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == -signal.SIGTERM:  # before training began, or after it had all been saved
        assert not (workdir / "metrics.jsonl").exists() or (workdir / "summary.json").exists()
    else:
        assert process.returncode == 0, stderr
        steps = [step for step, _ in train_rows(workdir)]
        if steps[-1] < STEPS:
            assert stderr.strip().splitlines()[-1].endswith("rerun the same command to resume")
            assert steps == list(range(1, latest_checkpoint(workdir) + 1))  # the pending rows were flushed
    assert_finishes_as_the_reference(workdir, bindings, reference)


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_at_a_random_moment_and_the_rerun_loses_nothing(tiny_corpus, reference, tmp_path, seed):
    workdir, bindings = tmp_path / "run", run_bindings(tiny_corpus)
    process = start(workdir, bindings)
    time.sleep(random.Random(100 + seed).uniform(0.4, 1.0) * reference["wall"])
    process.kill()
    process.communicate(timeout=60)
    if (workdir / "metrics.jsonl").exists():  # rows up to the last checkpoint at least survive
        assert [s for s, _ in train_rows(workdir)][:latest_checkpoint(workdir)] == \
            list(range(1, latest_checkpoint(workdir) + 1))
    assert_finishes_as_the_reference(workdir, bindings, reference)


def test_killed_after_the_last_checkpoint_the_rerun_writes_the_summary_a_full_run_would(
        tiny_corpus, reference, tmp_path):
    workdir, bindings = tmp_path / "run", run_bindings(tiny_corpus)
    assert run_main(workdir, bindings).returncode == 0
    finished = json.loads((workdir / "summary.json").read_text())
    (workdir / "summary.json").unlink()  # as if killed between the final checkpoint and the summary
    assert_finishes_as_the_reference(workdir, bindings, reference)
    again = json.loads((workdir / "summary.json").read_text())
    for key in ("final_loss", "final_eval_loss", "final_eval_bpb", "final_eval_loss_se", "steps", "tokens"):
        assert again[key] == finished[key]
    before = (workdir / "summary.json").read_bytes()
    rerun = run_main(workdir, bindings)  # a finished run: its summary stays as it is
    assert rerun.returncode == 0 and "holds a finished run" in rerun.stderr
    assert (workdir / "summary.json").read_bytes() == before


POISON = """
import sys
import numpy as np
from data.pipeline import PackedBatches
from train import main
drawn = {"n": 0}
original = PackedBatches.next_batch
def poisoned(self):
    batch = original(self)
    if len(self.streams) == 1:  # the eval set's reader
        return batch
    drawn["n"] += 1
    if drawn["n"] == %d:  # this batch's weights are NaN: its loss and gradients are NaN
        batch["weights"] = np.full_like(batch["weights"], np.nan)
    return batch
PackedBatches.next_batch = poisoned
sys.exit(main.main(sys.argv[1:]))
"""


def test_a_poisoned_batch_is_rolled_back_and_skipped(tiny_corpus, tmp_path):
    workdir, bindings, bad = tmp_path / "run", run_bindings(tiny_corpus), 23
    command = main_command(workdir, bindings)
    result = subprocess.run([sys.executable, "-c", POISON % bad, *command[3:]], cwd=REPO, env=main_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"loss nan at step {bad}: rolled back to step 20 and skipped 3 batches" in result.stderr
    events = [row for row in metrics_rows(workdir) if row.get("event") == "rollback"]
    assert [(e["step"], e["spike_step"], e["skipped_batches"]) for e in events] == [(20, bad, 3)]
    steps = [step for step, _ in train_rows(workdir)]
    assert steps == list(range(1, STEPS + 1))
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["rollbacks"] == 1 and summary["final_eval_loss"] < 6


def test_a_learning_rate_blow_up_stops_after_the_rollbacks_allowed_and_leaves_no_summary(tiny_corpus, tmp_path):
    workdir = tmp_path / "run"
    result = run_main(workdir, run_bindings(tiny_corpus, "lr_schedule.peak_lr = 1e4", "TrainConfig.max_rollbacks = 2"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "after 2 rollbacks" in errors[0] and "Traceback" not in result.stderr
    assert not (workdir / "summary.json").exists()
    assert sum(row.get("event") == "rollback" for row in metrics_rows(workdir)) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_broken_latest_checkpoint_falls_back_to_the_one_before(tiny_corpus, reference, tmp_path, damage):
    workdir, bindings = tmp_path / "run", run_bindings(tiny_corpus)
    assert run_main(workdir, bindings, extra_args=["--stop_after_steps=50"]).returncode == 0
    biggest = max((p for p in (workdir / "checkpoints" / "50").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    else:  # 4 KiB of garbage inside the file, its size unchanged
        middle = len(data) // 2
        data[middle:middle + 4096] = random.Random(0).randbytes(min(4096, len(data) - middle))
    biggest.write_bytes(bytes(data))
    result = assert_finishes_as_the_reference(workdir, bindings, reference)
    assert "warning: checkpoint at step 50 is broken" in result.stderr
    assert (workdir / "checkpoints.broken" / "50").is_dir()  # kept, not deleted


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_stops_with_one_line_and_the_run_resumes_once_space_is_back(tiny_corpus, reference, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        workdir, bindings = disk / "run", run_bindings(tiny_corpus)
        full = run_main(workdir, bindings)
        assert full.returncode == 1, full.stderr
        assert full.stderr.strip().splitlines()[-1].startswith("error: no space left on device")
        assert "Traceback" not in full.stderr
        assert latest_checkpoint(workdir) > 0  # the last complete checkpoint is kept
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert_finishes_as_the_reference(workdir, bindings, reference)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# Sweep runners: the tests' tiny sweep, at budgets that train each run for a few hundred steps.
LONGER_SWEEP = ["Sweep.flops = (2e9, 4e9)", "TrainConfig.log_every = 10", "TrainConfig.checkpoint_every = 5"]


def start_sweep(workdir, tiny_corpus) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "train.sweep", *sweep_args(workdir, tiny_corpus + LONGER_SWEEP)],
                            cwd=REPO, env=main_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_training(workdir, timeout=300) -> Path:
    """The run directory whose metrics.jsonl has its first rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for metrics in Path(workdir).glob("*/metrics.jsonl"):
            if metrics.stat().st_size:
                return metrics.parent
        time.sleep(0.2)
    raise AssertionError("no run started training")


def wait_until_unlocked(run_dir, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    with open(run_dir / ".lock") as lock:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.2)
    raise AssertionError(f"{run_dir} is still locked: its run outlived the runner")


def assert_sweep_complete(workdir, plan) -> None:
    recorded = rows(workdir)
    assert sorted(row["run"] for row in recorded) == sorted(run.name for run in plan.runs)
    assert all(row["final_eval_loss"] is not None for row in recorded)
    for run in plan.runs:
        steps = [step for step, _ in train_rows(Path(workdir) / run.name)]
        assert steps == list(range(1, len(steps) + 1))  # no row lost, none twice


@pytest.fixture(scope="module")
def longer_plan(tiny_corpus):
    import gin
    from train import sweep_plan
    plan = sweep_plan.plan_sweep([SWEEP], tiny_corpus + LONGER_SWEEP)
    gin.clear_config()
    return plan


def test_a_second_runner_refuses_and_a_killed_runner_leaves_no_run_training(tiny_corpus, longer_plan, tmp_path):
    workdir = tmp_path / "sweep"
    first = start_sweep(workdir, tiny_corpus)
    run_dir = wait_for_training(workdir)
    second = subprocess.run([sys.executable, "-m", "train.sweep", *sweep_args(workdir, tiny_corpus + LONGER_SWEEP)],
                            cwd=REPO, env=main_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [line for line in second.stderr.strip().splitlines()
                                                  if line.startswith("error: another train.sweep is running")]
    first.kill()
    first.communicate(timeout=60)
    wait_until_unlocked(run_dir)  # its run got SIGTERM from the kernel, checkpointed and stopped
    steps = [step for step, _ in train_rows(run_dir)]
    assert steps == list(range(1, latest_checkpoint(run_dir) + 1)) or (run_dir / "summary.json").exists()
    rerun = subprocess.run([sys.executable, "-m", "train.sweep", *sweep_args(workdir, tiny_corpus + LONGER_SWEEP)],
                           cwd=REPO, env=main_env(), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    assert_sweep_complete(workdir, longer_plan)


def test_sigterm_to_the_runner_is_passed_on_and_a_torn_results_line_is_mended(tiny_corpus, longer_plan, tmp_path):
    workdir = tmp_path / "sweep"
    runner = start_sweep(workdir, tiny_corpus)
    run_dir = wait_for_training(workdir)
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 0, stderr
    assert stderr.strip().splitlines()[-1].startswith("stopped by SIGTERM")
    assert not (run_dir / "summary.json").exists()
    assert [s for s, _ in train_rows(run_dir)] == list(range(1, latest_checkpoint(run_dir) + 1))
    results = workdir / "results.jsonl"
    with open(results, "a") as f:  # a row cut short by a kill during its write
        f.write('{"run": "half a ro')
    rerun = subprocess.run([sys.executable, "-m", "train.sweep", *sweep_args(workdir, tiny_corpus + LONGER_SWEEP)],
                           cwd=REPO, env=main_env(), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    assert_sweep_complete(workdir, longer_plan)


def test_a_second_train_main_on_the_same_workdir_waits_and_keeps_the_finished_run(tiny_corpus, reference, tmp_path):
    workdir, bindings = tmp_path / "run", run_bindings(tiny_corpus)
    first = start(workdir, bindings)
    while not (workdir / ".lock").exists() or not (workdir / ".lock").read_text():
        time.sleep(0.2)
    second = start(workdir, bindings)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    finished = (workdir / "summary.json").read_bytes()
    _, second_err = second.communicate(timeout=300)
    assert second.returncode == 0, second_err
    assert "holds a finished run" in second_err  # it waited for the lock, then found the run done
    assert (workdir / "summary.json").read_bytes() == finished
    assert train_rows(workdir) == reference["rows"]
