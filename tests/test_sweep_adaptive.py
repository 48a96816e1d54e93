"""Adaptive IsoFLOP sweeps (train/sweep_design.py): sizes placed per budget, bracketing waves, verification.

The decisions are a function of the sweep's config and its finished runs' rows, so most checks feed
synthetic rows (losses from a parabola in log N with a known minimum) to the planner or to the runner
with its training replaced; one sweep trains for real, end to end.
"""
import json
import math
import os
from types import SimpleNamespace

import gin
import numpy as np
import pytest

from tests.conftest import rows, run_sweep, sweep_args
from train import sweep, sweep_design, sweep_plan
from train.sweep_design import Placement

ADAPTIVE = "sweeps/tiny_adaptive.gin"
# Where the ladder's shapes lie close together (a 512-piece vocabulary): 5 sizes from N_opt / 4 to 4 N_opt
# around a prior of 1e5 parameters at the first budget, 5e7 FLOPs.
WIDE = ["Placement.sizes_per_budget = 5", "Placement.span = 4.0", "Placement.max_waves = 3",
        f"Placement.prior_coefficient = {1e5 / math.sqrt(5e7)}", "Sweep.verify_factor = 0"]


def parabola(budget: float, params: float, n_star: float) -> float:
    return 4.0 + 0.05 * math.log(params / n_star) ** 2 - 0.01 * math.log(budget)


def summary(run, n_star) -> dict:
    """What a finished run's summary.json would say, with its loss from the parabola."""
    return {"params_total": run.params, "params_active": run.params, "tokens": run.tokens,
            "final_eval_loss": parabola(run.budget, run.params, n_star(run.budget))}


def settle(bindings: list[str], n_star, gin_file: str = ADAPTIVE) -> tuple:
    """Plans, finishes every new run with its parabola loss, and plans again until nothing new comes."""
    finished = {}
    while True:
        plan = sweep_plan.plan_sweep([gin_file], bindings, finished)
        gin.clear_config()
        new = [run for run in plan.runs if run.name not in finished]
        if not new:
            return plan, finished
        for run in new:
            finished[run.name] = {"run": run.name, **run.record, **summary(run, n_star)}


def waves(budget) -> list[list[int]]:
    return [[run.params for run in wave] for wave in budget.waves]


def test_first_sizes_are_log_spaced_around_the_expected_n_opt_within_the_span():
    placement = Placement(sizes_per_budget=5, span=4.0)
    assert np.allclose(placement.first_targets(1e5), [2.5e4, 5e4, 1e5, 2e5, 4e5])
    assert placement.step == pytest.approx(2.0)
    plan = sweep_plan.plan_sweep([ADAPTIVE], WIDE)
    gin.clear_config()
    first, = plan.budgets[0].waves
    ratios = [run.record["placement"]["ratio"] for run in first]
    assert len(first) == 5 and ratios == sorted(ratios)
    assert 1 / 4 / 1.15 <= ratios[0] and ratios[-1] <= 4 * 1.15  # each snapped to within 15% of its target
    assert all(run.record["wave"] == 0 and run.budget == 5e7 for run in first)
    assert plan.budgets[1].state == "waiting" and not plan.budgets[1].runs  # it waits for the first budget


def test_the_printed_plan_names_the_source_and_the_ratios(tmp_path):
    result = run_sweep(*sweep_args(tmp_path / "sweep", [], "--dry_run", gin_file=ADAPTIVE))
    assert result.returncode == 0, result.stderr
    assert "C=5e7: expected N_opt 2.12e4 from the prior 3 C^0.5; wave 0: d16l1 0.53x, d24l1 0.91x, d32l2 1.9x" \
        in result.stdout
    assert "C=1e8: waits until every smaller budget is done" in result.stdout
    assert not (tmp_path / "sweep").exists()


