"""Model shapes from a rule: how a sweep turns a target parameter count N into a model.

`Ladder.shape(N, base)` gives the decoder shape (d_model, n_layers, n_heads, d_ff) for the target:

- d_model is a multiple of `width_multiple` and of `head_dim` (`exact_head_dim`, the default), so
  that every shape has n_heads = d_model / head_dim heads of the same width, d_ff = mlp_ratio * d_model.
  The head count is d_model / head_dim rounded (in log) to a divisor of d_model that the base model
  accepts (an even head width under RoPE, a multiple of n_kv_heads), at least 1: exactly
  d_model / head_dim where the base allows it. With exact_head_dim = False widths step by
  width_multiple alone and the rounding decides the head width (the ladder before 2026-12-05: at
  head_dim 16 and width_multiple 8 its shapes had heads 8 to 22 wide, e.g. d184 as 23 heads of 8);
- the shapes considered have `min_layers` to `max_layers` layers and an aspect ratio d_model / n_layers
  within a factor `aspect_tolerance` (default 2) of `aspect_ratio` (Kaplan et al. 2020 found the loss nearly
  flat over such a range). Within a factor 2 the depth is not monotone in N (the sixth CPU sweep's 6e13
  budget: d88l2, d96l4, d160l3, d144l8), and once a budget is large enough for depth to pay that makes its
  IsoFLOP profile jagged; `aspect_tolerance = 1` keeps only d_model = aspect_ratio * n_layers, so that depth
  rises with N (with a coarser spacing of sizes). `monotone_depth` keeps the widths width_step apart
  and makes depth rise with N instead: each shape's depth is the depth whose fixed-aspect model
  (d_model = aspect_ratio * n_layers) is nearest its N in log, so the boundary between n and n + 1
  layers lies at the geometric mean of those two fixed-aspect models' N.
  Below the smallest of them the `min_layers` shapes go on narrower, and above the largest the
  `max_layers` shapes go on wider: where no shape's aspect ratio is within the factor, the
  nearest aspect ratio a model of that size can have;
- of those, the shape whose N is nearest the target in log wins (ties: nearer aspect ratio,
  then fewer layers).

The shapes considered do not depend on the target, so a larger target never gets a smaller model.
N counts what `accounting` says ('chinchilla': every parameter, 'kaplan': non-embedding ones;
for a mixture of experts those a token uses, as scaling.inputs.ACCOUNTING says) of the base
model, whose other fields (vocabulary, activation, tying, positions, ...) stay as they are.

Counts come from the parameter tree (train.sweep_plan.count_params). The base model's count is a
polynomial in (d_model, n_layers): matrices grow as d_model^2, norms, biases and embedding tables as
d_model, and everything but the embeddings with n_layers; six abstract builds fix that polynomial,
which ranks the candidates, and the chosen shape's own tree gives the N it reports.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import gin
import numpy as np


@dataclasses.dataclass(frozen=True)
class Shape:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    params: int  # N counted on the model's parameter tree, in the ladder's accounting

    @property
    def name(self) -> str:
        return f"d{self.d_model}l{self.n_layers}"

    @property
    def bindings(self) -> dict:
        return {f"TransformerConfig.{field}": getattr(self, field) for field in ("d_model", "n_layers", "n_heads", "d_ff")}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Ladder:
    aspect_ratio: float = 32.0  # target d_model / n_layers
    aspect_tolerance: float = 2.0  # shapes within this factor of aspect_ratio are considered; at least 1
    head_dim: int = 16  # target width of one attention head
    mlp_ratio: float = 4.0  # d_ff = mlp_ratio * d_model
    width_multiple: int = 8  # d_model is a multiple of it
    max_layers: int = 24
    # Kaplan et al. (2020, fig. 6) found that models of fewer than two layers fall off the trend that
    # deeper ones share; min_layers = 2 keeps a sweep's smallest sizes on it.
    min_layers: int = 1
    # Every head head_dim wide, so that a sweep's sizes differ in width and depth only: on the CPU sweep's
    # d64l4 at 1e13 FLOPs, 8 heads of 8 instead of 4 of 16 lowered the eval loss by 0.046 and 2 of 32
    # raised it by 0.056 (results/isoflop_cpu_ablation/), as much as a size step near a budget's optimum.
    exact_head_dim: bool = True
    monotone_depth: bool = False  # depth a step function of N (above); False: any depth in the window
    accounting: Optional[str] = None  # 'chinchilla' or 'kaplan'; None: the sweep's (Sweep.accounting)

    def __post_init__(self):
        from scaling.inputs import ACCOUNTING
        for name in ("aspect_ratio", "head_dim", "mlp_ratio", "width_multiple", "min_layers", "max_layers"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Ladder.{name} must be positive, got {getattr(self, name)!r}")
        if not self.aspect_tolerance >= 1:
            raise ValueError(f"Ladder.aspect_tolerance must be at least 1, got {self.aspect_tolerance!r}")
        if self.min_layers > self.max_layers:
            raise ValueError(f"Ladder.min_layers = {self.min_layers} is above Ladder.max_layers = {self.max_layers}")
        if self.accounting is not None and self.accounting not in ACCOUNTING:
            raise ValueError(f"Ladder.accounting = {self.accounting!r} is not one of {list(ACCOUNTING)}")

    @property
    def width_step(self) -> int:
        """The step between the widths the ladder considers."""
        return math.lcm(self.width_multiple, self.head_dim) if self.exact_head_dim else self.width_multiple

    def config(self, base, d_model: int, n_layers: int):
        """The base model config with this ladder's shape of width d_model and depth n_layers."""
        return dataclasses.replace(base, d_model=d_model, n_layers=n_layers, n_heads=self._heads(base, d_model),
                                   d_ff=max(1, round(self.mlp_ratio * d_model)))

    def _heads(self, base, d_model: int) -> int:
        def allowed(n: int) -> bool:
            return ((base.n_kv_heads is None or n % base.n_kv_heads == 0)
                    and (base.position != "rope" or (d_model // n) % 2 == 0))
        divisors = [n for n in range(1, d_model + 1) if d_model % n == 0 and allowed(n)]
        if not divisors:
            raise ValueError(f"Ladder: no head count divides d_model = {d_model} as the base model needs")
        wanted = d_model / self.head_dim
        return min(divisors, key=lambda n: (abs(math.log(n / wanted)), n))

    def count(self, model_cfg) -> int:
        """N of a model config, counted on its parameter tree in the ladder's accounting."""
        from scaling.inputs import ACCOUNTING
        from train.sweep_plan import count_params
        if self.accounting is None:
            raise ValueError("Ladder.accounting is not set: 'chinchilla' or 'kaplan'")
        return count_params(model_cfg)[ACCOUNTING[self.accounting].params]

    def shape(self, target_params: float, base) -> Shape:
        """The shape for a target N (see the module's docstring), its N counted on its parameter tree."""
        if not target_params > 0:
            raise ValueError(f"Ladder: a target parameter count must be positive, got {target_params!r}")
        first_layer = max(self.min_layers, base.moe_every)  # a mixture of experts needs moe_every layers at least
        layers = np.arange(first_layer, max(first_layer, self.max_layers) + 1)[:, None]
        # N >= d_model^2 (the query projection alone), so wider shapes overshoot every target.
        step = self.width_step
        widest = step * math.ceil(2 * math.sqrt(target_params) / step + 1)
        widths = np.arange(step, widest + 1, step)[None, :]
        aspect = widths / layers
        # The small slack keeps shapes exactly at a window's edge (aspect_tolerance = 1) despite rounding.
        considered = np.abs(np.log(aspect / self.aspect_ratio)) <= math.log(self.aspect_tolerance) + 1e-9
        considered |= (layers == layers[0]) & (aspect < self.aspect_ratio)
        considered |= (layers == layers[-1]) & (aspect > self.aspect_ratio)
        per_layer, rest = _count_polynomial(self, base, first_layer)
        estimate = np.maximum(np.polyval(rest, widths) + layers * np.polyval(per_layer, widths), 1.0)
        if self.monotone_depth:
            depth = layers[:, 0]
            fixed_aspect = np.polyval(rest, self.aspect_ratio * depth) + depth * np.polyval(per_layer, self.aspect_ratio * depth)
            boundaries = np.sqrt(fixed_aspect[:-1] * fixed_aspect[1:])  # between depth n and n + 1
            considered &= layers == depth[0] + np.searchsorted(boundaries, estimate, side="right")
        miss = np.where(considered, np.abs(np.log(estimate / target_params)), np.inf)
        order = np.lexsort((np.broadcast_to(layers, miss.shape).ravel(),
                            np.abs(np.log(aspect / self.aspect_ratio)).ravel(), miss.ravel()))
        row, column = np.unravel_index(order[0], miss.shape)
        model_cfg = self.config(base, int(widths[0, column]), int(layers[row, 0]))
        return Shape(model_cfg.d_model, model_cfg.n_layers, model_cfg.n_heads, model_cfg.d_ff, self.count(model_cfg))


@functools.cache
def _count_polynomial(ladder: Ladder, base, first_layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients in d_model of N's per-layer part and of the rest, from six counted models."""
    width = math.lcm(ladder.width_multiple, ladder.head_dim)
    widths = [width, 2 * width, 3 * width]

    def quadratic(n_layers: int) -> np.ndarray:
        counts = [ladder.count(ladder.config(base, d, n_layers)) for d in widths]
        return np.polyfit(widths, counts, 2)

    shallow, deep = quadratic(first_layer), quadratic(2 * first_layer)
    per_layer = (deep - shallow) / first_layer
    return per_layer, shallow - first_layer * per_layer
