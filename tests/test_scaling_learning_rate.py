"""The learning-rate fit: per-size optima from parabolas in log(rate), a power law through them."""
import json

import numpy as np
import pytest

from scaling.learning_rate import fit_optimal_learning_rate, main


def sweep_rows(exponent, value, sizes, rates, noise=0.0, seed=0, curvature=0.04):
    """Rows whose eval loss is a parabola in log(rate) about value (N / 1e5)^exponent."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        best = value * (n / 1e5) ** exponent
        for rate in rates:
            loss = 3.0 + 50.0 / n**0.3 + curvature * np.log(rate / best) ** 2 + rng.normal(0.0, noise)
            rows.append({"run": f"n{n:.0f}_lr{rate:.3g}", "config": {"lr_schedule.peak_lr": rate},
                         "params_total": n, "params_nonembedding": n / 2, "final_eval_loss": loss})
    return rows


RATES = 1.5e-3 * 2.0 ** np.arange(6)


@pytest.mark.parametrize("exponent, value", [(-0.35, 4e-3), (-0.1, 8e-3), (0.05, 6e-3)])
def test_recovers_random_power_laws_exactly_without_noise(exponent, value):
    fit = fit_optimal_learning_rate(sweep_rows(exponent, value, [2e4, 6e4, 2e5, 5e5], RATES),
                                    reference_params=1e5)
    assert fit.exponent == pytest.approx(exponent, abs=1e-9)
    assert fit.value == pytest.approx(value, rel=1e-9)
    assert fit(5e5) == pytest.approx(value * 5**exponent, rel=1e-9)


def test_noisy_sweep_gives_intervals_that_cover_the_truth_and_is_order_free():
    rows = sweep_rows(-0.3, 5e-3, [2e4, 5e4, 1.25e5, 3e5], RATES, noise=0.003, seed=1)
    fit = fit_optimal_learning_rate(rows, bootstrap=100, reference_params=1e5)
    lo, hi = fit.intervals["exponent"]
    assert lo < -0.3 < hi and hi - lo < 0.4
    shuffled = [rows[i] for i in np.random.default_rng(2).permutation(len(rows))]
    again = fit_optimal_learning_rate(shuffled, bootstrap=100, reference_params=1e5)
    assert (again.exponent, again.value, again.intervals) == (fit.exponent, fit.value, fit.intervals)


def test_a_size_whose_best_rate_is_at_the_grid_edge_is_left_out():
    rows = sweep_rows(-0.3, 5e-3, [2e4, 1e5, 4e5], RATES)
    # A fourth size whose optimum lies far above every rate tried.
    rows += [r for r in sweep_rows(-0.3, 5.0, [3e6], RATES)]
    fit = fit_optimal_learning_rate(rows, reference_params=1e5)
    edge = [s for s in fit.sizes if s["N"] == 3e6][0]
    assert edge["optimal_rate"] is None and "the best rate is the highest tried" in edge["reason"]
    assert fit.exponent == pytest.approx(-0.3, abs=1e-9)


def test_command_line_prints_the_gin_rule_and_fails_cleanly(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sweep_rows(-0.2, 4e-3, [3e4, 1e5, 3e5], RATES)))
    assert main([str(path), "--bootstrap", "20", "--reference_params", "1e5"]) == 0
    out = capsys.readouterr().out
    assert "lr/PowerLaw.exponent = -0.2" in out and "lr/PowerLaw.value = 0.004" in out
    saved = json.loads((tmp_path / "lr_fit.json").read_text())
    assert saved["exponent"] == pytest.approx(-0.2) and 15 <= saved["replicates"] <= 20
    path.write_text(json.dumps({"run": "x", "config": {}, "params_total": 1.0, "final_eval_loss": 3.0}) + "\n")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lr_schedule.peak_lr" in err


def test_several_results_files_are_fitted_as_one_sweep(tmp_path, capsys):
    """A sweep split over two files (a later check of two sizes, in another order) gives the joint fit,
    warns that the two were trained on different corpora, and needs --out so that no file's own fit is replaced."""
    rows = sweep_rows(-0.45, 6e-3, [2e4, 6e4, 2e5, 8e5], RATES, noise=0.002, seed=3)
    first = [dict(r, tokenizer_fingerprint="a", corpus_train_tokens=100) for r in rows if r["params_total"] < 1e5]
    second = [dict(r, tokenizer_fingerprint="b", corpus_train_tokens=200) for r in rows if r["params_total"] > 1e5]
    paths = [tmp_path / "first.jsonl", tmp_path / "second.jsonl"]
    for path, part in zip(paths, (first, second[::-1])):
        path.write_text("".join(json.dumps(r) + "\n" for r in part))
    out = tmp_path / "joint.json"
    assert main([*map(str, paths), "--bootstrap", "0", "--reference_params", "1e5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 different corpora" in printed
    joint = fit_optimal_learning_rate(rows, reference_params=1e5)
    saved = json.loads(out.read_text())
    assert len(saved["sizes"]) == 4
    assert saved["exponent"] == pytest.approx(joint.exponent, abs=1e-12)
    assert saved["value"] == pytest.approx(joint.value, rel=1e-12)
    assert main([*map(str, paths)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err
    assert not (tmp_path / "lr_fit.json").exists()
