"""Chinchilla Approach 2: IsoFLOP profiles.

For each FLOP budget, fit a parabola of loss in log N and take its minimum as
the compute-optimal size; then fit N_opt ∝ C^a and D_opt ∝ C^b across budgets.

The parabola is a second-order expansion about the minimum, so it is fitted to
the points within a factor `window` in N of the budget's lowest-loss run (a
point exactly at that factor is in: the test allows for rounding, so that
sizes spaced by exactly 2x are not kept or dropped by the last bit of a
float). On Porian et al.'s profiles, which span up to ~100x in N and are
skewed, a parabola through all points moves the minima enough to shift a by
up to 0.08; with the window every configuration lands within 0.03 of their
published a (they use local Akima interpolation instead). That holds for any
window from 6x to 10x; the default, 8x, is not tuned finer than that.
`window=np.inf` uses every point, as Hoffmann et al. did.

A budget whose minimum lies outside its sampled sizes is skipped, as Porian
et al. do: it is an extrapolation, not a measurement. Every budget's profile
(`budget_profile`) says whether its minimum is bracketed (interior, with at
least `min_each_side` sizes on each side within the window), how far its
sizes reach on each side in factors of N_opt, and on which side sizes are
missing: the sweep runner's adaptive bracketing acts on the same profile.
Sampling off-centre biases the parabola's vertex when the true profile is
skewed (Open-Athena 2026: up to 23% in D_opt at 1e24 FLOPs on wide grids),
so a budget whose sizes reach more than twice as far (in log N) on one side
as on the other is warned about.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from scaling.bootstrap import bootstrap_counts
from scaling.inputs import canonical_order, positive_arrays
from scaling.powerlaw import AllocationFit, fit_power_law

WINDOW = 8.0
MIN_EACH_SIDE = 2
OFF_CENTRE = 2.0  # one side reaching this many times as far in log N as the other
EDGE_TOLERANCE = 1e-9  # in ln N: sizes this close count as equal (and log(window) is relaxed by as much)


@dataclass
class BudgetProfile:
    """One budget's IsoFLOP profile: where its minimum is and whether its sizes bracket it."""
    budget: float
    sizes: int  # distinct N at this budget
    best_n: float  # N of its lowest-loss run
    n_opt: Optional[float] = None  # the parabola's vertex, when interior
    d_opt: Optional[float] = None
    loss_opt: Optional[float] = None
    parabola: Optional[tuple] = None  # (c2, c1, c0) of loss in ln N
    sizes_below: int = 0  # distinct N inside the window below N_opt (below best_n without a vertex)
    sizes_above: int = 0
    reach_low: Optional[float] = None  # smallest N in the window / N_opt
    reach_high: Optional[float] = None  # largest N in the window / N_opt
    bracketed: bool = False
    open_side: Optional[str] = None  # 'low', 'high' or 'both': where sizes are missing
    reason: str = ""

    @property
    def interior(self) -> bool:
        return self.n_opt is not None

    @property
    def off_centre(self) -> bool:
        if not self.interior:
            return False
        low, high = -np.log(self.reach_low), np.log(self.reach_high)
        return bool(max(low, high) > OFF_CENTRE * min(low, high))

    def to_dict(self):
        return {**asdict(self), "off_centre": self.off_centre}


def windowed_parabola(log_x, y, w, window=WINDOW):
    """A parabola in log x through the points within `window`x of the lowest y, and its vertex.

    Returns (distinct log x inside the window, (c2, c1, c0) or None with fewer
    than 3 of them, the vertex's log x or None when it is not strictly inside
    them or the parabola opens downwards). Shared by the IsoFLOP profiles and
    the learning-rate fit (scaling/learning_rate.py).
    """
    use = w > 0
    best = np.flatnonzero(use)[np.argmin(y[use])]
    use &= np.abs(log_x - log_x[best]) <= np.log(window) + EDGE_TOLERANCE
    inside = np.unique(log_x[use])
    if len(inside) < 3:
        return inside, use, None, None
    parabola = tuple(float(c) for c in np.polyfit(log_x[use], y[use], 2, w=np.sqrt(w[use])))
    c2, c1, _ = parabola
    vertex = -c1 / (2.0 * c2) if c2 > 0 else None
    if vertex is not None and not inside[0] + EDGE_TOLERANCE < vertex < inside[-1] - EDGE_TOLERANCE:
        vertex = None
    return inside, use, parabola, vertex


