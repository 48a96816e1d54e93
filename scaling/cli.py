"""What the scaling commands (fit, predict, design, learning_rate, eval_precision) share, on top of the
command line every entry point shares (cli/).

Bad input is one line on stderr and exit status 2, never a traceback, and a
command that fails writes nothing: each raises InputError (or ValueError, which
the checked inputs raise) and `run` turns it into that line.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cli import ArgumentParser, InputError, whole_number  # noqa: F401  the scaling commands' parser and error
from cli import run as cli_run


def non_negative_int(text: str) -> int:
    """An argparse type: bootstrap counts and the like."""
    return whole_number(0)(text)


def add_min_budget(parser) -> None:
    """--min_budget, the fit's window (scaling.inputs.budget_window), for the commands that fit a sweep."""
    parser.add_argument("--min_budget", type=float, default=0.0, metavar="C",
                        help="fit only the runs of IsoFLOP budgets of at least C FLOPs (default: every budget)")


def windowed_results(args) -> list:
    """The rows of args.results within the window of args.min_budget."""
    from scaling.inputs import budget_window, load_results
    return budget_window(load_results(args.results), args.min_budget)


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
    """command(argv) -> exit status, with InputError and ValueError (the checked inputs raise it) as
    one line and status 2."""
    return cli_run(command, argv, errors=(ValueError,))
