"""Chinchilla Approach 3: fit L(N, D) = E + A/N^alpha + B/D^beta directly.

Hoffmann et al. 2022 (Appendix D.2): minimise the summed Huber loss
(delta = 1e-3) between log predicted and log observed loss over
(log A, log B, log E, alpha, beta) with L-BFGS from a grid of 4,500 starts and
keep the best. Besiroglu et al. 2024 showed that the published values came
from an optimiser stopped early; run to convergence this procedure gives their
E = 1.817, alpha = 0.347, beta = 0.367 on the extracted Chinchilla data.
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
from scaling.result import FitResult

# Hoffmann et al.'s initialisation grid: 5 x 5 x 5 x 6 x 6 = 4,500 starts,
# in the order (log A, log B, log E, alpha, beta).
HOFFMANN_GRID = np.array(list(itertools.product(
    np.arange(0.0, 30.0, 5.0), np.arange(0.0, 30.0, 5.0), np.arange(-1.0, 1.5, 0.5),
    np.arange(0.0, 2.5, 0.5), np.arange(0.0, 2.5, 0.5))))


@dataclass(kw_only=True)
class ChinchillaFit(FitResult):
    law = "chinchilla"
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float = float("nan")

    @property
    def theta(self):
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
        """nan unless both exponents are positive: otherwise the loss has no minimum along C = 6 N D."""
        if not (self.alpha > 0 and self.beta > 0):
            return float("nan")
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def predict(self, N, D):
        return evaluate(laws.chinchilla, self.theta, np.log(N), np.log(D))

    def optimal_allocation(self, C):
        """(N_opt, D_opt) minimising the loss at C = 6 N D (Hoffmann et al. eq. 4)."""
        x = np.asarray(C, dtype=float) / 6.0
        return self.G * x**self.a, x**self.b / self.G

    def estimates(self):
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
                "a": self.a, "b": self.b}

    def extra(self):
        return {"huber_objective": self.objective}

    @classmethod
    def from_theta(cls, theta, **kw):
        a, b, e, alpha, beta = (float(t) for t in theta)
        return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha,
                   beta=beta, **kw)


def fit_chinchilla(N, D, loss, bootstrap=0, level=0.95, seed=0, delta=1e-3, grid=None,
                   bootstrap_starts=4):
    """Fit E + A/N^alpha + B/D^beta to (N params, D tokens, loss nats) as Hoffmann et al.

    bootstrap: number of resamples of the points for percentile intervals
        (`level`) on E, A, B, alpha, beta, a, b; each replicate starts from
        the full fit's `bootstrap_starts` best distinct minima.
    grid: (starts, 5) initial (log A, log B, log E, alpha, beta); default
        Hoffmann et al.'s 4,500-point grid.
    """
    N, D, loss = positive_arrays(min_points=6, N=N, D=D, loss=loss)
    objective = log_huber_objective(laws.chinchilla)
    data = (np.log(N), np.log(D), np.log(loss), np.asarray(delta))
    thetas, values = screen_then_polish(objective, HOFFMANN_GRID if grid is None else grid, data)
    fit = ChinchillaFit.from_theta(thetas[0], objective=float(values[0]), n_points=len(N))
    if bootstrap:
        counts = bootstrap_counts(len(N), bootstrap, seed)
        replicates = refit_replicates(objective, thetas, data, counts, bootstrap_starts)
        fit.set_intervals([None if t is None else ChinchillaFit.from_theta(t, n_points=len(N))
                           for t in replicates], level)
    return fit
