"""Bootstrap resampling as per-point counts, and percentile intervals.

Resamples are expressed as counts (how often each point is drawn) rather than
index arrays, so a weighted objective serves the plain fit (all ones) and
every replicate alike, and the JAX fits can run all replicates in one vmap.
"""
from __future__ import annotations

import numpy as np


def bootstrap_counts(n, replicates, seed=0, groups=None):
    """(replicates, n) counts of a resample with replacement of n points.

    With `groups`, points are resampled within each group, keeping each group's
    size: an IsoFLOP budget never disappears from a replicate.
    """
    rng = np.random.default_rng(seed)
    groups = np.zeros(n) if groups is None else np.asarray(groups)
    counts = np.zeros((replicates, n))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        counts[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)),
                                         size=replicates)
    return counts


def percentile_intervals(replicate_estimates, level=0.95):
    """Percentile intervals {name: (lo, hi)} from a list of {name: value} dicts.

    Replicates where a quantity could not be estimated (NaN, None) are left out
    of that quantity's interval rather than failing the whole bootstrap.
    """
    tail = 50.0 * (1.0 - level)
    names = replicate_estimates[0].keys() if replicate_estimates else ()
    out = {}
    for name in names:
        vals = np.array([r[name] for r in replicate_estimates if r[name] is not None], float)
        vals = vals[np.isfinite(vals)]
        if len(vals):
            lo, hi = np.percentile(vals, [tail, 100.0 - tail])
            out[name] = (float(lo), float(hi))
    return out
