"""Scaling-law forms, fits, compute-optimal allocation and plots.

    from scaling import fit_chinchilla, fit_isoflop, fit_kaplan, fit_data_constrained

Approach 1 (training-curve envelope) is `fit_envelope`; `arrays_from_rows`
turns a sweep's results rows into (N, D, C, loss) under an accounting choice.
Plots live in `scaling.plots` (imported on demand: it needs matplotlib).
"""
from scaling.chinchilla import ChinchillaFit, fit_chinchilla
from scaling.data_constrained import DataConstrainedFit, fit_data_constrained
from scaling.envelope import EnvelopeFit, fit_envelope
from scaling.extrapolation import epoch_holdout_error, holdout_error
from scaling.inputs import arrays_from_rows, load_results
from scaling.isoflop import IsoflopFit, fit_isoflop
from scaling.kaplan import KaplanFit, fit_kaplan

__all__ = [
    "ChinchillaFit", "DataConstrainedFit", "EnvelopeFit", "IsoflopFit", "KaplanFit",
    "arrays_from_rows", "epoch_holdout_error", "fit_chinchilla", "fit_data_constrained",
    "fit_envelope", "fit_isoflop", "fit_kaplan", "holdout_error", "load_results",
]
