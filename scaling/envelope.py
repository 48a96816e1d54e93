"""Chinchilla Approach 1: the minimum-loss envelope of training curves.

Hoffmann et al. take, at each of 1,500 log-spaced FLOP counts, the run whose
(smoothed) training curve is lowest there; that run's size and tokens at that
point are the compute-optimal pair for that compute, and N_opt ∝ C^a,
D_opt ∝ C^b are fitted through them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scaling.bootstrap import bootstrap_counts
from scaling.inputs import positive_arrays
from scaling.powerlaw import AllocationFit, fit_power_law


@dataclass(kw_only=True)
class EnvelopeFit(AllocationFit):
    law = "envelope"
    # The envelope itself, one entry per FLOP value it is defined at: C, N, D, loss.
    envelope: dict = field(default_factory=dict, repr=False)

    def extra(self):
        return {"envelope_points": len(self.envelope.get("C", ()))}


def _curves(runs):
    """Checked (N, log C, log loss, log D) per run; D defaults to C / (6 N)."""
    out = []
    for i, run in enumerate(runs):
        try:
            n, = positive_arrays(N=[run["N"]])
            flops, loss = positive_arrays(min_points=2, flops=run["flops"], loss=run["loss"])
            tokens = flops / (6.0 * n) if run.get("tokens") is None else \
                positive_arrays(tokens=run["tokens"])[0]
        except KeyError as err:
            raise ValueError(f"run {i} has no {err}") from None
        except ValueError as err:
            raise ValueError(f"run {i}: {err}") from None
        if len(tokens) != len(flops):
            raise ValueError(f"run {i}: tokens and flops differ in length")
        order = np.argsort(flops)
        out.append((n[0], np.log(flops[order]), np.log(loss[order]), np.log(tokens[order])))
    return out


def _fit(curves, log_c, weights):
    # Each run's log loss and log tokens at each grid FLOP value inside its curve.
    nan = np.full(len(log_c), np.nan)
    loss = np.array([np.interp(log_c, lc, ll, left=np.nan, right=np.nan) if w > 0 else nan
                     for (_, lc, ll, _), w in zip(curves, weights)])
    tokens = np.array([np.interp(log_c, lc, ld) for _, lc, _, ld in curves])
    sizes = np.array([c[0] for c in curves])[:, None]
    present = np.isfinite(loss)
    best = np.argmin(np.where(present, loss, np.inf), axis=0)
    n_best = sizes[best, 0]
    # Where the lowest curve is the largest (or smallest) run present, the
    # optimum may lie beyond the sizes trained: a bound, not a measurement.
    # This also drops FLOP values that fewer than three runs reach.
    interior = (n_best < np.max(np.where(present, sizes, -np.inf), axis=0)) \
        & (n_best > np.min(np.where(present, sizes, np.inf), axis=0))
    cols = np.flatnonzero(interior)
    if len(cols) < 2:
        return None
    best = best[cols]
    C, N, D = np.exp(log_c[cols]), sizes[best, 0], np.exp(tokens[best, cols])
    return EnvelopeFit(n_law=fit_power_law(C, N), d_law=fit_power_law(C, D),
                       n_points=int(np.sum(weights > 0)),
                       envelope={"C": C, "N": N, "D": D, "loss": np.exp(loss[best, cols])})


def fit_envelope(runs, n_flops=1500, bootstrap=0, level=0.95, seed=0):
    """Approach 1 on training curves.

    runs: sequence of mappings with `N` (parameters), `flops` and `loss`
        (arrays over logged steps) and optionally `tokens` (same length; else
        C / (6 N)). Smooth noisy curves beforehand, as Hoffmann et al. did.
    n_flops: log-spaced FLOP values the envelope is read at.
    FLOP values where the lowest curve belongs to the largest or the smallest
    run that reaches them are left out (the optimum may lie outside the sizes
    trained there), as Porian et al. drop IsoFLOP minima at the edge.
    bootstrap: resamples of the runs for percentile intervals (`level`).
    """
    curves = _curves(runs)
    if len(curves) < 2:
        raise ValueError(f"need training curves of at least 2 runs, got {len(curves)}")
    lo = min(lc[0] for _, lc, _, _ in curves)
    hi = max(lc[-1] for _, lc, _, _ in curves)
    log_c = np.linspace(lo, hi, n_flops)
    fit = _fit(curves, log_c, np.ones(len(curves)))
    if fit is None:
        raise ValueError("the envelope has an interior optimum at fewer than 2 FLOP "
                         "values; need runs of several sizes whose curves overlap")
    if bootstrap:
        counts = bootstrap_counts(len(curves), bootstrap, seed)
        fit.set_intervals([_fit(curves, log_c, w) for w in counts], level)
    return fit
