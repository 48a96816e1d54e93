"""scaling/downstream.py: the two-step task scaling laws of OLMo's model ladder, their command and
notebooks/emergence.ipynb.

Laws and designs are drawn at random: step 1's (E, A, alpha) over a random grid of compute, step 2's
sigmoid (k, L0) and chance. Rows carry each run's task loss with lognormal noise and its accuracy
drawn binomially from its items, at the expected loss. The references are independent of the code
under test: the laws written out here in numpy, and scipy.optimize.curve_fit for the point estimates.
Every draw comes from a fixed seed, so any failure repeats.
"""
import json
import os
import re

import nbformat
import numpy as np
import pytest
import scipy.optimize
from nbclient import NotebookClient

from scaling import downstream as ds
from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "emergence.ipynb"


def draw_law(rng, n_runs=None, C=None, chance=None):
    """Random step 1 and step 2 laws over a random compute grid (or C): the reducible task loss is
    1-4x E at the smallest run, and the sigmoid's midpoint in the lower half of the runs' losses, so
    that the largest runs are partway through the rise from chance (a random 0, 0.25 or 0.5 unless
    given; 0 is a generation task's, exact match)."""
    E, alpha = rng.uniform(0.5, 1.5), rng.uniform(0.15, 0.5)
    if C is None:
        n = n_runs or int(rng.integers(8, 13))
        c_min, decades = 10 ** rng.uniform(12, 18), rng.uniform(2.5, 3.5)
        C = c_min * 10 ** (decades * np.sort(np.r_[0.0, rng.uniform(0, 1, n - 2), 1.0]))
    chance = float(rng.choice([0.0, 0.25, 0.5])) if chance is None else chance
    law = dict(E=E, alpha=alpha, A=E * rng.uniform(1, 4) * C[0] ** alpha, C=C, chance=chance)
    loss = task_loss(law, C)
    spread = loss.max() - loss.min()
    law.update(L0=loss.min() + rng.uniform(0.0, 0.5) * spread, k=-rng.uniform(3, 10) / spread)
    law.update(a=1 - law["chance"], b=law["chance"])
    return law


def task_loss(law, C):
    return law["E"] + law["A"] * np.asarray(C, float) ** -law["alpha"]


def accuracy(law, loss):
    return law["a"] / (1 + np.exp(-law["k"] * (np.asarray(loss, float) - law["L0"]))) + law["b"]


def task_entry(law, C, rng, noise, items, generation=False):
    """One run's scores on a task, as in-run task evaluation writes them (evaluation/tasks.py)."""
    expected = task_loss(law, C)
    bpb = expected * np.exp(rng.normal(0, noise))
    score = rng.binomial(items, accuracy(law, expected)) / items
    scored = {"mean": score, "se": float(np.sqrt(score * (1 - score) / (items - 1)))}
    entry = {"items": items, "shots": 3, "chance": law["chance"], "bpb": {"mean": bpb, "se": noise * bpb}}
    if generation:
        return {**entry, "exact_match": scored}
    return {**entry, "acc": scored, "acc_norm": scored, "acc_per_token": scored}


def two_tasks(rng, n_runs=None):
    """A multiple-choice task and a generation task on one grid of runs."""
    mc = draw_law(rng, n_runs, chance=0.25)
    return {"mc": mc, "gen": draw_law(rng, C=mc["C"], chance=0.0)}


def make_rows(laws, rng, noise=0.005, items=1000):
    """results.jsonl rows, every summary field the fits read: one run per compute value of the laws
    (which share it), scored on every task of `laws` ({task: law}; a law with chance 0 is a generation
    task)."""
    rows = []
    for i, C in enumerate(next(iter(laws.values()))["C"]):
        n = (C / 120) ** 0.5  # 20 tokens per parameter: C = 6 N D = 120 N^2
        rows.append({"run": f"r{i:02d}", "config": {}, "params_total": n, "params_active": n,
                     "params_nonembedding": 0.8 * n, "params_active_nonembedding": 0.8 * n, "tokens": C / (6 * n),
                     "flops_chinchilla": C, "flops_kaplan": 0.8 * C, "final_eval_loss": 3.0,
                     "tasks": {task: task_entry(law, C, rng, noise, items, generation=law["chance"] == 0)
                               for task, law in laws.items()}})
    return rows


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_step1_recovers_random_laws():
    rng = np.random.default_rng(0)
    for _ in range(8):
        law = draw_law(rng)
        loss = task_loss(law, law["C"]) * np.exp(rng.normal(0, 0.002, len(law["C"])))
        fit = ds.fit_task_loss(law["C"], loss)
        assert fit.alpha == pytest.approx(law["alpha"], rel=0.05)
        assert fit.E == pytest.approx(law["E"], rel=0.06)
        grid = np.geomspace(law["C"][0], law["C"][-1], 20)
        np.testing.assert_allclose(fit.predict(grid), task_loss(law, grid), rtol=0.01)
        assert fit.diagnostics["identified"], fit.diagnostics["warnings"]


