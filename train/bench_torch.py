"""A PyTorch reference of the decoder-only Transformer and its AdamW training step, for train.bench --torch.

The same model as model/transformer.py's Transformer for the options the quickstart and the CPU
sweeps use (pre-norm RMSNorm or LayerNorm; RoPE, learned or sinusoidal positions; GeLU, ReLU,
SwiGLU or GeGLU; multi-head or grouped-query attention; tied or separate output layer; with or
without biases), written as a PyTorch user would: nn.Linear, nn.RMSNorm, scaled_dot_product_attention.
Other options raise ValueError. `load_flax_params` copies a flax parameter tree into it, so that
tests/test_bench_torch.py can check that both compute the same logits, loss and AdamW update, and
`tokens_per_s` times a bare training loop (torch.compile or eager) on one batch, as train.bench
times the jitted JAX step.
"""
from __future__ import annotations

import inspect
import math
import os
import time

import gin
import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model import transformer
from model.transformer import TransformerConfig
from train.optimizer import decay_mask, make_optimizer

MODES = ("compile", "eager")
WARMUP_STEPS = 3  # torch.compile traces and compiles the forward and the backward in the first steps

# Options the reference implements, as {TransformerConfig field: the only value it supports}.
_FIXED = {"architecture": "decoder", "norm_position": "pre", "attention_mask": "causal", "dtype": "float32",
          "embed_norm": False, "embed_grad_shrink": 1.0, "dropout": 0.0, "moe_every": 0, "remat": False}
_POSITIONS = ("rope", "learned", "sinusoidal")
_ACTIVATIONS = {"gelu": lambda h: F.gelu(h, approximate="tanh"),  # flax's nn.gelu is the tanh approximation
                "relu": F.relu, "swiglu": F.silu, "geglu": lambda h: F.gelu(h, approximate="tanh")}


def check_supported(cfg: TransformerConfig) -> None:
    for name, supported in _FIXED.items():
        if getattr(cfg, name) != supported:
            raise ValueError(f"the PyTorch reference implements only TransformerConfig.{name} = {supported!r}, "
                             f"not {getattr(cfg, name)!r}")
    if cfg.position not in _POSITIONS:
        raise ValueError(f"the PyTorch reference implements TransformerConfig.position in {list(_POSITIONS)}, "
                         f"not {cfg.position!r}")


def machine_cores() -> int:
    """The cores this process may run on (the machine's, unless an affinity mask says fewer)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# --- the model ---------------------------------------------------------------

def make_norm(cfg: TransformerConfig) -> nn.Module:
    # model/transformer.py's LayerNorm divides by the biased variance, as torch's does.
    eps = transformer.Norm.eps
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=eps)
    return nn.LayerNorm(cfg.d_model, eps=eps, bias=cfg.use_bias)


def rope_tables(cfg: TransformerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (max_len, head_dim / 2) of transformer.apply_rope's angles: frequencies base^(-i / half)."""
    half = cfg.head_dim // 2
    inv_freq = 1.0 / cfg.rope_base ** (torch.arange(half, dtype=torch.float32) / half)
    angles = torch.arange(cfg.max_len, dtype=torch.float32)[:, None] * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates (batch, heads, length, head_dim) by halves, as transformer.apply_rope does (not interleaved)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.query = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.use_bias)
        self.key = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=cfg.use_bias)
        self.value = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=cfg.use_bias)
        self.out = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.use_bias)

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        batch, length, _ = x.shape

        def heads(projection: nn.Linear, count: int) -> torch.Tensor:
            return projection(x).view(batch, length, count, self.head_dim).transpose(1, 2)
        q, k, v = heads(self.query, self.n_heads), heads(self.key, self.kv_heads), heads(self.value, self.kv_heads)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.kv_heads != self.n_heads:  # GQA: query head h reads kv head h // group, as in jax's attention
            group = self.n_heads // self.kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(out.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim))


class Mlp(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.activation = _ACTIVATIONS[cfg.activation]
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.use_bias)
        self.wi_gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.use_bias) if cfg.gated else None
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.wi(x))
        if self.wi_gate is not None:
            h = h * self.wi_gate(x)
        return self.wo(h)


