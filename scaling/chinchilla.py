"""Chinchilla Approach 3: fit L(N, D) = E + A/N^alpha + B/D^beta directly.

The objective is Hoffmann et al.'s (2022, Appendix D.2): the summed Huber loss
(delta = 1e-3) between log predicted and log observed loss. Two ways to
minimise it:

- method='vpnls' (default): variable projection (scaling/projection.py). On a
  64 x 64 grid of (alpha, beta), E, A and B >= 0 come from an exact
  non-negative least-squares solve; the best local minima of that grid then
  start a converged L-BFGS-B polish of the Huber objective itself. The
  result is the objective's global minimum over the grid's range of
  exponents, the same for any order of the rows. It supports constrained
  laws: `fixed={'E': 1.7}` or `{'alpha': 0.34}`, `tie_exponents=True` for
  alpha = beta (Muennighoff et al. 2023, Gadre et al. 2024).
- method='hoffmann': L-BFGS from each of Hoffmann et al.'s 4,500 starts over
  (log A, log B, log E, alpha, beta), best kept, for reproducing papers.
  Besiroglu et al. 2024 showed that Hoffmann et al.'s published values came
  from an optimiser stopped early; run to convergence either method gives
  their E = 1.817, alpha = 0.347, beta = 0.367 on the extracted runs.

Every fit reports whether its parameters are identified (scaling/identification.py).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from scaling import laws
from scaling.bootstrap import bootstrap_counts
from scaling.identification import diagnose
from scaling.inputs import canonical_order, positive_arrays
from scaling.optimize import log_huber_objective, minimize_multistart, single_threaded
from scaling.projection import Parametrisation, best_local_minima, log_huber, nnls, polish_best
from scaling.result import FitResult

# Hoffmann et al.'s initialisation grid: 6 x 6 x 5 x 5 x 5 = 4,500 starts,
# in the order (log A, log B, log E, alpha, beta).
HOFFMANN_GRID = np.array(list(itertools.product(
    np.arange(0.0, 30.0, 5.0), np.arange(0.0, 30.0, 5.0), np.arange(-1.0, 1.5, 0.5),
    np.arange(0.0, 2.5, 0.5), np.arange(0.0, 2.5, 0.5))))
HOFFMANN_STEPS = 300

# The exponent grid of the projection, and the exponents' range. Published fits have
# alpha, beta in 0.07-0.8; tiny models and odd data reach 2. A fitted exponent at the
# top of the range is reported as not identified.
EXPONENT_GRID = np.geomspace(0.01, 3.0, 64)
EXPONENT_MAX = 5.0
# Local minima of the grid polished: for the fit, and for each bootstrap replicate (which
# also polishes from the data's own fit).
FIT_STARTS, REPLICATE_STARTS = 4, 1

PARAMETERS = ("E", "a", "b", "alpha", "beta")  # centred: a = A e^(-alpha c_N), b = B e^(-beta c_D)
BOUNDS = ((0.0, np.inf), (0.0, np.inf), (0.0, np.inf), (0.0, EXPONENT_MAX), (0.0, EXPONENT_MAX))
MESSAGES = {
    "E": "E driven to 0: the runs do not reach the irreducible loss, which is not identified",
    "a": "A driven to 0: the loss does not fall with N in these runs",
    "b": "B driven to 0: the loss does not fall with D in these runs",
    "alpha": "alpha is at a bound of [0, 5]: not identified by these runs",
    "beta": "beta is at a bound of [0, 5]: not identified by these runs",
}


@dataclass(kw_only=True)
class ChinchillaFit(FitResult):
    law = "chinchilla"
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float = float("nan")
    method: str = "vpnls"
    constraints: dict = field(default_factory=dict)  # {'fixed': {...}, 'tie_exponents': bool}
    diagnostics: dict = field(default_factory=dict)

    @property
    def theta(self):
        """(log A, log B, log E, alpha, beta), as laws.chinchilla takes them."""
        with np.errstate(divide="ignore"):
            return np.array([np.log(self.A), np.log(self.B), np.log(self.E), self.alpha, self.beta])

    @property
    def a(self):
        """N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self):
        """D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self):
        """nan unless both exponents and coefficients are positive: otherwise the loss has no minimum along C = 6 N D."""
        if not (self.alpha > 0 and self.beta > 0 and self.A > 0 and self.B > 0):
            return float("nan")
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def predict(self, N, D):
        N, D = np.asarray(N, float), np.asarray(D, float)
        return self.E + self.A * N ** -self.alpha + self.B * D ** -self.beta

    def isoflop_curvature(self, N, D):
        """c2 of the IsoFLOP parabola this law draws at (N, D): half its second derivative in ln N along
        N D = const, in nats per (ln N)^2. At the law's optimum it is alpha beta (L - E) / 2."""
        N, D = np.asarray(N, float), np.asarray(D, float)
        return 0.5 * (self.alpha**2 * self.A * N**-self.alpha + self.beta**2 * self.B * D**-self.beta)

    def optimal_allocation(self, C):
        """(N_opt, D_opt) minimising the loss at C = 6 N D (Hoffmann et al. eq. 4)."""
        x = np.asarray(C, dtype=float) / 6.0
        return self.G * x**self.a, x**self.b / self.G

    def estimates(self):
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
                "a": self.a, "b": self.b}

    def extra(self):
        return {"huber_objective": self.objective, "method": self.method,
                "constraints": self.constraints, "diagnostics": self.diagnostics}

    @classmethod
    def from_theta(cls, theta, **kw):
        """From (log A, log B, log E, alpha, beta)."""
        a, b, e, alpha, beta = (float(t) for t in theta)
        return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha,
                   beta=beta, **kw)

    @classmethod
    def from_centred(cls, theta, centre, **kw):
        """From (E, a, b, alpha, beta) about centre = (c_N, c_D)."""
        e, a, b, alpha, beta = (float(t) for t in theta)
        return cls(E=e, A=a * float(np.exp(alpha * centre[0])), B=b * float(np.exp(beta * centre[1])),
                   alpha=alpha, beta=beta, **kw)


