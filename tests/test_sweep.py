"""The sweep runner: the tiny IsoFLOP sweep end to end, its bookkeeping, resuming, bad input, SLURM output.

The sweep runs in this process (its runs are train.main subprocesses, as always);
one run is interrupted beforehand and one made to fail, so that a single pass
checks resuming, failure reporting and that the others go on.
"""
import json
import os
import shlex
import subprocess
import sys

import gin
import numpy as np
import pytest

from data.loader import DataConfig
# The sweep itself runs once per session, in the `swept` fixture of conftest.py.
from tests.conftest import REPO, SWEEP, metrics_lines, rows, run_sweep, sweep_args
from train import main as train_main
from train import sweep_plan
from train.sweep_rules import MinSteps, PowerLaw, RunSize


def test_a_failed_run_is_reported_and_the_others_go_on(swept, plan):
    first, broken = swept["first"], swept["broken"]
    assert first.returncode == 1, first.stderr
    assert f"{broken.name} (exit status 2; log: {swept['workdir'] / broken.name}.log.txt)" in first.stderr
    assert sorted(row["run"] for row in swept["rows_after_first"]) == sorted(
        run.name for run in plan.runs if run is not broken)


def test_every_run_has_one_row_with_its_config_and_summary(swept, plan):
    assert swept["second"].returncode == 0, swept["second"].stderr
    by_run = {row["run"]: row for row in rows(swept["workdir"])}
    assert len(by_run) == len(rows(swept["workdir"])) == len(plan.runs)
    for run in plan.runs:
        row, run_dir = by_run[run.name], swept["workdir"] / run.name
        summary = json.loads((run_dir / "summary.json").read_text())
        assert {key: row[key] for key in summary} == summary
        assert row["config"] == json.loads(json.dumps(run.config))
        assert row["config"]["TransformerConfig.d_model"] in (16, 32)  # the model file's bindings, spelled out
        assert row["budget"] == run.budget
        assert row["unique_tokens"] == summary["corpus_train_tokens"]
        assert (run_dir / "log.txt").exists()


def test_rerunning_trains_and_records_nothing_again(swept, plan):
    third, workdir = swept["third"], swept["workdir"]
    assert third.returncode == 0, third.stderr
    assert f"{len(plan.runs)} runs: {len(plan.runs)} finished, 0 to train" in third.stdout
    assert len(rows(workdir)) == len(plan.runs)
    assert swept["summaries"] == {run.name: os.stat(workdir / run.name / "summary.json").st_mtime_ns
                                  for run in plan.runs}
    kept = {row["run"]: row["wall_s"] for row in swept["rows_after_first"]}
    assert {row["run"]: row["wall_s"] for row in rows(workdir) if row["run"] in kept} == kept


def test_an_interrupted_run_resumes_from_its_checkpoint(swept):
    run_dir = swept["workdir"] / swept["interrupted"].name
    after = metrics_lines(run_dir)
    # The rows up to the checkpoint, timings included, are the interrupted run's own: nothing was redone.
    assert after[:len(swept["before_resume"])] == swept["before_resume"]
    steps = json.loads((run_dir / "summary.json").read_text())["steps"]
    assert [json.loads(line)["step"] for line in after if "loss" in json.loads(line)] == list(range(1, steps + 1))


def test_isoflop_runs_train_for_c_over_6n_tokens(swept):
    tokens_per_step = 8 * 32  # the tiny sweep's batch_size x seq_len
    for row in rows(swept["workdir"]):
        exact = row["budget"] / (6 * row["params_total"])  # the tiny sweep counts all parameters
        assert 0 <= row["tokens"] - exact < tokens_per_step, row["run"]
        assert row["config"]["TrainConfig.train_tokens"] == round(exact)


def test_kaplan_accounting_counts_non_embedding_parameters(tiny_corpus):
    plan = sweep_plan.plan_sweep([SWEEP], [*tiny_corpus, "Sweep.accounting = 'kaplan'"])
    gin.clear_config()
    for run in plan.runs:
        settings = sweep_plan.run_settings(plan.base, [*plan.bindings, *run.bindings])
        counts = sweep_plan.count_params(settings.model)
        assert run.params == counts["params_nonembedding"] < counts["params_total"]
        assert 0 <= run.tokens - run.budget / (6 * run.params) < settings.tokens_per_step
    gin.clear_config()


