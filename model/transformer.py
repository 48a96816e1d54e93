"""Transformer language models, in one file: the decoder-only model and the blocks everything is built from.

Read top to bottom: the configuration, then normalisation, positions,
attention, the MLP and its mixture-of-experts variant, one block, a stack of
blocks, and the decoder-only model. The encoder-decoder
(model/encoder_decoder.py) is two Stacks of the same Blocks; the routing
math of the mixture of experts is in model/moe.py.

Every parameter and every large activation carries logical axis names
("batch", "length", "embed", "heads", "kv_heads", "head_dim", "mlp", "vocab",
"expert", ...); train/partitioning.py maps them onto a device mesh, so the
same code runs on one CPU and on a pod.

Parameters are float32; `dtype` sets the compute precision (bfloat16 on
accelerators). Logits come back in float32 so that the loss is computed there.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional, Union

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from model import moe

ARCHITECTURES = ("decoder", "encoder_decoder")
ACTIVATIONS = ("gelu", "relu", "swiglu", "geglu")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post", "sandwich", "deepnorm")
POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "t5_bias")
ATTENTION_MASKS = ("causal", "prefix")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ATTENTION_IMPLEMENTATIONS = (None, "xla", "cudnn")  # jax.nn.dot_product_attention's; None: jax chooses


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"TransformerConfig.{name} = {value!r} is not one of {list(choices)}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    architecture: str = "decoder"  # or 'encoder_decoder' (T5-style)
    vocab_size: int = 8192
    d_model: int = 256
    n_layers: int = 4  # decoder layers; also the encoder's unless n_encoder_layers is set
    n_encoder_layers: Optional[int] = None
    n_heads: int = 4
    n_kv_heads: Optional[int] = None  # None: as many as n_heads (MHA); 1: MQA; else GQA
    d_ff: int = 1024
    max_len: int = 256
    activation: str = "gelu"
    norm: str = "rmsnorm"
    norm_position: str = "pre"
    position: str = "rope"
    t5_bias_buckets: int = 32  # position='t5_bias': buckets of relative distance ...
    t5_bias_max_distance: int = 128  # ... logarithmically spaced up to this distance
    embed_norm: bool = False  # a norm right after the embedding (BLOOM)
    embed_grad_shrink: float = 1.0  # GLM-130B: scales the gradient reaching the embedding; 1 = off
    use_bias: bool = False
    tie_embeddings: bool = True
    dropout: float = 0.0
    attention_mask: str = "causal"
    dtype: str = "float32"
    attention_implementation: Optional[str] = None  # 'cudnn': cuDNN's fused attention (NVIDIA GPUs, bf16)
    remat: bool = False  # recompute each block's activations in the backward pass
    # Stack the layers' parameters and run them under one nn.scan (MaxText, t5x): XLA compiles one
    # layer (one group of moe_every layers for a mixture of experts) instead of each of them.
    scan_layers: bool = False
    rope_base: float = 10_000.0
    init_std: float = 0.02
    # Mixture of experts: the MLP of every moe_every-th layer becomes num_experts MLPs (0: none).
    moe_every: int = 0
    num_experts: int = 8
    moe_top_k: int = 1  # experts per token: 1 Switch, 2 GShard
    capacity_factor: float = 1.25  # expert buffer size, in multiples of an even share of the tokens
    moe_aux_loss_weight: float = 0.01  # Switch load-balancing loss
    moe_router_z_loss_weight: float = 0.001  # ST-MoE router z-loss

    def __post_init__(self):
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        _check_choice("position", self.position, POSITIONS)
        _check_choice("attention_mask", self.attention_mask, ATTENTION_MASKS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("attention_implementation", self.attention_implementation, ATTENTION_IMPLEMENTATIONS)
        if self.attention_implementation == "cudnn" and jax.default_backend() != "gpu":
            raise ValueError(f"TransformerConfig.attention_implementation = 'cudnn' needs an NVIDIA GPU; "
                             f"jax runs on {jax.default_backend()}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len", "num_experts", "moe_top_k"):
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
        if self.n_encoder_layers is not None and (self.architecture != "encoder_decoder" or self.n_encoder_layers < 1):
            raise ValueError(f"TransformerConfig.n_encoder_layers = {self.n_encoder_layers} needs "
                             f"architecture='encoder_decoder' and a positive value")
        if self.architecture == "encoder_decoder" and self.attention_mask != "causal":
            raise ValueError("TransformerConfig.attention_mask must be 'causal' for architecture='encoder_decoder' "
                             "(its encoder is the bidirectional part)")
        if self.position == "t5_bias" and not 4 <= self.t5_bias_buckets < 2 * self.t5_bias_max_distance:
            raise ValueError(f"TransformerConfig.t5_bias_buckets = {self.t5_bias_buckets} must be at least 4 and "
                             f"below 2 * t5_bias_max_distance ({2 * self.t5_bias_max_distance})")
        if not 0.0 < self.embed_grad_shrink <= 1.0:
            raise ValueError(f"TransformerConfig.embed_grad_shrink must be in (0, 1], got {self.embed_grad_shrink}")
        if not 0 <= self.moe_every <= self.n_layers:
            raise ValueError(f"TransformerConfig.moe_every must be in [0, n_layers={self.n_layers}], "
                             f"got {self.moe_every}")
        if self.moe_top_k > self.num_experts:
            raise ValueError(f"TransformerConfig.moe_top_k = {self.moe_top_k} exceeds num_experts = "
                             f"{self.num_experts}")
        if self.capacity_factor <= 0:
            raise ValueError(f"TransformerConfig.capacity_factor must be positive, got {self.capacity_factor}")
        for name in ("moe_aux_loss_weight", "moe_router_z_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"TransformerConfig.{name} must be non-negative, got {getattr(self, name)}")
        if self.scan_layers:
            for stack, depth in (("n_layers", self.n_layers), ("encoder layers", self.encoder_layers)):
                if depth % self.scan_period:
                    raise ValueError(f"scan_layers: {stack} = {depth} is not a multiple of moe_every = "
                                     f"{self.moe_every}, the period of the layers' pattern")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def encoder_layers(self) -> int:
        """Encoder depth: 0 for a decoder-only model."""
        return 0 if self.architecture == "decoder" else self.n_encoder_layers or self.n_layers

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def gated(self) -> bool:
        return self.activation in ("swiglu", "geglu")

    def is_moe_layer(self, index: int) -> bool:
        """Layers moe_every - 1, 2 moe_every - 1, ... of each stack: with 2, every other layer (Switch, GShard)."""
        return self.moe_every > 0 and (index + 1) % self.moe_every == 0

    @property
    def scan_period(self) -> int:
        """Layers in one repetition of the stack's pattern: what scan_layers scans over."""
        return self.moe_every or 1


