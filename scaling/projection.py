"""Variable projection: the laws are linear in most of their parameters.

L = E + A/N^alpha + B/D^beta is linear in (E, A, B) once alpha and beta are
fixed, and KM's joint law is linear in (N_c^p, D_c) once its two exponents are
(after raising L to 1/alpha_D). So a fit need only search the exponents: on a
grid of them, the best non-negative linear coefficients come from a small
least-squares problem each, solved exactly. The grid's best points then start
a converged polish of the full objective (scaling/optimize.py).

This is the VPNLS of Open-Athena ("Problems with Chinchilla Approach 2", 2026):
in the exponents alone the problem has a condition number near 10, where the
raw (log A, log B, log E, alpha, beta) parametrisation has one near 1e11 and
makes many-start L-BFGS land in different places for the same data.

The grid fit uses relative squared residuals, (pred - L)^2 / L^2, which equal
the squared log residuals to first order; the polish then minimises the stated
Huber-of-log objective exactly. The grid only has to put a start in the right
basin, and it looks at every basin it covers, whatever the data.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import scipy.ndimage

from scaling import laws
from scaling.optimize import huber, log_huber_objective, polish


def nnls(gram, rhs, t_w_t):
    """min over c >= 0 of |F c - t|^2_W for each leading index, from its normal equations.

    gram: (..., k, k) = F^T W F; rhs: (..., k) = F^T W t; t_w_t: (...) = t^T W t;
    at most 3 columns. The solution lies on one of the 2^k - 1 faces of the
    orthant: each face's unconstrained solution is computed, and the feasible
    one with the least residual kept (exact for this convex problem). Returns
    c (..., k) and the residual sum (...).
    """
    k = gram.shape[-1]
    lead = gram.shape[:-2]
    best_c, best_gain = np.zeros((*lead, k)), np.zeros(lead)
    for size in range(1, k + 1):
        for face in itertools.combinations(range(k), size):
            idx = list(face)
            g = gram[..., idx, :][..., :, idx]
            # A tiny ridge keeps coincident columns (an exponent of 0 copies E's) solvable.
            g = g + 1e-12 * np.trace(g, axis1=-2, axis2=-1)[..., None, None] * np.eye(size)
            c = np.linalg.solve(g, rhs[..., idx, None])[..., 0]
            gain = np.einsum("...i,...i->...", c, rhs[..., idx])  # rss = t'Wt - gain at the LS solution
            better = np.all(c >= 0, axis=-1) & (gain > best_gain)
            full = np.zeros((*lead, k))
            full[..., idx] = c
            best_c = np.where(better[..., None], full, best_c)
            best_gain = np.where(better, gain, best_gain)
    return best_c, t_w_t - best_gain


def log_huber(pred, log_loss, w, delta):
    """Summed weighted Huber loss of log pred - log loss over the last axis; +inf where pred <= 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(pred) - log_loss
    values = np.sum(w * huber(r, delta, xp=np), axis=-1)
    return np.where(np.all(pred > 0, axis=-1) | (w == 0).all(), values, np.inf)


def best_local_minima(values, count):
    """Flat indices of up to `count` lowest local minima of a grid of objective values.

    A local minimum is no higher than its neighbours along every axis (a 3^d
    window); taking the best few, rather than the best few points, spreads the
    polish over distinct basins instead of spending it on one.
    """
    finite = np.where(np.isfinite(values), values, np.inf)
    is_min = finite <= scipy.ndimage.minimum_filter(finite, size=3, mode="nearest")
    candidates = np.flatnonzero(is_min & np.isfinite(finite))
    order = candidates[np.argsort(finite.ravel()[candidates], kind="stable")]
    return order[:count]


@dataclasses.dataclass(frozen=True)
class Parametrisation:
    """A law's parameters with some fixed to given values and some tied to share one value.

    The optimiser sees only the free ones: full = base + matrix @ free, which
    `laws.mapped` applies inside the law, so fixing or tying needs no new code
    and no new compilation per combination.
    """
    names: tuple  # the law's parameters, in its order
    bounds: tuple  # (low, high) of each
    fixed: tuple = ()  # ((name, value), ...)
    tied: tuple = ()  # names that share one free parameter

    def __post_init__(self):
        fixed = dict(self.fixed)
        unknown = [n for n in [*fixed, *self.tied] if n not in self.names]
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; this law has {', '.join(self.names)}")
        if set(fixed) & set(self.tied):
            raise ValueError(f"{sorted(set(fixed) & set(self.tied))[0]} cannot be both fixed and tied")
        for name, value in fixed.items():
            low, high = self.bounds[self.names.index(name)]
            if not low <= value <= high:
                raise ValueError(f"{name} = {value} is outside its range [{low}, {high}]")

    @property
    def free_names(self) -> tuple:
        fixed = dict(self.fixed)
        out = []
        for name in self.names:
            if name in fixed or (name in self.tied and self.tied[0] != name):
                continue
            out.append("=".join(self.tied) if name in self.tied else name)
        return tuple(out)

    def _column(self, name):
        key = "=".join(self.tied) if name in self.tied else name
        return self.free_names.index(key)

    @property
    def matrix(self) -> np.ndarray:
        fixed = dict(self.fixed)
        m = np.zeros((len(self.names), len(self.free_names)))
        for i, name in enumerate(self.names):
            if name not in fixed:
                m[i, self._column(name)] = 1.0
        return m

    @property
    def base(self) -> np.ndarray:
        fixed = dict(self.fixed)
        return np.array([fixed.get(name, 0.0) for name in self.names], float)

    @property
    def free_bounds(self) -> list:
        out = []
        for j in range(len(self.free_names)):
            rows = [self.bounds[i] for i in np.flatnonzero(self.matrix[:, j])]
            out.append((max(r[0] for r in rows), min(r[1] for r in rows)))
        return out

    def to_free(self, full) -> np.ndarray:
        m = self.matrix
        return (m.T @ (np.asarray(full, float) - self.base)) / m.sum(axis=0)

    def to_full(self, free) -> np.ndarray:
        return self.base + self.matrix @ np.asarray(free, float)


def polish_best(law, parametrisation, starts, points, weights, delta):
    """The best of converged polishes from each full-parameter start: (full theta, free theta, value).

    points: (*law inputs, log loss), per point. The objective is scaled by
    1/(delta * sum of weights) while optimising, about the mean absolute log
    residual, so that L-BFGS-B's tolerances mean the same on every data set.
    """
    objective = log_huber_objective(laws.mapped(law))
    consts = (np.asarray(delta), parametrisation.matrix, parametrisation.base)
    return polish_best_of(objective, parametrisation, starts, consts, points, weights,
                          1.0 / (delta * float(np.sum(weights))))


def polish_best_of(objective, parametrisation, starts, consts, points, weights, scale):
    """The best of converged polishes of objective(free theta, *consts, points, weights) from each
    full-parameter start: (full theta, free theta, value)."""
    best_free, best_value = None, np.inf
    for start in starts:
        free, value = polish(objective, parametrisation.to_free(start), consts, points, weights,
                             parametrisation.free_bounds, scale)
        if value < best_value:
            best_free, best_value = free, value
    if best_free is None:
        raise RuntimeError("the fit diverged from every start")
    return parametrisation.to_full(best_free), best_free, best_value