def budget_profile(N, D, loss, budget, weights=None, window=WINDOW, min_each_side=MIN_EACH_SIDE):
    """The IsoFLOP profile of one budget's runs (arrays over its runs; weights 0 leave a run out)."""
    log_n, log_d, loss = np.log(np.asarray(N, float)), np.log(np.asarray(D, float)), np.asarray(loss, float)
    w = np.ones(len(loss)) if weights is None else np.asarray(weights, float)
    present = w > 0
    best = np.flatnonzero(present)[np.argmin(loss[present])]
    profile = BudgetProfile(budget=float(budget), sizes=len(np.unique(log_n[present])),
                            best_n=float(np.exp(log_n[best])))
    sizes, use, parabola, vertex = windowed_parabola(log_n, loss, w, window)
    profile.parabola = parabola
    centre = log_n[best]
    if vertex is not None:
        c2, c1, c0 = parabola
        centre = vertex
        # D at the optimum from the budget's own (N, D) pairs: equals C/(6 N_opt)
        # when the runs satisfy C = 6 N D, and stays right under other FLOP counts.
        slope, intercept = np.polyfit(log_n[use], log_d[use], 1, w=np.sqrt(w[use]))
        profile.n_opt, profile.d_opt = float(np.exp(vertex)), float(np.exp(intercept + slope * vertex))
        profile.loss_opt = float(c0 - c1**2 / (4.0 * c2))
        profile.reach_low = float(np.exp(sizes[0] - vertex))
        profile.reach_high = float(np.exp(sizes[-1] - vertex))
    elif parabola is not None and parabola[0] <= 0:
        profile.reason = "the profile is flat or concave: no minimum to place"
    profile.sizes_below = int(np.sum(sizes < centre - EDGE_TOLERANCE))
    profile.sizes_above = int(np.sum(sizes > centre + EDGE_TOLERANCE))
    low, high = profile.sizes_below < min_each_side, profile.sizes_above < min_each_side
    if parabola is not None and parabola[0] <= 0:
        low = high = True
    profile.open_side = "both" if low and high else "low" if low else "high" if high else None
    profile.bracketed = profile.interior and profile.open_side is None
    if not profile.reason:
        if not profile.interior:
            edge = "smallest" if profile.best_n == np.exp(sizes[0]) else "largest"
            profile.reason = (f"the lowest loss is at the {edge} size within the window" if len(sizes) >= 3
                              else f"only {len(sizes)} sizes within the window")
        elif profile.open_side:
            profile.reason = (f"{profile.sizes_below} sizes below N_opt and {profile.sizes_above} above "
                              f"within the window; need {min_each_side} on each side")
    return profile


@dataclass(kw_only=True)
class IsoflopFit(AllocationFit):
    law = "isoflop"
    minima: list          # [(budget, N_opt, D_opt, loss_opt)], by budget
    parabolas: dict = field(default_factory=dict)  # budget -> (c2, c1, c0) of loss in ln N
    skipped: list = field(default_factory=list)    # budgets without an interior minimum
    profiles: list = field(default_factory=list)   # BudgetProfile of every budget
    window: float = WINDOW

    @property
    def warnings(self) -> list:
        out = []
        for p in self.profiles:
            if not p.interior:
                out.append(f"budget {p.budget:.3g} left out: {p.reason}")
            elif not p.bracketed:
                out.append(f"budget {p.budget:.3g} not bracketed: {p.reason}")
            if p.off_centre:
                out.append(f"budget {p.budget:.3g} sampled off-centre: its sizes reach {p.reach_low:.2g}x "
                           f"to {p.reach_high:.2g}x N_opt; a skewed profile biases the vertex")
        return out

    def extra(self):
        return {"minima": [list(map(float, m)) for m in self.minima],
                "skipped_budgets": [float(c) for c in self.skipped], "window": self.window,
                "profiles": [p.to_dict() for p in self.profiles], "warnings": self.warnings}


