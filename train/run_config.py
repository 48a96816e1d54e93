"""A workdir belongs to one configuration.

The first run writes its operative gin config to `config.gin`. A later run in
the same workdir resumes only if its own operative config is identical; with
another config it refuses, unless asked to start over, in which case the old
workdir is moved aside (never deleted) and a fresh one begins.
"""
from __future__ import annotations

import contextlib
import difflib
import fcntl
import json
import os
import time
from typing import Optional


class WorkdirConfigMismatch(Exception):
    """The workdir holds a run with another configuration."""


def _first_difference(old: str, new: str) -> str:
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
        if line[:1] in "+-" and not line.startswith(("+++", "---")):
            return line
    return "(differences in whitespace only)"


def _recorded_config(workdir: str) -> str | None:
    path = os.path.join(workdir, "config.gin")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read()


def check_workdir_config(workdir: str, config: str | None, start_over: bool) -> None:
    """Raises WorkdirConfigMismatch unless the workdir is new, empty, holds this config, or may be
    replaced (start_over). config None: only what needs no config (a directory without config.gin).
    Writes nothing: see claim_workdir."""
    previous = _recorded_config(workdir)
    if previous is not None:
        if config is None or previous == config:
            return
        if not start_over:
            raise WorkdirConfigMismatch(
                f"{workdir} holds a run with a different config (first difference: "
                f"{_first_difference(previous, config)!r}); use another --workdir, or --start_over to move "
                f"the old run aside")
    elif os.path.isdir(workdir) and os.listdir(workdir) and not start_over:
        raise WorkdirConfigMismatch(f"{workdir} is not empty and holds no config.gin; use another --workdir, "
                                    f"or --start_over to move its contents aside")


def claim_workdir(workdir: str, config: str) -> None:
    """After check_workdir_config passed and every other check too: moves a replaced run aside and
    records the config."""
    import jax
    path = os.path.join(workdir, "config.gin")
    if jax.process_index() != 0 or _recorded_config(workdir) == config:
        return
    if os.path.isdir(workdir) and os.listdir(workdir):
        aside = f"{workdir.rstrip(os.sep)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(workdir, aside)
        print(f"moved the previous contents of {workdir} to {aside}")
    os.makedirs(workdir, exist_ok=True)
    with open(f"{path}.tmp", "w") as f:  # renamed when whole: other processes of the run may read it
        f.write(config)
    os.replace(f"{path}.tmp", path)


def read_summary(workdir: str) -> Optional[dict]:
    path = os.path.join(workdir, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


class WorkdirBusy(Exception):
    """Another process is training in this workdir."""


@contextlib.contextmanager
def workdir_lock(workdir: str, wait_s: float = 60.0):
    """Holds workdir/.lock while the run trains: a second train.main on the same workdir (a sweep
    rerun while an orphaned run still checkpoints, say) waits up to wait_s for it, then refuses."""
    import jax
    if jax.process_index() != 0:
        yield
        return
    with open(os.path.join(workdir, ".lock"), "a+") as lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.seek(0)
                    raise WorkdirBusy(f"{workdir} is in use by another process (pid {lock.read().strip() or '?'})")
                time.sleep(0.5)
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield
