"""Per-run hyperparameters for sweeps: each rule maps what it may know of a run (RunSize: its model
size, N and training tokens) to bindings.

A sweep lists its rules in Sweep.rules; gin scopes tell rules of one kind apart:

    Sweep.rules = [@lr/PowerLaw(), @SizeTable()]
    lr/PowerLaw.binding = 'lr_schedule.peak_lr'
    lr/PowerLaw.value = 3e-3
    lr/PowerLaw.reference_params = 1e6
    lr/PowerLaw.exponent = -0.25
    SizeTable.table = {'d48': {'lr_schedule.warmup_steps': 50}, 'xs': {'lr_schedule.warmup_steps': 100}}
    MinSteps.min_steps = 500
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import gin


@dataclasses.dataclass(frozen=True)
class RunSize:
    """What a rule may read of a run: its model size's name, its N (Sweep.accounting), the tokens it
    trains on (None when its base counts steps instead) and its data settings before any rule."""
    model: str
    params: int
    tokens: Optional[int]
    data: object  # data.loader.DataConfig


def _significant(x: float) -> float:
    """Three significant digits: a config should not read like noise."""
    return float(f"{x:.3g}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """Sets `binding` to value * (N / reference_params) ** exponent, e.g. a learning rate falling with size,
    times (D / reference_tokens) ** token_exponent where token_exponent is set: a rate that falls with the
    run's length too, as Bjorck et al. (2024) found and results/lr_horizon_cpu/ measured here.

    N is the sweep's parameter count (Sweep.accounting), D the run's training tokens. Sizes below min_params
    get the value at min_params: a law is not carried below the smallest size it was fitted on, where a
    rate rising as a power of 1/N would soon diverge. round_to > 0 rounds to a whole multiple of it, at
    least one (1: warm-up steps; 16: a batch size that the data axis divides). `source` says where the law
    comes from; the sweep's plan prints it beside the value it sets.
    """
    binding: str
    value: float
    reference_params: float
    exponent: float
    round_to: int = 0
    source: str = ""  # e.g. 'fitted by scaling.lr on results/lr_cpu/results.jsonl'
    token_exponent: float = 0.0
    reference_tokens: Optional[float] = None
    min_params: float = 0.0

    def __post_init__(self):
        if self.token_exponent and not (self.reference_tokens or 0) > 0:
            raise ValueError(f"PowerLaw for {self.binding} has token_exponent = {self.token_exponent!r}: "
                             f"it needs a positive reference_tokens, got {self.reference_tokens!r}")

    def __call__(self, run: RunSize) -> dict:
        x = self.value * (max(run.params, self.min_params) / self.reference_params) ** self.exponent
        if self.token_exponent:
            if run.tokens is None:
                raise ValueError(f"PowerLaw for {self.binding} scales with the run's tokens: the sweep must "
                                 "count its runs in tokens (Sweep.flops, Sweep.tokens or Sweep.train_tokens_per_param)")
            x *= (run.tokens / self.reference_tokens) ** self.token_exponent
        if self.round_to:
            return {self.binding: self.round_to * max(1, round(x / self.round_to))}
        return {self.binding: _significant(x)}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SizeTable:
    """Bindings per model size: {'xs': {'lr_schedule.peak_lr': 3e-3}, ...}; every size of the sweep needs one."""
    table: dict

    def __call__(self, run: RunSize) -> dict:
        if run.model not in self.table:
            raise ValueError(f"SizeTable has no entry for model {run.model!r}")
        return dict(self.table[run.model])


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MinSteps:
    """Halves a run's batch (DataConfig.batch_size) until the run's tokens fill at least min_steps whole
    batches, or until another halving would leave fewer than min_batch rows or a fraction of a row. A
    run with steps enough keeps its batch and gets no binding. A halved run is scored on the held-out rows
    of its former batch (DataConfig.eval_batch_size), as every other run of the sweep is.

    Why: with one batch for every run, an IsoFLOP budget's largest models see few tokens and so take
    few steps. At 3e11 FLOPs on the CPU sweep, d48l3 took 93 steps of 32 rows and ended 0.29 nats above
    the same tokens in 369 steps of 8 rows (results/isoflop_cpu_ablation/README.md, "Batch size"): a
    small budget's profile then rises on its right by the batch, not by N. Kaplan et al. (2020, sec.
    5.1) measure the same waste above the critical batch size, which grows as the loss falls. Keep
    min_batch a multiple of the mesh's data axis.
    """
    min_steps: int
    min_batch: int = 1

    def __post_init__(self):
        if self.min_steps < 1 or self.min_batch < 1:
            raise ValueError(f"MinSteps needs min_steps and min_batch of at least 1, got {self.min_steps} "
                             f"and {self.min_batch}")

    def __call__(self, run: RunSize) -> dict:
        if run.tokens is None:
            raise ValueError("MinSteps sets the batch from the run's tokens: the sweep must count its runs "
                             "in tokens (Sweep.flops, Sweep.tokens or Sweep.train_tokens_per_param)")
        batch = run.data.batch_size
        while (run.tokens < self.min_steps * batch * run.data.seq_len and batch % 2 == 0
               and batch // 2 >= self.min_batch):
            batch //= 2
        if batch == run.data.batch_size:
            return {}
        return {"DataConfig.batch_size": batch, "DataConfig.eval_batch_size": run.data.eval_rows_per_batch}


RULES = ("PowerLaw", "SizeTable", "MinSteps")  # the configurables above, for telling their bindings from a run's
