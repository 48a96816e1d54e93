"""Parameter and FLOP accounting: one module for metrics, summaries and sweeps.

Parameter counts are read off the real parameter tree. "Embedding" parameters
are the token and position tables (learned, or T5's relative position biases)
and an untied output head: Kaplan et al. (2020) leave all of them out of N,
and Porian et al. (2024) show that counting the head or not moves the
compute-optimal exponent a good deal. A mixture of experts has more parameters
than each token uses: params_active counts the router and only top_k of each
layer's experts.

Training FLOPs per token, forward plus backward (backward = 2 x forward), in
three counts: Kaplan's and Chinchilla's for the scaling fits, model FLOPs for MFU.
- Kaplan et al. (2020), eq. 2.2: C = 6 N (non-embedding N, active parameters
  for MoE), with the context term 6 n_layer n_ctx d_attn reported separately.
- Hoffmann et al. (2022), Appendix F: embeddings, QKV projections, attention
  logits, softmax, the attention-weighted sum and its output projection, the
  MLP and the final logits, every matrix product counted at 2 flops per
  multiply-add. Generalised here to grouped-query attention, gated MLPs,
  mixtures of experts (the router plus top_k experts' MLPs; GShard's dispatch
  and combine einsums are implementation, not model, FLOPs) and the
  encoder-decoder (counted per decoder token: the encoder's work and the
  cross-attention keys and values scale with encoder tokens per decoder token).
- Model FLOPs (PaLM, Appendix B; MaxText): Chinchilla's matrix products without
  the embedding lookup (a gather: it multiplies nothing) and the softmax. For a
  decoder, 6 x (matrix parameters, the output layer counted once) + 12 n_layer
  n_ctx d_attn. Rematerialisation's recomputed forward passes are not counted:
  MFU measures useful work (HFU would count them).
"""
from __future__ import annotations

import collections

import jax

EMBEDDING_PARAMS = ("token_embed", "position_embed", "relative_position_bias", "lm_head")
EXPERT_PARAMS = "experts"  # the module holding a mixture of experts' stacked weights


def _path_names(path) -> list[str]:
    return [str(getattr(k, "key", k)) for k in path]


def param_counts(params, cfg=None) -> dict:
    """Total, embedding, non-embedding and active parameter counts of a (possibly boxed) parameter tree.

    For a mixture of experts, params_active (and params_active_nonembedding) need cfg
    for top_k and are None without it; for a dense model they equal the totals.
    """
    total = embedding = experts = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        size, names = int(leaf.size), _path_names(path)
        total += size
        if any(name in EMBEDDING_PARAMS for name in names):
            embedding += size
        if EXPERT_PARAMS in names:
            experts += size
    active = total
    if experts:
        active = None if cfg is None else total - experts // cfg.num_experts * (cfg.num_experts - cfg.moe_top_k)
    return {"params_total": total, "params_embedding": embedding, "params_nonembedding": total - embedding,
            "params_active": active, "params_active_nonembedding": None if active is None else active - embedding}


def _attention_flops(cfg, key_len: int, sources_per_token: float = 1.0) -> dict:
    """One attention sublayer, per query token; keys and values are projected from
    `sources_per_token` source tokens per query (1 in self-attention)."""
    d, attn_width, kv_width = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    return {
        "qkv": 2 * d * attn_width + 2 * d * 2 * kv_width * sources_per_token,
        "attention_logits": 2 * key_len * attn_width,
        "softmax": 3 * cfg.n_heads * key_len,
        "attention_values": 2 * key_len * attn_width,
        "attention_out": 2 * attn_width * cfg.d_model,
    }


def _mlp_flops(cfg, moe: bool) -> dict:
    mlp = 2 * (3 if cfg.gated else 2) * cfg.d_model * cfg.d_ff
    if not moe:
        return {"mlp": mlp}
    return {"mlp": cfg.moe_top_k * mlp, "router": 2 * cfg.d_model * cfg.num_experts}


def forward_flops_per_token(cfg, seq_len: int, encoder_seq_len: int | None = None) -> dict:
    """Forward FLOPs per (decoder) token by component, in the Chinchilla (Appendix F) accounting.

    encoder_seq_len: the encoder's input length for an encoder-decoder (default seq_len).
    """
    flops = collections.Counter()

    def add(component_flops: dict, times: float = 1):
        for name, value in component_flops.items():
            flops[name] += times * value

    embedding = 2 * cfg.vocab_size * cfg.d_model  # Chinchilla counts the lookup as a one-hot product
    add({"embeddings": embedding, "final_logits": embedding})
    encoder_tokens = 0.0
    if cfg.architecture == "encoder_decoder":
        encoder_len = encoder_seq_len or seq_len
        encoder_tokens = encoder_len / seq_len  # per decoder token
        add({"embeddings": embedding}, encoder_tokens)
        for i in range(cfg.encoder_layers):
            add(_attention_flops(cfg, encoder_len), encoder_tokens)
            add(_mlp_flops(cfg, cfg.is_moe_layer(i)), encoder_tokens)
    for i in range(cfg.n_layers):
        add(_attention_flops(cfg, seq_len))
        if encoder_tokens:
            add(_attention_flops(cfg, encoder_seq_len or seq_len, encoder_tokens))
        add(_mlp_flops(cfg, cfg.is_moe_layer(i)))
    return dict(flops)


def training_flops_per_token(cfg, seq_len: int, params_nonembedding: int,
                             encoder_seq_len: int | None = None) -> dict:
    """Training (forward + backward) FLOPs per (decoder) token in both accountings.

    params_nonembedding: the non-embedding parameters a token uses, N of Kaplan's 6 N;
    for a mixture of experts pass params_active_nonembedding from param_counts(params, cfg).
    An encoder-decoder's 6 N counts each parameter once per decoder token.
    """
    forward = forward_flops_per_token(cfg, seq_len, encoder_seq_len)
    return {
        "kaplan": 6 * params_nonembedding,
        # Kaplan's context term, 2 n_layer n_ctx d_attn forward, is exactly the attention logits.
        "kaplan_attention": 3 * forward["attention_logits"],
        "chinchilla": 3 * sum(forward.values()),
        # Model FLOPs, MFU's numerator as PaLM (Appendix B) and MaxText count it: the matrix products
        # the model executes (the output layer once, tied or not; attention over the full context),
        # not the embedding lookup, a gather, nor the softmax's elementwise work.
        "model": 3 * (sum(forward.values()) - forward["embeddings"] - forward["softmax"]),
    }