def test_a_minimum_above_the_sizes_adds_larger_ones_until_bracketed():
    plan, _ = settle(WIDE, lambda budget: 5e5 * (budget / 5e7) ** 0.5)
    first, second = plan.budgets
    assert first.state == "bracketed" and len(first.waves) == 2
    assert min(waves(first)[1]) > max(waves(first)[0])  # added above, beyond the largest size
    assert len(waves(first)[1]) == 2  # the lowest loss was at the largest size: two more
    assert first.profile.n_opt == pytest.approx(5e5, rel=1e-6)
    assert "wave 1 adds" in first.lines[1] and "the minimum is at or beyond the edge: 2 above" in first.lines[1]
    assert first.lines[2].startswith("C=5e7 wave 1: bracketed: N_opt 5e5")
    # The next budget centres on that minimum with the prior's exponent, and is bracketed at once.
    assert second.expected_n_opt == pytest.approx(5e5 * 2 ** 0.5, rel=1e-6)
    assert second.source == "minimum of C=5e7 with the prior's exponent 0.5"
    assert second.state == "bracketed" and len(second.waves) == 1
    assert all(run.record["placement"]["reason"] for run in first.waves[1])


def test_a_minimum_below_the_sizes_adds_smaller_ones():
    plan, _ = settle(WIDE, lambda budget: 1.2e4)
    first = plan.budgets[0]
    assert len(first.waves) >= 2 and max(waves(first)[1]) < min(waves(first)[0])


def test_two_bracketed_minima_give_a_power_law_for_the_next_budget():
    law = lambda budget: 2e5 * (budget / 5e7) ** 0.7  # noqa: E731
    plan, _ = settle([*WIDE, "Sweep.flops = (5e7, 1e8, 2e8)"], law)
    third = plan.budgets[2]
    assert third.source == "power law through the minima of C=5e7, 1e8 (exponent 0.700)"
    assert third.expected_n_opt == pytest.approx(law(2e8), rel=1e-3)


def test_a_budget_stops_at_max_waves_and_is_reported_unbracketed():
    plan, _ = settle(WIDE, lambda budget: 1e9)
    first, second = plan.budgets
    assert first.state == "out of waves" and len(first.waves) == 3
    assert all(min(later) > max(earlier) for earlier, later in zip(waves(first), waves(first)[1:]))
    assert first.lines[-1].endswith("out of waves (3): left unbracketed")
    assert second.source.startswith("prior")  # no bracketed minimum to centre on
    assert "not bracketed: C=5e7 (out of waves), C=1e8 (out of waves)" in sweep.decisions(plan)[-1]


def test_the_same_rows_give_the_same_decisions_in_any_order():
    plan, finished = settle(WIDE, lambda budget: 5e5)
    again = sweep_plan.plan_sweep([ADAPTIVE], WIDE, dict(reversed(list(finished.items()))))
    gin.clear_config()
    assert again.runs == plan.runs
    assert [b.lines for b in again.budgets] == [b.lines for b in plan.budgets]


@pytest.fixture
def simulated(monkeypatch):
    """The runner with training replaced: each run 'finishes' with its parabola loss (minimum at 6e3)."""
    trained = []

    def train_locally(plan, runs, workdir, workers, results):
        for run in runs:
            trained.append((run, os.path.exists(os.path.join(workdir, sweep.PREDICTION))))
            results.record(run, summary(run, lambda budget: 6e3))
        return []
    monkeypatch.setattr(sweep, "train_locally", train_locally)
    monkeypatch.setattr(sweep, "prepare_data", lambda *args: None)
    return trained


def fake_prediction(monkeypatch, n_opt: float = 3e4):
    import scaling.predict
    at_budget = {"chinchilla": {"N_opt": n_opt, "D_opt": 2e3, "loss": 5.9, "interval": [5.8, 6.0]},
                 "kaplan": {"N_opt": 2e4, "D_opt": 3e3, "loss": 6.0, "interval": None},
                 "isoflop": {"error": "need at least two budgets whose loss has an interior minimum in N"}}
    calls = []

    def predict(rows, flops, accounting="chinchilla", bootstrap=200, seed=0, level=0.95):
        calls.append(("predict", len(rows), flops, accounting, bootstrap))
        return at_budget

    def predicted_loss(rows, N, D, accounting="chinchilla", bootstrap=200, seed=0):
        calls.append(("predicted_loss", N, D))
        return {"chinchilla": {"loss": 5.5, "interval": [5.4, 5.6]}, "kaplan": {"loss": 5.7, "interval": None}}
    monkeypatch.setattr(scaling.predict, "predict", predict)
    monkeypatch.setattr(scaling.predict, "predicted_loss", predicted_loss)
    return calls, at_budget