def _exponent_axes(parametrisation):
    """The alpha and beta values to project on: the grid, or a fixed value."""
    fixed = dict(parametrisation.fixed)
    return (np.array([fixed["alpha"]]) if "alpha" in fixed else EXPONENT_GRID,
            np.array([fixed["beta"]]) if "beta" in fixed else EXPONENT_GRID)


def _project(parametrisation, log_n, log_d, loss, w, delta, huber=True):
    """Centred thetas (E, a, b, alpha, beta) on the exponent grid, with E, a, b >= 0 by exact NNLS,
    and the objective at each: (grid shape + (5,)) and (grid shape). The objective is the Huber
    one, or with huber=False the relative least squares that the NNLS minimised (free, and
    enough to rank basins for a bootstrap replicate that starts next to the data's own fit).

    Each point's residual is divided by its loss (relative residuals). The N
    term's shape depends on alpha only and the D term's on beta only, so the
    normal equations for every (alpha, beta) pair are a few matrix products.
    """
    fixed = dict(parametrisation.fixed)
    alphas, betas = _exponent_axes(parametrisation)
    x, y = np.exp(-alphas[:, None] * log_n), np.exp(-betas[:, None] * log_d)  # (n_alpha, n), (n_beta, n)
    offset = fixed.get("E", 0.0)
    omega, tau = w / loss**2, w * (loss - offset) / loss**2  # weights of F^T W F and F^T W t
    shape = (len(alphas), len(betas))
    xx, yy, xy = (x**2) @ omega, (y**2) @ omega, (x * omega) @ y.T
    grid_xx, grid_yy = np.broadcast_to(xx[:, None], shape), np.broadcast_to(yy[None, :], shape)
    rhs_x, rhs_y = np.broadcast_to((x @ tau)[:, None], shape), np.broadcast_to((y @ tau)[None, :], shape)
    if "E" in fixed:
        gram = np.stack([np.stack([grid_xx, xy], -1), np.stack([xy, grid_yy], -1)], -2)
        rhs = np.stack([rhs_x, rhs_y], -1)
    else:
        e_x, e_y = np.broadcast_to((x @ omega)[:, None], shape), np.broadcast_to((y @ omega)[None, :], shape)
        e_e = np.full(shape, omega.sum())
        gram = np.stack([np.stack([e_e, e_x, e_y], -1), np.stack([e_x, grid_xx, xy], -1),
                         np.stack([e_y, xy, grid_yy], -1)], -2)
        rhs = np.stack([np.full(shape, tau.sum()), rhs_x, rhs_y], -1)
    t_w_t = np.full(shape, np.sum(w * ((loss - offset) / loss) ** 2))
    if parametrisation.tied:  # alpha = beta: the diagonal of the grid
        diagonal = np.arange(len(alphas))
        gram, rhs, t_w_t = gram[diagonal, diagonal], rhs[diagonal, diagonal], t_w_t[diagonal, diagonal]
    coefs, rss = nnls(gram, rhs, t_w_t)
    if "E" in fixed:
        coefs = np.concatenate([np.full((*coefs.shape[:-1], 1), offset), coefs], axis=-1)
    if parametrisation.tied:
        pairs = np.stack([alphas, betas], -1)
    else:
        pairs = np.stack(np.broadcast_arrays(alphas[:, None], betas[None, :]), -1)
    if not huber:
        return np.concatenate([coefs, pairs], axis=-1), rss
    if parametrisation.tied:
        pred = coefs[:, :1] + coefs[:, 1:2] * x + coefs[:, 2:3] * y
    else:
        pred = coefs[..., :1] + coefs[..., 1:2] * x[:, None, :] + coefs[..., 2:3] * y[None, :, :]
    return np.concatenate([coefs, pairs], axis=-1), log_huber(pred, np.log(loss), w, delta)