def test_rules_set_per_size_hyperparameters(plan):
    for run in plan.runs:
        assert run.config["lr_schedule.peak_lr"] == pytest.approx(1e-2 * (run.params / 1e4) ** -0.5, rel=1e-2)
        assert run.config["lr_schedule.warmup_steps"] == {"d16": 1, "d32": 2}[run.model]


@pytest.mark.parametrize("grid", [False, True])
def test_the_plan_cites_a_rule_only_where_it_set_the_value(tiny_corpus, grid, capsys, tmp_path):
    """A grid over a rule's binding overrides the rule on every run: the printed plan must not say the
    grid's rates came from the rule's source."""
    from train.sweep import describe
    from train.sweep_results import Results
    bindings = [*tiny_corpus, "lr/PowerLaw.source = 'the fitted law'"]
    if grid:
        bindings.append("Sweep.grid = {'lr_schedule.peak_lr': (0.003, 0.03)}")
    plan = sweep_plan.plan_sweep([SWEEP], bindings)
    gin.clear_config()
    describe(plan, str(tmp_path), Results(str(tmp_path)))
    lines = [line for line in capsys.readouterr().out.splitlines() if "lr_schedule.peak_lr" in line]
    assert len(lines) == len(plan.runs) == (8 if grid else 4)
    assert all(("(the fitted law)" in line) != grid for line in lines)
    if grid:
        assert {run.config["lr_schedule.peak_lr"] for run in plan.runs} == {0.003, 0.03}


def test_min_steps_halves_the_batch_of_short_runs_and_keeps_their_tokens_and_eval_rows(tiny_corpus):
    # The tiny sweep's runs take 2 to 6 steps of 8 rows; at least 4 steps, and rows kept at 2 or more.
    plan = sweep_plan.plan_sweep([SWEEP], [*tiny_corpus, "Sweep.rules = [@MinSteps()]", "MinSteps.min_steps = 4",
                                           "MinSteps.min_batch = 2"])
    gin.clear_config()
    halved = 0
    for run in plan.runs:
        tokens = run.config["TrainConfig.train_tokens"]
        fitting = [b for b in (8, 4, 2) if tokens >= 4 * b * 32]
        batch = fitting[0] if fitting else 2
        if batch == 8:  # steps enough: the run is the sweep's run, with no binding added
            assert "DataConfig.batch_size" not in run.config, run.name
        else:
            halved += 1
            assert run.config["DataConfig.batch_size"] == batch and run.config["DataConfig.eval_batch_size"] == 8
        assert 0 <= run.tokens - tokens < batch * 32
    assert 0 < halved < len(plan.runs)  # the design has runs on both sides of 4 steps of 8 rows


