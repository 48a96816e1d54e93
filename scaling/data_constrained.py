"""Muennighoff et al. 2023, "Scaling Data-Constrained Language Models".

L = E + A/N'^alpha + B/D'^beta in effective data D' and effective parameters
N' (see `laws.data_constrained`): tokens repeated R_D times are worth
U R_D* (1 - exp(-R_D/R_D*)) extra unique tokens, and parameters beyond the
compute-optimal size for the unique data decay alike with R_N*.

All seven parameters are fitted together on all runs, with the Huber-on-log
objective of Approach 3. The search starts from the Chinchilla law fitted to
all runs as if every token were fresh, crossed with a grid of decay constants.
(Starting from a fit to the single-epoch runs alone fails on synthetic data:
the law discounts parameters beyond N_opt(U) even within one epoch, so those
runs do not follow Chinchilla's law, and the start lands in the wrong basin.)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from scaling import laws
from scaling.bootstrap import bootstrap_counts
from scaling.chinchilla import ChinchillaFit, fit_chinchilla
from scaling.inputs import positive_arrays
from scaling.optimize import (evaluate, log_huber_objective, refit_replicates,
                              screen_then_polish)
from scaling.result import FitResult

# ln R* starts: R* in {1, 4, 16, 64}; Muennighoff et al. found R_N* = 5.3, R_D* = 15.4.
DECAY_GRID = np.log([1.0, 4.0, 16.0, 64.0])
# Seven coupled parameters converge more slowly than Chinchilla's five: on
# noise-free synthetic runs 200 iterations leave the objective at 1e-9, 1,000
# reach the exact parameters.
POLISH_STEPS = 1000


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
        return {"huber_objective": self.objective}

    @classmethod
    def from_theta(cls, theta, **kw):
        a, b, e, alpha, beta, rn, rd = (float(t) for t in theta)
        return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha,
                   beta=beta, R_N_star=float(np.exp(rn)), R_D_star=float(np.exp(rd)), **kw)


def fit_data_constrained(N, D, U, loss, bootstrap=0, level=0.95, seed=0, delta=1e-3,
                         bootstrap_starts=4):
    """Fit the data-constrained law to runs of N params on D tokens drawn from U unique tokens.

    bootstrap: resamples of the runs for percentile intervals (`level`) on all
    seven parameters, each replicate starting from the full fit's best
    `bootstrap_starts` distinct minima.
    """
    N, D, U, loss = positive_arrays(min_points=8, N=N, D=D, U=U, loss=loss)
    if not np.any(D > U):
        raise ValueError("no run repeats data (D > U): the decay constants cannot be fitted")
    base = fit_chinchilla(N, D, loss, delta=delta).theta
    grid = np.array([[*base, rn, rd] for rn, rd in itertools.product(DECAY_GRID, DECAY_GRID)])
    objective = log_huber_objective(laws.data_constrained)
    data = (np.log(N), np.log(D), np.log(U), np.log(loss), np.asarray(delta))
    thetas, values = screen_then_polish(objective, grid, data, polish_steps=POLISH_STEPS)
    fit = DataConstrainedFit.from_theta(thetas[0], objective=float(values[0]), n_points=len(N))
    if bootstrap:
        counts = bootstrap_counts(len(N), bootstrap, seed)
        # Replicates start next to their minimum; half the iterations reach it.
        replicates = refit_replicates(objective, thetas, data, counts, bootstrap_starts,
                                      steps=POLISH_STEPS // 2)
        fit.set_intervals([None if t is None else DataConstrainedFit.from_theta(t, n_points=len(N))
                           for t in replicates], level)
    return fit
