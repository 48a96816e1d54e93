"""Per-size hyperparameters for sweeps: each rule maps a model size and its N to bindings.

A sweep lists its rules in Sweep.rules; gin scopes tell rules of one kind apart:

    Sweep.rules = [@lr/PowerLaw(), @SizeTable()]
    lr/PowerLaw.binding = 'lr_schedule.peak_lr'
    lr/PowerLaw.value = 3e-3
    lr/PowerLaw.reference_params = 1e6
    lr/PowerLaw.exponent = -0.25
    SizeTable.table = {'d48': {'lr_schedule.warmup_steps': 50}, 'xs': {'lr_schedule.warmup_steps': 100}}
"""
from __future__ import annotations

import dataclasses

import gin


def _significant(x: float) -> float:
    """Three significant digits: a config should not read like noise."""
    return float(f"{x:.3g}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """Sets `binding` to value * (N / reference_params) ** exponent, e.g. a learning rate falling with size.

    N is the sweep's parameter count (Sweep.accounting). round_to > 0 rounds to a whole multiple
    of it, at least one (1: warm-up steps; 16: a batch size that the data axis divides). `source`
    says where the law comes from; the sweep's plan prints it beside the value it sets.
    """
    binding: str
    value: float
    reference_params: float
    exponent: float
    round_to: int = 0
    source: str = ""  # e.g. 'fitted by scaling.lr on results/lr_cpu/results.jsonl'

    def __call__(self, model: str, params: int) -> dict:
        x = self.value * (params / self.reference_params) ** self.exponent
        if self.round_to:
            return {self.binding: self.round_to * max(1, round(x / self.round_to))}
        return {self.binding: _significant(x)}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SizeTable:
    """Bindings per model size: {'xs': {'lr_schedule.peak_lr': 3e-3}, ...}; every size of the sweep needs one."""
    table: dict

    def __call__(self, model: str, params: int) -> dict:
        if model not in self.table:
            raise ValueError(f"SizeTable has no entry for model {model!r}")
        return dict(self.table[model])


RULES = ("PowerLaw", "SizeTable")  # the configurables above, for telling their bindings from a run's