def test_verification_trains_the_predicted_optimum_after_writing_its_prediction(tmp_path, monkeypatch, simulated):
    calls, at_budget = fake_prediction(monkeypatch)
    result = run_sweep(*sweep_args(tmp_path, [], gin_file=ADAPTIVE))
    assert result.returncode == 0, result.stderr
    run, prediction_written = simulated[-1]
    assert run.budget == 4 * 1e8 and prediction_written
    assert all(not written for _, written in simulated[:-1])
    prediction = json.loads((tmp_path / "prediction.json").read_text())
    assert prediction["predict"] == at_budget and prediction["run"] == run.name
    assert (prediction["N"], prediction["D"]) == (run.params, run.tokens)
    assert run.tokens - 4e8 / (6 * run.params) < 8 * 32  # D = C / (6 N) with the snapped N, in whole steps
    fitted = len(rows(tmp_path)) - 1
    assert calls == [("predict", fitted, 4e8, "chinchilla", 10), ("predicted_loss", run.params, run.tokens)]
    row = rows(tmp_path)[-1]
    assert row["run"] == run.name and row["role"] == "verification" and row["budget"] == 4e8
    assert row["prediction"] == prediction
    measured = row["final_eval_loss"]
    assert f"chinchilla predicted 5.5000 [5.4000, 5.6000]: relative error {(measured - 5.5) / 5.5:+.2%}" \
        in result.stdout
    # A rerun reuses the prediction and trains nothing.
    monkeypatch.setattr("scaling.predict.predict", lambda *args, **kwargs: pytest.fail("predicted again"))
    before = (tmp_path / "results.jsonl").read_text()
    again = run_sweep(*sweep_args(tmp_path, [], gin_file=ADAPTIVE))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "results.jsonl").read_text() == before and len(simulated) == fitted + 1


def test_a_fit_window_predicts_from_the_budgets_within_it(tmp_path, monkeypatch, simulated):
    """Sweep.fit_min_budget = 1e8: the verification's prediction is fitted on the runs of the 1e8 budget alone
    (counted here from results.jsonl), says so in prediction.json and in the plan's line; placement is as
    without it. A window above every budget is refused when the sweep is read."""
    calls, _ = fake_prediction(monkeypatch)
    result = run_sweep(*sweep_args(tmp_path, ["Sweep.fit_min_budget = 1e8"], gin_file=ADAPTIVE))
    assert result.returncode == 0, result.stderr
    inside = [row for row in rows(tmp_path) if row.get("role") != "verification" and row["budget"] >= 1e8]
    outside = [row for row in rows(tmp_path) if row.get("role") != "verification" and row["budget"] < 1e8]
    assert inside and outside
    assert calls[0] == ("predict", len(inside), 4e8, "chinchilla", 10)
    prediction = json.loads((tmp_path / "prediction.json").read_text())
    assert prediction["min_budget"] == 1e8 and prediction["fitted_rows"] == len(inside)
    assert "(prediction in prediction.json, fitted on the budgets from C=1e8)" in result.stdout
    with pytest.raises(ValueError, match="fit_min_budget"):
        sweep_plan.plan_sweep([ADAPTIVE], ["Sweep.fit_min_budget = 2e8"])


