"""The training loop's hooks, timing, rows, spike check and preemption signal, without JAX.

Each is checked against a reference written out here: a brute-force list of the steps a hook
must fire at, a clock whose every reading the test sets, numpy's median."""
from __future__ import annotations

import math
import os
import random
import signal

import numpy as np
import pytest

from train.loop import Hooks, Preemption, Spike, SpikeGuard, StepTimer, train_rows


def drive(hooks: Hooks, start: int, end: int, total: int) -> None:
    for step in range(start + 1, end + 1):
        hooks.step(step)
    hooks.force(end, interrupted=end < total)


@pytest.mark.parametrize("seed", range(6))
def test_hooks_fire_every_n_steps_and_once_more_forced_at_the_end(seed):
    rng = random.Random(seed)
    total = rng.randint(1, 60)
    start, end = sorted(rng.sample(range(total + 1), 2)) if total > 1 else (0, total)
    every = {name: rng.choice([0, 1, 2, 3, 5, 7, 10, 100]) for name in ("log", "eval", "checkpoint")}
    fired = {name: [] for name in every}
    hooks = Hooks()
    for name in every:
        hooks.add(every[name], fired[name].append, at_interrupt=name != "eval")
    drive(hooks, start, end, total)
    interrupted = end < total
    for name, n in every.items():
        expected = [s for s in range(start + 1, end + 1) if n and s % n == 0]
        if (name != "eval" or not interrupted) and end not in expected:
            expected.append(end)
        assert fired[name] == expected, (name, n, start, end, total)


def test_hooks_fire_in_the_order_added_and_a_hook_that_raised_fires_again():
    calls, hooks = [], Hooks()
    attempts = {"n": 0}

    def flaky(step):
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("disk hiccup")
        calls.append(("flaky", step))
    hooks.add(2, lambda step: calls.append(("first", step)))
    hooks.add(2, flaky)
    with pytest.raises(RuntimeError):
        hooks.step(2)
    hooks.step(2)  # the first hook already fired at step 2; the one that raised had not
    assert calls == [("first", 2), ("flaky", 2)]


def test_rewind_lets_hooks_fire_again_on_the_steps_trained_again():
    fired, hooks = [], Hooks()
    hooks.add(5, fired.append)
    for step in range(1, 13):
        hooks.step(step)
    hooks.rewind(5)  # rolled back to the checkpoint at step 5
    for step in range(6, 13):
        hooks.step(step)
    hooks.force(12, interrupted=False)
    assert fired == [5, 10, 10, 12]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("seed", range(4))
def test_step_timer_leaves_out_the_first_step_and_the_pauses(seed):
    rng = np.random.default_rng(seed)
    clock = FakeClock()
    timer = StepTimer(clock)
    assert timer.close_window() == (None, None)  # nothing timed yet
    clock.now += 30.0  # the first step: compilation
    timer.begin()
    windows, steps_total, time_total = [], 0, 0.0
    for _ in range(5):
        steps = int(rng.integers(1, 9))
        step_s, waits = rng.uniform(0.1, 1.0, steps), rng.uniform(0.0, 0.05, steps)
        for step_time, wait in zip(step_s, waits):
            clock.now += step_time
            timer.step(wait)
            with timer.pause():  # an eval inside the window
                clock.now += float(rng.uniform(1, 100))
        windows.append((step_s.sum() / steps, waits.mean()))
        steps_total, time_total = steps_total + steps, time_total + step_s.sum()
        assert timer.close_window() == pytest.approx(windows[-1])
    assert timer.total_steps == steps_total
    assert timer.total_s == pytest.approx(time_total)


@pytest.mark.parametrize("seed", range(3))
def test_train_rows_number_every_step_and_carry_the_windows_timing(seed):
    rng = random.Random(seed)
    first, count, tokens_per_step = rng.randint(1, 1000), rng.randint(1, 20), rng.choice([256, 8192, 65536])
    step_time, flops, peak = rng.uniform(0.01, 2), rng.uniform(1e6, 1e9), rng.uniform(1e11, 1e15)
    window = [(first + i, {"loss": rng.random(), "lr": 1e-3}) for i in range(count)]
    rows = train_rows(window, tokens_per_step, step_time, 0.001, flops, peak)
    assert [row["step"] for row in rows] == list(range(first, first + count))
    for row, (step, metrics) in zip(rows, window):
        assert row["tokens"] == step * tokens_per_step
        assert row["loss"] == metrics["loss"]
        assert row["tokens_per_s"] == pytest.approx(tokens_per_step / step_time)
        assert row["mfu"] == pytest.approx(tokens_per_step / step_time * flops / peak)
    untimed = train_rows(window[:1], tokens_per_step, None, None, flops, peak)[0]
    assert untimed["tokens_per_s"] is None and untimed["mfu"] is None


@pytest.mark.parametrize("seed", range(5))
def test_spike_guard_against_a_running_median_computed_here(seed):
    rng = np.random.default_rng(seed)
    factor, window = float(rng.uniform(1.2, 3)), int(rng.integers(4, 40))
    losses = list(np.exp(-np.linspace(0, 1, 200)) * 5 + rng.normal(0, 0.05, 200))
    spike_at = int(rng.integers(window, 200))
    losses[spike_at] = factor * 1.01 * float(np.median(losses[spike_at - window:spike_at]))
    guard = SpikeGuard(factor, window)
    for i, loss in enumerate(losses[:spike_at]):
        guard.check(i, loss)
    with pytest.raises(Spike) as raised:
        guard.check(spike_at, losses[spike_at])
    assert raised.value.step == spike_at and "running median" in raised.value.reason


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_is_a_spike_even_with_the_ratio_check_off(bad):
    guard = SpikeGuard(0.0, 8)
    guard.check(1, 3.0)
    guard.check(2, 1e9)  # factor 0: finite losses all pass
    with pytest.raises(Spike):
        guard.check(3, bad)


def test_preemption_catches_sigterm_and_sigint_and_restores_the_handlers():
    before = {s: signal.getsignal(s) for s in Preemption.SIGNALS}
    with Preemption() as preemption:
        assert preemption.requested is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in Preemption.SIGNALS} == before