class Block(nn.Module):
    """Pre-norm: x + attention(norm_0(x)), then x + mlp(norm_1(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.norm_0, self.attention = make_norm(cfg), Attention(cfg)
        self.norm_1, self.mlp = make_norm(cfg), Mlp(cfg)

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        x = x + self.attention(self.norm_0(x), rope)
        return x + self.mlp(self.norm_1(x))


class Transformer(nn.Module):
    """inputs (batch, length) int64 -> logits (batch, length, vocab) float32. Module names follow the
    flax model's (layer_i -> layers.i), which is what load_flax_params relies on."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        check_supported(cfg)
        self.cfg = cfg
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.position == "learned":
            self.position_embed = nn.Parameter(torch.zeros(cfg.max_len, cfg.d_model))
        elif cfg.position == "sinusoidal":
            table = np.asarray(transformer.sinusoidal_positions(cfg.max_len, cfg.d_model), np.float32)
            self.register_buffer("sinusoidal", torch.tensor(table), persistent=False)
        elif cfg.position == "rope":
            cos, sin = rope_tables(cfg)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = make_norm(cfg)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.use_bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        length = inputs.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.cfg.max_len}")
        x = self.token_embed(inputs)
        rope = None
        if self.cfg.position == "learned":
            x = x + self.position_embed[:length]
        elif self.cfg.position == "sinusoidal":
            x = x + self.sinusoidal[:length]
        else:
            rope = self.rope_cos[:length], self.rope_sin[:length]
        for layer in self.layers:
            x = layer(x, rope)
        x = self.final_norm(x)
        return F.linear(x, self.token_embed.weight) if self.lm_head is None else self.lm_head(x)


# --- from the flax parameters --------------------------------------------------

def _unstacked_layers(cfg: TransformerConfig, params: dict) -> dict:
    """The flax tree with one entry per layer: scan_layers stacks layer i's parameters at index i
    of decoder/layers/layer_0 (a period of one layer, as mixtures of experts are not implemented)."""
    decoder = dict(params["decoder"])
    stacked = decoder.pop("layers", None)
    if stacked is not None:
        decoder.update({f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], stacked["layer_0"])
                        for i in range(cfg.n_layers)})
    return {**params, "decoder": decoder}


def _torch_name(path) -> str:
    """A flax parameter's path -> the torch model's name for it:
    decoder/layer_3/mlp/wi/kernel -> layers.3.mlp.wi.weight."""
    names = [str(getattr(key, "key", key)) for key in path]
    renamed = {"kernel": "weight", "scale": "weight", "embedding": "weight"}
    return ".".join(f"layers.{n[len('layer_'):]}" if n.startswith("layer_") else renamed.get(n, n)
                    for n in names if n != "decoder")