class Dense(nn.Module):
    """A linear map from x's last `n_in` axes to `features`, its kernel (and bias) carrying the logical axis
    names `axes`, the inputs' then the outputs'.

    Not Flax's DenseGeneral: that initialises a flattened kernel, and under jax.set_mesh its logical names
    become a sharding constraint of the wrong rank. This kernel is initialised at its own shape, which
    draws the same numbers."""
    cfg: TransformerConfig
    features: Union[int, tuple]
    axes: tuple
    n_in: int = 1
    std: Optional[float] = None

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        features = self.features if isinstance(self.features, tuple) else (self.features,)
        init = nn.initializers.normal(self.std or cfg.init_std)
        kernel = self.param("kernel", nn.with_logical_partitioning(init, self.axes),
                            x.shape[x.ndim - self.n_in:] + features, jnp.float32)
        y = jnp.tensordot(x.astype(cfg.compute_dtype), kernel.astype(cfg.compute_dtype), self.n_in)
        if cfg.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[-len(features):]),
                              features, jnp.float32)
            y = y + bias.astype(cfg.compute_dtype)
        return y


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


# --- positions ---------------------------------------------------------------

def sinusoidal_positions(length: int, dim: int):
    """The fixed encodings of Vaswani et al. (2017): sines in one half, cosines in the other."""
    inv_freq = 1.0 / 10_000 ** (jnp.arange(0, dim, 2) / dim)
    angles = jnp.arange(length)[:, None] * inv_freq[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)[:, :dim]


