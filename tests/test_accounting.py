"""Parameter and FLOP accounting against closed forms written out by hand, and FLOPs against XLA's count."""
import jax
import jax.numpy as jnp
import pytest

from model import accounting, build_model
from model.moe import expert_capacity
from model.transformer import TransformerConfig

V, D, L, H, FF, S = 512, 64, 3, 4, 256, 32


def config(**options) -> TransformerConfig:
    return TransformerConfig(**{**dict(vocab_size=V, d_model=D, n_layers=L, n_heads=H, d_ff=FF, max_len=S),
                                **options})


def abstract_params(cfg, enc_len=S, dec_len=S):
    """The parameter tree's shapes, without running (or compiling) the initialisers."""
    batch = {"inputs": jnp.zeros((1, dec_len), jnp.int32), "encoder_inputs": jnp.zeros((1, enc_len), jnp.int32)}
    return jax.eval_shape(build_model(cfg).init, jax.random.PRNGKey(0), batch)["params"]


def counts(**options) -> dict:
    cfg = config(**options)
    return accounting.param_counts(abstract_params(cfg), cfg)


# --- parameters ---------------------------------------------------------------

def test_standard_decoder_is_12_L_d2_plus_norms_plus_embedding():
    c = counts()  # d_ff = 4 d, no biases, RMSNorm, tied embeddings, RoPE
    assert FF == 4 * D
    assert c["params_nonembedding"] == 12 * L * D ** 2 + 2 * L * D + D  # + two norm scales per layer, final norm
    assert c["params_embedding"] == V * D
    assert c["params_total"] == c["params_active"] == c["params_nonembedding"] + V * D


def test_biases_layernorm_untied_head_and_learned_positions():
    c = counts(use_bias=True, norm="layernorm", tie_embeddings=False, position="learned")
    attention = 4 * D * D + 4 * D  # q, k, v, out and their biases
    mlp = 2 * D * FF + FF + D
    norms = 2 * (2 * D)  # scale and bias, two per layer
    assert c["params_nonembedding"] == L * (attention + mlp + norms) + 2 * D
    assert c["params_embedding"] == V * D + S * D + (D * V + V)  # tokens, positions, head with bias


def test_glu_and_grouped_query_attention():
    kv_heads, head_dim = 2, D // H
    c = counts(activation="swiglu", n_kv_heads=kv_heads)
    attention = 2 * D * D + 2 * D * kv_heads * head_dim  # q and out full; k and v for 2 of 4 heads
    assert c["params_nonembedding"] == L * (attention + 3 * D * FF + 2 * D) + D


def test_sandwich_norm_embed_norm_and_t5_bias():
    c = counts(norm_position="sandwich", embed_norm=True, position="t5_bias", t5_bias_buckets=16)
    assert c["params_nonembedding"] == 12 * L * D ** 2 + 4 * L * D + D + D  # 4 norms a layer; final; embed norm
    assert c["params_embedding"] == V * D + 16 * H  # the relative position biases count as position embeddings


def test_post_norm_has_no_final_norm():
    assert counts(norm_position="deepnorm")["params_nonembedding"] == 12 * L * D ** 2 + 2 * L * D


@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_counts_all_experts_in_total_but_top_k_as_active(top_k):
    experts = 8
    c = counts(moe_every=2, num_experts=experts, moe_top_k=top_k)  # layer 1 of 3 is a mixture
    dense_layer = 12 * D ** 2 + 2 * D
    moe_layer = 4 * D * D + D * experts + experts * 2 * D * FF + 2 * D  # attention, router, experts, norms
    assert c["params_nonembedding"] == 2 * dense_layer + moe_layer + D
    active_moe_layer = 4 * D * D + D * experts + top_k * 2 * D * FF + 2 * D
    assert c["params_active_nonembedding"] == 2 * dense_layer + active_moe_layer + D
    assert c["params_active"] == c["params_active_nonembedding"] + V * D
    unknown = accounting.param_counts(abstract_params(config(moe_every=2, num_experts=experts)))
    assert unknown["params_active"] is None  # top_k is not in the tree: it needs the config


def test_encoder_decoder_shares_one_embedding():
    c = counts(architecture="encoder_decoder", n_encoder_layers=2)
    encoder_layer = 12 * D ** 2 + 2 * D
    decoder_layer = 12 * D ** 2 + 4 * D ** 2 + 3 * D  # plus cross-attention and its norm
    assert c["params_nonembedding"] == 2 * encoder_layer + L * decoder_layer + 2 * D  # two final norms
    assert c["params_embedding"] == V * D


