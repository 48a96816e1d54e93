"""The learning-rate fit: per-size optima from parabolas in log(rate), a power law through them."""
import json

import numpy as np
import pytest

from scaling.learning_rate import fit_optimal_learning_rate, main


def sweep_rows(exponent, value, sizes, rates, noise=0.0, seed=0, curvature=0.04, ratio=20.0, token_exponent=0.0):
    """Rows whose eval loss is a parabola in log(rate) about value (N / 1e5)^exponent (D / 1e7)^token_exponent,
    each size trained for D = ratio x N tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        tokens = round(ratio * n)
        best = value * (n / 1e5) ** exponent * (tokens / 1e7) ** token_exponent
        for rate in rates:
            loss = 3.0 + 50.0 / n**0.3 + curvature * np.log(rate / best) ** 2 + rng.normal(0.0, noise)
            rows.append({"run": f"n{n:.0f}_d{tokens}_lr{rate:.3g}", "config": {"lr_schedule.peak_lr": rate},
                         "params_total": n, "params_nonembedding": n / 2, "tokens": tokens,
                         "final_eval_loss": loss})
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
    assert "lr/PowerLaw.min_params = 30000" in out  # not carried below the smallest size fitted
    saved = json.loads((tmp_path / "lr_fit.json").read_text())
    assert saved["exponent"] == pytest.approx(-0.2) and 15 <= saved["replicates"] <= 20
    path.write_text(json.dumps({"run": "x", "config": {}, "params_total": 1.0, "tokens": 20,
                                "final_eval_loss": 3.0}) + "\n")
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


@pytest.mark.parametrize("seed", range(3))
def test_sizes_trained_for_different_lengths_give_a_law_in_n_and_d(seed):
    """Random laws in N and D, each size trained at two lengths a random factor apart (and shuffled): the
    joint fit recovers both exponents, and matches a least-squares fit of the true optima by numpy's lstsq."""
    rng = np.random.default_rng(seed)
    exponent, token_exponent = rng.uniform(-0.8, 0.1), rng.uniform(-0.6, 0.0)
    value, sizes = 10 ** rng.uniform(-2.5, -1.5), 10 ** np.sort(rng.uniform(4, 6.5, 3))
    rates = value * 2.0 ** np.arange(-7, 7)
    short, long = rng.uniform(5, 15), rng.uniform(30, 100)
    rows = [r for ratio in (short, long) for r in sweep_rows(exponent, value, sizes, rates, ratio=ratio,
                                                            token_exponent=token_exponent)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    fit = fit_optimal_learning_rate(rows, reference_params=1e5)
    assert fit.exponent == pytest.approx(exponent, abs=1e-9)
    assert fit.token_exponent == pytest.approx(token_exponent, abs=1e-9)
    assert fit(3e5, 1e7) == pytest.approx(value * 3**exponent, rel=1e-9)  # the true law's reference point
    n = np.array([s["N"] for s in fit.sizes])
    d = np.array([s["D"] for s in fit.sizes])
    truth = value * (n / 1e5) ** exponent * (d / 1e7) ** token_exponent
    design = np.column_stack([np.ones(len(n)), np.log(n), np.log(d)])
    reference = np.linalg.lstsq(design, np.log(truth), rcond=None)[0]
    assert fit.token_exponent == pytest.approx(reference[2], abs=1e-9)
    assert len(fit.sizes) == 6 and fit.reference_tokens == pytest.approx(np.exp(np.mean(np.log(d))))


def test_one_length_per_size_gives_a_law_in_n_alone_and_the_gin_lines_say_which():
    rows = sweep_rows(-0.4, 6e-3, [3e4, 1e5, 3e5], RATES, ratio=10.0)
    rows += sweep_rows(-0.4, 6e-3, [1e6], RATES, ratio=15.0)  # within 2x of the others: one length
    fit = fit_optimal_learning_rate(rows, reference_params=1e5)
    assert fit.token_exponent is None and fit.exponent == pytest.approx(-0.4, abs=1e-9)
    assert not any("token" in line for line in fit.gin_rule("test"))
    rows += sweep_rows(-0.4, 6e-3, [1e5], RATES, ratio=40.0)
    joint = fit_optimal_learning_rate(rows, reference_params=1e5)
    assert joint.token_exponent == pytest.approx(0.0, abs=1e-9)
    assert any(line.startswith("lr/PowerLaw.token_exponent = ") for line in joint.gin_rule("test"))


@pytest.mark.parametrize("seed", range(3))
def test_a_narrow_window_keeps_a_diverged_rate_out_of_the_parabola(seed, tmp_path, capsys):
    """Each size's rate 4x above its optimum diverged (its loss 0.5 above the parabola's): with the best
    and its neighbours alone (window 2, on a grid a factor 2 apart) the fit finds the true law; with the
    default window of 4 that rate enters the parabola and pulls the optimum down."""
    rng = np.random.default_rng(seed)
    exponent, value = rng.uniform(-0.7, 0.0), 10 ** rng.uniform(-2.5, -1.5)
    sizes = 10 ** np.sort(rng.uniform(4, 6.5, 3))
    rates = value * 2.0 ** np.arange(-4, 5)  # the optimum at 1e5 on the grid; elsewhere between its points
    rows = sweep_rows(exponent, value, sizes, rates)
    for row in rows:
        best = value * (row["params_total"] / 1e5) ** exponent
        if 3.0 < row["config"]["lr_schedule.peak_lr"] / best < 5.0:
            row["final_eval_loss"] += 0.5
    narrow = fit_optimal_learning_rate(rows, reference_params=1e5, window=2.0)
    wide = fit_optimal_learning_rate(rows, reference_params=1e5)
    assert narrow.value == pytest.approx(value, rel=0.15)
    assert wide.value < 0.9 * narrow.value
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([str(path), "--window", "1", "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--window" in err


@pytest.mark.parametrize("seed", range(3))
def test_a_window_of_2_keeps_neighbours_whose_rates_were_rounded_to_three_digits(seed):
    """A grid a factor 2 apart, written to three digits as sweeps write it (0.00216, 0.00433, ...), puts some
    neighbours up to 0.5% more than 2x apart. With --window 2 they still enter the best rate's parabola: each
    size's optimum is the vertex of numpy's parabola through its best rate and both neighbours. A rate 2.1x
    from the best stays out."""
    rng = np.random.default_rng(seed)
    exponent, value = rng.uniform(-0.7, 0.0), 10 ** rng.uniform(-2.5, -1.5)
    rates = [float(f"{r:.3g}") for r in value * rng.uniform(1, 2) * 2.0 ** np.arange(-4, 4)]
    rows = sweep_rows(exponent, value, 10 ** np.sort(rng.uniform(4.5, 5.5, 3)), rates, noise=0.002, seed=seed)
    rng.shuffle(rows)
    fit = fit_optimal_learning_rate(rows, window=2.0)
    for size in fit.sizes:
        best = int(np.argmin(size["losses"]))
        if not 0 < best < len(size["rates"]) - 1:
            assert size["optimal_rate"] is None
            continue
        c2, c1, _ = np.polyfit(np.log(size["rates"][best - 1:best + 2]), size["losses"][best - 1:best + 2], 2)
        assert size["optimal_rate"] == pytest.approx(np.exp(-c1 / (2 * c2)), rel=1e-9)
    assert any(size["optimal_rate"] is not None for size in fit.sizes)
    wide_grid = sweep_rows(exponent, value, [1e5, 3e5, 1e6], [value * 2.1 ** k for k in range(-3, 4)])
    with pytest.raises(ValueError, match="too few sizes"):
        fit_optimal_learning_rate(wide_grid, window=2.0)


def test_lengths_apart_only_at_a_size_with_no_optimum_fix_no_token_exponent():
    """Sizes at 10 N and one at 10.2 N have optima; the one trained at 40 N has its best rate at the grid's
    edge. The lengths with optima are too close to fix D's exponent, so the fit refuses rather than
    reading it off a 2% difference in length."""
    rows = sweep_rows(-0.4, 6e-3, [3e4, 1e5, 3e5], RATES, ratio=10.0)
    rows += sweep_rows(-0.4, 6e-3, [1e6], RATES, ratio=10.2, token_exponent=-2.0)
    rows += sweep_rows(-0.4, 60.0, [2e5], RATES, ratio=40.0)
    with pytest.raises(ValueError, match="not all of one length"):
        fit_optimal_learning_rate(rows, reference_params=1e5)
