"""The parts of the training loop that do not touch JAX: hooks, step timing, metrics rows, loss
spikes and the preemption signal. trainer.py puts them around the jitted step.

As in Levanter's trainer, a run is a stream of steps (trainer's `_Run.steps` yields each finished
step) and everything else is a hook: metrics rows every log_every steps, eval every eval_every,
checkpoints every checkpoint_every, and all of them once more, forced, when the run ends. When it
is interrupted (SIGTERM, SIGINT, --stop_after_steps) only the hooks that keep its work fire:
the rows pending and a checkpoint.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import os
import signal
import statistics
import threading
import time
from collections import deque
from typing import Callable, Optional


@dataclasses.dataclass
class _Hook:
    every: int  # 0: only when forced
    fire: Callable[[int], None]
    at_interrupt: bool
    fired_at: int = -1


class Hooks:
    """Callbacks on the step number. A hook fires at most once per step, in the order added."""

    def __init__(self):
        self._hooks: list[_Hook] = []

    def add(self, every: int, fire: Callable[[int], None], at_interrupt: bool = True) -> None:
        """at_interrupt: also forced when the run stops before its end (else only at the end)."""
        self._hooks.append(_Hook(every, fire, at_interrupt))

    def step(self, step: int) -> None:
        for hook in self._hooks:
            if hook.every and step % hook.every == 0:
                self._fire(hook, step)

    def force(self, step: int, interrupted: bool) -> None:
        for hook in self._hooks:
            if hook.at_interrupt or not interrupted:
                self._fire(hook, step)

    def rewind(self, step: int) -> None:
        """After a rollback to `step`: the steps after it will be trained, and hooked, again."""
        for hook in self._hooks:
            hook.fired_at = min(hook.fired_at, step)

    @staticmethod
    def _fire(hook: _Hook, step: int) -> None:
        if hook.fired_at != step:
            hook.fire(step)
            hook.fired_at = step  # only once it has fired: a hook that raised fires again


class StepTimer:
    """Seconds per step over each logging window, leaving out the run's first step (it compiles)
    and pauses (eval, checkpoints, rollbacks); the totals give the run's training throughput."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.total_s, self.total_steps = 0.0, 0
        self._start: Optional[float] = None
        self._steps, self._wait_s = 0, 0.0

    @property
    def started(self) -> bool:
        return self._start is not None

    def begin(self) -> None:
        """The first step has finished: timing starts now."""
        self._start, self._steps, self._wait_s = self.clock(), 0, 0.0

    def step(self, data_wait_s: float) -> None:
        if self._start is not None:
            self._steps += 1
            self._wait_s += data_wait_s

    @contextlib.contextmanager
    def pause(self):
        paused = self.clock()
        try:
            yield
        finally:
            if self._start is not None:
                self._start += self.clock() - paused

    def close_window(self) -> tuple[Optional[float], Optional[float]]:
        """(seconds per step, data wait per step) since the last window closed; None before any
        timed step. Call it once the window's steps have finished on the device."""
        if self._start is None or not self._steps:
            return None, None
        elapsed = self.clock() - self._start
        self.total_s += elapsed
        self.total_steps += self._steps
        window = elapsed / self._steps, self._wait_s / self._steps
        self.begin()
        return window


def train_rows(steps_and_metrics: list[tuple[int, dict]], tokens_per_step: int, step_time: Optional[float],
               data_wait: Optional[float], flops_per_token: float, peak_flops: float) -> list[dict]:
    """metrics.jsonl rows for a logging window: every step its own row, the window's timing on each."""
    tokens_per_s = tokens_per_step / step_time if step_time else None
    rows = []
    for step, metrics in steps_and_metrics:
        row = {"step": step, "tokens": step * tokens_per_step, **metrics, "step_time_s": step_time,
               "tokens_per_s": tokens_per_s, "mfu": tokens_per_s and tokens_per_s * flops_per_token / peak_flops,
               "data_wait_s": data_wait}
        rows.append(row)
    return rows


class Spike(Exception):
    """A training loss that the run should not carry on from."""

    def __init__(self, step: int, loss: float, reason: str):
        super().__init__(f"{reason} at step {step}")
        self.step, self.loss, self.reason = step, loss, reason


class SpikeGuard:
    """A spike is a non-finite loss, or one above `factor` x the median of the last `window`
    accepted losses (judged from the third loss on; factor 0: non-finite losses only). Early in a
    run the loss falls fast, so a rise by the factor is never noise there either."""

    MIN_HISTORY = 2

    def __init__(self, factor: float, window: int):
        self.factor = factor
        self.recent: deque = deque(maxlen=max(window, 1))

    def check(self, step: int, loss: float) -> None:
        """Raises Spike, or accepts the loss into the running window."""
        if not math.isfinite(loss):
            raise Spike(step, loss, f"loss {loss}")
        if self.factor and len(self.recent) >= min(self.MIN_HISTORY, self.recent.maxlen):
            median = statistics.median(self.recent)
            if loss > self.factor * median:
                raise Spike(step, loss, f"loss {loss:.4g} above {self.factor:g} x the running median {median:.4g}")
        self.recent.append(loss)


class Preemption:
    """Within it, SIGTERM or SIGINT asks the run to stop once its step has finished (`requested`
    names the signal); a second SIGINT interrupts at once. Spot and preemptible machines send
    SIGTERM before they go. Outside the main thread signals cannot be caught, and nothing changes."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested: Optional[str] = None
        self._previous = {}

    def _handle(self, number, frame) -> None:
        if self.requested is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(number).name

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


RUNNER_PID = "TRAIN_SWEEP_RUNNER_PID"  # set by train.sweep for its runs


def stop_with_runner() -> None:
    """In a sweep's run: SIGTERM from the kernel when the runner dies (Linux's PR_SET_PDEATHSIG), so
    that a killed runner's runs checkpoint and exit instead of training on unwatched."""
    runner = os.environ.get(RUNNER_PID)
    if not runner:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the run trains on to its end
        return
    if os.getppid() != int(runner):  # the runner died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)
