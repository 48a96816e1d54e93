"""scaling.predict: the compute-optimal run beyond a sweep's budgets, and its loss, from each approach."""
import json

import numpy as np
import pytest

from scaling.predict import backtest, main, predict, predicted_loss

LAW = dict(E=1.9, A=520.0, B=1700.0, alpha=0.31, beta=0.37)


def law_loss(N, D):
    return LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / D ** LAW["beta"]


def true_optimum(C):
    """The law's compute-optimal (N, D) at C = 6 N D, by brute force over N (not the library's formula)."""
    sizes = np.geomspace(1e5, 1e12, 200_001)
    i = np.argmin(law_loss(sizes, C / (6 * sizes)))
    return sizes[i], C / (6 * sizes[i])


def isoflop_rows(noise=0.002, seed=0, budgets=(1e18, 4e18, 1.6e19, 6.4e19), steps=np.arange(-3, 4),
                 loss_of=law_loss, optimum=None):
    rng = np.random.default_rng(seed)
    rows = []
    for budget in budgets:
        n_star, _ = (optimum or true_optimum)(budget)
        for n in n_star * 2.0 ** steps:
            tokens = budget / (6 * n)
            loss = loss_of(n, tokens) * np.exp(rng.normal(0.0, noise))
            rows.append({"run": f"n{n:.3g}_C{budget:.0e}", "config": {}, "budget": budget,
                         "params_total": n, "params_nonembedding": n, "tokens": tokens,
                         "flops_kaplan": 6 * n * tokens, "flops_chinchilla": 6 * n * tokens,
                         "final_loss": loss, "final_eval_loss": loss})
    return rows


@pytest.fixture(scope="module")
def prediction():
    return predict(isoflop_rows(), 2.56e20, bootstrap=40)


def test_each_approach_predicts_the_true_optimum_beyond_the_budgets(prediction):
    n_true, d_true = true_optimum(2.56e20)
    loss_true = law_loss(n_true, d_true)
    for approach in ("chinchilla", "kaplan", "isoflop"):
        entry = prediction[approach]
        assert entry["N_opt"] * entry["D_opt"] * 6 == pytest.approx(2.56e20, rel=1e-6), approach
        lo, hi = entry["N_opt_interval"]
        assert lo < entry["N_opt"] < hi
        # KM's joint law is another form than the data's: its optimum is its own, not the truth's.
        if approach != "kaplan":
            assert entry["N_opt"] == pytest.approx(n_true, rel=0.15), approach
    chinchilla = prediction["chinchilla"]
    assert chinchilla["loss"] == pytest.approx(loss_true, rel=0.005)
    assert chinchilla["interval"][0] - 0.005 < loss_true < chinchilla["interval"][1] + 0.005
    assert chinchilla["a"] == pytest.approx(LAW["beta"] / (LAW["alpha"] + LAW["beta"]), abs=0.03)


def test_loss_at_a_given_run_has_an_interval_that_covers_the_law():
    result = predicted_loss(isoflop_rows(), 3e8, 1e11, bootstrap=40)
    assert set(result) == {"chinchilla", "kaplan"}
    truth = law_loss(3e8, 1e11)
    assert result["chinchilla"]["loss"] == pytest.approx(truth, rel=0.01)


def test_verification_rows_are_left_out_of_the_fits():
    rows = isoflop_rows()
    poisoned = rows + [{**rows[0], "run": "verify", "role": "verification", "final_eval_loss": 99.0}]
    assert predict(poisoned, 2.56e20, bootstrap=0) == predict(rows, 2.56e20, bootstrap=0)


