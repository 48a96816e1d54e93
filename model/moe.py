"""Routing for a mixture of experts: which token goes to which expert, in what buffer slot, with what weight.

Pure functions over router logits, GShard style (Lepikhin et al. 2021): tokens
are routed within groups (here one group per sequence, so routing never
depends on how the batch is split over devices), each expert takes at most
`capacity` tokens of a group, and a token that finds its expert full is
dropped there: that expert adds nothing to it and the residual carries it
through. The result is a dense dispatch tensor (group, token, expert, slot)
that einsums use to gather tokens into per-expert buffers and a combine
tensor, the same shape, holding the gate weights that scatter expert outputs
back. The Flax layer that owns the router and the experts' weights is
`MoeMlp` in model/transformer.py.

top_k = 1 is the Switch Transformer (Fedus et al. 2022): the token's weight is
its router probability. top_k = 2 is GShard's top-2: the two gates are
renormalised to sum to 1 (GShard's random dispatch of small second gates is
left out: routing stays deterministic). Any top_k <= num_experts works the
same way.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Routing(NamedTuple):
    dispatch: jax.Array  # (groups, tokens, experts, capacity) 0/1: token t sits in slot c of expert e
    combine: jax.Array  # same shape, float32: the gate weight of that slot's output for the token
    load_balance_loss: jax.Array  # Switch's auxiliary loss, unweighted; 1 when routing is balanced
    router_z_loss: jax.Array  # ST-MoE's mean squared log-partition of the router logits, unweighted
    expert_load: jax.Array  # (experts,) fraction of the routing choices sent to each expert (sums to 1)
    dropped_fraction: jax.Array  # fraction of routing choices that found their expert full


def expert_capacity(tokens_per_group: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """Slots per expert and group: capacity_factor times an even share of the group's top_k choices."""
    even_share = top_k * tokens_per_group / num_experts
    # More than one slot per token of the group is never needed: a token picks an expert at most once.
    return min(tokens_per_group, max(1, math.ceil(capacity_factor * even_share)))


def route(router_logits: jax.Array, top_k: int, capacity: int) -> Routing:
    """Routes (groups, tokens, experts) float32 logits to each token's top_k experts."""
    num_experts = router_logits.shape[-1]
    probs = jax.nn.softmax(router_logits, axis=-1)
    gates, expert_index = jax.lax.top_k(probs, top_k)  # (groups, tokens, k), best first
    if top_k > 1:
        gates = gates / gates.sum(-1, keepdims=True)
    choice = jax.nn.one_hot(expert_index, num_experts, dtype=jnp.int32)  # (groups, tokens, k, experts)

    # Slot of each choice in its expert's buffer. Every token's first choice is served before any
    # token's second choice (GShard), so a full expert drops second choices first; within one
    # rank, earlier tokens come first.
    groups, tokens = router_logits.shape[:2]
    by_rank = choice.transpose(0, 2, 1, 3).reshape(groups, top_k * tokens, num_experts)
    slot = ((jnp.cumsum(by_rank, axis=1) - 1) * by_rank).sum(-1)
    slot = slot.reshape(groups, top_k, tokens).transpose(0, 2, 1)  # (groups, tokens, k)
    kept = slot < capacity
    slot_one_hot = jax.nn.one_hot(jnp.where(kept, slot, capacity), capacity)  # a dropped choice: all zeros
    choice = choice.astype(jnp.float32)
    dispatch = jnp.einsum("gtke,gtkc->gtec", choice, slot_one_hot)
    combine = jnp.einsum("gtk,gtke,gtkc->gtec", gates, choice, slot_one_hot)

    # Switch's load-balancing loss, eq. (4): E * sum_e f_e P_e, with f_e the fraction of the
    # group's tokens whose first choice is expert e and P_e its mean router probability.
    first_choice_fraction = choice[:, :, 0, :].mean(1)
    mean_probs = probs.mean(1)
    load_balance = num_experts * (first_choice_fraction * mean_probs).sum(-1).mean()
    router_z = jnp.mean(jax.nn.logsumexp(router_logits, axis=-1) ** 2)
    return Routing(dispatch=dispatch, combine=combine, load_balance_loss=load_balance, router_z_loss=router_z,
                   expert_load=choice.sum(2).mean((0, 1)) / top_k,
                   dropped_fraction=1.0 - kept.mean(dtype=jnp.float32))