def _by_torch_name(tree: dict) -> dict:
    return {_torch_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def load_flax_params(model: Transformer, params: dict) -> None:
    """Copies an unboxed flax parameter tree of the same config into the model. A Dense kernel
    (in..., out...) becomes nn.Linear's (out, in) weight; every torch parameter must receive a value."""
    state = {}
    for name, value in _by_torch_name(_unstacked_layers(model.cfg, params)).items():
        owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        value = np.asarray(value, np.float32)
        if isinstance(owner, nn.Linear) and name.endswith(".weight"):
            value = value.reshape(owner.in_features, owner.out_features).T
        state[name] = torch.tensor(value.reshape(model.get_parameter(name).shape))
    model.load_state_dict(state, strict=True)


# --- the training step ---------------------------------------------------------

def adamw_settings() -> dict:
    """make_optimizer's AdamW settings (b1, b2, eps, weight_decay, clip_norm) as gin binds them, its
    defaults where unbound."""
    settings = {name: p.default for name, p in inspect.signature(make_optimizer).parameters.items()
                if p.default is not inspect.Parameter.empty}
    settings.update(gin.get_bindings(make_optimizer))
    if settings["name"] != "adamw":
        raise ValueError(f"the PyTorch reference implements make_optimizer.name = 'adamw' only, "
                         f"not {settings['name']!r}")
    return {name: settings[name] for name in ("b1", "b2", "eps", "weight_decay", "clip_norm")}


def make_adamw(model: Transformer, flax_params: dict, schedule, steps: int, b1: float, b2: float, eps: float,
               weight_decay: float, clip_norm: float):
    """torch.optim.AdamW as train/optimizer.py's make_optimizer sets optax's up: the same betas and eps,
    weight decay on the parameters its decay_mask marks, global-norm clipping at clip_norm (0: none),
    step i's learning rate schedule(i) for the first `steps`. torch's decoupled decay p -= lr * wd * p
    is optax's add_decayed_weights before scale_by_learning_rate. Returns (optimizer, scheduler, clip_norm)."""
    decays = _by_torch_name(decay_mask(_unstacked_layers(model.cfg, flax_params)))
    groups = [{"params": [p for n, p in model.named_parameters() if decays[n] == decay],
               "weight_decay": weight_decay if decay else 0.0} for decay in (True, False)]
    # lr 1.0 scaled by LambdaLR: each group's lr is then step i's learning rate, and its decay lr * wd.
    # fused: one kernel over all parameters, the fastest of torch's AdamW implementations.
    optimizer = torch.optim.AdamW(groups, lr=1.0, betas=(b1, b2), eps=eps, fused=True)
    rates = [float(schedule(step)) for step in range(steps)]  # computed now: no JAX call in the timed loop
    # LambdaLR asks for the rate of one step past the last it is stepped.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: rates[min(step, len(rates) - 1)])
    return optimizer, scheduler, clip_norm


def loss_sums(model: nn.Module, inputs, targets, weights, z_loss: float):
    """As train/trainer.py's loss_sums: (the objective, weighted nll plus z_loss * weighted log(Z)^2, summed;
    the weighted nll summed; the weights summed)."""
    logits = model(inputs)
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(weights)
    nll_sum = (nll * weights).sum()
    total = nll_sum
    if z_loss:
        total = total + z_loss * (torch.logsumexp(logits, dim=-1) ** 2 * weights).sum()
    return total, nll_sum, weights.sum()


def torch_batch(batch: dict) -> dict:
    """A numpy LM batch (inputs, targets, weights) as torch tensors."""
    return {"inputs": torch.from_numpy(np.asarray(batch["inputs"], np.int64)),
            "targets": torch.from_numpy(np.asarray(batch["targets"], np.int64)),
            "weights": torch.from_numpy(np.asarray(batch["weights"], np.float32))}


def train_step(loss_fn, model: nn.Module, adamw, batch: dict, accum_steps: int, z_loss: float) -> torch.Tensor:
    """One update on the batch in accum_steps micro-batches, gradients of the loss averaged over the
    whole batch's weight as train/trainer.py's train_step does; returns the loss (the mean weighted nll)."""
    optimizer, scheduler, clip_norm = adamw
    total_weight = batch["weights"].sum()
    micro = [batch[key].chunk(accum_steps) for key in ("inputs", "targets", "weights")]
    optimizer.zero_grad(set_to_none=True)
    nll_sum = 0.0
    for inputs, targets, weights in zip(*micro):
        total, micro_nll_sum, _ = loss_fn(model, inputs, targets, weights, z_loss)
        (total / total_weight).backward()
        nll_sum = nll_sum + micro_nll_sum.detach()
    if clip_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    scheduler.step()
    return nll_sum / total_weight


def tokens_per_s(cfg: TransformerConfig, flax_params: dict, batch: dict, steps: int, mode: str, schedule,
                 accum_steps: int = 1, z_loss: float = 0.0, **adamw_settings) -> float:
    """Tokens/s of `steps` training steps (after WARMUP_STEPS) on one batch, all float32, starting from
    flax_params, with the optimizer of make_adamw(schedule, **adamw_settings); mode 'compile' runs the
    model and loss under torch.compile, 'eager' as they are."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {list(MODES)}")
    torch.set_num_threads(machine_cores())
    model = Transformer(cfg)
    load_flax_params(model, flax_params)
    adamw = make_adamw(model, flax_params, schedule, WARMUP_STEPS + steps, **adamw_settings)
    loss_fn = torch.compile(loss_sums) if mode == "compile" else loss_sums
    batch = torch_batch(batch)
    for _ in range(WARMUP_STEPS):
        loss = train_step(loss_fn, model, adamw, batch, accum_steps, z_loss)
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(loss_fn, model, adamw, batch, accum_steps, z_loss)
    last_loss = loss.item()  # waits for the last step
    seconds = time.perf_counter() - start
    if not math.isfinite(last_loss):
        raise FloatingPointError(f"the PyTorch loop's loss is {last_loss}")
    return batch["inputs"].numel() * steps / seconds