def test_command_line_prints_the_table_and_fails_cleanly(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in isoflop_rows()))
    out = tmp_path / "prediction.json"
    assert main([str(path), "--flops", "2.56e20", "--bootstrap", "10", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "compute-optimal run at C = 2.56e+20 FLOPs" in table
    for label in ("Approach 3", "KM", "Approach 2"):
        assert label in table
    assert json.loads(out.read_text())["prediction"]["chinchilla"]["N_opt"] > 0
    for args, problem in (([str(path), "--flops", "-1"], "positive"),
                          ([str(path)], "--flops C"),
                          ([str(path), "--flops", "1e20", "--bootstrap", "-2"], "at least 0"),
                          ([str(tmp_path / "none.jsonl"), "--flops", "1e20"], "not found")):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and problem in err, err


def random_law(rng):
    E, alpha, beta = rng.uniform(1.5, 2.5), rng.uniform(0.25, 0.45), rng.uniform(0.25, 0.45)
    A, B = np.exp(rng.uniform(np.log(100), np.log(2000), 2))
    return lambda N, D: E + A / N**alpha + B / D**beta


def brute_force_optimum(loss_of, C):
    """(N, D, loss) at the optimum along C = 6 N D of any loss surface, by a fine grid over N."""
    sizes = np.geomspace(1e4, 1e13, 200_001)
    losses = loss_of(sizes, C / (6 * sizes))
    i = np.argmin(losses)
    return sizes[i], C / (6 * sizes[i]), losses[i]


BUDGETS = tuple(1e18 * 4.0 ** np.arange(5))


def test_a_backtest_of_a_true_law_finds_each_budgets_optimum_and_small_errors():
    """Random laws, 5 budgets, sizes 2x apart around each optimum: each budget's measured minimum is its
    true optimal loss, and Approach 3, the law's own form, fitted on the budgets below predicts it within
    1%. Approach 2's trend, a power law in C without an irreducible term, can only over-predict the fall of
    a loss that flattens towards E: its errors are positive, up to the noise."""
    rng = np.random.default_rng(11)
    for _ in range(3):
        loss_of = random_law(rng)
        optimum = lambda C: brute_force_optimum(loss_of, C)[:2]  # noqa: E731
        rows = isoflop_rows(noise=0.002, seed=int(rng.integers(1000)), budgets=BUDGETS, steps=np.arange(-2, 3),
                            loss_of=loss_of, optimum=optimum)
        steps = backtest(rows, bootstrap=0)
        assert [step["budget"] for step in steps] == list(BUDGETS[2:])
        for step in steps:
            assert step["measured_from"] == "vertex"
            assert step["measured"] == pytest.approx(brute_force_optimum(loss_of, step["budget"])[2], rel=0.005)
            assert step["fitted_runs"] == 5 * BUDGETS.index(step["budget"])
            assert abs(step["approaches"]["chinchilla"]["error"]) < 0.01, step
            assert step["approaches"]["isoflop"]["error"] > -0.003, step


def test_a_backtest_measures_with_its_own_parabola():
    """The measured minimum is the vertex of a parabola in ln N through the budget's own runs
    (numpy's polyfit here, independent of scaling.isoflop), whatever the order of the rows."""
    rows = isoflop_rows(budgets=BUDGETS[:4], steps=np.arange(-2, 3))
    shuffled = [rows[i] for i in np.random.default_rng(3).permutation(len(rows))]
    steps = backtest(shuffled, bootstrap=0)
    for step, in_order in zip(steps, backtest(rows, bootstrap=0), strict=True):
        assert step["measured"] == pytest.approx(in_order["measured"], rel=1e-12)
        for law, entry in step["approaches"].items():
            assert entry["loss"] == pytest.approx(in_order["approaches"][law]["loss"], rel=1e-9), law
        own = [r for r in rows if r["budget"] == step["budget"]]
        c2, c1, c0 = np.polyfit(np.log([r["params_total"] for r in own]), [r["final_eval_loss"] for r in own], 2)
        assert step["measured"] == pytest.approx(c0 - c1**2 / (4 * c2), rel=1e-9)


def test_a_backtest_flags_a_loss_that_falls_faster_than_the_laws_allow():
    """A surface whose fall steepens with compute (a random law times a factor that drops by a growing
    amount per budget): every approach predicts each budget too high, and more so the further the bend
    has gone. This is the signature the CPU sweeps show."""
    rng = np.random.default_rng(5)
    for _ in range(2):
        base, bend = random_law(rng), rng.uniform(0.01, 0.02)
        loss_of = lambda N, D: base(N, D) * np.exp(-bend * np.log(6 * N * D / BUDGETS[0]) ** 2 / np.log(4) ** 2)  # noqa: E731
        optimum = lambda C: brute_force_optimum(loss_of, C)[:2]  # noqa: E731
        rows = isoflop_rows(noise=0.001, seed=1, budgets=BUDGETS, steps=np.arange(-2, 3), loss_of=loss_of,
                            optimum=optimum)
        steps = backtest(rows, bootstrap=0)
        for law in ("chinchilla", "isoflop"):
            errors = [step["approaches"][law]["error"] for step in steps]
            assert all(e < -0.005 for e in errors), (law, errors)


def test_backtest_intervals_and_the_command_line(tmp_path, capsys):
    rows = isoflop_rows(budgets=BUDGETS[:4], steps=np.arange(-2, 3))
    steps = backtest(rows, bootstrap=20)
    for step in steps:
        entry = step["approaches"]["chinchilla"]
        assert entry["interval"][0] < entry["loss"] < entry["interval"][1]
        assert entry["inside"] == (entry["interval"][0] <= step["measured"] <= entry["interval"][1])
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "backtest.json"
    assert main([str(path), "--backtest", "--bootstrap", "5", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "backtest: each budget predicted from the budgets below it" in table and "mean error" in table
    written = json.loads(out.read_text())
    assert [step["budget"] for step in written["backtest"]] == list(BUDGETS[2:4]) and written["prediction"] is None
    no_budget = tmp_path / "no_budget.jsonl"
    no_budget.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "budget"}) + "\n" for r in rows))
    two = tmp_path / "two.jsonl"
    two.write_text("".join(json.dumps(r) + "\n" for r in rows if r["budget"] < BUDGETS[2]))
    for args, problem in (([str(path)], "--backtest"), ([str(no_budget), "--backtest"], "budgets"),
                          ([str(two), "--backtest"], "more than 2 budgets")):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and problem in err, err


