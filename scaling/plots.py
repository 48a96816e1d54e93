"""Figures for notebooks and the README. Importing this module draws nothing and
selects no backend; each function draws into the Axes it is given (or a new
figure's) and returns the Axes, so it works headless under Agg.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from scaling.kaplan import compute_frontier
from scaling.powerlaw import PowerLaw, fit_power_law

PF_DAY = 8.64e19  # FLOPs in a petaflop/s-day, Kaplan et al.'s unit of compute

# Published compute-optimal allocations, N_opt = N_ref (C / C_ref)^a:
# - Kaplan et al. 2020, section 6.1, figure 14 and table 6: N_opt = 1.3e9 C^0.73,
#   C in PF-days (non-embedding parameters and compute); D_opt then grows as C^0.27.
# - Hoffmann et al. 2022: a = b = 0.50 (table 2, approach 1; approach 2 gives
#   a = 0.49, approach 3 a = 0.46), anchored at Chinchilla itself: 70B
#   parameters, 1.4T tokens, 5.76e23 FLOPs (section 4).
PUBLISHED = {
    "Kaplan et al. 2020": {"N_ref": 1.3e9, "C_ref": PF_DAY, "a": 0.73},
    "Hoffmann et al. 2022": {"N_ref": 70e9, "C_ref": 5.76e23, "a": 0.50},
}


def published_allocation(name, C):
    """(N_opt, D_opt) of a published allocation; D_opt = C / (6 N_opt)."""
    p = PUBLISHED[name]
    C = np.asarray(C, dtype=float)
    n_opt = p["N_ref"] * (C / p["C_ref"]) ** p["a"]
    return n_opt, C / (6.0 * n_opt)


def _axes(ax):
    return plt.subplots()[1] if ax is None else ax


def _loglog(ax, xlabel, ylabel):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def loss_vs_params(N, D, loss, fit=None, ax=None, groups=None, group_label="C"):
    """Loss against N, one colour per token count D (or per value of `groups`).

    groups: a label per run, e.g. an IsoFLOP sweep's budget, where every run has
    its own D. With `fit`, its prediction along each colour's path: D fixed, or
    for a group, D following the group's own power law in N (D ∝ 1/N when the
    group has one size, as at a fixed budget).
    """
    ax = _axes(ax)
    N, D, loss = (np.asarray(x, float) for x in (N, D, loss))
    key, label = (D, "D") if groups is None else (np.asarray(groups, float), group_label)
    values = np.unique(key)
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(values)))
    grid = np.geomspace(N.min(), N.max(), 100)
    for v, colour in zip(values, colours):
        m = key == v
        order = np.argsort(N[m])
        ax.plot(N[m][order], loss[m][order], "o-", color=colour, ms=4, label=f"{label} = {v:.3g}")
        if fit is not None:
            path = PowerLaw(0.0, float(v)) if groups is None else \
                fit_power_law(N[m], D[m]) or PowerLaw(-1.0, float(np.mean(N[m] * D[m])))
            ax.plot(grid, fit.predict(grid, path(grid)), "--", color=colour, lw=1)
    _loglog(ax, "parameters N", "loss (nats/token)")
    if len(values) <= 12:
        ax.legend(fontsize="small")
    return ax


def loss_vs_compute(C, loss, fit=None, ax=None):
    """Every run's loss against compute, the efficient frontier, and a fitted L(C).

    fit: a Chinchilla fit (its loss at the optimal allocation) or a KM fit
    (its frontier law L(C)).
    """
    ax = _axes(ax)
    C, loss = np.asarray(C, float), np.asarray(loss, float)
    ax.scatter(C, loss, s=10, color="0.6", label="runs")
    front = compute_frontier(C, loss)
    ax.plot(C[front], loss[front], "o-", color="C3", ms=4, label="efficient frontier")
    if fit is not None:
        grid = np.geomspace(C.min(), C.max() * 10.0, 100)
        curve = fit.loss_vs_C(grid) if getattr(fit, "loss_vs_C", None) is not None \
            else fit.predict(*fit.optimal_allocation(grid))
        ax.plot(grid, curve, "--", color="k", label=f"{fit.law} fit")
    _loglog(ax, "compute C (FLOPs)", "loss (nats/token)")
    ax.legend(fontsize="small")
    return ax


def isoflop_curves(iso, N, loss, budget, ax=None, added=None):
    """Each budget's runs, its fitted parabola in log N, and its minimum.

    iso: an IsoflopFit, or None to draw the runs alone (too few for Approach 2).
    added: a mask of the runs that adaptive bracketing added (drawn hollow).
    """
    ax = _axes(ax)
    N, loss, budget = (np.asarray(x, float) for x in (N, loss, budget))
    added = np.zeros(len(N), bool) if added is None else np.asarray(added, bool)
    budgets = np.unique(budget)
    colours = plt.cm.plasma(np.linspace(0.0, 0.85, len(budgets)))
    for c, colour in zip(budgets, colours):
        m = budget == c
        ax.scatter(N[m & ~added], loss[m & ~added], s=14, color=colour, label=f"C = {c:.2g}")
        ax.scatter(N[m & added], loss[m & added], s=30, facecolors="none", edgecolors=colour)
        if iso is not None and float(c) in iso.parabolas:
            x = np.linspace(np.log(N[m].min()), np.log(N[m].max()), 100)
            ax.plot(np.exp(x), np.polyval(iso.parabolas[float(c)], x), color=colour, lw=1)
    if added.any():
        ax.scatter([], [], s=30, facecolors="none", edgecolors="0.3", label="added by bracketing")
    if iso is not None:
        _, n_opt, _, loss_opt = np.array(iso.minima).T
        ax.plot(n_opt, loss_opt, "k*", ms=10, label="minima")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss (nats/token)")
    ax.legend(fontsize="x-small", ncol=2)
    return ax


def fit_with_band(fit, N, D, U=None, x=None, level=0.95, ax=None, label=None):
    """A fitted law along a path of (N, D[, U]), with a percentile band from its bootstrap.

    x: the horizontal coordinate (default N). The band needs the fit to have
    been made with `bootstrap`.
    """
    ax = _axes(ax)
    args = [np.asarray(a, float) for a in ((N, D) if U is None else (N, D, U))]
    x = args[0] if x is None else np.asarray(x, float)
    line, = ax.plot(x, fit.predict(*args), label=label or f"{fit.law} fit")
    band = _band(fit, lambda r: r.predict(*args), level)
    if band is not None:
        ax.fill_between(x, *band, color=line.get_color(), alpha=0.25,
                        label=f"{level:.0%} bootstrap band")
    ax.set_xscale("log")
    ax.set_ylabel("loss (nats/token)")
    ax.legend(fontsize="small")
    return ax


def _band(fit, quantity, level):
    """(lo, hi) percentile band of `quantity(replicate fit)` over a fit's bootstrap, or None.

    Replicates that cannot give the quantity (a KM replicate whose joint law
    failed, or whose exponents leave it undefined) are left out, as they are
    from the intervals.
    """
    curves = []
    for replicate in fit.replicate_fits:
        try:
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                curve = np.asarray(quantity(replicate), float)
        except ValueError:
            continue
        if np.all(np.isfinite(curve)):
            curves.append(curve)
    if len(curves) < 2:
        return None
    tail = 50.0 * (1.0 - level)
    return np.percentile(np.array(curves), [tail, 100.0 - tail], axis=0)


def optimal_loss_with_band(fits, C, loss=None, level=0.95, ax=None):
    """Each fitted law's loss at its compute-optimal allocation against compute, with bands.

    fits: {label: fit with predict and optimal_allocation} (Chinchilla, KM joint).
    C, loss: the runs, drawn as points (optional loss); the curves span from
    their smallest compute to 100x their largest. Bands need bootstrapped fits.
    """
    ax = _axes(ax)
    C = np.asarray(C, float)
    grid = np.geomspace(C.min(), C.max() * 100.0, 100)
    if loss is not None:
        ax.scatter(C, np.asarray(loss, float), s=10, color="0.5", label="runs", zorder=3)
    for label, fit in fits.items():
        fit_with_band(fit, *fit.optimal_allocation(grid), x=grid, level=level, ax=ax, label=label)
    _loglog(ax, "compute C (FLOPs)", "loss (nats/token)")
    ax.legend(fontsize="small")
    return ax


def allocation(fits, C, axes=None, level=0.95, points=None):
    """N_opt and D_opt against compute for each fit, beside the published allocations.

    fits: {label: fit with optimal_allocation}; bootstrapped fits get a band at
    `level`. axes: a pair of Axes (N, D). points: {label: (C, N_opt, D_opt)}
    measured optima to mark, e.g. an IsoFLOP fit's per-budget minima.
    """
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(10, 4))[1]
    ax_n, ax_d = axes
    C = np.asarray(C, float)
    for label, fit in fits.items():
        n_opt, d_opt = fit.optimal_allocation(C)
        line, = ax_n.plot(C, n_opt, "-", label=label)
        ax_d.plot(C, d_opt, "-", color=line.get_color(), label=label)
        band = _band(fit, lambda r: np.array(r.optimal_allocation(C)), level)
        if band is not None:
            (n_lo, d_lo), (n_hi, d_hi) = band
            ax_n.fill_between(C, n_lo, n_hi, color=line.get_color(), alpha=0.15)
            ax_d.fill_between(C, d_lo, d_hi, color=line.get_color(), alpha=0.15)
    for name in PUBLISHED:
        n_opt, d_opt = published_allocation(name, C)
        line, = ax_n.plot(C, n_opt, ":", lw=2, label=f"{name} (published)")
        ax_d.plot(C, d_opt, ":", lw=2, color=line.get_color(), label=f"{name} (published)")
    for label, (c, n, d) in (points or {}).items():
        line, = ax_n.plot(c, n, "o", ms=5, label=label)
        ax_d.plot(c, d, "o", ms=5, color=line.get_color(), label=label)
    _loglog(ax_n, "compute C (FLOPs)", "N_opt (parameters)")
    _loglog(ax_d, "compute C (FLOPs)", "D_opt (tokens)")
    ax_n.legend(fontsize="small")
    return axes


def prediction_check(fits, C, loss, minima=None, verifications=(), ax=None, level=0.95):
    """Predict, then verify: each law's compute-optimal loss against C = 6 N D, and the held-out runs.

    fits: {label: bootstrapped law with predict and optimal_allocation} (Approach 3, KM), each
    drawn as its loss at N_opt(C) with its band.
    C, loss: the sweep's runs (C = 6 N D in the fits' accounting), grey.
    minima: Approach 2's [(budget, N_opt, D_opt, loss_opt)], drawn as stars.
    verifications: [{'C', 'measured', 'predicted': {label: (loss, (lo, hi) or None)}, 'measured_se'?}]:
    the runs the sweep trained beyond its budgets, the losses predicted for each before it trained (with
    their bootstrap intervals; a label of `fits` keeps its colour) and the loss measured after, ± its SE
    over seeds where it has one.
    """
    ax = _axes(ax)
    C, loss = np.asarray(C, float), np.asarray(loss, float)
    ax.scatter(C, loss, s=10, color="0.6", label="runs", zorder=2)
    top = max([C.max(), *(check["C"] for check in verifications)]) * 2.0
    grid, colours = np.geomspace(C.min(), top, 100), {}
    for label, fit in fits.items():
        fit_with_band(fit, *fit.optimal_allocation(grid), x=grid, level=level, ax=ax,
                      label=f"{label}: loss at N_opt(C)")
        colours[label] = ax.lines[-1].get_color()
    if minima:
        budgets, _, _, loss_opt = np.array(minima).T
        ax.plot(budgets, loss_opt, "k*", ms=9, label="IsoFLOP minima", zorder=3)
    labelled = set()  # each legend entry once, however many verification runs

    def once(label):
        if label in labelled:
            return None
        labelled.add(label)
        return label
    for check in verifications:
        c, predicted = check["C"], check["predicted"]
        # Side by side, a few per cent apart in C, so that overlapping intervals stay readable.
        shifts = np.geomspace(0.92, 1.08, len(predicted)) if len(predicted) > 1 else [1.0]
        for (label, (value, interval)), shift in zip(predicted.items(), shifts):
            if label not in colours:  # a prediction without a drawn law (Approach 2's trend): one colour throughout
                palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
                colours[label] = palette[len(colours) % len(palette)]
            error = None if interval is None else [[value - interval[0]], [interval[1] - value]]
            ax.errorbar([c * shift], [value], yerr=error, fmt="o", color=colours[label], capsize=4,
                        zorder=4, label=once(f"{label}: predicted before training"))
        se = check.get("measured_se")
        # ± one SE, not a 95% bar: from two or three seeds a t interval would be many times wider.
        ax.errorbar([c], [check["measured"]], yerr=se, fmt="D", color="k", ms=7, capsize=4, zorder=5,
                    label=once("measured" if se is None else "measured ± SE over seeds"))
    _loglog(ax, "compute C = 6 N D (FLOPs)", "eval loss (nats/token)")
    ax.legend(fontsize="small")
    return ax


def design_spread(simulated, intervals=None, ax=None, bins=30):
    """Where a design's simulated sweeps put a (scaling.design.simulate), beside the sweep's own intervals.

    simulated: {label: {approach label: array of fitted a}}, one histogram per (label, approach), e.g. the
    same design scattered by the eval SE and by a law's RMS residual.
    intervals: {approach label: (lo, hi)}: the bootstrap intervals the real sweep gave, as shaded bands.
    """
    ax = _axes(ax)
    values = [np.asarray(a, float) for runs in simulated.values() for a in runs.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    edges = np.linspace(finite.min(), finite.max(), bins + 1) if len(finite) else bins
    for label, runs in simulated.items():
        for approach, a in runs.items():
            a = np.asarray(a, float)
            ax.hist(a[np.isfinite(a)], bins=edges, histtype="step", lw=1.5, label=f"{approach}, {label}")
    for (approach, (lo, hi)), shade in zip((intervals or {}).items(), ("0.85", "0.7")):
        ax.axvspan(lo, hi, color=shade, alpha=0.5, zorder=0, label=f"{approach}: the sweep's own 95% interval")
    ax.set_xlabel("fitted a (N_opt ∝ C^a)")
    ax.set_ylabel("simulated sweeps")
    ax.legend(fontsize=8)
    return ax
