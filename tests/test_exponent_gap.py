"""scaling.isoflop.exponent_gap: Approach 2's a for one sweep counted two ways, with a paired interval."""
import numpy as np
import pytest

from scaling.bootstrap import bootstrap_counts
from scaling.isoflop import exponent_gap, fit_isoflop


def random_sweep(seed, embedding=3e4):
    """IsoFLOP runs whose loss follows a random Chinchilla law in non-embedding n; the other count
    adds a fixed embedding table, which grows N less than n from budget to budget."""
    rng = np.random.default_rng(seed)
    alpha, beta = rng.uniform(0.25, 0.5, 2)
    A, B, E = np.exp(rng.uniform(4, 7)), np.exp(rng.uniform(5, 8)), rng.uniform(1.5, 2.5)
    rows = []
    for budget in np.geomspace(1e13, 1e16, 5):
        g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
        n_star = g * (budget / 6) ** (beta / (alpha + beta))
        for n in n_star * np.geomspace(1 / 4, 4, 5):
            d = budget / (6 * n)
            loss = (E + A * n**-alpha + B * d**-beta) * np.exp(rng.normal(0, 0.003))
            rows.append((n, n + embedding, d, loss, budget))
    return tuple(np.array(x) for x in zip(*rows))


@pytest.mark.parametrize("seed", range(4))
def test_gap_and_interval_match_two_fits_on_the_same_resamples(seed):
    n, total, D, loss, budget = random_sweep(seed)
    gap = exponent_gap(n, total, D, loss, budget, bootstrap=40, seed=seed)
    assert gap["gap"] == pytest.approx(fit_isoflop(n, D, loss, budget).a - fit_isoflop(total, D, loss, budget).a,
                                       abs=1e-12)
    # The reference: the same resamples (in the runs' sorted order) fed to fit_isoflop twice.
    order = np.lexsort((loss, D, total, n, budget))
    n, total, D, loss, budget = (x[order] for x in (n, total, D, loss, budget))
    reference = []
    for counts in bootstrap_counts(len(n), 40, seed, groups=budget):
        drawn = counts > 0  # fit_isoflop takes positive weights: the runs a resample draws, as often as drawn
        try:
            reference.append(fit_isoflop(n[drawn], D[drawn], loss[drawn], budget[drawn], weights=counts[drawn]).a
                             - fit_isoflop(total[drawn], D[drawn], loss[drawn], budget[drawn], weights=counts[drawn]).a)
        except ValueError:
            pass
    assert gap["replicates"] == len(reference)
    assert gap["interval"] == pytest.approx(list(np.percentile(reference, [2.5, 97.5])), abs=1e-9)
    # Adding a fixed embedding makes N grow more slowly with C, so the non-embedding a is higher.
    assert gap["interval"][0] > 0 and gap["at_or_below_zero"] == 0


def test_the_same_count_twice_gives_no_gap_in_any_resample():
    n, _, D, loss, budget = random_sweep(7)
    gap = exponent_gap(n, n, D, loss, budget, bootstrap=30)
    assert gap["gap"] == 0 and gap["interval"] == [0, 0] and gap["at_or_below_zero"] == 1


def test_permuted_runs_give_the_same_result():
    arrays = random_sweep(11)
    permutation = np.random.default_rng(0).permutation(len(arrays[0]))
    assert exponent_gap(*arrays, bootstrap=30) == exponent_gap(*(x[permutation] for x in arrays), bootstrap=30)


def test_a_sweep_with_no_bracketed_budget_is_refused():
    n, total, D, loss, budget = random_sweep(3)
    with pytest.raises(ValueError, match="interior minimum"):
        exponent_gap(n, total, D, -np.log(n) + 20, budget, bootstrap=5)  # loss falls with N everywhere