def test_verification_targets_are_each_laws_loss_and_approach_2s_trend():
    """Approach 3 and KM at the run's (N, D), a law without a loss left out, and Approach 2's trend at its
    own N_opt from the prediction at the budget; in the order the prediction gives them."""
    from scaling.predict import verification_targets
    rng = np.random.default_rng(3)
    losses = rng.uniform(2.0, 4.0, size=3)
    prediction = {"predicted_loss": {"kaplan": {"loss": losses[0], "interval": [losses[0] - 0.1, losses[0] + 0.1]},
                                     "chinchilla": {"loss": None, "interval": None}},
                  "predict": {"chinchilla": {"loss": losses[1], "interval": None},
                              "isoflop": {"loss": losses[2], "interval": None, "N_opt": 1e5}}}
    assert verification_targets(prediction) == {"kaplan": (losses[0], [losses[0] - 0.1, losses[0] + 0.1]),
                                                "isoflop": (losses[2], None)}
    del prediction["predict"]
    assert list(verification_targets(prediction)) == ["kaplan"]


def random_law_rows(seed):
    """An IsoFLOP sweep of five random budgets on a random Chinchilla law, whose smallest budget's runs lie
    0.05 nats above it (as under-trained small runs do), in shuffled order."""
    rng = np.random.default_rng(seed)
    law = dict(E=rng.uniform(1.5, 3.0), A=rng.uniform(200, 900), B=rng.uniform(800, 3000),
               alpha=rng.uniform(0.27, 0.4), beta=rng.uniform(0.27, 0.4))

    def loss_of(N, D):
        return law["E"] + law["A"] / N ** law["alpha"] + law["B"] / D ** law["beta"]

    def optimum(C):
        sizes = np.geomspace(1e5, 1e12, 100_001)
        n = sizes[np.argmin(loss_of(sizes, C / (6 * sizes)))]
        return n, C / (6 * n)

    budgets = tuple(np.sort(1e18 * 3.0 ** np.arange(5) * rng.uniform(0.8, 1.25, 5)))
    rows = isoflop_rows(noise=0.002, seed=seed, budgets=budgets, steps=np.arange(-2, 3),
                        loss_of=loss_of, optimum=optimum)
    for row in rows:
        if row["budget"] == budgets[0]:
            row["final_eval_loss"] = row["final_loss"] = row["final_eval_loss"] + 0.05
    verification = dict(rows[-1], run="verify", role="verification", budget=4 * budgets[-1], final_eval_loss=0.1)
    order = rng.permutation(len(rows) + 1)
    return [([*rows, verification])[i] for i in order], budgets