# --- FLOPs: closed forms --------------------------------------------------------

def chinchilla_layer(seq_len, d=D, ff=FF, heads=H, kv_width=D, mlp_matrices=2):
    """Appendix F of Hoffmann et al. (2022), one layer, forward, per token."""
    return (2 * d * (d + 2 * kv_width) + 2 * seq_len * d + 3 * heads * seq_len + 2 * seq_len * d + 2 * d * d
            + 2 * mlp_matrices * d * ff)


def test_flops_of_the_standard_decoder():
    cfg = config()
    n = accounting.param_counts(abstract_params(cfg))["params_nonembedding"]
    flops = accounting.training_flops_per_token(cfg, S, n)
    assert flops["kaplan"] == 6 * (12 * L * D ** 2 + 2 * L * D + D)
    assert flops["kaplan_attention"] == 6 * L * S * D
    assert flops["chinchilla"] == 3 * (2 * V * D + L * chinchilla_layer(S) + 2 * D * V)


def test_flops_with_glu_gqa_and_moe():
    kv_width = 2 * (D // H)
    cfg = config(activation="geglu", n_kv_heads=2, moe_every=3, num_experts=4, moe_top_k=2)  # layer 2 is MoE
    forward = 2 * V * D + 2 * D * V + 3 * chinchilla_layer(S, kv_width=kv_width, mlp_matrices=3)
    forward += 2 * D * 4 + 2 * 3 * D * FF  # the router, and a second active expert in the MoE layer
    assert sum(accounting.forward_flops_per_token(cfg, S).values()) == forward
    active = accounting.param_counts(abstract_params(cfg), cfg)["params_active_nonembedding"]
    assert accounting.training_flops_per_token(cfg, S, active)["kaplan"] == 6 * active


def test_encoder_decoder_flops_per_decoder_token():
    enc_len, dec_len = 48, 16
    cfg = config(architecture="encoder_decoder", n_encoder_layers=2)
    ratio = enc_len / dec_len  # encoder tokens per decoder token
    cross = 2 * D * D + 2 * D * 2 * D * ratio + 2 * enc_len * D + 3 * H * enc_len + 2 * enc_len * D + 2 * D * D
    forward = (2 * V * D * (1 + ratio) + 2 * chinchilla_layer(enc_len) * ratio
               + L * (chinchilla_layer(dec_len) + cross) + 2 * D * V)
    flops = accounting.training_flops_per_token(cfg, dec_len, 1000, encoder_seq_len=enc_len)
    assert flops["chinchilla"] == pytest.approx(3 * forward, rel=1e-12)
    assert flops["kaplan_attention"] == pytest.approx(6 * D * (2 * enc_len * ratio + L * dec_len + L * enc_len))


# --- FLOPs: against XLA -----------------------------------------------------------

def xla_forward_flops(cfg, batch_size, enc_len, dec_len) -> float:
    batch = {"inputs": jnp.zeros((batch_size, dec_len), jnp.int32),
             "encoder_inputs": jnp.zeros((batch_size, enc_len), jnp.int32)}
    model = build_model(cfg)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
    cost = jax.jit(model.apply).lower(params, batch).compile().cost_analysis()  # a dict in jax 0.10
    return cost["flops"]


XLA_BASE = dict(vocab_size=1024, d_model=256, n_heads=4, d_ff=1024, max_len=128)


@pytest.mark.parametrize("options", [
    dict(n_layers=2),
    dict(n_layers=2, activation="swiglu", n_kv_heads=2),
    dict(n_layers=2, moe_every=1, num_experts=4, moe_top_k=2),
    dict(n_layers=2, n_encoder_layers=1, architecture="encoder_decoder"),
], ids=["standard", "glu_gqa", "moe_top2", "encoder_decoder"])
def test_forward_flops_match_xla_within_5_percent(options):
    """XLA counts the embedding lookup as a gather (0 flops), so the Chinchilla embedding term is
    left out; it also counts elementwise work (norms, activations, rotary) that Chinchilla
    ignores, about 1% here. An MoE layer, as implemented, also runs its dispatch and combine
    einsums (2 x 2 E C d flops per token) and computes all E C buffer slots, not just the
    top_k S that hold tokens: both are added to the accounting's count before comparing."""
    cfg = TransformerConfig(**XLA_BASE, **options)
    batch_size, dec_len = 2, 128
    enc_len = 96 if cfg.architecture == "encoder_decoder" else dec_len
    forward = accounting.forward_flops_per_token(cfg, dec_len, encoder_seq_len=enc_len)
    expected = sum(forward.values()) - forward["embeddings"]
    if cfg.moe_every:
        slots = cfg.num_experts * expert_capacity(dec_len, cfg.num_experts, cfg.moe_top_k, cfg.capacity_factor)
        expert_mlp = 2 * 2 * cfg.d_model * cfg.d_ff
        per_layer = 2 * 2 * slots * cfg.d_model + (slots / dec_len - cfg.moe_top_k) * expert_mlp
        expected += cfg.n_layers * per_layer
    measured = xla_forward_flops(cfg, batch_size, enc_len, dec_len) / (batch_size * dec_len)
    assert measured / expected == pytest.approx(1.0, abs=0.05)


# --- model FLOPs, MFU's numerator ----------------------------------------------------

@pytest.mark.parametrize("options", [dict(), dict(tie_embeddings=False), dict(activation="swiglu", n_kv_heads=2)],
                         ids=["tied", "untied", "glu_gqa"])
def test_model_flops_are_six_matrix_parameters_plus_the_attention_term(options):
    """PaLM's count, from the parameter tree: every matrix multiplies its input once per token, 2 flops per
    multiply-add and 3x for the backward pass, the output layer once whether tied or not; attention adds
    12 n_layer n_ctx d_attn. The embedding table used as a lookup multiplies nothing."""
    cfg = config(**options)
    params = abstract_params(cfg)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    matrices = sum(leaf.size for path, leaf in leaves if leaf.ndim >= 2)
    if not cfg.tie_embeddings:  # the untied table is a lookup; its head is the output layer
        matrices -= sum(leaf.size for path, leaf in leaves if "token_embed" in jax.tree_util.keystr(path))
    flops = accounting.training_flops_per_token(cfg, S, accounting.param_counts(params)["params_nonembedding"])
    assert flops["model"] == 6 * matrices + 12 * L * S * H * (D // H)
    assert flops["model"] < flops["chinchilla"]  # no lookup, no softmax


def xla_train_step_flops(cfg, batch_size, seq_len, accum_steps) -> float:
    from functools import partial

    from train.optimizer import lr_schedule, make_optimizer
    from train.trainer import create_state, train_step
    batch = {"inputs": jnp.zeros((batch_size, seq_len), jnp.int32), "targets": jnp.zeros((batch_size, seq_len), jnp.int32),
             "weights": jnp.ones((batch_size, seq_len)), "prefix_len": jnp.zeros((batch_size,), jnp.int32)}
    model, schedule = build_model(cfg), lr_schedule(10, peak_lr=1e-3, warmup_steps=1)
    optimizer = make_optimizer(schedule)
    example = {k: v[:1] for k, v in batch.items()}
    state = jax.eval_shape(partial(create_state, model=model, optimizer=optimizer, example_batch=example, unbox=True),
                           jax.random.PRNGKey(0))
    step = jax.jit(partial(train_step, model=model, optimizer=optimizer, schedule=schedule, z_loss=0.0,
                           accum_steps=accum_steps))
    return step.lower(state, batch).compile().cost_analysis()["flops"]


@pytest.mark.parametrize("accum_steps", [1, 4])
def test_model_flops_match_xla_on_a_training_step_with_the_scan_counted_by_its_trips(accum_steps):
    """XLA's cost analysis counts a while loop's body once: with micro-batches (a lax.scan of
    accum_steps trips) it reports one micro-batch's FLOPs. Multiplied by the trip count, the whole
    step's FLOPs match the model count within 5% (XLA also counts norms, activations, the loss and
    AdamW's elementwise work, none of them model FLOPs)."""
    cfg = TransformerConfig(**XLA_BASE, n_layers=2)
    batch_size, seq_len = 8, 128
    counted = accounting.training_flops_per_token(cfg, seq_len, 0)["model"] * batch_size * seq_len
    measured = xla_train_step_flops(cfg, batch_size, seq_len, accum_steps)
    assert measured * accum_steps / counted == pytest.approx(1.0, abs=0.05)