def _fit(N, D, loss, budget, w, window, min_each_side):
    minima, parabolas, skipped, profiles = [], {}, [], []
    for c in np.unique(budget):
        m = (budget == c) & (w > 0)
        if not m.any():
            continue
        profile = budget_profile(N[m], D[m], loss[m], c, w[m], window, min_each_side)
        profiles.append(profile)
        if not profile.interior:
            skipped.append(float(c))
            continue
        minima.append((float(c), profile.n_opt, profile.d_opt, profile.loss_opt))
        parabolas[float(c)] = profile.parabola
    if len(minima) < 2:
        return None
    C, n_opt, d_opt, _ = np.array(minima).T
    return IsoflopFit(n_law=fit_power_law(C, n_opt), d_law=fit_power_law(C, d_opt),
                      minima=minima, parabolas=parabolas, skipped=skipped, profiles=profiles,
                      window=window, n_points=int(np.sum(w > 0)))


def fit_isoflop(N, D, loss, budget, bootstrap=0, level=0.95, seed=0, window=WINDOW, weights=None,
                min_each_side=MIN_EACH_SIDE):
    """Approach 2 on runs labelled with their FLOP budget (the nominal C of their IsoFLOP sweep).

    bootstrap: number of resamples of the runs, within each budget, for
        percentile intervals (`level`) on a, b and the coefficients.
    window: the parabola of a budget uses runs within this factor in N of its
        lowest-loss run; np.inf uses them all, as Hoffmann et al. did.
    weights: per-run weights of the parabola fits (e.g. 1 / SE^2 of each eval loss).
    min_each_side: sizes needed on each side of N_opt for a budget to count as bracketed.
    """
    arrays = dict(N=N, D=D, loss=loss, budget=budget)
    if weights is not None:
        arrays["weights"] = weights
    arrays = positive_arrays(min_points=6, **arrays)
    order = canonical_order(arrays[3], *arrays[:3])
    N, D, loss, budget, *rest = (x[order] for x in arrays)
    w = rest[0] if rest else np.ones(len(N))
    args = (N, D, loss, budget)
    fit = _fit(*args, w, window, min_each_side)
    if fit is None:
        raise ValueError("need at least two budgets whose loss has an interior minimum in N")
    if bootstrap:
        counts = bootstrap_counts(len(N), bootstrap, seed, groups=budget)
        fit.set_intervals([_fit(*args, c * w, window, min_each_side) for c in counts], level)
    return fit


def exponent_gap(N, N_other, D, loss, budget, bootstrap=200, level=0.95, seed=0, window=WINDOW,
                 weights=None, min_each_side=MIN_EACH_SIDE):
    """a(N) - a(N_other) of Approach 2 for one set of runs counted two ways (e.g. non-embedding
    against all parameters), with a paired bootstrap interval: each resample of the runs (within
    budgets) is fitted in both counts, so the interval is the difference's own, narrower than two
    marginal intervals side by side when the two a's move together.

    Returns {'gap', 'interval', 'a', 'a_other', 'replicates', 'at_or_below_zero'}: the last is the
    fraction of usable resamples whose gap is <= 0. Replicates where either count has fewer than two
    bracketed budgets are left out.
    """
    arrays = dict(N=N, N_other=N_other, D=D, loss=loss, budget=budget)
    if weights is not None:
        arrays["weights"] = weights
    N, N_other, D, loss, budget, *rest = positive_arrays(min_points=6, **arrays)
    order = canonical_order(budget, N, N_other, D, loss)
    N, N_other, D, loss, budget = (x[order] for x in (N, N_other, D, loss, budget))
    w = rest[0][order] if rest else np.ones(len(N))

    def exponents(weight):
        fits = [_fit(n, D, loss, budget, weight, window, min_each_side) for n in (N, N_other)]
        return None if None in fits else (fits[0].a, fits[1].a)

    point = exponents(w)
    if point is None:
        raise ValueError("need at least two budgets whose loss has an interior minimum in N, in both counts")
    gaps = [pair[0] - pair[1] for pair in (exponents(c * w) for c in
                                          bootstrap_counts(len(N), bootstrap, seed, groups=budget))
            if pair is not None]
    tail = 50.0 * (1.0 - level)
    return {"gap": point[0] - point[1], "a": point[0], "a_other": point[1], "replicates": len(gaps),
            "interval": [float(np.percentile(gaps, tail)), float(np.percentile(gaps, 100 - tail))] if gaps else None,
            "at_or_below_zero": float(np.mean(np.array(gaps) <= 0)) if gaps else None}
