"""Muennighoff et al. 2023, "Scaling Data-Constrained Language Models".

L = E + A/N'^alpha + B/D'^beta in effective data D' and effective parameters
N' (see `laws.data_constrained`): tokens repeated R_D times are worth
U R_D* (1 - exp(-R_D/R_D*)) extra unique tokens, and parameters beyond the
compute-optimal size for the unique data decay alike with R_N*.

All seven parameters are fitted together on all runs, with the Huber-on-log
objective of Approach 3, by converged L-BFGS-B polishes (scaling/optimize.py)
from the Chinchilla law fitted to all runs as if every token were fresh,
crossed with a grid of decay constants; the best is kept.
(Starting from a fit to the single-epoch runs alone fails on synthetic data:
the law discounts parameters beyond N_opt(U) even within one epoch, so those
runs do not follow Chinchilla's law, and the start lands in the wrong basin.)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from dataclasses import field

from scaling import laws
from scaling.bootstrap import bootstrap_counts
from scaling.chinchilla import ChinchillaFit, fit_chinchilla
from scaling.identification import diagnose
from scaling.inputs import canonical_order, positive_arrays
from scaling.optimize import evaluate, single_threaded
from scaling.projection import Parametrisation, polish_best
from scaling.result import FitResult

# ln R* starts: R* in {1, 4, 16, 64}; Muennighoff et al. found R_N* = 5.3, R_D* = 15.4.
DECAY_GRID = np.log([1.0, 4.0, 16.0, 64.0])
# R* beyond 1e6 repetitions is as good as infinite (repeated data as good as fresh);
# a decay constant at that bound is reported as not identified.
PARAMETERS = Parametrisation(
    ("log_A", "log_B", "log_E", "alpha", "beta", "log_R_N_star", "log_R_D_star"),
    ((-50.0, 100.0), (-50.0, 100.0), (np.log(1e-6), 5.0), (0.0, 5.0), (0.0, 5.0),
     (np.log(1e-3), np.log(1e6)), (np.log(1e-3), np.log(1e6))))
MESSAGES = {
    "log_E": "E driven to 0: the runs do not reach the irreducible loss, which is not identified",
    "log_R_N_star": "R_N* runs off to infinity: these runs show no cost of parameters beyond the "
                    "unique data's optimum",
    "log_R_D_star": "R_D* runs off to infinity: these runs show no cost of repeating data",
}


@dataclass(kw_only=True)
class DataConstrainedFit(FitResult):
    law = "data_constrained"
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    R_N_star: float
    R_D_star: float
    objective: float = float("nan")
    diagnostics: dict = field(default_factory=dict)

    @property
    def theta(self):
        return np.array([np.log(self.A), np.log(self.B), np.log(self.E), self.alpha, self.beta,
                         np.log(self.R_N_star), np.log(self.R_D_star)])

    @property
    def base(self):
        """The law with unlimited unique data: Chinchilla's, with these E, A, B, alpha, beta."""
        return ChinchillaFit(E=self.E, A=self.A, B=self.B, alpha=self.alpha, beta=self.beta,
                             n_points=self.n_points)

    def predict(self, N, D, U):
        return evaluate(laws.data_constrained, self.theta, np.log(N), np.log(D), np.log(U))

    def estimates(self):
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
                "R_N_star": self.R_N_star, "R_D_star": self.R_D_star}

    def extra(self):
        return {"huber_objective": self.objective, "diagnostics": self.diagnostics}

    @classmethod
    def from_theta(cls, theta, **kw):
        a, b, e, alpha, beta, rn, rd = (float(t) for t in theta)
        return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha,
                   beta=beta, R_N_star=float(np.exp(rn)), R_D_star=float(np.exp(rd)), **kw)


@single_threaded
def fit_data_constrained(N, D, U, loss, bootstrap=0, level=0.95, seed=0, delta=1e-3, weights=None):
    """Fit the data-constrained law to runs of N params on D tokens drawn from U unique tokens.

    weights: per-point weights of the objective; default all ones.
    bootstrap: resamples of the runs for percentile intervals (`level`) on all
    seven parameters, each replicate polished from the full fit's parameters.
    """
    arrays = dict(N=N, D=D, U=U, loss=loss) if weights is None else \
        dict(N=N, D=D, U=U, loss=loss, weights=weights)
    arrays = positive_arrays(min_points=8, **arrays)
    order = canonical_order(*arrays)
    N, D, U, loss, *rest = (x[order] for x in arrays)
    w = rest[0] if rest else np.ones(len(N))
    if not np.any(D > U):
        raise ValueError("no run repeats data (D > U): the decay constants cannot be fitted")
    base = fit_chinchilla(N, D, loss, delta=delta, weights=w)
    start = np.clip(base.theta, *np.array(PARAMETERS.bounds[:5]).T)
    starts = [[*start, rn, rd] for rn, rd in itertools.product(DECAY_GRID, DECAY_GRID)]
    points = (np.log(N), np.log(D), np.log(U), np.log(loss))
    full, free, value = polish_best(laws.data_constrained, PARAMETERS, starts, points, w, delta)
    fit = DataConstrainedFit.from_theta(full, objective=float(value), n_points=len(N))
    fit.diagnostics = diagnose(PARAMETERS.free_names, free, PARAMETERS.free_bounds,
                               laws.mapped(laws.data_constrained),
                               (PARAMETERS.matrix, PARAMETERS.base, *points[:3]), w, MESSAGES)
    if bootstrap:
        replicates = []
        for counts in bootstrap_counts(len(N), bootstrap, seed) * w:
            try:
                theta = polish_best(laws.data_constrained, PARAMETERS, [full], points, counts, delta)[0]
                replicates.append(DataConstrainedFit.from_theta(theta, n_points=len(N)))
            except RuntimeError:
                replicates.append(None)
        fit.set_intervals(replicates, level)
    return fit
