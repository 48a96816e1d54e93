"""Kaplan et al. 2020 (KM) laws: L(N), L(D), L(C) and the joint L(N, D).

    L(N) = (N_c/N)^alpha_N       fitted to the lowest loss seen at each size N
                                 (KM's "trained to convergence")
    L(D) = (D_c/D)^alpha_D       fitted to the lowest loss seen at each D
                                 (KM's "largest model, early-stopped")
    L(C) = (C_c/C)^alpha_C       fitted to the compute-efficient frontier: runs
                                 with lower loss than every run of less compute
    L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D      (KM eq. 1.5)

The single-variable laws are straight lines in log-log space (least squares).
The joint law minimises the same Huber-on-log-loss objective as Chinchilla's
Approach 3, by variable projection: with p = alpha_N/alpha_D and alpha_D
fixed, L^(1/alpha_D) = N_c^p N^-p + D_c D^-1 is linear in (N_c^p, D_c), so a
grid over the two exponents with exact non-negative least squares finds the
basin, and a converged L-BFGS-B polish finishes (scaling/projection.py).

Compute-optimal allocation, two derivations, both reported:
- `a` (and `optimal_allocation`): minimise the joint L(N, D) at C = 6 N D.
  With p = alpha_N/alpha_D: N_opt = (p N_c^p C / (6 D_c))^(1/(1+p)), so
  a = alpha_D/(alpha_N + alpha_D): the same derivation as Chinchilla's a, so
  the two laws' allocations differ only through their forms.
- `a_frontier` = alpha_C/alpha_N: KM section 6.1, equating the frontier L(C)
  with L(N_opt); this is how KM arrive at N_opt ∝ C^0.73.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scaling import laws
from scaling.bootstrap import bootstrap_counts
from scaling.identification import diagnose
from scaling.inputs import canonical_order, positive_arrays
from scaling.optimize import evaluate, single_threaded
from scaling.powerlaw import PowerLaw, fit_power_law
from scaling.projection import Parametrisation, best_local_minima, log_huber, nnls, polish_best
from scaling.result import FitResult

# The joint law's exponents: p = alpha_N / alpha_D and alpha_D. KM's own fit has
# p = 0.74, alpha_D = 0.103.
RATIO_GRID = np.geomspace(0.05, 20.0, 48)
ALPHA_D_GRID = np.geomspace(0.005, 2.0, 48)
# Centred coordinates (laws.kaplan_centred): U, V are log losses; a term whose log
# loss reaches -30 has vanished.
JOINT = Parametrisation(("U", "V", "alpha_N", "alpha_D"),
                        ((-30.0, 30.0), (-30.0, 30.0), (1e-4, 5.0), (1e-3, 5.0)))
JOINT_MESSAGES = {
    "U": "N_c driven to 0: the loss does not fall with N in these runs",
    "V": "D_c driven to 0: the loss does not fall with D in these runs",
    "alpha_N": "alpha_N is at a bound of [0.0001, 5]: not identified by these runs",
    "alpha_D": "alpha_D is at a bound of [0.001, 5]: not identified by these runs",
}


def _scale(law):
    """(alpha, X_c) of L = (X_c/X)^alpha from the log-log line L = k X^p."""
    if law is None:
        return None, None
    alpha = -law.exponent
    with np.errstate(over="ignore", divide="ignore"):  # alpha near 0 (a flat bootstrap replicate): X_c = inf
        return alpha, float(np.exp(np.log(law.coefficient) / alpha))


@dataclass(kw_only=True)
class KaplanFit(FitResult):
    law = "kaplan"
    loss_vs_N: PowerLaw | None = None   # callable: L(N)
    loss_vs_D: PowerLaw | None = None
    loss_vs_C: PowerLaw | None = None
    joint: np.ndarray | None = None      # (log N_c, log D_c, alpha_N, alpha_D)
    joint_objective: float = float("nan")
    diagnostics: dict = field(default_factory=dict)  # of the joint law

    def predict(self, N, D):
        """Joint L(N, D)."""
        return evaluate(laws.kaplan_joint, self._joint(), np.log(N), np.log(D))

    @property
    def a(self):
        return None if self.joint is None else self.joint[3] / (self.joint[2] + self.joint[3])

    @property
    def b(self):
        return None if self.joint is None else 1.0 - self.a

    @property
    def a_frontier(self):
        (alpha_n, _), (alpha_c, _) = _scale(self.loss_vs_N), _scale(self.loss_vs_C)
        return None if alpha_n is None or alpha_c is None else alpha_c / alpha_n

    def optimal_allocation(self, C):
        """(N_opt, D_opt) minimising the joint law at C = 6 N D."""
        log_nc, log_dc, alpha_n, alpha_d = self._joint()
        p = alpha_n / alpha_d
        x = np.asarray(C, dtype=float) / 6.0
        n_opt = np.exp((np.log(p) + p * log_nc - log_dc + np.log(x)) / (1.0 + p))
        return n_opt, x / n_opt

    def _joint(self):
        if self.joint is None:
            raise ValueError("the joint KM law needs both N and D")
        return self.joint

    def estimates(self):
        out = {}
        for var, law in (("N", self.loss_vs_N), ("D", self.loss_vs_D), ("C", self.loss_vs_C)):
            out[f"alpha_{var}"], out[f"{var}_c"] = _scale(law)
        joint = [None] * 4 if self.joint is None else \
            [np.exp(self.joint[0]), np.exp(self.joint[1]), *self.joint[2:]]
        out.update(zip(("joint_N_c", "joint_D_c", "joint_alpha_N", "joint_alpha_D"),
                       (None if v is None else float(v) for v in joint)))
        out.update(a=self.a, b=self.b, a_frontier=self.a_frontier)
        return out

    def extra(self):
        return {"joint_huber_objective": self.joint_objective, "diagnostics": self.diagnostics}


def _lowest_per_value(x, loss, w):
    """Weights that keep, for each distinct x, only its lowest-loss point."""
    keep = np.zeros(len(x))
    for v in np.unique(x[w > 0]):
        idx = np.flatnonzero((x == v) & (w > 0))
        best = idx[np.argmin(loss[idx])]
        keep[best] = w[best]
    return keep


def compute_frontier(C, loss, weights=None):
    """Indices, by compute, of the runs with lower loss than every run of less compute.

    Runs of zero weight (left out of a bootstrap replicate) are ignored.
    """
    C, loss = np.asarray(C, float), np.asarray(loss, float)
    w = np.ones(len(C)) if weights is None else weights
    keep, best = [], np.inf
    for i in np.lexsort((loss, C)):
        if w[i] > 0 and loss[i] < best:
            keep.append(i)
            best = loss[i]
    return np.array(keep, dtype=int)


def _frontier(C, loss, w):
    """Weights that keep only the compute-efficient frontier."""
    keep = np.zeros(len(C))
    idx = compute_frontier(C, loss, w)
    keep[idx] = w[idx]
    return keep


def _single_laws(N, D, C, loss, w):
    def one(x, keep):
        return None if x is None else fit_power_law(x, loss, keep(x, loss, w))
    return dict(loss_vs_N=one(N, _lowest_per_value), loss_vs_D=one(D, _lowest_per_value),
                loss_vs_C=one(C, _frontier))


def _joint_grid(log_n, log_d, loss, w, delta):
    """Centred joint thetas (U, V, alpha_N, alpha_D) on the exponent grid, from (N_c/N0)^p and D_c/D0
    >= 0 by exact NNLS, and the Huber objective at each: (48, 48, 4) and (48, 48).

    Rows are divided by their target L^(1/alpha_D) (relative residuals); the N
    term depends on p only and the target on alpha_D only, so the normal
    equations of the whole grid are a few matrix products.
    """
    x, y = np.exp(-RATIO_GRID[:, None] * log_n), np.exp(-log_d)  # (n_p, n), (n,)
    inv_t = loss[None, :] ** (-1.0 / ALPHA_D_GRID[:, None])  # 1 / L^(1/alpha_D): (n_alpha, n)
    shape = (len(RATIO_GRID), len(ALPHA_D_GRID))
    xx, xy = (x**2) @ (w * inv_t**2).T, x @ (w * y * inv_t**2).T
    yy = np.broadcast_to((inv_t**2) @ (w * y**2), shape)
    gram = np.stack([np.stack([xx, xy], -1), np.stack([xy, yy], -1)], -2)
    rhs = np.stack([x @ (w * inv_t).T, np.broadcast_to(inv_t @ (w * y), shape)], -1)
    coefs, _ = nnls(gram, rhs, np.full(shape, w.sum()))
    pred = (coefs[..., :1] * x[:, None, :] + coefs[..., 1:] * y) ** ALPHA_D_GRID[None, :, None]
    values = log_huber(pred, np.log(loss), w, delta)
    p, alpha_d = np.broadcast_arrays(RATIO_GRID[:, None], ALPHA_D_GRID[None, :])
    with np.errstate(divide="ignore"):
        u, v = (np.clip(alpha_d * np.log(c), *JOINT.bounds[0]) for c in (coefs[..., 0], coefs[..., 1]))
    return np.stack([u, v, p * alpha_d, alpha_d], axis=-1), values


def _fit_joint(points, loss, w, delta, starts):
    log_n, log_d, _ = points
    grid, values = _joint_grid(log_n, log_d, loss, w, delta)
    return polish_best(laws.kaplan_centred, JOINT, grid.reshape(-1, 4)[best_local_minima(values, starts)],
                       points, w, delta)


def _uncentre(theta, centre):
    """(log N_c, log D_c, alpha_N, alpha_D) from the centred (U, V, alpha_N, alpha_D)."""
    u, v, alpha_n, alpha_d = theta
    return np.array([centre[0] + u / alpha_n, centre[1] + v / alpha_d, alpha_n, alpha_d])


@single_threaded
def fit_kaplan(N=None, D=None, C=None, loss=None, bootstrap=0, level=0.95, seed=0,
               delta=1e-3, weights=None):
    """Fit whichever KM laws the inputs allow; C defaults to 6 N D when N and D are given.

    weights: per-point weights of every objective; default all ones.
    bootstrap: resamples of the points for percentile intervals (`level`) on
    every estimate; each replicate's joint law is fitted like the data's.
    """
    named = {k: v for k, v in dict(N=N, D=D, C=C, weights=weights).items() if v is not None}
    if loss is None or not set(named) - {"weights"}:
        raise ValueError("fit_kaplan needs loss and at least one of N, D, C")
    arrays = positive_arrays(min_points=3, **named, loss=loss)
    order = canonical_order(*arrays)
    arrays = dict(zip([*named, "loss"], (x[order] for x in arrays)))
    N, D, C, loss = (arrays.get(k) for k in ("N", "D", "C", "loss"))
    w = arrays.get("weights", np.ones(len(loss)))
    if C is None and N is not None and D is not None:
        C = 6.0 * N * D
    fit = KaplanFit(n_points=len(loss), **_single_laws(N, D, C, loss, w))
    # The joint law has 4 parameters: with fewer than 5 points only the single-variable laws are fitted.
    joint = N is not None and D is not None and len(loss) >= 5
    if N is not None and D is not None and not joint:
        fit.diagnostics = {"identified": False, "warnings": [
            f"joint law not fitted: it has 4 parameters and needs at least 5 points, got {len(loss)}"]}
    if joint:
        centre = (float(np.mean(np.log(N))), float(np.mean(np.log(D))))
        points = (np.log(N) - centre[0], np.log(D) - centre[1], np.log(loss))
        full, free, fit.joint_objective = _fit_joint(points, loss, w, delta, 4)
        fit.joint = _uncentre(full, centre)
        fit.diagnostics = diagnose(JOINT.free_names, free, JOINT.free_bounds, laws.mapped(laws.kaplan_centred),
                                   (JOINT.matrix, JOINT.base, *points[:2]), w, JOINT_MESSAGES)
    if bootstrap:
        replicates = []
        for counts in bootstrap_counts(len(loss), bootstrap, seed) * w:
            replicate = KaplanFit(n_points=len(loss), **_single_laws(N, D, C, loss, counts))
            if joint:
                try:
                    replicate.joint = _uncentre(_fit_joint(points, loss, counts, delta, 2)[0], centre)
                except RuntimeError:
                    pass
            replicates.append(replicate)
        fit.set_intervals(replicates, level)
    return fit
