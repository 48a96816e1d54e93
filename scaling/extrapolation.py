"""Predictable scaling: fit on the cheaper runs, predict the most expensive ones.

A law that fits well but extrapolates badly is no use for planning a large run;
this measures the extrapolation directly, on held-out runs of larger compute
than any the fit saw.
"""
from __future__ import annotations

import numpy as np

from scaling.anchors import load_epoch_chinchilla
from scaling.chinchilla import fit_chinchilla
from scaling.inputs import positive_arrays


def holdout_error(N, D, loss, C=None, holdout_fraction=0.1):
    """Fit Approach 3 without the top `holdout_fraction` of runs by compute; score on those.

    C defaults to 6 N D. Returns a dict: the relative errors |pred - obs|/obs
    on the held-out runs (mean, max), their count and the fit's, the compute
    threshold, and the fit itself.
    """
    N, D, loss = positive_arrays(min_points=6, N=N, D=D, loss=loss)
    C = 6.0 * N * D if C is None else positive_arrays(C=C)[0]
    threshold = np.quantile(C, 1.0 - holdout_fraction)
    held = C >= threshold
    if held.all() or not held.any():
        raise ValueError("holdout_fraction leaves no runs to fit or none to predict")
    fit = fit_chinchilla(N[~held], D[~held], loss[~held])
    rel = np.abs(fit.predict(N[held], D[held]) - loss[held]) / loss[held]
    return {"mean_relative_error": float(rel.mean()), "max_relative_error": float(rel.max()),
            "n_fit": int((~held).sum()), "n_held_out": int(held.sum()),
            "compute_threshold": float(threshold), "fit": fit}


def epoch_holdout_error(directory=None, holdout_fraction=0.1):
    """`holdout_error` on the Chinchilla runs extracted by Epoch (the README's number)."""
    N, D, C, loss = load_epoch_chinchilla(directory)
    return holdout_error(N, D, loss, C, holdout_fraction)