class Positions(NamedTuple):
    """Where the tokens of a call sit. query: (batch or 1, length) position of each token; key:
    (batch or 1, keys) position of each key it may attend to (the same tokens in training, the
    cache's slots when decoding); cache_index: None, or where this call's keys go in the KV cache."""
    query: jax.Array
    key: jax.Array
    cache_index: Optional[jax.Array] = None

    @classmethod
    def of(cls, length: int) -> "Positions":
        """A whole sequence at once, as in training: positions 0 .. length - 1."""
        positions = jnp.arange(length)[None]
        return cls(positions, positions)

    @classmethod
    def decoding(cls, model: nn.Module, length: int, start=None) -> "Positions":
        """Incremental decoding: a call's `length` tokens follow those of the calls before, which `model`
        counts in its cache. start (batch,), optional: each left-padded row's first real slot; the row's
        tokens then sit at positions 0, 1, ... and its padding at negative ones."""
        filled = model.variable("cache", "filled", lambda: jnp.zeros((), jnp.int32))
        start = jnp.zeros((1, 1), jnp.int32) if start is None else start[:, None]
        slots = jnp.arange(model.cfg.max_len)[None]
        where = cls(filled.value + jnp.arange(length)[None] - start, slots - start, filled.value)
        filled.value = filled.value + length
        return where


