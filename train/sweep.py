"""Runs a sweep: python -m train.sweep --gin_file=S [--gin_bindings=B] --workdir=DIR [--workers=K] [--dry_run] [--slurm]

Every run is an ordinary `python -m train.main` in DIR/<run name>, its output
captured to DIR/<run name>/log.txt; each finished run adds one row to
DIR/results.jsonl (train/sweep_results.py). Rerunning the same command skips
recorded runs, records runs that finished without a row (e.g. on a cluster)
and resumes interrupted ones: train.main restarts them from their checkpoints.
--slurm writes DIR/commands.txt and the array job DIR/sweep.sbatch instead of
training; rerun without it once the jobs have ended to record their results.
Either way the corpora and tokenizers the runs need are built here first, once,
so that runs started together do not race to build them. The sweep's gin
format is in train/sweep_plan.py.

With Sweep.placement (train/sweep_design.py) the runs come in waves: each
budget's first sizes, then more where its IsoFLOP minimum is not bracketed,
each wave planned from the rows of the runs before it and every decision
printed. The runner trains wave after wave (`--workers` runs of a wave at a
time); with --slurm it writes the current wave's jobs, and rerunning the same
command once they have finished records their rows and writes the next wave.
With Sweep.verify_factor, once every budget is done, the fits' prediction at
verify_factor x the largest budget is written to DIR/prediction.json, and then
the predicted compute-optimal run is trained and set beside it. With several
factors the file holds a list, one prediction per budget; a factor added later
is predicted from the same budgets' runs (verification rows never enter the
fits), and the predictions already written stay as they are.

Command-line bindings of Sweep, Ladder, Placement, PowerLaw, SizeTable or MinSteps change the sweep; the
others go to every run, after the sweep's shared bindings and before what the
sweep varies. Bad input gives one line on stderr and exit status 2, with
nothing written; a failed run is reported with its log, the others go on, and
the sweep exits with status 1.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading

import cli
from scaling.inputs import mixed_data_warning
from train import sweep_design, sweep_plan
from train.sweep_design import compact
from train.loop import RUNNER_PID
from train.run_config import read_summary
from train.sweep_results import Results, status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREDICTION = "prediction.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m train.sweep", description=__doc__.splitlines()[0], gin="required")
    parser.add_argument("--workdir", type=cli.directory, required=True,
                        help="one sub-directory per run, and results.jsonl")
    parser.add_argument("--workers", type=cli.whole_number(1), default=1, help="runs trained at once")
    parser.add_argument("--dry_run", action="store_true", help="list the runs; train nothing")
    parser.add_argument("--slurm", action="store_true", help="write commands.txt and sweep.sbatch; train nothing")
    return parser.parse_args(argv)


def describe(plan, workdir: str, results: Results) -> None:
    total = sum(run.flops for run in plan.runs)
    print(f"{len(plan.runs)} runs from {' '.join(plan.base)} and {len(plan.bindings)} shared bindings, "
          f"{total:.3g} training FLOPs in all (Chinchilla accounting)")
    for line in decisions(plan):
        print(line)
    mixed = mixed_data_warning(results.rows.values())
    if mixed:
        print(f"warning: {mixed}")
    sources = {rule.binding: rule.source for rule in plan.rules if getattr(rule, "source", "")}

    def cited(binding: str) -> str:
        source = sources.get(binding.split(" = ", 1)[0])
        return f"{binding} ({source})" if source else binding
    width = max(len(run.name) for run in plan.runs)
    for run in plan.runs:
        print(f"{run.name:<{width}}  {status(run, workdir, results):<8}  N {run.params:>12,}  "
              f"D {run.tokens:>15,}  {'; '.join(map(cited, run.bindings))}")


def verification_runs(plan) -> dict:
    """{C: the verification run and its seeds' replicates} for each verification budget the plan has come to."""
    groups = {}
    for run in plan.runs:
        if run.record.get("role") == "verification":
            groups.setdefault(run.budget, []).append(run)
    return groups


def decisions(plan) -> list[str]:
    """What the sweep's design decided, budget by budget and wave by wave, and where it stands."""
    lines = [line for budget in plan.budgets for line in budget.lines]
    if plan.budgets and all(budget.done for budget in plan.budgets):
        open_budgets = [f"{b.label} ({b.state})" for b in plan.budgets if b.state != "bracketed"]
        lines.append(f"every budget is done; not bracketed: {', '.join(open_budgets)}" if open_budgets
                     else "every budget is done and bracketed")
    largest = max((b.budget for b in plan.budgets), default=None)
    for budget, runs in verification_runs(plan).items():
        seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        window = (runs[0].record.get("prediction") or {}).get("min_budget")
        fitted = f", fitted on the budgets from C={compact(window)}" if window else ""
        lines.append(f"verification run {runs[0].name}{seeds} at C={compact(budget)} = {budget / largest:g} x the "
                     f"largest budget: Approach 3's N_opt on the ladder (prediction in {PREDICTION}{fitted})")
        backtest = sweep_design.backtest_line(runs[0].record.get("prediction"))
        if backtest and backtest not in lines:  # the same fits' backtest, whichever budget they predict
            lines.append(backtest)
    return lines


def verification_report(plan, results: Results) -> list[str]:
    """Predicted against measured loss of each verification run (the mean of its seeds, ± its SE over them),
    once all have finished."""
    from scaling.compare import verifications
    lines = []
    for runs in verification_runs(plan).values():
        rows = [results.rows.get(run.name) for run in runs]
        if any(row is None or row.get("final_eval_loss") is None for row in rows):
            continue
        (entry,) = verifications(rows)
        run, se = runs[0], entry["seed_se"]
        losses = ", ".join(f"{row['final_eval_loss']:.4f}" for row in rows)
        seeds = f" ± {se:.4f} (the mean of {len(rows)} seeds: {losses}; ± its SE over them)" if se is not None else ""
        lines.append(f"verification {run.name}: N {run.params:,}, D {run.tokens:,}, measured eval loss "
                     f"{entry['measured']:.4f}{seeds}")
        for approach, law in entry["laws"].items():
            interval = law["interval"]
            within = f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
            name = "isoflop trend" if approach == "isoflop" else approach  # Approach 2: at its own N_opt
            spread = f" ± {se / law['predicted']:.2%}" if se is not None else ""
            lines.append(f"  {name} predicted {law['predicted']:.4f}{within}: "
                         f"relative error {law['error']:+.2%}{spread}")
    return lines


def read_predictions(workdir: str) -> dict:
    """{C: prediction} from DIR/prediction.json: one prediction, or a list of them."""
    path = os.path.join(workdir, PREDICTION)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        content = json.load(f)
    predictions = content if isinstance(content, list) else [content]
    if not all(isinstance(p, dict) and isinstance(p.get("budget"), (int, float)) for p in predictions):
        raise ValueError(f"{path} is not a prediction or a list of them (each with its budget)")
    return {float(p["budget"]): p for p in predictions}


def write_predictions(workdir: str, predictions: dict) -> None:
    """DIR/prediction.json: the one prediction, or the list of them in order of their budgets."""
    ordered = [predictions[budget] for budget in sorted(predictions)]
    with open(os.path.join(workdir, PREDICTION), "w") as f:
        json.dump(ordered[0] if len(ordered) == 1 else ordered, f, indent=1)


def replan(args, results: Results, write: bool):
    """The plan for the runs recorded so far. Once every budget is done, each verification run waits for its
    prediction: made here and, unless this is a dry run, written to DIR/prediction.json before anything trains."""
    predictions = read_predictions(args.workdir)
    plan = sweep_plan.plan_sweep(args.gin_file, args.gin_bindings, results.rows, predictions)
    results.check(plan.runs)
    if not plan.awaiting_prediction:
        return plan
    rows = [results.rows[run.name] for run in plan.runs]
    for budget in plan.awaiting_prediction:
        predictions[budget] = sweep_design.predict_verification(budget, rows, plan.accounting,
                                                                plan.verify_bootstrap, plan.place, plan.fit_min_budget)
    if write:
        write_predictions(args.workdir, predictions)
    plan = sweep_plan.plan_sweep(args.gin_file, args.gin_bindings, results.rows, predictions)
    results.check(plan.runs)
    return plan


def unfinished(plan, workdir: str, results: Results) -> list:
    return [run for run in plan.runs if status(run, workdir, results) in ("new", "started")]


def _shell_word(text: str) -> str:
    if re.fullmatch(r"[\w@%+=:,./-]+", text):
        return text
    return f'"{text}"' if not re.search(r'["$`\\!]', text) else shlex.quote(text)


def shell_line(args: list[str]) -> str:
    """A command line quoted as people write one: --gin_bindings="DataConfig.tfds_name = 'lm1b'"."""
    words = []
    for arg in args:
        option, equals, value = arg.partition("=")
        words.append(f"{option}={_shell_word(value)}" if arg.startswith("--") and equals else _shell_word(arg))
    return " ".join(words)


def train_command(plan, run, workdir: str, python: str) -> list[str]:
    """The run's ordinary train.main command line."""
    return [python, "-m", "train.main", *[f"--gin_file={f}" for f in plan.base],
            *[f"--gin_bindings={b}" for b in (*plan.bindings, *run.bindings)],
            f"--workdir={os.path.join(workdir, run.name)}", "--no_progress"]


def prepare_data(plan, runs: list, prepared: set) -> None:
    """Builds (or opens) every corpus and tokenizer the runs use that is not in `prepared` yet."""
    from data import loader
    for run in runs:
        data_cfg = sweep_plan.run_settings(plan.base, [*plan.bindings, *run.bindings]).data
        if data_cfg not in prepared:
            loader.load(data_cfg)
            prepared.add(data_cfg)


def train_run(command: list[str], run_dir: str) -> tuple[int, str]:
    """Runs one train.main to its end; returns its exit status and the path of its log.

    train.main refuses to start in a directory that holds files but no config.gin, so a new
    run's log stays beside its directory until train.main has written config.gin, then moves
    in (the open file follows the rename).
    """
    log_path, beside = os.path.join(run_dir, "log.txt"), f"{run_dir}.log.txt"

    def started() -> bool:
        return os.path.exists(os.path.join(run_dir, "config.gin"))

    path = log_path if started() else beside
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
           RUNNER_PID: str(os.getpid())}
    with open(path, "a") as log:
        # Its own session: a Ctrl-C at the terminal reaches the runner, which passes it on.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(process)
        try:
            return _wait(process, path, log_path, beside, started)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(process)


