"""scaling.design: simulated sweeps of a design, on random laws, against a linearised least-squares reference."""
import json
from pathlib import Path

import numpy as np
import pytest

from scaling.chinchilla import ChinchillaFit
from scaling.design import Design, from_runs, main, simulate, spread

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "results" / "isoflop_cpu_depth" / "results.jsonl"


def random_law(rng) -> ChinchillaFit:
    return ChinchillaFit(n_points=0, E=rng.uniform(1.5, 2.5), A=np.exp(rng.uniform(3, 7)),
                         B=np.exp(rng.uniform(4, 8)), alpha=rng.uniform(0.25, 0.45), beta=rng.uniform(0.25, 0.45))


def random_design(rng, budgets=4) -> Design:
    first = 10 ** rng.uniform(15, 18)
    return Design(tuple(first * np.cumprod([1.0, *rng.uniform(2.0, 5.0, budgets - 1)])),
                  sizes=int(rng.integers(5, 8)), span=rng.uniform(3.0, 5.0))


@pytest.mark.parametrize("seed", range(3))
def test_runs_sit_on_their_budgets_symmetric_about_the_laws_optimum_in_any_budget_order(seed):
    rng = np.random.default_rng(seed)
    law, design = random_law(rng), random_design(rng)
    N, D, budget = design.runs(law)
    np.testing.assert_allclose(6 * N * D, budget, rtol=1e-12)
    for c in design.budgets:
        n = np.sort(N[budget == c])
        n_opt = law.optimal_allocation(c)[0]
        np.testing.assert_allclose(np.exp(np.mean(np.log(n))), n_opt, rtol=1e-9)  # centred in log N
        np.testing.assert_allclose([n[0], n[-1]], [n_opt / design.span, n_opt * design.span], rtol=1e-9)
        assert len(n) == design.sizes
    shuffled = Design(tuple(rng.permutation(design.budgets)), design.sizes, design.span)
    key = lambda runs: sorted(zip(*runs))  # noqa: E731
    assert key(shuffled.runs(law)) == pytest.approx(key((N, D, budget)))


@pytest.mark.parametrize("seed", range(3))
def test_noise_free_sweeps_recover_the_laws_exponent_by_both_approaches(seed):
    rng = np.random.default_rng(10 + seed)
    law, design = random_law(rng), random_design(rng)
    result = simulate(law, design, noise=1e-7, sims=3, seed=seed)
    assert result["true_a"] == pytest.approx(law.beta / (law.alpha + law.beta))
    for approach in ("isoflop", "chinchilla"):
        np.testing.assert_allclose(result["a"][approach], law.beta / (law.alpha + law.beta), atol=2e-4)
    assert result["bracketed"] == 1.0


def linearised_sd_of_a(law, N, D, noise):
    """The SD of Approach 3's a under small relative noise: least squares on log L, linearised at the law
    (Gauss-Newton covariance noise^2 (J^T J)^-1 on (log A, log B, E, alpha, beta), carried to a = beta /
    (alpha + beta) by its gradient). Written here, not taken from scaling/."""
    L = law.predict(N, D)
    tn, td = law.A * N ** -law.alpha, law.B * D ** -law.beta
    J = np.stack([tn, td, np.ones_like(L), -np.log(N) * tn, -np.log(D) * td], axis=1) / L[:, None]
    cov = noise**2 * np.linalg.inv(J.T @ J)
    s = law.alpha + law.beta
    grad = np.array([0.0, 0.0, 0.0, -law.beta / s**2, law.alpha / s**2])
    return float(np.sqrt(grad @ cov @ grad))


# About 24 s a law on two cores: one in the default suite, the second with `pytest -m slow`.
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_approach_3_spreads_as_the_linearised_least_squares_fit_says(seed):
    """Noise well inside the Huber threshold (1e-3 in log loss) makes the fit least squares, so the spread
    of a over simulated sweeps is the linearised one: 95% of sweeps within ±1.96 SD."""
    rng = np.random.default_rng(20 + seed)
    law, design = random_law(rng), random_design(rng, budgets=5)
    noise = 2e-4
    result = simulate(law, design, noise, sims=200, seed=seed)
    lo, hi = spread(result["a"]["chinchilla"])["range"]
    expected = 2 * 1.96 * linearised_sd_of_a(law, *design.runs(law)[:2], noise)
    assert (hi - lo) == pytest.approx(expected, rel=0.2)


@pytest.mark.slow  # 21 s on two cores; the linearised test above checks the spread's size in the default suite
def test_more_budgets_and_less_noise_narrow_the_spread():
    rng = np.random.default_rng(30)
    law = random_law(rng)
    short = Design((1e17, 3e17, 1e18))
    long = Design((1e17, 3e17, 1e18, 3e18, 1e19, 3e19, 1e20))
    width = {}
    for name, design, noise in (("short", short, 0.003), ("long", long, 0.003), ("quiet", short, 0.0006)):
        r = simulate(law, design, noise, sims=60, seed=1)
        width[name] = {a: np.subtract(*spread(v)["range"][::-1]) for a, v in r["a"].items()}
    for approach in ("isoflop", "chinchilla"):
        assert width["long"][approach] < 0.6 * width["short"][approach]
        assert width["quiet"][approach] < 0.4 * width["short"][approach]


def test_the_command_takes_its_law_noise_and_budgets_from_a_sweep(tmp_path, capsys):
    rows = [json.loads(line) for line in SWEEP.read_text().splitlines()]
    window = [r for r in rows if r.get("role") != "verification" and r["budget"] >= 1e13]
    out = tmp_path / "design.json"
    assert main([str(SWEEP), "--min_budget=1e13", "--sims=20", f"--out={out}"]) == 0
    table = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["budgets"] == sorted({r["budget"] for r in window})
    assert written["noise"] == pytest.approx(np.median([r["final_eval_loss_se"] / r["final_eval_loss"]
                                                        for r in window]))
    assert written["sims"] == 20 and written["a"]["chinchilla"]["fitted"] == 20
    # The design is the sweep's own: 5 sizes per budget, and the median half-span in N of its budgets.
    half_spans = [np.sqrt(max(n) / min(n)) for n in
                  [[r["params_total"] for r in window if r["budget"] == c] for c in written["budgets"]]]
    assert written["sizes"] == 5 and written["span"] == pytest.approx(np.median(half_spans))
    assert "Approach 2: a" in table and "Approach 3: a" in table and "RMS relative residual" in table


def test_the_command_takes_a_law_given_outright(tmp_path, capsys):
    law = "E=1.8,A=400,B=2000,alpha=0.34,beta=0.37"
    assert main([f"--law={law}", "--budgets=1e18,1e19,1e20", "--noise=0.003", "--sims=10", "--sizes=7"]) == 0
    table = capsys.readouterr().out
    assert f"the law's own a: {0.37 / 0.71:.3f}" in table and "7 sizes each" in table


def test_runs_without_a_design_say_why():
    rng = np.random.default_rng(40)
    law = random_law(rng)
    N = np.geomspace(1e6, 1e8, 7)
    one_budget = {"N": N, "D": 1e19 / (6 * N), "loss": law.predict(N, 1e19 / (6 * N)), "budget": np.full(7, 1e19)}
    own = from_runs(law, one_budget)
    assert own["design"] is None and "at least two positive budgets" in own["why"]
    assert own["eval_se"] is None and own["rms_residual"] == pytest.approx(0.0, abs=1e-12)
    unlabelled = {k: v for k, v in one_budget.items() if k != "budget"}
    assert from_runs(law, unlabelled)["why"] == "the rows carry no budget"
