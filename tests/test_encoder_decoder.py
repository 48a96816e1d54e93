"""The encoder-decoder: a bidirectional encoder, a causal decoder that cross-attends, one shared token table."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import build_model
from tests.conftest import TINY_MODEL, run_main, train_losses
from model.encoder_decoder import EncoderDecoder
from model.transformer import TransformerConfig
from tests.test_model_variants import random_values

ENC_LEN, DEC_LEN, VOCAB = 10, 8, 50


@pytest.fixture(scope="module")
def model_and_params():
    cfg = TransformerConfig(architecture="encoder_decoder", vocab_size=VOCAB, d_model=32, n_layers=2,
                            n_encoder_layers=1, n_heads=4, d_ff=64, max_len=16)
    model = build_model(cfg)
    batch = {"encoder_inputs": jnp.zeros((1, ENC_LEN), jnp.int32), "inputs": jnp.zeros((1, DEC_LEN), jnp.int32)}
    params = random_values(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))
    return model, params, jax.jit(model.apply)


def logits(model_and_params, encoder_inputs, decoder_inputs, encoder_mask=np.ones(ENC_LEN, np.int32)):
    _, params, apply = model_and_params
    batch = {"encoder_inputs": jnp.asarray(encoder_inputs)[None], "inputs": jnp.asarray(decoder_inputs)[None],
             "encoder_mask": jnp.asarray(encoder_mask)[None]}
    return np.asarray(apply(params, batch)[0])


ENCODER = np.arange(ENC_LEN, dtype=np.int32) + 3
DECODER = np.arange(DEC_LEN, dtype=np.int32) + 20


def test_builds_the_encoder_decoder_with_one_token_table(model_and_params):
    model, params, _ = model_and_params
    assert isinstance(model, EncoderDecoder)
    tree = params["params"]
    assert set(tree) == {"token_embed", "encoder", "decoder"}
    assert "cross_attention" in tree["decoder"]["layer_0"] and "cross_attention" not in tree["encoder"]["layer_0"]
    out = logits(model_and_params, ENCODER, DECODER)
    assert out.shape == (DEC_LEN, VOCAB) and out.dtype == np.float32


@pytest.mark.parametrize("position", [2, 5])
def test_decoder_is_causal(model_and_params, position):
    changed = DECODER.copy()
    changed[position] += 7
    before, after = logits(model_and_params, ENCODER, DECODER), logits(model_and_params, ENCODER, changed)
    np.testing.assert_array_equal(before[:position], after[:position])
    assert not np.allclose(before[position:], after[position:])


def test_every_decoder_position_sees_the_whole_encoder_input(model_and_params):
    changed = ENCODER.copy()
    changed[-1] += 7  # the last encoder token reaches even the first decoder position
    before, after = logits(model_and_params, ENCODER, DECODER), logits(model_and_params, changed, DECODER)
    assert not np.allclose(before[0], after[0])


def test_encoder_mask_hides_padding(model_and_params):
    mask = np.ones(ENC_LEN, np.int32)
    mask[-3:] = 0
    padded = ENCODER.copy()
    padded[-3:] = [40, 41, 42]
    before = logits(model_and_params, ENCODER, DECODER, mask)
    np.testing.assert_allclose(logits(model_and_params, padded, DECODER, mask), before, rtol=1e-6, atol=1e-6)
    assert not np.allclose(logits(model_and_params, padded, DECODER), logits(model_and_params, ENCODER, DECODER))


@pytest.mark.slow  # a subprocess that compiles from scratch; the default suite trains it in-process
def test_train_main_trains_it_on_span_corruption(tiny_corpus, tmp_path):
    bindings = tiny_corpus + TINY_MODEL + ["TransformerConfig.architecture = 'encoder_decoder'",
                                           "TrainConfig.train_steps = 8", "TrainConfig.eval_every = 8"]
    result = run_main(tmp_path / "run", bindings + ["TransformerConfig.vocab_size = 612"])  # T5's 100 extra ids
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["objective"] == "span_corruption"
    losses = train_losses(tmp_path / "run")
    assert losses[-1] < losses[0]
    assert np.isfinite(summary["final_eval_loss"]) and np.isfinite(summary["final_eval_bpb"])


@pytest.mark.parametrize("seq_len, density, span", [(32, 0.15, 3.0), (128, 0.3, 2.0), (77, 0.5, 8.0)])
def test_planner_and_trainer_count_its_flops_from_the_batches_it_trains_on(stdlib_text, seq_len, density, span):
    """flops_per_text_token (used by train.sweep's plan and by the trainer's summary) takes the encoder
    and decoder lengths from span corruption's arithmetic; here they come from real packed batches."""
    from data.loader import DataConfig
    from data.pipeline import PackedBatches
    from model import accounting
    from train.trainer import flops_per_text_token, objective_options
    tokenizer, docs = stdlib_text
    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size + 64, d_model=32, n_layers=1, n_heads=4, d_ff=64,
                            max_len=seq_len, architecture="encoder_decoder")
    data_cfg = DataConfig(seq_len=seq_len, noise_density=density, mean_noise_span_length=span)
    batch = PackedBatches(docs, tokenizer, seq_len, 2, **objective_options(cfg, data_cfg, tokenizer.vocab_size)).next_batch()
    encoder_len, decoder_len = batch["encoder_inputs"].shape[1], batch["targets"].shape[1]
    per_decoder_token = accounting.training_flops_per_token(cfg, decoder_len, 1000, encoder_seq_len=encoder_len)
    counted = flops_per_text_token(cfg, data_cfg, 1000)
    for name, value in per_decoder_token.items():
        assert counted[name] == pytest.approx(value * decoder_len / seq_len, rel=1e-12)