def _wait(process, path, log_path, beside, started) -> tuple[int, str]:
    while True:
        try:
            code = process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        if path == beside and started():
            os.rename(beside, log_path)
            path = log_path
        if code is not None:
            return code, path


# The runs under way. A runner that is asked to stop passes SIGTERM on to them: each finishes its
# step, checkpoints and exits. A runner that is killed outright cannot, so each run asks the kernel
# for SIGTERM when its runner dies (train.loop.stop_with_runner), and is not left training alone.
_LIVE: set = set()
_LIVE_LOCK = threading.Lock()


class _StopRequest:
    """SIGTERM or SIGINT to the runner: start no more runs, and pass SIGTERM on to those under way."""

    def __init__(self):
        self.requested = None

    def __call__(self, number, frame) -> None:
        self.requested = signal.Signals(number).name
        with _LIVE_LOCK:
            for process in _LIVE:
                process.send_signal(signal.SIGTERM)


def train_locally(plan, runs: list, workdir: str, workers: int, results: Results) -> list[str]:
    """Trains the runs, `workers` at a time, recording each as it finishes; returns the failures.

    The progress bar counts training FLOPs, so that its ETA allows for runs of very different sizes.
    """
    from tqdm import tqdm
    total = sum(run.flops for run in plan.runs)
    bar = tqdm(total=total, initial=total - sum(run.flops for run in runs), dynamic_ncols=True,
               bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]")
    failures = []

    def show_counts():
        failed = f", {len(failures)} failed" if failures else ""
        done = sum(run.name in results.rows for run in plan.runs)
        bar.set_description_str(f"{done}/{len(plan.runs)} runs done{failed}")

    show_counts()
    stop = _StopRequest()
    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(_train_unless_stopped, stop, train_command(plan, run, workdir, sys.executable),
                                   os.path.join(workdir, run.name)): run for run in runs}
            for future in concurrent.futures.as_completed(futures):
                run, (code, log) = futures[future], future.result()
                summary = read_summary(os.path.join(workdir, run.name))
                if code == 0 and summary is not None:
                    results.record(run, summary)
                    bar.update(run.flops)
                elif stop.requested is None or code not in (0, None):
                    failures.append(f"{run.name} (exit status {code}; log: {log})")
                    tqdm.write(f"run {failures[-1]}", file=sys.stderr)
                show_counts()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    bar.close()
    if stop.requested:
        raise Stopped(stop.requested)
    return failures