def test_a_factor_added_later_is_predicted_from_the_same_runs_and_keeps_the_first_prediction(
        tmp_path, monkeypatch, simulated):
    """Sweep.verify_factor = (4.0, 10.0) after the 4x verification has trained: the 10x prediction is made
    from the budgets' runs alone (the 4x row is not fitted), written beside the first, which stays as it was,
    and its run trains and is reported; dropping the factor again is refused (the file predicts for it)."""
    calls, _ = fake_prediction(monkeypatch)
    assert run_sweep(*sweep_args(tmp_path, [], gin_file=ADAPTIVE)).returncode == 0
    first = json.loads((tmp_path / "prediction.json").read_text())
    recorded = (tmp_path / "results.jsonl").read_text()
    fitted = len(rows(tmp_path)) - 1
    calls.clear()
    result = run_sweep(*sweep_args(tmp_path, ["Sweep.verify_factor = (10.0, 4.0)"], gin_file=ADAPTIVE))
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "prediction.json").read_text())
    assert isinstance(written, list) and written[0] == first and written[1]["budget"] == 10 * 1e8
    assert written[1]["fitted_rows"] == fitted == first["fitted_rows"]
    assert [call[:3] for call in calls[:1]] == [("predict", fitted + 1, 1e9)]  # given every row, fits the runs
    assert (tmp_path / "results.jsonl").read_text().startswith(recorded)
    new = rows(tmp_path)[fitted + 1:]
    assert [(row["budget"], row["role"], row["run"]) for row in new] == [(1e9, "verification", written[1]["run"])]
    assert new[0]["prediction"] == written[1]
    report = [line for line in result.stdout.splitlines()
              if line.startswith("verification ") and not line.startswith("verification run ")]
    assert [line.split()[1] for line in report] == [first["run"] + ":", written[1]["run"] + ":"], result.stdout
    assert f"verification run {written[1]['run']} at C=1e9 = 10 x the largest budget" in result.stdout
    dropped = run_sweep(*sweep_args(tmp_path, [], gin_file=ADAPTIVE))
    assert dropped.returncode == 2 and "prediction.json predicts for C=1e9" in dropped.stderr, dropped.stderr


def test_no_approach_3_optimum_means_no_verification_run(tmp_path, monkeypatch, simulated):
    fake_prediction(monkeypatch, n_opt=float("nan"))
    result = run_sweep(*sweep_args(tmp_path, [], gin_file=ADAPTIVE))
    assert result.returncode == 1 and "cannot plan the verification run" in result.stderr, result.stderr
    assert not (tmp_path / "prediction.json").exists()
    assert not any(run.record.get("role") for run, _ in simulated)


def test_slurm_writes_one_wave_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "prepare_data", lambda *args: None)
    args = sweep_args(tmp_path, ["Sweep.verify_factor = 0"], "--slurm", gin_file=ADAPTIVE)
    first = run_sweep(*args)
    assert first.returncode == 0, first.stderr
    plan = sweep_plan.plan_sweep([ADAPTIVE], ["Sweep.verify_factor = 0"])
    gin.clear_config()
    wave_0 = plan.budgets[0].waves[0]
    assert [line.split("--workdir=")[1].split()[0] for line in (tmp_path / "commands.txt").read_text().splitlines()] \
        == [str(tmp_path / run.name) for run in wave_0]
    assert "rerun the same command" in first.stdout
    assert sweep.shell_line(["python", "-m", "train.sweep", *args]) in (tmp_path / "sweep.sbatch").read_text()
    for run in wave_0:  # the array job ran: each run left its summary.json
        (tmp_path / run.name).mkdir()
        (tmp_path / run.name / "summary.json").write_text(json.dumps(summary(run, lambda budget: 6e3)))
    second = run_sweep(*args)
    assert second.returncode == 0, second.stderr
    assert [row["run"] for row in rows(tmp_path)] == [run.name for run in wave_0]
    assert all(row["wave"] == 0 and row["budget"] == 5e7 for row in rows(tmp_path))
    later = [line.split("--workdir=")[1].split()[0] for line in (tmp_path / "commands.txt").read_text().splitlines()]
    plan = sweep_plan.plan_sweep([ADAPTIVE], ["Sweep.verify_factor = 0"], {row["run"]: row for row in rows(tmp_path)})
    gin.clear_config()
    assert later == [str(tmp_path / run.name) for run in plan.budgets[0].waves[1]] and later
    assert "C=5e7 wave 0: not bracketed" in second.stdout


@pytest.fixture(scope="module")
def adapted(tiny_corpus, tmp_path_factory):
    """The tiny adaptive sweep's first budget, two sizes to start with, trained for real two at a time; then again."""
    workdir = tmp_path_factory.mktemp("adaptive")
    bindings = [*tiny_corpus, "Sweep.flops = (5e7,)", "Placement.sizes_per_budget = 2", "Sweep.verify_factor = 0"]
    first = run_sweep(*sweep_args(workdir, bindings, "--workers=2", gin_file=ADAPTIVE))
    rows_after_first = rows(workdir)
    second = run_sweep(*sweep_args(workdir, bindings, gin_file=ADAPTIVE))
    return dict(workdir=workdir, first=first, second=second, rows_after_first=rows_after_first)