def apply_rope(x, base: float, positions):
    """Rotary embeddings (Su et al. 2021) on x (batch, length, heads, head_dim) at positions (batch or 1, length)."""
    half = x.shape[-1] // 2
    inv_freq = 1.0 / base ** (jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def alibi_bias(n_heads: int, where: Positions):
    """ALiBi (Press et al. 2022): a per-head penalty linear in distance, slopes 2^(-8h/n); (batch, heads, query, key)."""
    slopes = 2.0 ** (-8.0 * jnp.arange(1, n_heads + 1) / n_heads)
    distance = jnp.abs(where.query[:, :, None] - where.key[:, None, :])
    return -slopes[None, :, None, None] * distance[:, None, :, :]


def relative_position_buckets(query, key, bidirectional: bool, num_buckets: int, max_distance: int):
    """T5's buckets (Raffel et al. 2020) of the distance from each query position to each key position,
    (..., query, key) int32.

    Half the buckets hold exact distances 0, 1, ..., the rest log-spaced distances up to
    max_distance, beyond which all share the last bucket. A causal model only needs
    distances to earlier keys; a bidirectional one splits the buckets between the two sides.
    """
    distance = query[..., :, None] - key[..., None, :]  # > 0: the key is earlier
    offset = 0
    if bidirectional:
        num_buckets //= 2
        offset = jnp.where(distance < 0, num_buckets, 0)
        distance = jnp.abs(distance)
    else:
        distance = jnp.maximum(distance, 0)
    exact = num_buckets // 2
    log_spaced = exact + (jnp.log(jnp.maximum(distance, exact) / exact) / math.log(max_distance / exact)
                          * (num_buckets - exact)).astype(jnp.int32)
    return offset + jnp.where(distance < exact, distance, jnp.minimum(log_spaced, num_buckets - 1))


class RelativePositionBias(nn.Module):
    """T5's learned attention bias: one scalar per head and distance bucket, shared by all layers of a stack."""
    cfg: TransformerConfig
    bidirectional: bool

    @nn.compact
    def __call__(self, where: Positions):
        cfg = self.cfg
        table = self.param("embedding", nn.with_logical_partitioning(
            nn.initializers.normal(cfg.init_std), ("position_bucket", "heads")), (cfg.t5_bias_buckets, cfg.n_heads))
        buckets = relative_position_buckets(where.query, where.key, self.bidirectional, cfg.t5_bias_buckets,
                                            cfg.t5_bias_max_distance)
        return table[buckets].transpose(0, 3, 1, 2)  # (batch, heads, query, key)


def attention_mask(cfg: TransformerConfig, where: Positions, prefix_len=None):
    """Boolean (batch or 1, 1, query, key) mask: causal, plus full attention inside the prefix. Keys at
    negative positions (left padding of a shorter prompt) are hidden."""
    query, key = where.query[:, :, None], where.key[:, None, :]
    allowed = key <= query
    if cfg.attention_mask == "prefix":
        if prefix_len is None:
            raise ValueError("attention_mask='prefix' needs prefix_len")
        allowed = allowed | (key < prefix_len[:, None, None])
    return (allowed & (key >= 0))[:, None]


# --- sublayers ---------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head (grouped-query) attention; with cross=True, cross-attention to a context (the encoder's output).

    inner_std / out_std: init std of the value projection and of the output projection
    (see Block); queries and keys always start at init_std.
    """
    cfg: TransformerConfig
    inner_std: float
    out_std: float
    cross: bool = False

    @nn.compact
    def __call__(self, x, mask, bias, where: Optional[Positions] = None, context=None):
        cfg = self.cfg
        q = Dense(cfg, (cfg.n_heads, cfg.head_dim), ("embed", "heads", "head_dim"), name="query")(x)
        if self.cross:
            k, v = self.context_keys_values(context, where)
        else:
            k, v = self.keys_values(x)
            if cfg.position == "rope":  # self-attention only: encoder and decoder positions are not comparable
                q, k = apply_rope(q, cfg.rope_base, where.query), apply_rope(k, cfg.rope_base, where.query)
            if where.cache_index is not None:
                k, v = self.cached(k, v, where.cache_index)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))
        k = nn.with_logical_constraint(k, ("batch", "length", "kv_heads", "head_dim"))
        # Grouped-query attention is native here: n_heads must be a multiple of kv heads.
        out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation=cfg.attention_implementation)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "head_dim"))
        return Dense(cfg, cfg.d_model, ("heads", "head_dim", "embed"), n_in=2, std=self.out_std, name="out")(out)

    def keys_values(self, source):
        cfg = self.cfg
        k = Dense(cfg, (cfg.kv_heads, cfg.head_dim), ("embed", "kv_heads", "head_dim"), name="key")(source)
        v = Dense(cfg, (cfg.kv_heads, cfg.head_dim), ("embed", "kv_heads", "head_dim"), std=self.inner_std,
                  name="value")(source)
        return k, v

    def context_keys_values(self, context, where: Optional[Positions]):
        """Cross-attention's keys and values. Decoding, the first call computes them from the context and
        caches them; the later calls give no context (None) and read them back."""
        if where is None or where.cache_index is None:
            return self.keys_values(context)
        if context is None:
            return self.get_variable("cache", "keys"), self.get_variable("cache", "values")
        k, v = self.keys_values(context)
        self.put_variable("cache", "keys", k)
        self.put_variable("cache", "values", v)
        return k, v

    def cached(self, k, v, index):
        """Incremental decoding: this call's keys and values go into the cache from slot `index` on,
        and attention reads every slot (the mask hides those not yet written)."""
        shape = (k.shape[0], self.cfg.max_len, *k.shape[2:])
        keys = self.variable("cache", "keys", jnp.zeros, shape, k.dtype)
        values = self.variable("cache", "values", jnp.zeros, shape, v.dtype)
        keys.value = jax.lax.dynamic_update_slice(keys.value, k, (0, index, 0, 0))
        values.value = jax.lax.dynamic_update_slice(values.value, v, (0, index, 0, 0))
        return keys.value, values.value


def mlp_activation(cfg: TransformerConfig, h, gate):
    """The MLP's nonlinearity; GLU variants (Shazeer 2020) multiply it by a second, linear projection."""
    act = {"gelu": nn.gelu, "relu": nn.relu, "swiglu": nn.silu, "geglu": nn.gelu}[cfg.activation]
    return act(h) * gate if cfg.gated else act(h)


class ExpertDense(nn.Module):
    """One dense projection per expert, applied to that expert's buffer: (expert, group, slot, in) -> out."""
    cfg: TransformerConfig
    features: int
    axes: tuple  # logical names of the (in, out) dimensions
    std: float

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        kernel = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.normal(self.std), ("expert", *self.axes)), (cfg.num_experts, x.shape[-1], self.features))
        y = jnp.einsum("egci,eio->egco", x, kernel.astype(cfg.compute_dtype))
        if cfg.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("expert", self.axes[1])),
                              (cfg.num_experts, self.features))
            y = y + bias[:, None, None, :].astype(cfg.compute_dtype)
        return y


