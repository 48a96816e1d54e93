"""A workdir belongs to one configuration.

The first run writes its operative gin config to `config.gin`. A later run in
the same workdir resumes only if its own operative config is identical; with
another config it refuses, unless asked to start over, in which case the old
workdir is moved aside (never deleted) and a fresh one begins.
"""
from __future__ import annotations

import difflib
import os
import time

import jax


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


def check_workdir_config(workdir: str, config: str, start_over: bool) -> None:
    """Raises WorkdirConfigMismatch unless the workdir is new, empty, holds this config, or may be
    replaced (start_over). Writes nothing: see claim_workdir."""
    previous = _recorded_config(workdir)
    if previous is not None:
        if previous == config:
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
    path = os.path.join(workdir, "config.gin")
    if jax.process_index() != 0 or _recorded_config(workdir) == config:
        return
    if os.path.isdir(workdir) and os.listdir(workdir):
        aside = f"{workdir.rstrip(os.sep)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(workdir, aside)
        print(f"moved the previous contents of {workdir} to {aside}")
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        f.write(config)
