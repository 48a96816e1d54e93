"""What every fit object shares: named estimates, bootstrap intervals, JSON form."""
from __future__ import annotations

from dataclasses import dataclass, field

from scaling.bootstrap import percentile_intervals


@dataclass(kw_only=True)
class FitResult:
    """Base of the fit objects. Subclasses define `law` and `estimates()`.

    intervals: {name: (lo, hi)} percentile bootstrap intervals, for the names
        of `estimates()`; empty when no bootstrap was asked for.
    replicates: how many bootstrap replicates gave a usable fit.
    replicate_fits: those fits, for confidence bands on predictions.
    """
    law = "base"
    n_points: int
    intervals: dict = field(default_factory=dict)
    replicates: int = 0
    level: float = 0.95
    replicate_fits: list = field(default_factory=list, repr=False)

    def estimates(self):
        """{name: float}: the fitted parameters and derived exponents."""
        raise NotImplementedError

    def extra(self):
        """Further JSON-ready fields particular to a law."""
        return {}

    def set_intervals(self, replicate_fits, level):
        """Fill `intervals` from fits of bootstrap replicates (None where a replicate failed)."""
        self.replicate_fits = [f for f in replicate_fits if f is not None]
        self.intervals = percentile_intervals([f.estimates() for f in self.replicate_fits], level)
        self.replicates = len(self.replicate_fits)
        self.level = level
        return self

    def to_dict(self):
        return {
            "law": self.law,
            "n_points": self.n_points,
            "estimates": self.estimates(),
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "bootstrap": {"replicates": self.replicates, "level": self.level},
            **self.extra(),
        }