class Mlp(nn.Module):
    """The MLP on (batch, length, embed); with experts=True, num_experts of them side by side on
    per-expert buffers (expert, expert_group, capacity, embed), each expert with its own weights."""
    cfg: TransformerConfig
    inner_std: float
    out_std: float
    experts: bool = False

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.cfg

        def project(inputs, features: int, axes: tuple, name: str, std: float):
            if self.experts:
                return ExpertDense(cfg, features, axes, std, name=name)(inputs)
            return Dense(cfg, features, axes, std=std, name=name)(inputs)

        project_in = lambda name: project(x, cfg.d_ff, ("embed", "mlp"), name, self.inner_std)  # noqa: E731
        h = mlp_activation(cfg, project_in("wi"), project_in("wi_gate") if cfg.gated else None)
        rows = ("expert", "expert_group", "capacity") if self.experts else ("batch", "length")
        h = nn.with_logical_constraint(h, (*rows, "mlp"))
        h = nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
        return project(h, cfg.d_model, ("mlp", "embed"), "wo", self.out_std)


class MoeMlp(nn.Module):
    """A mixture of experts in place of the MLP: a float32 router sends each token to its top_k experts.

    Routing (model/moe.py) works on groups of one sequence each. The dispatch einsum
    moves tokens from rows sharded over the batch to buffers sharded over the "expert"
    axis (GSPMD turns the resharding into an all-to-all), and the combine einsum brings
    them back. Sown for the trainer: the weighted load-balancing and router z losses
    ("*_loss", added to the loss) and, for metrics, expert load and dropped fraction.
    """
    cfg: TransformerConfig
    inner_std: float
    out_std: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.cfg
        # Routing decisions are discrete and the softmax is sensitive: keep the router in float32.
        router = nn.Dense(cfg.num_experts, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32,
                          kernel_init=nn.with_logical_partitioning(
                              nn.initializers.normal(cfg.init_std), ("embed", "router_experts")), name="router")
        capacity = moe.expert_capacity(x.shape[1], cfg.num_experts, cfg.moe_top_k, cfg.capacity_factor)
        routing = moe.route(router(x.astype(jnp.float32)), cfg.moe_top_k, capacity)
        self.sow("intermediates", "load_balance_loss", cfg.moe_aux_loss_weight * routing.load_balance_loss)
        self.sow("intermediates", "router_z_loss", cfg.moe_router_z_loss_weight * routing.router_z_loss)
        self.sow("intermediates", "expert_load", routing.expert_load)
        self.sow("intermediates", "dropped_fraction", routing.dropped_fraction)

        dispatch = routing.dispatch.astype(cfg.compute_dtype)
        buffers = jnp.einsum("gtec,gtd->egcd", dispatch, x)
        buffers = nn.with_logical_constraint(buffers, ("expert", "expert_group", "capacity", "embed"))
        outputs = Mlp(cfg, self.inner_std, self.out_std, experts=True, name="experts")(buffers, deterministic)
        outputs = nn.with_logical_constraint(outputs, ("expert", "expert_group", "capacity", "embed"))
        y = jnp.einsum("egcd,gtec->gtd", outputs, routing.combine.astype(cfg.compute_dtype))
        return nn.with_logical_constraint(y, ("batch", "length", "embed"))


# --- blocks and stacks -------------------------------------------------------

def deepnorm_constants(cfg: TransformerConfig, encoder: bool) -> tuple[float, float]:
    """DeepNet's (alpha, beta) (Wang et al. 2022): residual up-weighting and branch init down-scaling.

    (1, 1) unless norm_position='deepnorm'. Decoder-only, N layers: (2N)^(1/4), (8N)^(-1/4).
    Encoder-decoder with N encoder and M decoder layers: encoder 0.81 (N^4 M)^(1/16),
    0.87 (N^4 M)^(-1/16); decoder (3M)^(1/4), (12M)^(-1/4).
    """
    if cfg.norm_position != "deepnorm":
        return 1.0, 1.0
    if cfg.architecture == "decoder":
        return (2 * cfg.n_layers) ** 0.25, (8 * cfg.n_layers) ** -0.25
    n, m = cfg.encoder_layers, cfg.n_layers
    if encoder:
        return 0.81 * (n ** 4 * m) ** (1 / 16), 0.87 * (n ** 4 * m) ** (-1 / 16)
    return (3 * m) ** 0.25, (12 * m) ** -0.25