@pytest.mark.parametrize("seed", range(3))
def test_min_steps_takes_the_largest_halving_that_gives_enough_steps(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        batch_size = int(rng.choice([1, 3, 8, 12, 32, 48, 64]))
        data = DataConfig(batch_size=batch_size, seq_len=int(rng.choice([16, 128, 512])),
                          eval_batch_size=int(rng.choice([0, 64])))
        rule = MinSteps(min_steps=int(rng.integers(1, 2000)), min_batch=int(rng.integers(1, batch_size + 1)))
        run = RunSize("m", 1000, int(rng.integers(1, 10**7)), data)
        halvings = [batch_size]
        while halvings[-1] % 2 == 0 and halvings[-1] // 2 >= rule.min_batch:
            halvings.append(halvings[-1] // 2)
        enough = [b for b in halvings if run.tokens / (b * data.seq_len) >= rule.min_steps]
        batch = enough[0] if enough else halvings[-1]
        expected = {} if batch == batch_size else {"DataConfig.batch_size": batch,
                                                   "DataConfig.eval_batch_size": data.eval_batch_size or batch_size}
        assert rule(run) == expected


@pytest.mark.parametrize("seed", range(3))
def test_power_law_in_size_and_tokens_matches_the_formula(seed):
    rng = np.random.default_rng(seed)
    value, n0, d0 = 10 ** rng.uniform(-3, -1), 10 ** rng.uniform(4, 7), 10 ** rng.uniform(6, 9)
    alpha, beta = rng.uniform(-1, 0.3, 2)
    rule = PowerLaw("lr_schedule.peak_lr", value, n0, alpha, token_exponent=beta, reference_tokens=d0)
    for params, tokens in zip(10 ** rng.uniform(4, 7, 20), 10 ** rng.uniform(6, 9, 20)):
        got = rule(RunSize("m", int(params), int(tokens), DataConfig()))["lr_schedule.peak_lr"]
        expected = value * (int(params) / n0) ** alpha * (int(tokens) / d0) ** beta
        assert got == pytest.approx(expected, rel=5e-3)  # three significant digits
    # Below min_params every size gets the law's value at min_params; above, the law.
    floor = 10 ** rng.uniform(4.5, 6)
    clamped = PowerLaw("lr_schedule.peak_lr", value, n0, alpha, min_params=floor)
    for params in 10 ** rng.uniform(4, 7, 20):
        got = clamped(RunSize("m", int(params), None, DataConfig()))["lr_schedule.peak_lr"]
        assert got == pytest.approx(value * (max(int(params), floor) / n0) ** alpha, rel=5e-3)
    # Without a token exponent the run's length does not matter, and need not be known.
    plain = PowerLaw("lr_schedule.peak_lr", value, n0, alpha)
    assert plain(RunSize("m", 5000, None, DataConfig())) == plain(RunSize("m", 5000, 10**8, DataConfig()))


def test_power_law_in_tokens_refuses_runs_counted_in_steps_and_a_missing_reference():
    rule = PowerLaw("lr_schedule.peak_lr", 1e-2, 1e5, -0.5, token_exponent=-0.3, reference_tokens=1e7)
    with pytest.raises(ValueError, match="count its runs in tokens"):
        rule(RunSize("m", 1000, None, DataConfig()))
    with pytest.raises(ValueError, match="positive reference_tokens"):
        PowerLaw("lr_schedule.peak_lr", 1e-2, 1e5, -0.5, token_exponent=-0.3)


def test_min_steps_refuses_runs_counted_in_steps_and_bad_settings():
    with pytest.raises(ValueError, match="count its runs in tokens"):
        MinSteps(min_steps=10)(RunSize("m", 1000, None, DataConfig()))
    for bad in ({"min_steps": 0}, {"min_steps": 10, "min_batch": 0}):
        with pytest.raises(ValueError, match="MinSteps needs"):
            MinSteps(**bad)


def test_dry_run_lists_runs_and_trains_nothing(tiny_corpus, plan, tmp_path):
    workdir = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "train.sweep", *sweep_args(workdir, tiny_corpus, "--dry_run")],
                            cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    for run in plan.runs:
        line = next(line for line in result.stdout.splitlines() if line.startswith(run.name + " "))
        assert f"N {run.params:,}" in " ".join(line.split()) and f"D {run.tokens:,}" in " ".join(line.split())
        assert "lr_schedule.peak_lr" in line
    assert not workdir.exists()


def test_slurm_writes_one_ordinary_train_main_command_per_run(tiny_corpus, plan, tmp_path):
    result = run_sweep(*sweep_args(tmp_path, tiny_corpus, "--slurm"))
    assert result.returncode == 0, result.stderr
    script = (tmp_path / "sweep.sbatch").read_text()
    assert f"#SBATCH --array=0-{len(plan.runs) - 1}" in script
    commands = (tmp_path / "commands.txt").read_text().splitlines()
    assert len(commands) == len(plan.runs)
    for run, command in zip(plan.runs, commands):
        assert command in script
        words = shlex.split(command)
        assert words[:3] == ["python", "-m", "train.main"]
        args = train_main.parse_args(words[3:])
        assert args.workdir == str(tmp_path / run.name)
        assert args.gin_bindings[-len(run.bindings):] == run.bindings
    assert not any((tmp_path / run.name).exists() for run in plan.runs)  # nothing trained


@pytest.mark.parametrize("gin_file, args, words", [
    ("sweeps/no_such_sweep.gin", [], ["no_such_sweep.gin"]),
    (SWEEP, ["--gin_bindings=TransformerConfig.no_such_option = 3"], ["no_such_option"]),
    (SWEEP, ["--gin_bindings=Sweep.no_such_field = 3"], ["no_such_field"]),
    (SWEEP, ["--gin_bindings=TransformerConfig.activation = 'tanh'"], ["activation", "tanh"]),
    (SWEEP, ["--gin_bindings=Sweep.models = ('d16', 'no_such_size')"], ["no_such_size"]),
    (SWEEP, ["--gin_bindings=Sweep.accounting = 'bytes'"], ["accounting", "bytes"]),
    (SWEEP, ["--gin_bindings=Sweep.flops = ()"], ["no runs"]),
    (SWEEP, ["--gin_bindings=Sweep.flops = (1e3,)"], ["model 'd16'", "C = 1e+03", "fewer than one"]),
    (SWEEP, ["--gin_bindings=Sweep.grid = {'TrainConfig.seed': []}"], ["no runs"]),
    (SWEEP, ["--gin_bindings=Sweep.tokens_per_param = (1e9, 1e10)"], ["tokens_per_param"]),
    (SWEEP, ["--gin_bindings=Sweep.sizes = (2e4,)"], ["Sweep.models", "Sweep.sizes", "are set"]),
    (SWEEP, ["--gin_bindings=Sweep.models = ()"], ["Sweep.models", "Sweep.sizes", "no runs"]),
    (SWEEP, ["--gin_bindings=Sweep.train_tokens_per_param = 20.0"], ["flops", "train_tokens_per_param"]),
    (SWEEP, ["--gin_bindings=Ladder.aspect_ratio = 0"], ["Ladder.aspect_ratio"]),
    (SWEEP, ["--workers=0"], ["--workers"]),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(tiny_corpus, tmp_path, gin_file, args, words):
    earlier = json.dumps({"run": "an_earlier_run", "config": {}}) + "\n"
    (tmp_path / "results.jsonl").write_text(earlier)
    result = run_sweep(*sweep_args(tmp_path, tiny_corpus, *args, gin_file=gin_file))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert os.listdir(tmp_path) == ["results.jsonl"] and (tmp_path / "results.jsonl").read_text() == earlier


def test_a_recorded_run_with_another_config_is_refused(tiny_corpus, plan, tmp_path):
    stale = json.dumps({"run": plan.runs[0].name, "config": {"lr_schedule.peak_lr": 1.0}}) + "\n"
    (tmp_path / "results.jsonl").write_text(stale)
    result = run_sweep(*sweep_args(tmp_path, tiny_corpus))
    assert result.returncode == 2 and "another config" in result.stderr, result.stderr
    assert (tmp_path / "results.jsonl").read_text() == stale


def shipped_sweeps() -> list:
    """Every sweep in configs/sweeps; planning the GPU-sized ones traces models of up to 16 layers: slow."""
    names = sorted(p.name for p in (REPO / "configs" / "sweeps").glob("*.gin") if not p.name.endswith("_runs.gin"))
    return [name if name.startswith("tiny") or "_cpu" in name else pytest.param(name, marks=pytest.mark.slow)
            for name in names]


@pytest.mark.parametrize("name", shipped_sweeps())
def test_shipped_sweeps_plan(name):
    """Every shipped sweep expands to valid runs; IsoFLOP runs get D = C / (6 N) to within a step."""
    plan = sweep_plan.plan_sweep([f"sweeps/{name}"], [])
    gin.clear_config()
    assert len({run.name for run in plan.runs}) == len(plan.runs) >= 2
    for run in (run for run in plan.runs if run.budget is not None):
        step = sweep_plan.run_settings(plan.base, [*plan.bindings, *run.bindings]).tokens_per_step
        assert 0 <= run.tokens - run.budget / (6 * run.params) < step, run.name
    gin.clear_config()
