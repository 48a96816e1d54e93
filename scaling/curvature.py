"""Does Approach 3's form draw the IsoFLOP profiles that the runs draw? Their curvature, budget by budget.

Along a budget's IsoFLOP line (N D fixed), L = E + A/N^alpha + B/D^beta curves in ln N by
c2 = (alpha^2 A N^-alpha + beta^2 B D^-beta) / 2, which at the law's optimum is alpha beta (L - E) / 2:
the additive form flattens its profiles as the loss nears E, in step with the reducible loss. Approach 2
measures each profile's c2 from the runs alone, a parabola in ln N through the runs within its window;
the same parabola through the law's losses at the same runs gives the law's c2, with the same bias from
the profile's skew. Where the ratio of the two drifts with the budget, the form misdescribes how the loss
falls with compute, and what Approach 3 predicts beyond the budgets inherits the bias. The lack-of-fit
check (scaling/identification.py) says that the form misses; this says how.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from scaling.isoflop import WINDOW, windowed_parabola

# The fitted ratio (runs' c2 / law's c2) changing by more than this factor across the budgets, with a 95%
# interval that excludes no change where the runs' errors are known, is a warning.
DRIFT = 1.5
Z95 = 1.959964


def _parabola_c2(log_n, y, sd):
    """c2 of the least-squares parabola through (log_n, y), and its standard error from the points' own
    (sandwich: the fit is unweighted, as Approach 2's is); SE None when sd is None."""
    X = np.stack([log_n**2, log_n, np.ones_like(log_n)], -1)
    pinv = np.linalg.pinv(X)
    c2 = float((pinv @ y)[0])
    return c2, None if sd is None else float(np.sqrt(np.sum((pinv[0] * sd) ** 2)))


def curvature_check(chinchilla, N, D, loss, budget, loss_sd=None, window=WINDOW) -> Optional[dict]:
    """The runs' and the law's c2 at each budget with an interior minimum, and how their ratio drifts across
    the budgets: a power law in C through the ratios (weighted by their errors when loss_sd, each run's
    standard deviation of loss, is given), evaluated from the smallest budget to the largest, with a 95%
    interval from the runs' errors (the law's c2 counted as known). The errors are counted as independent:
    runs scored on the same eval documents share much of theirs, which a parabola's c2 (a contrast between
    the runs) cancels, so the interval is conservative. None without a fitted law or with fewer than two
    such budgets."""
    if chinchilla is None or isinstance(chinchilla, str):
        return None
    N, D, loss, budget = (np.asarray(x, float) for x in (N, D, loss, budget))
    sd = None if loss_sd is None else np.broadcast_to(np.asarray(loss_sd, float), loss.shape)
    rows = []
    for c in np.unique(budget):
        at = budget == c
        log_n = np.log(N[at])
        _, use, _, vertex = windowed_parabola(log_n, loss[at], np.ones(at.sum()), window)
        if vertex is None:
            continue
        runs, runs_se = _parabola_c2(log_n[use], loss[at][use], None if sd is None else sd[at][use])
        law, _ = _parabola_c2(log_n[use], chinchilla.predict(N[at][use], D[at][use]), None)
        rows.append({"budget": float(c), "runs": runs, "runs_se": runs_se, "law": law})
    if len(rows) < 2 or not all(row["law"] > 0 and row["runs"] > 0 for row in rows):
        return None
    log_c = np.log([row["budget"] for row in rows])
    log_ratio = np.log([row["runs"] / row["law"] for row in rows])
    span = log_c[-1] - log_c[0]
    X = np.stack([log_c - log_c.mean(), np.ones_like(log_c)], -1)
    if sd is None:
        slope = float(np.linalg.lstsq(X, log_ratio, rcond=None)[0][0])
        interval = None
    else:
        weights = 1.0 / np.array([(row["runs_se"] / row["runs"]) ** 2 for row in rows])  # SE of ln ratio
        gram_inverse = np.linalg.inv(X.T @ (weights[:, None] * X))
        slope = float((gram_inverse @ X.T @ (weights * log_ratio))[0])
        half = Z95 * np.sqrt(gram_inverse[0, 0])
        interval = [float(np.exp((slope - half) * span)), float(np.exp((slope + half) * span))]
    drift = float(np.exp(slope * span))
    check = {"budgets": rows, "drift": drift, "interval": interval, "warning": None}
    excludes_one = interval is None or not interval[0] <= 1.0 <= interval[1]
    if not 1.0 / DRIFT <= drift <= DRIFT and excludes_one:
        check["warning"] = (f"Approach 3's form does not draw these IsoFLOP profiles: the runs' curvature "
                            f"against the law's changes {drift:.2g}x from C={rows[0]['budget']:.3g} to "
                            f"{rows[-1]['budget']:.3g} (the form ties it to the reducible loss, alpha beta "
                            f"(L - E) / 2 at the optimum): the law's profiles flatten "
                            f"{'faster' if drift > 1 else 'more slowly'} than the runs', as when its E sits too "
                            f"{'high' if drift > 1 else 'low'}, and its losses beyond the budgets are biased")
    return check


def sweep_curvature(chinchilla, arrays: dict, run_sd: float = 0.0) -> Optional[dict]:
    """curvature_check on a sweep's arrays (scaling.inputs.arrays_from_rows), each run's loss error its eval
    SE and the run-to-run spread in quadrature, as the lack-of-fit check counts them; None without budgets."""
    if "budget" not in arrays:
        return None
    loss_sd = np.sqrt(arrays["loss_se"] ** 2 + run_sd**2) if "loss_se" in arrays else None
    return curvature_check(chinchilla, arrays["N"], arrays["D"], arrays["loss"], arrays["budget"], loss_sd)


def curvature_line(check: dict) -> str:
    cells = ", ".join(f"C={row['budget']:.3g} {row['runs']:.3f}" + (f" ± {row['runs_se']:.3f}" if row["runs_se"] else "")
                      + f" / {row['law']:.3f}" for row in check["budgets"])
    interval = check["interval"]
    within = f" [{interval[0]:.2g}, {interval[1]:.2g}]" if interval else " (no interval: the runs carry no SE)"
    return (f"IsoFLOP curvature c2 (nats per (ln N)^2; parabolas through the same runs), runs / Approach 3: "
            f"{cells}; the ratio drifts {check['drift']:.2g}x{within} across the budgets")