class Block(nn.Module):
    """Self-attention, cross-attention (given context_mask: the context positions it may see), then the MLP or
    the experts, each a residual branch. Decoding, the context is given on the first call only (see Attention).

    norm_position: 'pre' x + f(norm(x)); 'post' norm(x + f(x)); 'sandwich' (CogView)
    x + norm(f(norm(x))); 'deepnorm' (DeepNet) norm(alpha x + f(x)), with the value,
    output and MLP projections initialised beta times smaller. Otherwise the output
    projections start at init_std / sqrt(2 depth) (GPT-2).
    """
    cfg: TransformerConfig
    depth: int  # layers in this block's stack
    moe: bool = False
    alpha: float = 1.0
    beta: float = 1.0

    @nn.compact
    def __call__(self, x, mask, bias, deterministic: bool, context=None, context_mask=None, where=None):
        cfg = self.cfg
        inner_std = cfg.init_std * self.beta
        out_std = inner_std if cfg.norm_position == "deepnorm" else cfg.init_std / math.sqrt(2 * self.depth)
        branch = dict(cfg=cfg, inner_std=inner_std, out_std=out_std)
        sublayers = [lambda h: Attention(**branch, name="attention")(h, mask, bias, where)]
        if context_mask is not None:
            sublayers.append(lambda h: Attention(**branch, cross=True, name="cross_attention")(
                h, context_mask, None, where, context))
        if self.moe:
            sublayers.append(lambda h: MoeMlp(**branch, name="moe")(h, deterministic))
        else:
            sublayers.append(lambda h: Mlp(**branch, name="mlp")(h, deterministic))
        drop = nn.Dropout(cfg.dropout)
        for i, sublayer in enumerate(sublayers):
            norm = Norm(cfg, name=f"norm_{i}")
            if cfg.norm_position == "pre":
                x = x + drop(sublayer(norm(x)), deterministic=deterministic)
            elif cfg.norm_position == "sandwich":
                x = x + drop(Norm(cfg, name=f"norm_{i}_out")(sublayer(norm(x))), deterministic=deterministic)
            else:  # post; deepnorm up-weights the residual
                x = norm(self.alpha * x + drop(sublayer(x), deterministic=deterministic))
            x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return x


def token_embedding(cfg: TransformerConfig) -> nn.Embed:
    """The token table (vocab, embed); with tie_embeddings it is also the output layer."""
    return nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=jnp.float32,
                    embedding_init=nn.with_logical_partitioning(
                        nn.initializers.normal(cfg.init_std), ("vocab", "embed")), name="token_embed")


def output_logits(cfg: TransformerConfig, embed: nn.Embed, x):
    """Final hidden states -> float32 logits, through the tied token table or an lm_head."""
    if cfg.tie_embeddings:
        logits = embed.attend(x)
    else:
        logits = Dense(cfg, cfg.vocab_size, ("embed", "vocab"), name="lm_head")(x)
    return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class LayerGroup(nn.Module):
    """One period of a stack's layers (one layer; moe_every layers, the last a mixture, with MoE), as a
    scan body: (hidden states, None) -> (hidden states, None)."""
    cfg: TransformerConfig
    depth: int
    alpha: float
    beta: float
    deterministic: bool

    @nn.compact
    def __call__(self, x, mask, bias, context, context_mask, where):
        cfg = self.cfg
        for i in range(cfg.scan_period):
            x = Block(cfg, depth=self.depth, moe=cfg.is_moe_layer(i), alpha=self.alpha, beta=self.beta,
                      name=f"layer_{i}")(x, mask, bias, self.deterministic, context, context_mask, where)
        return x, None