@pytest.mark.parametrize("seed", [5, 23])
def test_a_fit_window_predicts_from_the_budgets_within_it_alone(tmp_path, capsys, seed):
    """--min_budget C: the prediction from the whole file is the prediction from a file holding only the rows
    of budgets >= C (filtered here, by hand), and differs from the prediction from every budget: the smallest
    budget, 0.05 nats off the law, is out of it. The verification row enters neither."""
    rows, budgets = random_law_rows(seed)
    whole, inside = tmp_path / "whole.jsonl", tmp_path / "inside.jsonl"
    whole.write_text("".join(json.dumps(row) + "\n" for row in rows))
    inside.write_text("".join(json.dumps(row) + "\n" for row in rows
                              if row["budget"] >= budgets[1] and row.get("role") != "verification"))
    flops = 30 * budgets[-1]

    def predicted(path, *extra):
        out = tmp_path / f"{path.stem}{len(extra)}.json"
        assert main([str(path), f"--flops={flops}", "--bootstrap=0", f"--out={out}", *extra]) == 0
        return json.loads(out.read_text())

    windowed = predicted(whole, f"--min_budget={budgets[1]}")
    assert "fit window: the 4 budgets of at least" in capsys.readouterr().out
    by_hand, everything = predicted(inside)["prediction"], predicted(whole)["prediction"]
    assert windowed["min_budget"] == budgets[1]
    for approach, entry in by_hand.items():  # KM's joint law can fail on these (an error), the same either way
        assert windowed["prediction"][approach].keys() == entry.keys(), approach
        for key in {"N_opt", "loss"} & entry.keys():
            assert windowed["prediction"][approach][key] == pytest.approx(entry[key], rel=1e-6), approach
    assert {"N_opt", "loss"} <= by_hand["chinchilla"].keys() and {"N_opt", "loss"} <= by_hand["isoflop"].keys()
    assert abs(everything["isoflop"]["loss"] - by_hand["isoflop"]["loss"]) > 1e-3


def test_a_fit_window_fits_the_budgets_within_it_alone(tmp_path):
    """scaling.fit --min_budget: the same fits as on a file of only the rows within the window."""
    from scaling.fit import main as fit_main
    rows, budgets = random_law_rows(7)
    whole, inside = tmp_path / "whole.jsonl", tmp_path / "inside.jsonl"
    whole.write_text("".join(json.dumps(row) + "\n" for row in rows))
    inside.write_text("".join(json.dumps(row) + "\n" for row in rows if row["budget"] >= budgets[2]))
    assert fit_main([str(whole), f"--min_budget={budgets[2]}", f"--out={tmp_path / 'a.json'}", "--accounting=chinchilla"]) == 0
    assert fit_main([str(inside), f"--out={tmp_path / 'b.json'}", "--accounting=chinchilla"]) == 0
    windowed, by_hand = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert windowed["min_budget"] == budgets[2]
    for law in ("chinchilla", "isoflop"):
        assert windowed["fits"]["chinchilla"][law]["n_points"] == 15
        assert windowed["fits"]["chinchilla"][law]["estimates"] == pytest.approx(
            by_hand["fits"]["chinchilla"][law]["estimates"], rel=1e-6)
