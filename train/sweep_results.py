"""A sweep's bookkeeping: DIR/results.jsonl, and where each run stands.

A row is written once, when its run has finished: `run`, `model`, `config`
(the bindings that make it differ from the sweep's base), `budget` (IsoFLOP
sweeps), what the sweep's design records about the run (with Sweep.placement:
`wave` and `placement` = {expected_n_opt, ratio, source[, reason]}; the
verification run: `role` 'verification' and its `prediction`), every field of
the run's summary.json, and `unique_tokens` (the corpus' training tokens, for
fits that allow for repeated data).
"""
from __future__ import annotations

import json
import os


class Results:
    """DIR/results.jsonl: one row per finished run, written once."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "results.jsonl")
        self.rows = {}
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = f.readlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if number == len(lines) and not line.endswith("\n") and row is None:
                continue  # cut short by a kill: its run still has summary.json, and is recorded again
            if not isinstance(row, dict) or "run" not in row:
                raise ValueError(f"{self.path}:{number} is not a results row")
            self.rows[row["run"]] = row

    def check(self, runs: list) -> None:
        """A recorded run must be the run the sweep plans now: rows describe what was trained."""
        for run in runs:
            row = self.rows.get(run.name)
            if row is not None and row.get("config") != json.loads(json.dumps(run.config)):
                raise ValueError(f"{self.path} records run {run.name} with another config than the sweep gives it "
                                 f"now; use another --workdir")

    def record(self, run, summary: dict) -> None:
        row = {"run": run.name, "model": run.model, "config": run.config}
        if run.budget is not None:
            row["budget"] = run.budget
        row.update(run.record)
        row.update(summary)
        if "corpus_train_tokens" in summary:
            row["unique_tokens"] = summary["corpus_train_tokens"]
        _append_line(self.path, json.dumps(row, allow_nan=False))
        self.rows[run.name] = row


def _append_line(path: str, line: str) -> None:
    """Appends one whole line in a single write, first cutting off a last line that a kill left
    without its newline (its run is recorded again from its summary.json)."""
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(0)
            content = f.read()
            if not content.endswith(b"\n"):
                f.truncate(content.rfind(b"\n") + 1)
        os.write(f.fileno(), (line + "\n").encode())
        os.fsync(f.fileno())


def status(run, workdir: str, results: Results) -> str:
    """'recorded', 'finished' (summary.json, no row yet), 'started' (train.main resumes it) or 'new'."""
    run_dir = os.path.join(workdir, run.name)
    if run.name in results.rows:
        return "recorded"
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        return "finished"
    return "started" if os.path.exists(os.path.join(run_dir, "config.gin")) else "new"