class Stopped(Exception):
    """The runner was asked to stop; the runs under way have checkpointed."""


def _train_unless_stopped(stop: _StopRequest, command: list[str], run_dir: str) -> tuple:
    return (None, "") if stop.requested else train_run(command, run_dir)


def write_slurm(plan, runs: list, workdir: str, job_name: str, collect_command: str, collect_does: str) -> None:
    """DIR/commands.txt (one train.main per line) and DIR/sweep.sbatch, an array job running them."""
    commands = [shell_line(train_command(plan, run, workdir, "python")) for run in runs]
    with open(os.path.join(workdir, "commands.txt"), "w") as f:
        f.write("".join(f"{command}\n" for command in commands))
    output = os.path.join(os.path.abspath(workdir), "slurm", "%A_%a.txt")
    os.makedirs(os.path.dirname(output), exist_ok=True)  # SLURM does not create it
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --array=0-{len(runs) - 1}",
             f"#SBATCH --output={output}", *[f"#SBATCH {directive}" for directive in plan.slurm_directives],
             "# One run per array task. Resubmitting resumes unfinished runs from their checkpoints.",
             f"# Once all have ended, {collect_does} with:",
             f"#   {collect_command}",
             f"cd {shlex.quote(os.getcwd())}",
             f"export PYTHONPATH={shlex.quote(REPO)}${{PYTHONPATH:+:$PYTHONPATH}}",
             'case "$SLURM_ARRAY_TASK_ID" in',
             *[f"  {i}) {command} ;;" for i, command in enumerate(commands)],
             "esac"]
    with open(os.path.join(workdir, "sweep.sbatch"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(runs)} commands to {workdir}/commands.txt and the array job {workdir}/sweep.sbatch")


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)  # tfds narrates opening a corpus at INFO/WARNING
    from data.corpus import CorpusError
    try:
        results = Results(args.workdir)
        plan = replan(args, results, write=not args.dry_run)
        if args.dry_run:
            describe(plan, args.workdir, results)
            return 0
        prepared = set()
        prepare_data(plan, unfinished(plan, args.workdir, results), prepared)  # bad corpora: before any writing
        return run_sweep(args, argv, results, plan, prepared)
    except FileNotFoundError as error:
        return cli.fail(str(error))
    except CorpusError as error:
        return cli.fail(f"corpus: {error}")
    except (ValueError, TypeError, SyntaxError, IOError) as error:
        return cli.fail(f"bad sweep: {error}")
    except sweep_design.PredictionError as error:
        print(f"cannot plan the verification run: {error}", file=sys.stderr)
        return 1
    except SweepBusy as error:
        return cli.fail(str(error))
    except Stopped as stopped:
        print(f"stopped by {stopped}: the runs under way have checkpointed; rerun the same command to resume",
              file=sys.stderr)
        return 0


