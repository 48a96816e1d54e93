"""Optimizers and the learning-rate schedule.

AdamW follows the common LLM recipe (GPT-3, Chinchilla): beta1 0.9, beta2
0.95, eps 1e-8, decoupled weight decay 0.1 on matrices only, global-norm
clipping at 1.0, linear warm-up then cosine decay to 10% of the peak at the
end of the run. The schedule spans the run's own length, as Chinchilla found
it must for a fair comparison between token budgets.
"""
from __future__ import annotations

import gin
import jax
import optax

OPTIMIZERS = ("adamw", "adafactor")


@gin.configurable
def lr_schedule(total_steps: int, peak_lr: float = 1e-3, warmup_steps: int = 100,
                final_lr_fraction: float = 0.1, min_warmup_fraction: float = 0.0) -> optax.Schedule:
    """min_warmup_fraction: the warm-up lasts at least this fraction of the run's steps. A rule that
    sets warmup_steps from N alone (N tokens, Porian et al. 2024) gives a small model at a large
    budget a warm-up of a few steps, shorter than Adam's second-moment average (1 / (1 - b2) = 20
    steps) needs to settle; on the CPU sweep's d32l2 at 1e12, 14 steps of warm-up left the loss
    0.08-0.11 nats higher for one initialisation seed in three, and 70 steps (10%) removed that
    (results/isoflop_cpu_ablation/README.md)."""
    if not 0.0 <= min_warmup_fraction < 1.0:
        raise ValueError(f"lr_schedule.min_warmup_fraction = {min_warmup_fraction} is not in [0, 1)")
    warmup_steps = max(warmup_steps, round(min_warmup_fraction * total_steps))
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=peak_lr * final_lr_fraction)


def decay_mask(params):
    """True for weight matrices; norms' scales and all biases are not decayed."""
    def decays(path, _):
        name = str(getattr(path[-1], "key", path[-1]))
        return name not in ("bias", "scale")
    return jax.tree_util.tree_map_with_path(decays, params)


@gin.configurable
def make_optimizer(schedule: optax.Schedule, name: str = "adamw", b1: float = 0.9, b2: float = 0.95,
                   eps: float = 1e-8, weight_decay: float = 0.1, clip_norm: float = 1.0,
                   adafactor_parameter_scale: bool = False) -> optax.GradientTransformation:
    if name == "adamw":
        optimizer = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)
    elif name == "adafactor":
        # Adafactor (Shazeer & Stern 2018) keeps factored second moments: memory grows
        # with rows plus columns, not their product. Without parameter scaling (T5's
        # default has it) a learning rate means the same step size as for AdamW, so
        # sweeps can swap optimizers without retuning.
        optimizer = optax.adafactor(schedule, multiply_by_parameter_scale=adafactor_parameter_scale,
                                    weight_decay_rate=weight_decay or None, weight_decay_mask=decay_mask)
    else:
        raise ValueError(f"make_optimizer.name = {name!r} is not one of {list(OPTIMIZERS)}")
    if clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)
    return optimizer
