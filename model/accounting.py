"""Parameter and FLOP accounting: one module for metrics, summaries and sweeps.

Parameter counts are read off the real parameter tree. "Embedding" parameters
are the token and position tables and an untied output head: Kaplan et al.
(2020) leave all of them out of N, and Porian et al. (2024) show that counting
the head or not moves the compute-optimal exponent a good deal.

Training FLOPs per token, forward plus backward (backward = 2 x forward):
- Kaplan et al. (2020), eq. 2.2: C = 6 N (non-embedding N), with the context
  term 6 n_layer n_ctx d_attn reported separately.
- Hoffmann et al. (2022), Appendix F: embeddings, QKV projections, attention
  logits, softmax, the attention-weighted sum and its output projection, the
  MLP and the final logits, every matrix product counted at 2 flops per
  multiply-add. Generalised here to grouped-query attention and gated MLPs.
"""
from __future__ import annotations

import jax

EMBEDDING_PARAMS = ("token_embed", "position_embed", "lm_head")


def _path_names(path) -> list[str]:
    return [str(getattr(k, "key", k)) for k in path]


def param_counts(params) -> dict:
    """Total, embedding and non-embedding parameter counts of a (possibly boxed) parameter tree."""
    total = embedding = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        size = int(leaf.size)
        total += size
        if any(name in EMBEDDING_PARAMS for name in _path_names(path)):
            embedding += size
    return {"params_total": total, "params_embedding": embedding,
            "params_nonembedding": total - embedding, "params_active": total}


def forward_flops_per_token(cfg, seq_len: int) -> dict:
    """Forward FLOPs per token by component, in the Chinchilla (Appendix F) accounting."""
    d, attn_width = cfg.d_model, cfg.n_heads * cfg.head_dim
    kv_width = cfg.kv_heads * cfg.head_dim
    mlp_matrices = 3 if cfg.gated else 2
    per_layer = {
        "qkv": 2 * d * (attn_width + 2 * kv_width),
        "attention_logits": 2 * seq_len * attn_width,
        "softmax": 3 * cfg.n_heads * seq_len,
        "attention_values": 2 * seq_len * attn_width,
        "attention_out": 2 * attn_width * d,
        "mlp": 2 * mlp_matrices * d * cfg.d_ff,
    }
    flops = {"embeddings": 2 * cfg.vocab_size * d, "final_logits": 2 * d * cfg.vocab_size}
    flops.update({name: cfg.n_layers * value for name, value in per_layer.items()})
    return flops


def training_flops_per_token(cfg, seq_len: int, params_nonembedding: int) -> dict:
    """Training (forward + backward) FLOPs per token in both accountings."""
    return {
        "kaplan": 6 * params_nonembedding,
        "kaplan_attention": 6 * cfg.n_layers * seq_len * cfg.n_heads * cfg.head_dim,
        "chinchilla": 3 * sum(forward_flops_per_token(cfg, seq_len).values()),
    }