def test_step2_recovers_random_sigmoids():
    rng = np.random.default_rng(1)
    for _ in range(8):
        law = draw_law(rng)
        loss = task_loss(law, law["C"])
        score = rng.binomial(2000, accuracy(law, loss)) / 2000
        fit = ds.fit_accuracy(loss, score, law["chance"], items=np.full(len(loss), 2000))
        assert (fit.a, fit.b) == (1 - law["chance"], law["chance"])  # fixed: chance to 1
        assert fit.k == pytest.approx(law["k"], rel=0.2)
        assert abs(fit.L0 - law["L0"]) * abs(law["k"]) < 0.25  # within a quarter of the transition's scale
        assert fit.diagnostics["identified"], fit.diagnostics["warnings"]


def test_step2_with_free_asymptotes_recovers_floor_and_height():
    rng = np.random.default_rng(2)
    for _ in range(4):
        law = dict(a=rng.uniform(0.4, 0.7), b=rng.uniform(0.1, 0.3), k=-rng.uniform(6, 12), L0=rng.uniform(1.2, 2))
        loss = law["L0"] + rng.uniform(-5, 5, 20) / abs(law["k"])  # both plateaus in range
        score = rng.binomial(5000, accuracy(law, loss)) / 5000
        fit = ds.fit_accuracy(loss, score, chance=0.25, free_asymptotes=True)
        assert fit.fixed == {}
        assert fit.a == pytest.approx(law["a"], abs=0.05) and fit.b == pytest.approx(law["b"], abs=0.05)
        assert fit.k == pytest.approx(law["k"], rel=0.25)


def test_point_estimates_agree_with_curve_fit():
    """Where the objectives coincide, the fits' optima are scipy's: step 1 with noise well inside the
    Huber loss's delta (1e-3), where it is least squares of log residuals; step 2, least squares."""
    rng = np.random.default_rng(3)
    for _ in range(3):
        law = draw_law(rng)
        C = law["C"]
        loss = task_loss(law, C) * np.exp(rng.normal(0, 2e-4, len(C)))
        fit = ds.fit_task_loss(C, loss)
        (log_a, alpha, e), _ = scipy.optimize.curve_fit(
            lambda c, log_a, alpha, e: np.log(e + np.exp(log_a - alpha * np.log(c))), C, np.log(loss),
            p0=[np.log(law["A"]), law["alpha"], law["E"]], bounds=([-50, 0, 0], [500, 5, 10]), xtol=1e-14, ftol=1e-14)
        assert fit.alpha == pytest.approx(alpha, rel=1e-4) and fit.E == pytest.approx(e, rel=1e-4)
        assert np.log(fit.A) == pytest.approx(log_a, rel=1e-4)

        expected = task_loss(law, C)
        score = rng.binomial(1000, accuracy(law, expected)) / 1000
        fit = ds.fit_accuracy(expected, score, law["chance"])
        (k, l0), _ = scipy.optimize.curve_fit(
            lambda x, k, l0: law["a"] / (1 + np.exp(-k * (x - l0))) + law["b"], expected, score,
            p0=[law["k"], law["L0"]], xtol=1e-14, ftol=1e-14)
        assert fit.k == pytest.approx(k, rel=1e-4) and fit.L0 == pytest.approx(l0, rel=1e-4)


def test_free_asymptotes_agree_with_curve_fit():
    rng = np.random.default_rng(4)
    law = dict(a=0.6, b=0.2, k=-6.0, L0=1.5)
    loss = law["L0"] + rng.uniform(-5, 5, 24) / abs(law["k"])
    score = rng.binomial(2000, accuracy(law, loss)) / 2000
    fit = ds.fit_accuracy(loss, score, chance=0.25, free_asymptotes=True)
    reference, _ = scipy.optimize.curve_fit(lambda x, a, b, k, l0: a / (1 + np.exp(-k * (x - l0))) + b, loss, score,
                                            p0=[0.5, 0.25, -5.0, 1.4], xtol=1e-14, ftol=1e-14)
    np.testing.assert_allclose([fit.a, fit.b, fit.k, fit.L0], reference, rtol=1e-4)


