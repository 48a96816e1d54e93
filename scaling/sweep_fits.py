"""Every law a sweep's results allow, fitted in one call.

`python -m scaling.fit`, `python -m scaling.predict` and the notebook all fit
through `fit_sweep`, so the three report the same fits. A law the rows cannot
support comes back as a string saying why, not as an error:

- 'chinchilla' (Approach 3) and 'kaplan' (KM's laws): always tried;
- 'isoflop' (Approach 2): when the rows carry their IsoFLOP `budget`;
- 'envelope' (Approach 1): when each run's metrics.jsonl lies beside results.jsonl;
- 'data_constrained': when the rows carry `unique_tokens` and some run repeats data.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scaling.chinchilla import fit_chinchilla
from scaling.data_constrained import fit_data_constrained
from scaling.envelope import fit_envelope
from scaling.identification import lack_of_fit
from scaling.inputs import ACCOUNTING, arrays_from_rows, fit_rows, params_of, replicate_spread
from scaling.isoflop import fit_isoflop
from scaling.kaplan import fit_kaplan

LAWS = ("chinchilla", "kaplan", "isoflop", "envelope", "data_constrained")
LABELS = {"chinchilla": "Approach 3", "kaplan": "KM", "isoflop": "Approach 2", "envelope": "Approach 1",
          "data_constrained": "data-constrained"}
FORMS = {
    "chinchilla": "L = E + A/N^alpha + B/D^beta (Approach 3)",
    "kaplan": "L = (X_c/X)^alpha_X, X = N, D, C; joint [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D",
    "isoflop": "parabolas per budget (Approach 2): N_opt = k C^a, D_opt = k C^b",
    "envelope": "lower envelope of the training curves (Approach 1): N_opt = k C^a, D_opt = k C^b",
    "data_constrained": "Chinchilla's law in effective N', D' (Muennighoff et al. 2023)",
}


def training_curves(rows, results_dir, accounting="chinchilla", smooth_fraction=0.1):
    """Each run's training curve (N, FLOPs and tokens so far, loss) from DIR/<run>/metrics.jsonl.

    The loss is smoothed by a running mean over `smooth_fraction` of the curve,
    as Hoffmann et al. smooth theirs before taking the envelope. FLOPs so far
    are the run's total in the accounting, pro rata to its tokens.
    """
    c_key = ACCOUNTING[accounting].flops
    curves = []
    for row in fit_rows(rows):
        path = Path(results_dir) / row["run"] / "metrics.jsonl"
        if not path.is_file():
            raise ValueError(f"no training curve at {path}")
        train = [m for m in map(json.loads, path.read_text().splitlines()) if "loss" in m]
        tokens, loss = (np.array([m[k] for m in train], float) for k in ("tokens", "loss"))
        window = max(1, len(loss) // round(1 / smooth_fraction))
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        tokens = tokens[window - 1:]
        curves.append({"N": params_of(row, accounting), "tokens": tokens, "loss": smooth,
                       "flops": row[c_key] * tokens / row["tokens"]})
    return curves


def se_weights(arrays, run_sd=0.0):
    """Per-run weights 1/(SE^2 + run_sd^2) of the eval loss, scaled to average 1; None when the rows carry no SE."""
    se = arrays.get("loss_se")
    if se is None:
        return None
    w = 1.0 / (se**2 + run_sd**2)
    return w / w.mean()


def _attempt(fit, bootstrap):
    """fit(bootstrap), retried without the bootstrap when a degenerate resample breaks it."""
    try:
        return fit(bootstrap)
    except ArithmeticError:
        return fit(0)


def fit_sweep(rows, accounting="chinchilla", bootstrap=0, seed=0, results_dir=None, laws=LAWS,
              weight_by_se=False, chinchilla_options=None, run_sd=None):
    """{law: fit, or 'not fitted: why'} for every law in `laws` that the rows allow.

    results_dir: where each run's directory (with metrics.jsonl) lies, for
        Approach 1; None leaves it out.
    weight_by_se: weight each run by 1/SE^2 of its eval loss (needs final_eval_loss_se).
    chinchilla_options: constraints for Approach 3, e.g. {'fixed': {'E': 1.7}, 'tie_exponents': True}.
    run_sd: the spread of one configuration's loss from run to run (seeds): the lack-of-fit check, and
        weight_by_se's weights, count it beside each run's eval SE. None: measured on the rows' replicates
        (scaling.inputs.replicate_spread), 0 when no configuration was trained twice.
    """
    if run_sd is None:
        spread = replicate_spread(rows)
        run_sd = spread["sd"] if spread else 0.0
    arrays = arrays_from_rows(rows, accounting)
    N, D, C, loss = (arrays[k] for k in ("N", "D", "C", "loss"))
    weights = se_weights(arrays, run_sd) if weight_by_se else None
    if weight_by_se and weights is None:
        raise ValueError("weight_by_se needs final_eval_loss_se in every row")
    common = dict(seed=seed, weights=weights)
    options = dict(chinchilla_options or {})
    tasks = {
        "chinchilla": lambda k: fit_chinchilla(N, D, loss, bootstrap=k, **common, **options),
        "kaplan": lambda k: fit_kaplan(N=N, D=D, C=C, loss=loss, bootstrap=k, **common),
        "isoflop": lambda k: fit_isoflop(N, D, loss, arrays["budget"], bootstrap=k, **common),
        "envelope": lambda k: fit_envelope(training_curves(rows, results_dir, accounting), bootstrap=k,
                                           seed=seed),
        "data_constrained": lambda k: fit_data_constrained(N, D, arrays["unique_tokens"], loss,
                                                           bootstrap=k, **common),
    }
    unavailable = {
        "isoflop": None if "budget" in arrays else "the rows carry no IsoFLOP budget",
        "envelope": None if results_dir is not None else "no run directories given for training curves",
        "data_constrained": None if "unique_tokens" in arrays and np.any(D > arrays["unique_tokens"])
        else "no run repeats data",
    }
    out = {}
    for law in laws:
        if unavailable.get(law):
            out[law] = f"not fitted: {unavailable[law]}"
            continue
        try:
            out[law] = _attempt(tasks[law], bootstrap)
        except (ValueError, RuntimeError, ArithmeticError) as err:
            out[law] = f"not fitted: {err}"
            continue
        if "loss_se" in arrays and law in ("chinchilla", "kaplan", "data_constrained"):
            _check_fit(out[law], arrays, law, run_sd)
    return out


def _check_fit(fit, arrays, law, run_sd) -> None:
    """Adds the lack-of-fit statistics (and a warning, when the law misfits) to a law's diagnostics."""
    inputs = (arrays["N"], arrays["D"]) + ((arrays["unique_tokens"],) if law == "data_constrained" else ())
    diagnostics = fit.diagnostics
    if "free_parameters" not in diagnostics:  # a fit that failed before diagnosing
        return
    stats, warning = lack_of_fit(arrays["loss"], fit.predict(*inputs), arrays["loss_se"],
                                 diagnostics["free_parameters"], run_sd)
    diagnostics["lack_of_fit"] = stats
    if warning:
        diagnostics["warnings"] = [*diagnostics["warnings"], warning]


def allocating(fits):
    """The fits among `fits` ({law: fit or str}) that give a compute-optimal allocation."""
    out = {}
    for law, fit in fits.items():
        if isinstance(fit, str) or getattr(fit, "a", None) is None:
            continue
        with np.errstate(all="ignore"):
            if np.all(np.isfinite(fit.optimal_allocation(np.array([1e15, 1e20])))):
                out[law] = fit
    return out
