"""A decoder-only transformer language model, in one file.

Read top to bottom: the configuration, then normalisation, positions,
attention, the MLP, one block, and the whole model. Every parameter and every
large activation carries logical axis names ("batch", "length", "embed",
"heads", "kv_heads", "head_dim", "mlp", "vocab"); train/partitioning.py maps
them onto a device mesh, so the same code runs on one CPU and on a pod.

Parameters are float32; `dtype` sets the compute precision (bfloat16 on
accelerators). Logits come back in float32 so that the loss is computed there.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

ACTIVATIONS = ("gelu", "relu", "swiglu", "geglu")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal", "rope", "alibi")
ATTENTION_MASKS = ("causal", "prefix")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"TransformerConfig.{name} = {value!r} is not one of {list(choices)}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 8192
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: Optional[int] = None  # None: as many as n_heads (MHA); 1: MQA; else GQA
    d_ff: int = 1024
    max_len: int = 256
    activation: str = "gelu"
    norm: str = "rmsnorm"
    norm_position: str = "pre"
    position: str = "rope"
    use_bias: bool = False
    tie_embeddings: bool = True
    dropout: float = 0.0
    attention_mask: str = "causal"
    dtype: str = "float32"
    remat: bool = False  # recompute each block's activations in the backward pass
    rope_base: float = 10_000.0
    init_std: float = 0.02

    def __post_init__(self):
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        _check_choice("position", self.position, POSITIONS)
        _check_choice("attention_mask", self.attention_mask, ATTENTION_MASKS)
        _check_choice("dtype", self.dtype, DTYPES)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"TransformerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.position == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError("rope needs an even head dimension (d_model / n_heads)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def gated(self) -> bool:
        return self.activation in ("swiglu", "geglu")


def dense(cfg: TransformerConfig, features, axes: tuple, name: str, contract=-1, std=None):
    """A DenseGeneral whose kernel (and bias) carry the logical axis names `axes`."""
    n_out = len(features) if isinstance(features, tuple) else 1
    return nn.DenseGeneral(
        features, axis=contract, use_bias=cfg.use_bias, dtype=cfg.compute_dtype,
        param_dtype=jnp.float32, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(std or cfg.init_std), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-n_out:]))


class Norm(nn.Module):
    """LayerNorm or RMSNorm, computed in float32; RMSNorm is LayerNorm without centring or bias."""
    cfg: TransformerConfig
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        y = x.astype(jnp.float32)
        if cfg.norm == "layernorm":
            y = y - y.mean(-1, keepdims=True)
        y = y * jax.lax.rsqrt((y * y).mean(-1, keepdims=True) + self.eps)
        ones, zeros = nn.initializers.ones, nn.initializers.zeros
        y = y * self.param("scale", nn.with_logical_partitioning(ones, ("embed",)), (x.shape[-1],))
        if cfg.norm == "layernorm" and cfg.use_bias:
            y = y + self.param("bias", nn.with_logical_partitioning(zeros, ("embed",)), (x.shape[-1],))
        return y.astype(cfg.compute_dtype)


def sinusoidal_positions(length: int, dim: int):
    """The fixed encodings of Vaswani et al. (2017): sines in one half, cosines in the other."""
    inv_freq = 1.0 / 10_000 ** (jnp.arange(0, dim, 2) / dim)
    angles = jnp.arange(length)[:, None] * inv_freq[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)[:, :dim]


def apply_rope(x, base: float):
    """Rotary embeddings (Su et al. 2021) on x of shape (batch, length, heads, head_dim)."""
    half = x.shape[-1] // 2
    inv_freq = 1.0 / base ** (jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * inv_freq[None, :]
    sin, cos = jnp.sin(angles)[None, :, None, :], jnp.cos(angles)[None, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def alibi_bias(n_heads: int, length: int):
    """ALiBi (Press et al. 2022): a per-head penalty linear in distance, slopes 2^(-8h/n)."""
    slopes = 2.0 ** (-8.0 * jnp.arange(1, n_heads + 1) / n_heads)
    distance = jnp.abs(jnp.arange(length)[:, None] - jnp.arange(length)[None, :])
    return -slopes[None, :, None, None] * distance[None, None, :, :]


def attention_mask(cfg: TransformerConfig, length: int, prefix_len=None):
    """Boolean (batch or 1, 1, query, key) mask: causal, plus full attention inside the prefix."""
    query, key = jnp.arange(length)[:, None], jnp.arange(length)[None, :]
    allowed = (key <= query)[None, None]
    if cfg.attention_mask == "prefix":
        if prefix_len is None:
            raise ValueError("attention_mask='prefix' needs prefix_len")
        allowed = allowed | (key[None, None] < prefix_len[:, None, None, None])
    return allowed


class Attention(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x, mask, bias):
        cfg = self.cfg
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)  # GPT-2: residual branches shrink with depth
        q = dense(cfg, (cfg.n_heads, cfg.head_dim), ("embed", "heads", "head_dim"), "query")(x)
        k = dense(cfg, (cfg.kv_heads, cfg.head_dim), ("embed", "kv_heads", "head_dim"), "key")(x)
        v = dense(cfg, (cfg.kv_heads, cfg.head_dim), ("embed", "kv_heads", "head_dim"), "value")(x)
        if cfg.position == "rope":
            q, k = apply_rope(q, cfg.rope_base), apply_rope(k, cfg.rope_base)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))
        k = nn.with_logical_constraint(k, ("batch", "length", "kv_heads", "head_dim"))
        # Grouped-query attention is native here: n_heads must be a multiple of kv heads.
        out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "head_dim"))
        return dense(cfg, cfg.d_model, ("heads", "head_dim", "embed"), "out", contract=(-2, -1),
                     std=out_std)(out)


class Mlp(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.cfg
        act = {"gelu": nn.gelu, "relu": nn.relu, "swiglu": nn.silu, "geglu": nn.gelu}[cfg.activation]
        h = act(dense(cfg, cfg.d_ff, ("embed", "mlp"), "wi")(x))
        if cfg.gated:  # GLU variants (Shazeer 2020): the activation gates a second projection
            h = h * dense(cfg, cfg.d_ff, ("embed", "mlp"), "wi_gate")(x)
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
        return dense(cfg, cfg.d_model, ("mlp", "embed"), "wo",
                     std=cfg.init_std / math.sqrt(2 * cfg.n_layers))(h)


class Block(nn.Module):
    """Attention then MLP, each wrapped in a residual with the norm before (pre) or after (post)."""
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x, mask, bias, deterministic: bool):
        cfg = self.cfg
        drop = nn.Dropout(cfg.dropout)
        sublayers = (lambda h: Attention(cfg, name="attention")(h, mask, bias),
                     lambda h: Mlp(cfg, name="mlp")(h, deterministic))
        for i, sublayer in enumerate(sublayers):
            norm = Norm(cfg, name=f"norm_{i}")
            if cfg.norm_position == "pre":
                x = x + drop(sublayer(norm(x)), deterministic=deterministic)
            else:
                x = norm(x + drop(sublayer(x), deterministic=deterministic))
            x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return x


class Transformer(nn.Module):
    """batch["inputs"] (batch, length) int32 -> logits (batch, length, vocab) float32.

    batch["prefix_len"] (batch,) marks, for attention_mask='prefix', how many
    leading tokens of each row attend to each other bidirectionally.
    """
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, batch: dict, deterministic: bool = True):
        cfg = self.cfg
        tokens, prefix_len = batch["inputs"], batch.get("prefix_len")
        length = tokens.shape[1]
        if length > cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {cfg.max_len}")
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=jnp.float32,
                         embedding_init=nn.with_logical_partitioning(
                             nn.initializers.normal(cfg.init_std), ("vocab", "embed")), name="token_embed")
        x = embed(tokens)
        if cfg.position == "learned":
            table = self.param("position_embed", nn.with_logical_partitioning(
                nn.initializers.normal(cfg.init_std), ("length", "embed")), (cfg.max_len, cfg.d_model))
            x = x + table[None, :length].astype(x.dtype)
        elif cfg.position == "sinusoidal":
            x = x + sinusoidal_positions(length, cfg.d_model)[None].astype(x.dtype)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

        mask = attention_mask(cfg, length, prefix_len)
        bias = alibi_bias(cfg.n_heads, length).astype(cfg.compute_dtype) if cfg.position == "alibi" else None
        block = nn.remat(Block, static_argnums=(4,)) if cfg.remat else Block
        for i in range(cfg.n_layers):
            x = block(cfg, name=f"layer_{i}")(x, mask, bias, deterministic)
        if cfg.norm_position == "pre":
            x = Norm(cfg, name="final_norm")(x)

        if cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = dense(cfg, cfg.vocab_size, ("embed", "vocab"), "lm_head")(x)
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab"))