def test_end_to_end_bracketing_adds_a_wave_and_rows_say_so(adapted):
    assert adapted["first"].returncode == 0, adapted["first"].stderr
    found = adapted["rows_after_first"]
    assert {row["wave"] for row in found} == {0, 1}
    assert len({row["run"] for row in found}) == len(found) >= 3
    for row in found:
        assert row["budget"] == 5e7 and row["placement"]["expected_n_opt"] == pytest.approx(3 * 5e7 ** 0.5)
        assert row["placement"]["ratio"] == pytest.approx(row["params_active"] / row["placement"]["expected_n_opt"])
        assert ("reason" in row["placement"]) == (row["wave"] == 1)
    assert "C=5e7 wave 0: not bracketed" in adapted["first"].stdout
    assert "C=5e7 wave 1:" in adapted["first"].stdout and "every budget is done" in adapted["first"].stdout


def test_end_to_end_a_rerun_trains_and_records_nothing(adapted):
    second, found = adapted["second"], adapted["rows_after_first"]
    assert second.returncode == 0, second.stderr
    assert f"{len(found)} runs: {len(found)} finished, 0 to train" in second.stdout
    assert rows(adapted["workdir"]) == found


@pytest.mark.parametrize("binding, words", [
    ("Placement.no_such_field = 3", ["no_such_field"]),
    ("Placement.span = 0", ["Placement.span"]),
    ("Placement.span = -2.0", ["Placement.span"]),
    ("Placement.sizes_per_budget = 1", ["Placement.sizes_per_budget"]),
    ("Placement.centre_on = 'middle'", ["Placement.centre_on", "middle"]),
    ("Placement.max_waves = 0", ["Placement.max_waves"]),
    ("Placement.seeds = 0", ["Placement.seeds"]),
    ("Placement.prior_coefficient = 0", ["Placement.prior_coefficient"]),
    ("Sweep.sizes = (1e4, 2e4)", ["Sweep.sizes", "Sweep.placement"]),
    ("Sweep.models = ('d16',)", ["Sweep.models", "Sweep.placement"]),
    ("Sweep.flops = None", ["Sweep.flops"]),
    ("Sweep.grid = {'TrainConfig.seed': (0, 1)}", ["Sweep.grid"]),
    ("Sweep.verify_factor = 0.5", ["Sweep.verify_factor"]),
    ("Sweep.verify_factor = -1.0", ["Sweep.verify_factor"]),
    ("Sweep.verify_factor = (4.0, 0.5)", ["Sweep.verify_factor"]),
    ("Sweep.verify_seeds = -1", ["Sweep.verify_seeds"]),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(tmp_path, binding, words):
    result = run_sweep(*sweep_args(tmp_path / "sweep", [binding], gin_file=ADAPTIVE))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "sweep").exists()


def test_a_verification_run_needs_placement(tmp_path):
    result = run_sweep(*sweep_args(tmp_path / "sweep", ["Sweep.verify_factor = 4.0"], gin_file="sweeps/tiny.gin"))
    assert result.returncode == 2 and "Sweep.verify_factor" in result.stderr, result.stderr


def test_the_prediction_carries_a_backtest_of_the_budgets_below_it(monkeypatch):
    """Three budgets of runs on parabolas whose minima fall with ln C: the prediction written before the
    verification run holds the backtest of the third budget from the two below it, measured at that
    budget's true minimum (4.0 - 0.01 ln C, computed here) against what the fits (faked) predict, and
    the plan prints it in one line. With two budgets there is nothing to backtest."""
    _, at_budget = fake_prediction(monkeypatch)
    results = []
    for budget, n_star in ((5e7, 2e4), (1e8, 3e4), (2e8, 4.5e4)):
        for params in n_star * 2.0 ** np.arange(-2, 3):
            results.append({"run": f"n{params:.0f}_C{budget:g}", "budget": budget, "params_total": params,
                            "tokens": budget / (6 * params), "flops_chinchilla": budget,
                            "final_eval_loss": parabola(budget, params, n_star)})
    verification = SimpleNamespace(name="v", params=7e4, tokens=8e8 / (6 * 7e4), budget=8e8)
    place = lambda budget, targets, existing: [verification]  # noqa: E731
    prediction = sweep_design.predict_verification(8e8, results, "chinchilla", 0, place)
    step, = prediction["backtest"]
    measured = 4.0 - 0.01 * math.log(2e8)
    assert step["budget"] == 2e8 and step["fitted_runs"] == 10 and step["measured"] == pytest.approx(measured, abs=1e-9)
    loss = at_budget["chinchilla"]["loss"]
    assert step["approaches"]["chinchilla"]["error"] == pytest.approx((measured - loss) / loss)
    assert step["approaches"]["isoflop"]["error"] is None  # the faked fits give Approach 2 no loss
    plan = SimpleNamespace(budgets=[SimpleNamespace(budget=2e8, lines=[], done=False)],
                           runs=[SimpleNamespace(name="v", budget=8e8, record={"role": "verification",
                                                                               "prediction": prediction})])
    line = sweep.decisions(plan)[-1]
    assert line == ("backtest, each of C=2e8 predicted from the budgets below it (measured - predicted): "
                    f"Approach 3 {(measured - loss) / loss:+.1%}; KM {(measured - 6.0) / 6.0:+.1%}; Approach 2 n/a")
    two = sweep_design.predict_verification(8e8, [r for r in results if r["budget"] < 2e8], "chinchilla", 0, place)
    assert "backtest" not in two and sweep_design.backtest_line(two) is None


def test_seeds_replicate_every_size_with_its_own_seeds_and_one_line_each():
    """Placement.seeds = 2: every placed size trains twice, the replicate named <run>_seed1 and differing from
    it only in TrainConfig.seed and DataConfig.seed; the plan names each size once, the profiles use both,
    and the minimum is the one the parabola puts there."""
    plan, finished = settle([*WIDE, "Placement.seeds = 2"], lambda budget: 5e5)
    first = plan.budgets[0]
    names = [run.name for run in first.waves[0]]
    assert names[1::2] == [f"{name}_seed1" for name in names[::2]]
    for run, replicate in zip(first.waves[0][::2], first.waves[0][1::2]):
        assert replicate.config == {**run.config, "TrainConfig.seed": 1, "DataConfig.seed": 1}
        assert (replicate.params, replicate.tokens, replicate.model) == (run.params, run.tokens, run.model)
    assert first.lines[0].count(first.waves[0][0].model + " ") == 1
    assert first.state == "bracketed" and first.profile.n_opt == pytest.approx(5e5, rel=1e-6)
    assert all(name in finished for name in names)


@pytest.mark.parametrize("bindings", [["Placement.seeds = 2"], ["Sweep.verify_seeds = 2"]])
def test_a_replicated_verification_reports_the_mean_of_its_seeds(tmp_path, monkeypatch, simulated, bindings):
    """Placement.seeds replicates every run, Sweep.verify_seeds the verification run alone."""
    fake_prediction(monkeypatch)
    result = run_sweep(*sweep_args(tmp_path, bindings, gin_file=ADAPTIVE))
    assert result.returncode == 0, result.stderr
    verification = [row for row in rows(tmp_path) if row.get("role") == "verification"]
    assert [row["run"] for row in verification] == [verification[0]["run"], verification[0]["run"] + "_seed1"]
    others = [row["run"] for row in rows(tmp_path) if row.get("role") != "verification"]
    assert any(name.endswith("_seed1") for name in others) == (bindings == ["Placement.seeds = 2"])
    assert all(written for run, written in simulated if run.record.get("role"))
    losses = [row["final_eval_loss"] for row in verification]
    se = abs(losses[0] - losses[1]) / 2  # two seeds: their standard deviation, |a − b| / √2, over √2
    assert (f"measured eval loss {np.mean(losses):.4f} ± {se:.4f} (the mean of 2 seeds: {losses[0]:.4f}, "
            f"{losses[1]:.4f}; ± its SE over them)") in result.stdout
    assert f"verification run {verification[0]['run']} (2 seeds) at C=4e8" in result.stdout