def run_sweep(args, argv: list[str], results: Results, plan, prepared: set) -> int:
    """Records finished runs and trains (or, with --slurm, writes jobs for) the rest, wave after wave."""
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, ".lock"), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise SweepBusy(f"another train.sweep is running in {args.workdir} (pid {lock.read().strip() or '?'}); "
                            f"wait for it, or stop it first") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        return _run_waves(args, argv, results, plan, prepared)


class SweepBusy(Exception):
    """Another runner holds the sweep's workdir."""


def _run_waves(args, argv: list[str], results: Results, plan, prepared: set) -> int:
    shown = []

    def show(plan) -> None:
        for line in decisions(plan):
            if line not in shown:
                print(line)
                shown.append(line)

    while True:
        show(plan)
        finished = [run for run in plan.runs if status(run, args.workdir, results) == "finished"]
        for run in finished:  # e.g. on a cluster: they finished without the runner
            results.record(run, read_summary(os.path.join(args.workdir, run.name)))
        if finished:
            plan = replan(args, results, write=True)
            continue
        to_train = unfinished(plan, args.workdir, results)
        print(f"{len(plan.runs)} runs: {len(plan.runs) - len(to_train)} finished, {len(to_train)} to train")
        if args.slurm:
            if to_train:
                job_name = os.path.splitext(os.path.basename(args.gin_file[0]))[0]
                adaptive = bool(plan.budgets)
                collect = shell_line(["python", "-m", "train.sweep", *(a for a in argv if adaptive or a != "--slurm")])
                does = ("record their rows in results.jsonl and write the next wave" if adaptive
                        else "record their rows in results.jsonl")
                write_slurm(plan, to_train, args.workdir, job_name, collect, does)
                if adaptive:
                    print(f"once they have finished, rerun the same command: it will {does}")
            return 0
        if not to_train:
            for line in verification_report(plan, results):
                print(line)
            return 0
        prepare_data(plan, to_train, prepared)
        failures = train_locally(plan, to_train, args.workdir, args.workers, results)
        if failures:
            print(f"{len(failures)} of {len(plan.runs)} runs failed: {'; '.join(failures)}", file=sys.stderr)
            return 1
        plan = replan(args, results, write=True)


if __name__ == "__main__":
    sys.exit(main())
