"""Kaplan et al. 2020 (KM) laws: L(N), L(D), L(C) and the joint L(N, D).

    L(N) = (N_c/N)^alpha_N       fitted to the lowest loss seen at each size N
                                 (KM's "trained to convergence")
    L(D) = (D_c/D)^alpha_D       fitted to the lowest loss seen at each D
                                 (KM's "largest model, early-stopped")
    L(C) = (C_c/C)^alpha_C       fitted to the compute-efficient frontier: runs
                                 with lower loss than every run of less compute
    L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D      (KM eq. 1.5)

The single-variable laws are straight lines in log-log space (least squares);
the joint law uses the same Huber-on-log-loss, many-start L-BFGS fit as
Chinchilla's Approach 3.

Compute-optimal allocation, two derivations, both reported:
- `a` (and `optimal_allocation`): minimise the joint L(N, D) at C = 6 N D.
  With p = alpha_N/alpha_D: N_opt = (p N_c^p C / (6 D_c))^(1/(1+p)), so
  a = alpha_D/(alpha_N + alpha_D): the same derivation as Chinchilla's a, so
  the two laws' allocations differ only through their forms.
- `a_frontier` = alpha_C/alpha_N: KM section 6.1, equating the frontier L(C)
  with L(N_opt); this is how KM arrive at N_opt ∝ C^0.73.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from scaling import laws
from scaling.bootstrap import bootstrap_counts
from scaling.inputs import positive_arrays
from scaling.optimize import (evaluate, log_huber_objective, refit_replicates,
                              screen_then_polish)
from scaling.powerlaw import PowerLaw, fit_power_law
from scaling.result import FitResult

# (log N_c, log D_c, alpha_N, alpha_D); KM's own fit is near (31.8, 30.5, 0.076, 0.103).
JOINT_GRID = np.array(list(itertools.product(
    [15.0, 20.0, 25.0, 30.0, 35.0], [15.0, 20.0, 25.0, 30.0, 35.0],
    [0.03, 0.1, 0.3, 1.0], [0.03, 0.1, 0.3, 1.0])))


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


def fit_kaplan(N=None, D=None, C=None, loss=None, bootstrap=0, level=0.95, seed=0,
               delta=1e-3, bootstrap_starts=4):
    """Fit whichever KM laws the inputs allow; C defaults to 6 N D when N and D are given.

    bootstrap: resamples of the points for percentile intervals (`level`) on
    every estimate; the joint law's replicates start from the full fit's best
    `bootstrap_starts` distinct minima.
    """
    named = {k: v for k, v in dict(N=N, D=D, C=C).items() if v is not None}
    if loss is None or not named:
        raise ValueError("fit_kaplan needs loss and at least one of N, D, C")
    arrays = dict(zip([*named, "loss"], positive_arrays(min_points=3, **named, loss=loss)))
    N, D, C, loss = (arrays.get(k) for k in ("N", "D", "C", "loss"))
    if C is None and N is not None and D is not None:
        C = 6.0 * N * D
    ones = np.ones(len(loss))
    fit = KaplanFit(n_points=len(loss), **_single_laws(N, D, C, loss, ones))
    objective = log_huber_objective(laws.kaplan_joint)
    joint_data = minima = None
    if N is not None and D is not None:
        joint_data = (np.log(N), np.log(D), np.log(loss), np.asarray(delta))
        minima, _ = screen_then_polish(objective, JOINT_GRID, joint_data)
        fit.joint = minima[0]
    if bootstrap:
        counts = bootstrap_counts(len(loss), bootstrap, seed)
        joints = [None] * bootstrap if minima is None else \
            refit_replicates(objective, minima, joint_data, counts, bootstrap_starts)
        fit.set_intervals([KaplanFit(n_points=len(loss), joint=j, **_single_laws(N, D, C, loss, w))
                           for w, j in zip(counts, joints)], level)
    return fit
