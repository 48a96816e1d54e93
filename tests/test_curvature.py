"""The IsoFLOP curvature check (scaling/curvature.py): Approach 3's profiles against the runs' own parabolas."""
import numpy as np
import pytest

from scaling import fit_chinchilla
from scaling.chinchilla import ChinchillaFit
from scaling.curvature import DRIFT, curvature_check


def random_law(rng) -> ChinchillaFit:
    return ChinchillaFit(E=rng.uniform(1.5, 2.5), A=rng.uniform(50, 500), B=rng.uniform(200, 3000),
                         alpha=rng.uniform(0.25, 0.6), beta=rng.uniform(0.25, 0.6), n_points=0)


def isoflop_design(n_opt, budgets, rng, sizes=7, step=1.6):
    """Each budget's sizes log-spaced by `step` around n_opt(C), jittered, with D = C / (6 N)."""
    N, D, C = [], [], []
    for budget in budgets:
        offsets = step ** (np.arange(sizes) - (sizes - 1) / 2) * np.exp(rng.uniform(-0.1, 0.1, sizes))
        for n in n_opt(budget) * offsets:
            N.append(n), D.append(budget / (6 * n)), C.append(budget)
    return np.array(N), np.array(D), np.array(C)


@pytest.mark.parametrize("seed", range(4))
def test_the_law_curvature_is_its_second_derivative_along_the_isoflop_line(seed):
    """Against central differences of the law's own loss (N up, D down by the same factor), and at the
    law's optimum against alpha beta (L - E) / 2."""
    rng = np.random.default_rng(seed)
    law = random_law(rng)
    N, D, h = 10 ** rng.uniform(4, 8, 5), 10 ** rng.uniform(6, 10, 5), 1e-3
    along = lambda x: law.predict(N * np.exp(x), D * np.exp(-x))  # noqa: E731
    numeric = (along(h) - 2 * along(0.0) + along(-h)) / (2 * h**2)
    assert law.isoflop_curvature(N, D) == pytest.approx(numeric, rel=1e-4)
    n_opt, d_opt = law.optimal_allocation(1e20)
    assert law.isoflop_curvature(n_opt, d_opt) == pytest.approx(
        law.alpha * law.beta * (law.predict(n_opt, d_opt) - law.E) / 2, rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_runs_from_an_additive_law_keep_its_curvature_and_raise_no_warning(seed):
    """Random laws, random jittered designs over 1.5 decades: the runs' parabolas curve as the fitted law
    does at every budget, the ratio does not drift, and the rows' order changes nothing."""
    rng = np.random.default_rng(100 + seed)
    law = random_law(rng)
    budgets = np.geomspace(1e17, 3e18, 4)
    N, D, C = isoflop_design(lambda c: law.optimal_allocation(c)[0], budgets, rng)
    sd = 0.002 * law.predict(N, D)
    loss = law.predict(N, D) + rng.normal(0, sd)
    check = curvature_check(fit_chinchilla(N, D, loss), N, D, loss, C, sd)
    assert check["warning"] is None and check["interval"][0] <= 1.0 <= check["interval"][1], check
    for row in check["budgets"]:
        assert abs(row["runs"] - row["law"]) < 4 * row["runs_se"] + 0.05 * row["law"], row
    order = rng.permutation(len(N))
    again = curvature_check(fit_chinchilla(N[order], D[order], loss[order]), N[order], D[order], loss[order],
                            C[order], sd[order])
    assert again["drift"] == pytest.approx(check["drift"], rel=1e-6)
    assert again["interval"] == pytest.approx(check["interval"], rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_profiles_that_stay_sharp_while_the_loss_falls_are_flagged(seed):
    """Runs whose IsoFLOP profiles keep one curvature k while their minimum falls by a nat, as the CPU sweep's
    did (results/isoflop_cpu_warmup): the additive form cannot draw them, and the check says its profiles
    flatten faster than the runs'."""
    rng = np.random.default_rng(200 + seed)
    k, exponent = rng.uniform(0.12, 0.25), rng.uniform(0.5, 0.6)
    n_star = lambda c: 0.01 * c**exponent  # noqa: E731
    budgets = np.geomspace(3e11, 1e13, 4)
    N, D, C = isoflop_design(n_star, budgets, rng, sizes=5, step=2.0)
    floor = 30.0 * C ** rng.uniform(-0.11, -0.09)
    loss = floor + k * np.log(N / n_star(C)) ** 2 + rng.normal(0, 0.005, len(N))
    check = curvature_check(fit_chinchilla(N, D, loss), N, D, loss, C, 0.005)
    assert [row["runs"] for row in check["budgets"]] == pytest.approx([k] * 4, rel=0.15)
    assert check["drift"] > DRIFT and check["interval"][0] > 1.0, check
    assert "flatten faster than the runs'" in check["warning"]
    # Without the runs' errors: the same drift, no interval, and the warning on the estimate alone.
    bare = curvature_check(fit_chinchilla(N, D, loss), N, D, loss, C)
    assert bare["interval"] is None and bare["warning"] and bare["drift"] > DRIFT


def test_no_check_without_both_fits():
    assert curvature_check("not fitted: too few runs", [1e5], [1e6], [3.0], [6e11]) is None
