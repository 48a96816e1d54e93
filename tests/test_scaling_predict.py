"""scaling.predict: the compute-optimal run beyond a sweep's budgets, and its loss, from each approach."""
import json

import numpy as np
import pytest

from scaling.predict import main, predict, predicted_loss

LAW = dict(E=1.9, A=520.0, B=1700.0, alpha=0.31, beta=0.37)


def law_loss(N, D):
    return LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / D ** LAW["beta"]


def true_optimum(C):
    """The law's compute-optimal (N, D) at C = 6 N D, by brute force over N (not the library's formula)."""
    sizes = np.geomspace(1e5, 1e12, 200_001)
    i = np.argmin(law_loss(sizes, C / (6 * sizes)))
    return sizes[i], C / (6 * sizes[i])


def isoflop_rows(noise=0.002, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for budget in (1e18, 4e18, 1.6e19, 6.4e19):
        n_star, _ = true_optimum(budget)
        for n in n_star * 2.0 ** np.arange(-3, 4):
            tokens = budget / (6 * n)
            loss = law_loss(n, tokens) * np.exp(rng.normal(0.0, noise))
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
                          ([str(path)], "--flops"),
                          ([str(path), "--flops", "1e20", "--bootstrap", "-2"], "at least 0"),
                          ([str(tmp_path / "none.jsonl"), "--flops", "1e20"], "not found")):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and problem in err, err
