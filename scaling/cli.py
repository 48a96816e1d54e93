"""What the scaling commands (fit, predict, learning_rate, eval_precision) share.

Bad input is one line on stderr and exit status 2, never a traceback, and a
command that fails writes nothing: each raises InputError (or ValueError, which
the checked inputs raise) and `run` turns it into that line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


class InputError(ValueError):
    """Bad input: reported as one line and exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises InputError instead of printing usage and exiting."""

    def error(self, message):
        raise InputError(message)


def non_negative_int(text: str) -> int:
    """An argparse type: bootstrap counts and the like."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def json_ready(value):
    """Non-finite floats as null: JSON has no NaN or infinity."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def write_json(path, value) -> None:
    try:
        Path(path).write_text(json.dumps(json_ready(value), indent=2) + "\n")
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror}") from None


def run(command, argv=None) -> int:
    """command(argv) -> exit status, with InputError and ValueError as one line and status 2."""
    try:
        return command(argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