def _coverage(draws, bootstrap, seed):
    """How often the chained prediction's interval for the largest run holds the true score (the law's,
    at its expected loss), and step 1's interval the true loss, over random laws."""
    rng = np.random.default_rng(seed)
    score_inside = loss_inside = 0
    for _ in range(draws):
        law = draw_law(rng)
        result = ds.downstream(make_rows({"task": law}, rng), bootstrap=bootstrap)["task"]
        truth_loss = task_loss(law, law["C"][-1])
        assert result["held_out"] == f"r{len(law['C']) - 1:02d}" and result["n_fit"] == len(law["C"]) - 1
        lo, hi = result["prediction"]["score"]["interval"]
        score_inside += lo <= accuracy(law, truth_loss) <= hi
        lo, hi = result["prediction"]["bpb"]["interval"]
        loss_inside += lo <= truth_loss <= hi
    return score_inside, loss_inside


def test_chained_prediction_interval_covers_the_truth():
    # 95% intervals. Over 30 random laws (seed 2, 50 resamples) they held the true score 28 times and
    # the true loss 30 times; over the slow test's 40, 37 and 37 times. Here 6 draws of 20 resamples:
    # fewer than 4 would happen with probability 1.6% at a coverage of 0.9.
    score_inside, loss_inside = _coverage(6, 20, seed=5)
    assert score_inside >= 4 and loss_inside >= 4


@pytest.mark.slow
def test_chained_prediction_interval_covers_the_truth_over_many_laws():
    score_inside, loss_inside = _coverage(40, 50, seed=6)
    assert score_inside >= 32 and loss_inside >= 32  # 80% of 40, for intervals of nominal 95%


def _fitted(result):
    """Everything fit_task reports, as plain values: estimates, intervals, predictions, warnings."""
    return (result["held_out"], result["step1"].estimates(), result["step1"].intervals, result["step2"].estimates(),
            result["step2"].intervals, result["prediction"], result["warnings"])


def test_permuted_rows_give_the_same_fit():
    rng = np.random.default_rng(7)
    rows = make_rows(two_tasks(rng), rng)
    rows[0]["role"] = "verification"  # never fitted, in either order
    results = ds.downstream(rows, bootstrap=8)
    for seed in range(2):
        permuted = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
        again = ds.downstream(permuted, bootstrap=8)
        for task in ("mc", "gen"):
            assert _fitted(again[task]) == _fitted(results[task])
            assert "r00" not in again[task]["fit_runs"]


def test_unidentified_fits_are_flagged():
    rng = np.random.default_rng(8)
    law = draw_law(rng, n_runs=10)
    # Below emergence: the sigmoid's midpoint far under every run's loss, so every score is chance plus
    # binomial noise. Step 1 still fits; step 2 has no trend to fit.
    stuck = {**law, "L0": law["L0"] - 5.0, "k": -3.0}
    result = ds.downstream(make_rows({"task": stuck}, rng), bootstrap=0)["task"]
    assert result["step1"].diagnostics["identified"]
    assert not result["identified"] and any(w.startswith("step 2: flat:") for w in result["warnings"])
    # A task loss that does not move with compute beyond its noise.
    flat = {**law, "A": law["A"] * 1e-4}
    step1 = ds.downstream(make_rows({"task": flat}, rng, noise=0.01), bootstrap=0)["task"]["step1"]
    assert any(w.startswith("flat:") for w in step1.diagnostics["warnings"])
    # No floor in the runs' losses: E runs to its bound.
    no_floor = {**law, "E": 0.0, "A": law["A"] * 3}
    step1 = ds.fit_task_loss(law["C"], task_loss(no_floor, law["C"]) * np.exp(rng.normal(0, 0.003, 10)))
    assert "E" in step1.diagnostics["at_bound"] and not step1.diagnostics["identified"]
    # Three runs for three parameters; two are too few to fit at all.
    three = ds.downstream(make_rows({"task": {**law, "C": law["C"][:4]}}, rng), bootstrap=0)["task"]
    assert any("too few runs: 3 runs of distinct compute" in w for w in three["warnings"]) and not three["identified"]
    two = ds.downstream(make_rows({"task": {**law, "C": law["C"][:3]}}, rng), bootstrap=0)["task"]
    assert two["error"].startswith("not fitted:") and "view" in two


