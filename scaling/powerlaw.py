"""Straight-line fits in log-log space, and fits whose result is N_opt, D_opt ∝ C^a, C^b."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaling.result import FitResult


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * x^exponent."""
    exponent: float
    coefficient: float

    def __call__(self, x):
        return self.coefficient * np.asarray(x, dtype=float) ** self.exponent


def fit_power_law(x, y, weights=None):
    """Weighted least squares of log y on log x; None when fewer than 2 distinct x carry weight."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, float)
    use = w > 0
    if len(np.unique(x[use])) < 2:
        return None
    # polyfit weights multiply residuals, so sqrt(w) gives a w-weighted sum of squares.
    slope, intercept = np.polyfit(np.log(x[use]), np.log(y[use]), 1, w=np.sqrt(w[use]))
    return PowerLaw(float(slope), float(np.exp(intercept)))


@dataclass(kw_only=True)
class AllocationFit(FitResult):
    """Approaches 1 and 2 end the same way: power laws N_opt(C) and D_opt(C)."""
    n_law: PowerLaw
    d_law: PowerLaw

    @property
    def a(self):
        """N_opt ∝ C^a."""
        return self.n_law.exponent

    @property
    def b(self):
        """D_opt ∝ C^b."""
        return self.d_law.exponent

    def optimal_allocation(self, C):
        return self.n_law(C), self.d_law(C)

    def estimates(self):
        return {"a": self.a, "b": self.b, "N_coefficient": self.n_law.coefficient,
                "D_coefficient": self.d_law.coefficient}
