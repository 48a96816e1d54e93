"""The lack-of-fit check: quiet on random laws with noise at the stated standard errors, loud on runs
that the form cannot describe. The chi-squared reference is written out here (numpy sums and
scipy's distribution), and the laws and designs are drawn at random."""
import numpy as np
import pytest
from scipy import stats

from scaling import fit_chinchilla
from scaling.identification import LACK_OF_FIT_P, lack_of_fit
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