def _fit_vpnls(parametrisation, points, loss, w, delta, starts, data_fit=None):
    """The best polish from the `starts` best local minima of the projected grid.

    data_fit: for a bootstrap replicate, the full data's fitted theta: polished
    too, from beside which the replicate's own grid minimum (ranked by the
    relative least squares, which costs nothing extra) competes.
    """
    log_n, log_d, _ = points
    grid, values = _project(parametrisation, log_n, log_d, loss, w, delta, huber=data_fit is None)
    candidates = grid.reshape(-1, 5)[best_local_minima(values, starts)]
    if data_fit is not None:
        candidates = [data_fit, *candidates]
    return polish_best(laws.chinchilla_centred, parametrisation, candidates, points, w, delta)


def _fit_hoffmann(points, counts, delta, inits):
    """Hoffmann et al.: L-BFGS from every start in (log A, log B, log E, alpha, beta), best kept."""
    thetas, values = minimize_multistart(log_huber_objective(laws.chinchilla), inits,
                                         (np.asarray(delta),), points, counts, steps=HOFFMANN_STEPS)
    best = np.argmin(values, axis=1)
    return [(t[i], v[i]) for t, v, i in zip(thetas, values, best)]


@single_threaded
def fit_chinchilla(N, D, loss, bootstrap=0, level=0.95, seed=0, delta=1e-3, weights=None,
                   fixed=None, tie_exponents=False, method="vpnls", grid=None):
    """Fit E + A/N^alpha + B/D^beta to (N params, D tokens, loss nats).

    weights: per-point weights of the objective (e.g. 1 / standard error^2 of each
        run's eval loss); default all ones.
    fixed: {'E': value, 'alpha': value, 'beta': value}, any subset: held at those values.
    tie_exponents: fit one exponent for both N and D (alpha = beta).
    bootstrap: resamples of the points for percentile intervals (`level`) on
        E, A, B, alpha, beta, a, b; each replicate is fitted like the data (the
        grid, then converged polishes from its best local minimum and from the
        data's own fit).
    method: 'vpnls' (default) or 'hoffmann' (grid: its starts, default Hoffmann
        et al.'s 4,500 in (log A, log B, log E, alpha, beta); no constraints).
    Needs one more point than there are free parameters.
    """
    fixed = dict(fixed or {})
    if method not in ("vpnls", "hoffmann"):
        raise ValueError(f"method must be 'vpnls' or 'hoffmann', got {method!r}")
    if method == "hoffmann" and (fixed or tie_exponents):
        raise ValueError("constrained laws need method='vpnls'")
    if tie_exponents and {"alpha", "beta"} & set(fixed):
        raise ValueError("tie_exponents with a fixed exponent: fix both instead")
    unknown = sorted(set(fixed) - {"E", "alpha", "beta"})
    if unknown:
        raise ValueError(f"fixed may hold E, alpha and beta, not {unknown[0]!r}")
    parametrisation = Parametrisation(PARAMETERS, BOUNDS, tuple(sorted(fixed.items())),
                                      ("alpha", "beta") if tie_exponents else ())
    n_free = len(parametrisation.free_names)
    arrays = dict(N=N, D=D, loss=loss) if weights is None else dict(N=N, D=D, loss=loss, weights=weights)
    arrays = positive_arrays(min_points=n_free + 1, **arrays)
    order = canonical_order(*arrays)
    N, D, loss, *rest = (x[order] for x in arrays)
    w = rest[0] if rest else np.ones(len(N))
    constraints = {"fixed": fixed, "tie_exponents": bool(tie_exponents)}
    common = dict(n_points=len(N), method=method, constraints=constraints)

    if method == "hoffmann":
        points = (np.log(N), np.log(D), np.log(loss))
        inits = HOFFMANN_GRID if grid is None else np.asarray(grid, float)
        (theta, value), = _fit_hoffmann(points, w[None], delta, inits)
        fit = ChinchillaFit.from_theta(theta, objective=float(value), **common)
        if bootstrap:
            counts = bootstrap_counts(len(N), bootstrap, seed) * w
            fit.set_intervals([ChinchillaFit.from_theta(t, **common) if np.isfinite(v) else None
                               for t, v in _fit_hoffmann(points, counts, delta, theta[None])], level)
        return fit

    centre = (float(np.mean(np.log(N))), float(np.mean(np.log(D))))
    points = (np.log(N) - centre[0], np.log(D) - centre[1], np.log(loss))
    full, free, value = _fit_vpnls(parametrisation, points, loss, w, delta, FIT_STARTS)
    fit = ChinchillaFit.from_centred(full, centre, objective=float(value), **common)
    fit.diagnostics = diagnose(
        parametrisation.free_names, free, parametrisation.free_bounds, laws.mapped(laws.chinchilla_centred),
        (parametrisation.matrix, parametrisation.base, *points[:2]), w,
        {**MESSAGES, "alpha=beta": MESSAGES["alpha"].replace("alpha", "alpha = beta")})
    if bootstrap:
        replicates = []
        for counts in bootstrap_counts(len(N), bootstrap, seed) * w:
            try:
                theta, _, _ = _fit_vpnls(parametrisation, points, loss, counts, delta, REPLICATE_STARTS, full)
                replicates.append(ChinchillaFit.from_centred(theta, centre, **common))
            except RuntimeError:
                replicates.append(None)
        fit.set_intervals(replicates, level)
    return fit