def test_command_prints_the_tables_and_writes_the_prediction(tmp_path, capsys):
    rng = np.random.default_rng(9)
    laws = two_tasks(rng, n_runs=9)
    rows = make_rows(laws, rng)
    rows.insert(3, {k: v for k, v in rows[3].items() if k != "tasks"} | {"run": "no_tasks"})  # skipped
    results, out = write_rows(tmp_path / "results.jsonl", rows), tmp_path / "downstream.json"
    assert ds.main([str(results), "--bootstrap", "8", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    written = json.loads(out.read_text())["tasks"]
    assert set(written) == {"mc", "gen"}
    for task, name in (("mc", "acc"), ("gen", "exact_match")):
        result, largest = written[task], rows[-1]
        assert result["held_out"] == largest["run"] and result["n_fit"] == len(rows) - 2
        # By compute, the row without tasks left out.
        assert result["view"]["run"] == [r["run"] for r in rows if "tasks" in r]
        measured = largest["tasks"][task]
        estimates = result["step1"]["estimates"]
        bpb = result["prediction"]["bpb"]
        assert bpb["measured"] == measured["bpb"]["mean"]
        assert bpb["predicted"] == pytest.approx(estimates["E"] + estimates["A"] * largest["flops_chinchilla"]
                                                 ** -estimates["alpha"], rel=1e-9)
        step2 = result["step2"]["estimates"]
        score = result["prediction"]["score"]
        assert score["predicted"] == pytest.approx(step2["b"] + step2["a"] / (1 + np.exp(-step2["k"] * (
            bpb["predicted"] - step2["L0"]))), rel=1e-9)
        assert score["measured"] == measured[name]["mean"]
        assert score["abs_error"] == pytest.approx(abs(score["predicted"] - score["measured"]))
        assert result["chained_replicates"] == 8 and len(score["interval"]) == 2
        assert f"== {task}: {name} and answer bits per byte" in table
    assert table.count(f"prediction for {rows[-1]['run']}") == 2
    assert re.search(r"step 1: L = E \+ A / C\^alpha, fitted on 8 runs \(8 bootstrap resamples", table)
    assert "no_tasks" not in table

    # Another run held out, one task, the other accounting.
    assert ds.main([str(results), "--task", "mc", "--holdout", "r02", "--accounting", "kaplan",
                    "--bootstrap", "0"]) == 0
    table = capsys.readouterr().out
    assert "prediction for r02 (C = " in table and "== gen" not in table and "kaplan accounting" in table


@pytest.mark.parametrize("case, args, message", [
    ("missing", ["{tmp}/nowhere.jsonl"], "results file not found"),
    ("no tasks", ["{no_tasks}"], "no row has task scores"),
    ("unknown task", ["{file}", "--task", "mc", "hellaswag"], "unknown task 'hellaswag'"),
    ("unknown run", ["{file}", "--holdout", "r99"], "held-out run 'r99'"),
    ("bad flag", ["{file}", "--bootstrap", "-1"], "bootstrap"),
])
def test_command_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, args, message):
    rng = np.random.default_rng(10)
    rows = make_rows({"mc": draw_law(rng, n_runs=6)}, rng)
    paths = {"tmp": tmp_path, "file": write_rows(tmp_path / "results.jsonl", rows),
             "no_tasks": write_rows(tmp_path / "plain.jsonl", [{k: v for k, v in r.items() if k != "tasks"}
                                                                 for r in rows])}
    assert ds.main([a.format(**paths) for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and message in captured.err


def test_emergence_notebook_runs_headless(tmp_path):
    rng = np.random.default_rng(11)
    mc, gen = two_tasks(rng, n_runs=10).values()
    laws = {"arithmetic_mc": mc, "arithmetic": gen}
    rows = make_rows(laws, rng)
    results = write_rows(tmp_path / "results.jsonl", rows + [{"run": "no_tasks", "flops_chinchilla": 1e30}])
    env = dict(os.environ, RESULTS=str(results), BOOTSTRAP="16", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("MPLBACKEND", None)  # the kernel's inline backend is what puts figures in the outputs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute(env=env)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    figures = [cell for cell in code if re.search(r"^save_and_show\(fig", cell.source, re.MULTILINE)]
    assert figures and all(len([o for o in cell.outputs if "image/png" in o.get("data", {})]) == 1 for cell in figures)
    text = "".join(o["text"] for cell in code for o in cell.outputs
                   if o.output_type == "stream" and o["name"] == "stdout")
    assert f"{len(rows) + 1} runs from {results}; tasks: arithmetic, arithmetic_mc" in text
    for task in laws:
        assert f"== {task}: " in text
        number = r"\d\.\d{4}"
        assert re.search(rf"{task}\s+{rows[-1]['run']}\s+score \(steps 1 and 2\)\s+{number} \[{number}, {number}\]",
                         text), text
    assert "chained score: mean absolute error" in text