class Stack(nn.Module):
    """Embedded tokens -> hidden states: positions, the optional embedding norm, the blocks, the final norm.

    A decoder-only model is one causal Stack; an encoder-decoder a bidirectional
    encoder Stack and a causal decoder Stack whose blocks also attend to the encoder's
    output (`context`). Learned positions and T5 biases belong to their stack.
    """
    cfg: TransformerConfig
    n_layers: int
    encoder: bool = False

    @nn.compact
    def __call__(self, x, mask, deterministic: bool, context=None, context_mask=None, where=None):
        cfg = self.cfg
        length = x.shape[1]
        if length > cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {cfg.max_len}")
        where = Positions.of(length) if where is None else where
        tokens_at = jnp.maximum(where.query, 0)  # a left-padded row's padding reads position 0 (it is masked)
        if cfg.position == "learned":
            table = self.param("position_embed", nn.with_logical_partitioning(
                nn.initializers.normal(cfg.init_std), ("length", "embed")), (cfg.max_len, cfg.d_model))
            x = x + table[tokens_at].astype(x.dtype)
        elif cfg.position == "sinusoidal":
            x = x + sinusoidal_positions(cfg.max_len, cfg.d_model)[tokens_at].astype(x.dtype)
        if cfg.embed_grad_shrink < 1.0:  # GLM-130B: the forward value is unchanged, the gradient shrunk
            x = cfg.embed_grad_shrink * x + (1.0 - cfg.embed_grad_shrink) * jax.lax.stop_gradient(x)
        if cfg.embed_norm:
            x = Norm(cfg, name="embed_norm")(x)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

        bias = None
        if cfg.position == "alibi":
            bias = alibi_bias(cfg.n_heads, where).astype(cfg.compute_dtype)
        elif cfg.position == "t5_bias":
            bidirectional = self.encoder or cfg.attention_mask == "prefix"
            bias = RelativePositionBias(cfg, bidirectional, name="relative_position_bias")(where)
            bias = bias.astype(cfg.compute_dtype)
        alpha, beta = deepnorm_constants(cfg, self.encoder)
        if cfg.scan_layers:
            # Each parameter gains a leading "layers" axis of n_layers / scan_period, and what the
            # layers sow (MoE losses, expert load) is stacked along it too.
            body = nn.remat(LayerGroup, prevent_cse=False) if cfg.remat else LayerGroup
            layers = nn.scan(body, variable_axes={"params": 0, "intermediates": 0, "cache": 0},
                             split_rngs={"params": True, "dropout": True}, in_axes=(nn.broadcast,) * 5,
                             length=self.n_layers // cfg.scan_period, metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = layers(cfg, self.n_layers, alpha, beta, deterministic, name="layers")(
                x, mask, bias, context, context_mask, where)
        else:
            block = nn.remat(Block, static_argnums=(4,)) if cfg.remat else Block
            for i in range(self.n_layers):
                layer = block(cfg, depth=self.n_layers, moe=cfg.is_moe_layer(i), alpha=alpha, beta=beta,
                              name=f"layer_{i}")
                x = layer(x, mask, bias, deterministic, context, context_mask, where)
        if cfg.norm_position in ("pre", "sandwich"):  # post-norm blocks already end in a norm
            x = Norm(cfg, name="final_norm")(x)
        return x


class Transformer(nn.Module):
    """The decoder-only model: batch["inputs"] (batch, length) int32 -> logits (batch, length, vocab) float32.

    batch["prefix_len"] (batch,) marks, for attention_mask='prefix', how many
    leading tokens of each row attend to each other bidirectionally.

    decode=True runs incrementally on a KV cache (the "cache" collection, max_len slots; see
    evaluation/generate.py): each call's tokens follow those of the calls before. Rows of
    different lengths are left-padded: batch["start"] (batch,) is the first real slot of each row,
    whose tokens then sit at positions 0, 1, ... and never see the padding.
    """
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, batch: dict, deterministic: bool = True, decode: bool = False):
        cfg = self.cfg
        tokens = batch["inputs"]
        embed = token_embedding(cfg)
        length = tokens.shape[1]
        where = Positions.decoding(self, length, batch.get("start")) if decode else Positions.of(length)
        mask = attention_mask(cfg, where, batch.get("prefix_len"))
        x = Stack(cfg, cfg.n_layers, name="decoder")(embed(tokens), mask, deterministic, where=where)
        return output_logits(cfg, embed, x)
