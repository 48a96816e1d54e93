"""The lack-of-fit check: quiet on random laws with noise at the stated standard errors, loud on runs
that the form cannot describe. The chi-squared reference is written out here (numpy sums and
scipy's distribution), and the laws and designs are drawn at random."""
import numpy as np
import pytest
from scipy import stats

from scaling import fit_chinchilla
from scaling.identification import LACK_OF_FIT_P, lack_of_fit
from scaling.inputs import replicate_spread
from scaling.sweep_fits import fit_sweep
from tests.test_scaling_global import random_law

SE = 0.004  # nats, each run's eval standard error


def design(rng, n=30):
    N = np.exp(rng.uniform(np.log(1e6), np.log(1e9), n))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    return N, D


def fitted_check(N, D, loss):
    fit = fit_chinchilla(N, D, loss, weights=np.full(len(N), SE ** -2.0))
    return lack_of_fit(loss, fit.predict(N, D), np.full(len(N), SE), fit.diagnostics["free_parameters"])


def test_the_statistics_against_a_reference_computed_here():
    rng = np.random.default_rng(7)
    loss, predicted, se = rng.uniform(2, 4, 12), rng.uniform(2, 4, 12), rng.uniform(0.01, 0.05, 12)
    out, _ = lack_of_fit(loss, predicted, se, 5)
    chi2 = sum(((l - p) / s) ** 2 for l, p, s in zip(loss, predicted, se))
    assert out["chi2"] == pytest.approx(chi2) and out["dof"] == 7
    assert out["p_value"] == pytest.approx(stats.chi2.sf(chi2, 7))


def test_quiet_on_random_laws_with_noise_at_the_stated_error():
    rng = np.random.default_rng(0)
    flagged, ratios = 0, []
    for _ in range(30):
        law = random_law(rng)
        N, D = design(rng)
        truth = law["E"] + law["A"] / N ** law["alpha"] + law["B"] / D ** law["beta"]
        out, warning = fitted_check(N, D, truth + rng.normal(0, SE, len(N)))
        flagged += warning is not None
        ratios.append(out["chi2_per_dof"])
    assert flagged <= 3  # LACK_OF_FIT_P = 1%: about 0.3 of 30 expected
    assert 0.6 < np.median(ratios) < 1.5


def test_loud_when_the_runs_bend_away_from_one_power_law_in_n():
    """Two N terms with exponents 0.1 and 0.9: curved in log-log, which one A/N^alpha cannot follow."""
    rng = np.random.default_rng(1)
    flagged = 0
    for _ in range(10):
        law = random_law(rng)
        N, D = design(rng)
        truth = law["E"] + 4.0 / N ** 0.1 + 3e5 / N ** 0.9 + law["B"] / D ** law["beta"]
        out, warning = fitted_check(N, D, truth + rng.normal(0, SE, len(N)))
        flagged += warning is not None and out["p_value"] < LACK_OF_FIT_P
    assert flagged >= 9


def test_too_few_points_for_a_verdict():
    out, warning = lack_of_fit([3.0, 3.1], [3.0, 3.0], [0.01, 0.01], 5)
    assert warning is None and out["dof"] < 1


def test_a_run_to_run_spread_counts_beside_the_eval_error():
    """Random laws whose runs also scatter from seed to seed (0.02 nats, five times the eval SE): checked
    against the eval SE alone nearly every fit is flagged; told the spread, the check is quiet again, and
    its statistic is the quadrature sum written out here."""
    rng = np.random.default_rng(3)
    spread, flagged_alone, flagged_told, ratios = 0.02, 0, 0, []
    for _ in range(20):
        law = random_law(rng)
        N, D = design(rng)
        truth = law["E"] + law["A"] / N ** law["alpha"] + law["B"] / D ** law["beta"]
        loss = truth + rng.normal(0, SE, len(N)) + rng.normal(0, spread, len(N))
        fit = fit_chinchilla(N, D, loss)
        predicted, se, k = fit.predict(N, D), np.full(len(N), SE), fit.diagnostics["free_parameters"]
        flagged_alone += lack_of_fit(loss, predicted, se, k)[1] is not None
        out, warning = lack_of_fit(loss, predicted, se, k, run_sd=spread)
        flagged_told += warning is not None
        ratios.append(out["chi2_per_dof"])
        assert out["chi2"] == pytest.approx(np.sum((loss - predicted) ** 2 / (SE**2 + spread**2)))
    assert flagged_alone >= 18 and flagged_told <= 2
    assert 0.6 < np.median(ratios) < 1.5


def replicated_rows(rng, sizes=6, seeds=3, spread=0.02):
    """Rows of an IsoFLOP-like sweep whose configurations are each trained with `seeds` seeds."""
    law = random_law(rng)
    rows = []
    for i, (n, d) in enumerate(zip(*design(rng, sizes))):
        truth = law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]
        for seed in range(seeds):
            config = {"TransformerConfig.d_model": 16 * (i + 1), "TrainConfig.train_tokens": int(d)}
            if seed:
                config.update({"TrainConfig.seed": seed, "DataConfig.seed": seed})
            rows.append({"run": f"s{i}_seed{seed}", "config": config, "params_total": n, "tokens": d,
                         "flops_chinchilla": 6 * n * d, "final_eval_loss_se": SE,
                         "final_eval_loss": truth + rng.normal(0, spread)})
    return rows


def test_the_run_to_run_spread_is_pooled_over_replicates():
    """Against a pooled variance written out with numpy's ddof=1 variances; any order of the rows gives the
    same; a verification run or a configuration trained once adds nothing; and over 40 degrees of freedom
    the estimate lands near the spread the rows were drawn with."""
    rng = np.random.default_rng(4)
    rows = replicated_rows(rng, sizes=20, seeds=3, spread=0.02)
    groups = [[r["final_eval_loss"] for r in rows[3 * i:3 * i + 3]] for i in range(20)]
    pooled = np.sqrt(sum(2 * np.var(g, ddof=1) for g in groups) / 40)
    spread = replicate_spread(rows)
    assert spread["sd"] == pytest.approx(pooled, rel=1e-12) and spread["dof"] == 40 and spread["configurations"] == 20
    assert 0.015 < spread["sd"] < 0.026
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    extra = [{**rows[0], "run": "verify", "role": "verification", "final_eval_loss": 9.0},
             {**rows[0], "run": "single", "config": {"TransformerConfig.d_model": 999}, "final_eval_loss": 9.0}]
    assert replicate_spread(shuffled + extra)["sd"] == pytest.approx(spread["sd"], rel=1e-12)
    assert replicate_spread([r for r in rows if "TrainConfig.seed" not in r["config"]]) is None


def test_fits_count_the_replicates_spread_unless_told_otherwise():
    rows = replicated_rows(np.random.default_rng(5), sizes=8, seeds=2, spread=0.03)
    measured = replicate_spread(rows)["sd"]
    default = fit_sweep(rows, laws=("chinchilla",))["chinchilla"].diagnostics["lack_of_fit"]
    told = fit_sweep(rows, laws=("chinchilla",), run_sd=measured)["chinchilla"].diagnostics["lack_of_fit"]
    alone = fit_sweep(rows, laws=("chinchilla",), run_sd=0.0)["chinchilla"].diagnostics["lack_of_fit"]
    assert default["chi2"] == pytest.approx(told["chi2"]) and alone["chi2"] > 10 * default["chi2"]
