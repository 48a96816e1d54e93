"""Whether a fit's parameters are identified by its data, and warnings when they are not.

Two things go wrong in practice. A parameter runs to a bound of its range (E
driven to 0, an exponent to 0 or to the top of its range, a decay constant off
to infinity): the data then say only that it is small or large, and the other
parameters absorb the difference. Or two parameters trade off along a flat
valley, so that the data fix a combination of them and not each one; that
shows as a large condition number of the curvature matrix.

The curvature used is the Gauss-Newton one, J^T W J with J the Jacobian of
the log prediction: the Huber loss's own second derivative vanishes for every
residual beyond delta (most of them, with noise above 0.1%), which would
call every direction flat. It is normalised to unit diagonal (a correlation
matrix), so that the condition number does not depend on the units of the
parameters, only on how nearly their effects on the fit coincide.
"""
from __future__ import annotations

import numpy as np

from scaling.optimize import log_jacobian

# A condition number of 1e4 means two parameters' effects agree to 1 part in
# about 1e4 (a correlation of 0.9999): the data then fix their combination
# and not each. Well-posed Chinchilla fits on the Epoch data and on random
# designs over two decades of N and D come out between about 10 and 1e3.
CONDITION_LIMIT = 1e4


def at_bounds(names, theta, bounds, tolerance=1e-6):
    """Names of the parameters at (within `tolerance`, relative) a bound of their range."""
    out = []
    for name, value, (low, high) in zip(names, theta, bounds):
        scale = max(abs(value), 1.0)
        if (low is not None and np.isfinite(low) and value - low <= tolerance * scale) or \
           (high is not None and np.isfinite(high) and high - value <= tolerance * scale):
            out.append(name)
    return out


def curvature_condition(law, theta, inputs, weights, keep):
    """(condition number, flattest direction) of the normalised Gauss-Newton curvature.

    keep: boolean mask of the parameters to include (those not at a bound).
    The direction is a unit vector over the kept parameters.
    """
    jac = log_jacobian(law, theta, *inputs)[:, keep]
    if jac.shape[1] == 0:
        return 1.0, np.zeros(0)
    curvature = jac.T @ (np.asarray(weights)[:, None] * jac)
    scale = np.sqrt(np.diag(curvature))
    if np.any(scale == 0):
        direction = (scale == 0).astype(float)
        return np.inf, direction / np.linalg.norm(direction)
    eigenvalues, vectors = np.linalg.eigh(curvature / np.outer(scale, scale))
    condition = eigenvalues[-1] / eigenvalues[0] if eigenvalues[0] > 0 else np.inf
    return float(condition), vectors[:, 0]


def diagnose(names, theta, bounds, law, inputs, weights, messages=None):
    """{identified, at_bound, condition_number, flat_direction, warnings} for a fitted theta.

    names, bounds: of the free parameters; law(theta, *inputs) is the log prediction.
    messages: {name: warning} to use when that parameter is at a bound, e.g.
    'E driven to 0: ...'; others get a generic one.
    """
    messages = messages or {}
    bound = at_bounds(names, theta, bounds)
    keep = np.array([name not in bound for name in names])
    condition, direction = curvature_condition(law, theta, inputs, weights, keep)
    warnings = [messages.get(name, f"{name} is at a bound of its range: not identified by these runs")
                for name in bound]
    kept = [name for name, k in zip(names, keep) if k]
    flat = [name for name, v in zip(kept, direction) if abs(v) >= 0.3]
    if condition > CONDITION_LIMIT:
        warnings.append(f"flat direction: the data fix a combination of {', '.join(flat)}, not each "
                        f"(condition number {condition:.3g})")
    return {"identified": not warnings, "at_bound": bound,
            "condition_number": condition if np.isfinite(condition) else None,
            "flat_direction": dict(zip(kept, map(float, direction))), "warnings": warnings,
            "free_parameters": len(names)}


LACK_OF_FIT_P = 0.01


def lack_of_fit(loss, predicted, loss_se, free_parameters, run_sd=0.0):
    """How far a law's residuals exceed the noise of the points it was fitted to.

    chi2 = sum ((loss - predicted) / se)^2 over the points, against a chi-squared distribution
    with n - free_parameters degrees of freedom. se is each run's eval standard error over
    documents and `run_sd`, the spread of one configuration's loss from run to run (seed, data
    order), added in quadrature. The eval SE alone leaves that spread out, which makes chi2 larger
    (0.11 nats between two seeds of one CPU sweep run: results/isoflop_cpu_ablation/); the runs
    sharing their eval documents count as independent what partly moves all points together,
    which makes it smaller. A p-value below LACK_OF_FIT_P says the law's form does not describe
    these points: identified or not, its extrapolations carry a bias that its intervals, built from
    the same residuals, do not show. Returns the statistics and a warning (or None).
    """
    from scipy import stats
    loss, predicted, loss_se = (np.asarray(x, float) for x in (loss, predicted, loss_se))
    z = (loss - predicted) / np.sqrt(loss_se**2 + run_sd**2)
    dof = len(z) - free_parameters
    if dof < 1:
        return {"dof": dof}, None
    chi2 = float(np.sum(z ** 2))
    p = float(stats.chi2.sf(chi2, dof))
    worst = int(np.argmax(np.abs(z)))
    out = {"chi2": chi2, "dof": dof, "chi2_per_dof": chi2 / dof, "p_value": p,
           "rms_relative_residual": float(np.sqrt(np.mean(((loss - predicted) / loss) ** 2))),
           "max_abs_z": float(abs(z[worst])), "worst_point": worst}
    warning = None
    if p < LACK_OF_FIT_P:
        noise = "eval standard errors" if run_sd == 0 else f"eval standard errors with a run-to-run spread of {run_sd:g}"
        warning = (f"lack of fit: residuals are {np.sqrt(chi2 / dof):.1f}x the points' {noise} "
                   f"(chi2/dof {chi2 / dof:.3g}, p = {p:.2g}; the worst {abs(z[worst]):.1f} SE): the form does not "
                   f"describe these runs, and its extrapolations are biased beyond their intervals")
    return out, warning
