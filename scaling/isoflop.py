"""Chinchilla Approach 2: IsoFLOP profiles.

For each FLOP budget, fit a parabola of loss in log N and take its minimum as
the compute-optimal size; then fit N_opt ∝ C^a and D_opt ∝ C^b across budgets.

The parabola is a second-order expansion about the minimum, so it is fitted to
the points within a factor `window` in N of the budget's lowest-loss run. On
Porian et al.'s profiles, which span up to ~100x in N and are skewed, a
parabola through all points moves the minima enough to shift a by up to 0.08;
with the window every configuration lands within 0.03 of their published a
(they use local Akima interpolation instead). That holds for any window from
6x to 10x; the default, 8x, is not tuned finer than that. A budget whose minimum lies
outside its sampled sizes is skipped, as Porian et al. do: it is an
extrapolation, not a measurement.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scaling.bootstrap import bootstrap_counts
from scaling.inputs import positive_arrays
from scaling.powerlaw import AllocationFit, fit_power_law


@dataclass(kw_only=True)
class IsoflopFit(AllocationFit):
    law = "isoflop"
    minima: list          # [(budget, N_opt, D_opt, loss_opt)], by budget
    parabolas: dict = field(default_factory=dict)  # budget -> (c2, c1, c0) of loss in ln N
    skipped: list = field(default_factory=list)    # budgets without an interior minimum

    def extra(self):
        return {"minima": [list(map(float, m)) for m in self.minima],
                "skipped_budgets": [float(c) for c in self.skipped]}


def _budget_minimum(log_n, log_d, loss, w, window):
    """(N_opt, D_opt, loss_opt, parabola) of one budget, or None without an interior minimum."""
    use = w > 0
    best = np.flatnonzero(use)[np.argmin(loss[use])]
    use &= np.abs(log_n - log_n[best]) <= np.log(window)
    if len(np.unique(log_n[use])) < 3:
        return None
    sw = np.sqrt(w[use])
    c2, c1, c0 = np.polyfit(log_n[use], loss[use], 2, w=sw)
    if c2 <= 0:
        return None
    x = -c1 / (2.0 * c2)
    if not log_n[use].min() < x < log_n[use].max():
        return None
    # D at the optimum from the budget's own (N, D) pairs: equals C/(6 N_opt)
    # when the runs satisfy C = 6 N D, and stays right under other FLOP counts.
    slope, intercept = np.polyfit(log_n[use], log_d[use], 1, w=sw)
    return np.exp(x), np.exp(intercept + slope * x), c0 - c1**2 / (4.0 * c2), (c2, c1, c0)


def _fit(log_n, log_d, loss, budget, w, window):
    minima, parabolas, skipped = [], {}, []
    for c in np.unique(budget):
        m = budget == c
        found = _budget_minimum(log_n[m], log_d[m], loss[m], w[m], window)
        if found is None:
            skipped.append(c)
            continue
        n_opt, d_opt, loss_opt, parabola = found
        minima.append((c, n_opt, d_opt, loss_opt))
        parabolas[float(c)] = tuple(map(float, parabola))
    if len(minima) < 2:
        return None
    C, n_opt, d_opt, _ = np.array(minima).T
    return IsoflopFit(n_law=fit_power_law(C, n_opt), d_law=fit_power_law(C, d_opt),
                      minima=minima, parabolas=parabolas, skipped=skipped,
                      n_points=int(np.sum(w > 0)))


def fit_isoflop(N, D, loss, budget, bootstrap=0, level=0.95, seed=0, window=8.0):
    """Approach 2 on runs labelled with their FLOP budget (the nominal C of their IsoFLOP sweep).

    bootstrap: number of resamples of the runs, within each budget, for
        percentile intervals (`level`) on a, b and the coefficients.
    window: the parabola of a budget uses runs within this factor in N of its
        lowest-loss run; np.inf uses them all, as Hoffmann et al. did.
    """
    N, D, loss, budget = positive_arrays(min_points=6, N=N, D=D, loss=loss, budget=budget)
    args = (np.log(N), np.log(D), loss, budget)
    fit = _fit(*args, np.ones(len(N)), window)
    if fit is None:
        raise ValueError("need at least two budgets whose loss has an interior minimum in N")
    if bootstrap:
        counts = bootstrap_counts(len(N), bootstrap, seed, groups=budget)
        fit.set_intervals([_fit(*args, w, window) for w in counts], level)
    return fit
