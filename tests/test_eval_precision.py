"""Eval loss comes with its standard error, with eval documents as the independent units."""
import dataclasses
import json
import math
from functools import partial

import numpy as np
import pytest

from data.pipeline import eval_batches, model_inputs
from scaling.eval_precision import load_eval_documents, paired_difference, ratio_standard_error
from tests.conftest import SENTINELS, TINY_MODEL, metrics_rows, run_main


def random_rows(seed: int, rows: int = 300, docs: int = 40):
    """Per row: summed nll, weight (targets counted) and document, documents differing in loss."""
    rng = np.random.default_rng(seed)
    doc = rng.integers(0, docs, rows)
    weight = rng.integers(1, 33, rows).astype(float)
    per_token = 3.0 + rng.normal(0, 0.5, docs)[doc] + rng.normal(0, 0.2, rows)
    return per_token * weight, weight, doc


def test_se_is_the_delta_method_variance_of_the_ratio():
    nll, weight, doc = random_rows(0)
    sums = {}
    for n, w, d in zip(nll, weight, doc):
        y0, w0 = sums.get(d, (0.0, 0.0))
        sums[d] = (y0 + n, w0 + w)
    y, w = np.array(list(sums.values())).T
    ratio = y.sum() / w.sum()
    # Var(ȳ / w̄) ≈ (s_yy - 2 R s_yw + R² s_ww) / (n w̄²), from per-document sample (co)variances.
    (s_yy, s_yw), (_, s_ww) = np.cov(y, w)
    expected = math.sqrt((s_yy - 2 * ratio * s_yw + ratio ** 2 * s_ww) / len(y)) / w.mean()
    assert ratio_standard_error(nll, weight, doc) == pytest.approx(expected, rel=1e-10)


def test_equal_weight_documents_give_the_standard_error_of_their_means():
    # With every document's weight W: R = mean of the document means m_d, Σ (y_d - R W)² = W² Σ (m_d - m̄)²,
    # so SE = sqrt(n/(n-1) W² Σ (m_d - m̄)²) / (n W) = std(m, ddof=1) / sqrt(n).
    rng = np.random.default_rng(1)
    docs, rows_per_doc = 25, 4
    doc = np.repeat(np.arange(docs), rows_per_doc)
    weight = np.full(doc.shape, 32.0)
    nll = weight * (3.0 + rng.normal(0, 0.5, docs)[doc] + rng.normal(0, 0.2, doc.shape))
    means = np.bincount(doc, nll) / np.bincount(doc, weight)
    expected = means.std(ddof=1) / math.sqrt(docs)
    assert ratio_standard_error(nll, weight, doc) == pytest.approx(expected, rel=1e-10)


def test_se_does_not_depend_on_the_order_of_rows():
    nll, weight, doc = random_rows(2)
    shuffled = np.random.default_rng(3).permutation(len(nll))
    assert ratio_standard_error(nll[shuffled], weight[shuffled], doc[shuffled]) == pytest.approx(
        ratio_standard_error(nll, weight, doc), rel=1e-12)


def test_one_long_document_counts_once_not_once_per_row():
    # One document spread over 50 rows, unlike the 50 one-row documents beside it: its rows agree
    # with one another, so counting them as 50 independent draws understates the uncertainty.
    rng = np.random.default_rng(4)
    weight = np.full(100, 32.0)
    nll = weight * np.r_[5.0 + rng.normal(0, 0.05, 50), 3.0 + rng.normal(0, 0.5, 50)]
    doc = np.r_[np.zeros(50, int), np.arange(1, 51)]
    assert ratio_standard_error(nll, weight, doc) > 3 * ratio_standard_error(nll, weight, np.arange(100))


def test_one_document_has_no_standard_error():
    assert math.isnan(ratio_standard_error([3.0, 4.0], [1.0, 1.0], [7, 7]))


@pytest.fixture(scope="module")
def varied_docs(stdlib_text):
    """Documents from a few tokens long (many in one row) to many rows long."""
    tokenizer, docs = stdlib_text
    lengths = np.geomspace(20, 4000, len(docs)).astype(int)
    return tokenizer, [{"text": d["text"][:chars]} for d, chars in zip(docs, lengths)]


def test_eval_rows_name_the_document_at_their_head(varied_docs):
    tokenizer, docs = varied_docs
    batches = eval_batches(docs, tokenizer, 32, 8, max_batches=4, oversample=2)
    encoded = [np.array(ids + [tokenizer.eos_id]) for ids in tokenizer.encode([d["text"] for d in docs])]
    docs_seen = np.concatenate([b["doc"] for b in batches])
    crossing = 0
    for batch in batches:
        assert batch["doc"].shape == (8,) and "doc" not in model_inputs(batch)
        for row, doc in zip(batch["inputs"], batch["doc"]):
            tokens = encoded[doc]
            ends = np.flatnonzero(row == tokenizer.eos_id)
            if len(ends):  # the row's head is the rest of its document, up to its EOS
                crossing += ends[0] < len(row) - 1
                np.testing.assert_array_equal(row[:ends[0] + 1], tokens[len(tokens) - ends[0] - 1:])
            else:  # the whole row lies inside its document
                assert any((tokens[i:i + len(row)] == row).all() for i in range(len(tokens) - len(row) + 1))
    assert crossing > 0  # some rows run on into the next document
    assert len(np.unique(docs_seen)) < len(docs_seen)  # and some documents fill several rows


@pytest.mark.parametrize("variant", [{}, {"attention_mask": "prefix"},
                                     pytest.param({"architecture": "encoder_decoder"}, marks=pytest.mark.slow)])
def test_eval_loss_is_total_nll_over_total_weight(stdlib_text, variant):
    import jax

    from data.loader import DataConfig
    from model import build_model
    from model.transformer import TransformerConfig
    from train import partitioning
    from train.trainer import _evaluate, eval_step, loss_sums, objective_options
    tokenizer, docs = stdlib_text
    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=4, d_ff=64,
                            max_len=32, **variant)
    if cfg.architecture == "encoder_decoder":
        cfg = dataclasses.replace(cfg, vocab_size=tokenizer.vocab_size + SENTINELS)
    batches = eval_batches(docs, tokenizer, 32, 8, max_batches=3,
                           **objective_options(cfg, DataConfig(), tokenizer.vocab_size))
    model = build_model(cfg)
    params = model.init(jax.random.PRNGKey(0), model_inputs(batches[0]))["params"]
    result, _ = _evaluate(jax.jit(partial(eval_step, model=model)), params, batches, partitioning.make_mesh())
    # The training loss's batch totals, the way eval_loss was computed before it had per-row sums.
    totals = [loss_sums(params, model_inputs(b), None, model, 0.0, train=False)[1][:2] for b in batches]
    nll, weight = np.sum(totals, axis=0)
    assert result["eval_loss"] == pytest.approx(nll / weight, rel=1e-5)
    assert result["eval_bpb"] == pytest.approx(nll / math.log(2) / sum(b["bytes"].sum() for b in batches), rel=1e-5)
    assert 0 < result["eval_loss_se"] < 0.25 * result["eval_loss"]  # 24 rows of an untrained model
    assert 0 < result["eval_bpb_se"] < 0.25 * result["eval_bpb"]


def last_eval_and_summary(workdir, bindings, devices=1):
    result = run_main(workdir, bindings, devices=devices)
    assert result.returncode == 0, result.stderr
    last_eval = [row for row in metrics_rows(workdir) if "eval_loss" in row][-1]
    return last_eval, json.loads((workdir / "summary.json").read_text())


RUN = ["TrainConfig.train_steps = 2"]


@pytest.fixture(scope="module")
def one_device_dir(tiny_corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("eval_se") / "1x1"
    assert run_main(workdir, tiny_corpus + TINY_MODEL + RUN).returncode == 0
    return workdir


@pytest.fixture(scope="module")
def one_device_eval(one_device_dir):
    last_eval = [row for row in metrics_rows(one_device_dir) if "eval_loss" in row][-1]
    return last_eval, json.loads((one_device_dir / "summary.json").read_text())


def test_a_run_reports_the_standard_error_in_metrics_and_summary(one_device_eval):
    last_eval, summary = one_device_eval
    assert math.isfinite(last_eval["eval_loss_se"]) and last_eval["eval_loss_se"] > 0
    assert summary["final_eval_loss_se"] == last_eval["eval_loss_se"]
    assert summary["final_eval_bpb_se"] == last_eval["eval_bpb_se"] > 0
    assert summary["eval_tokens"] == 2 * 8 * 32  # DataConfig.eval_batches x batch_size x seq_len
    assert 2 <= summary["eval_documents"] <= 2 * 8


def test_a_set_eval_batch_scores_another_training_batch_on_the_same_rows(one_device_dir, tiny_corpus, tmp_path):
    # A sweep whose rule halves the training batch for short runs must still score every run on the
    # same held-out rows: batch_size 4 with eval_batch_size 8 against batch_size 8.
    last_eval, summary = last_eval_and_summary(tmp_path / "b4", tiny_corpus + TINY_MODEL + RUN + [
        "DataConfig.batch_size = 4", "DataConfig.eval_batch_size = 8"])
    assert summary["eval_tokens"] == 2 * 8 * 32 and summary["tokens"] == 2 * 4 * 32
    ours, theirs = load_eval_documents(tmp_path / "b4"), load_eval_documents(one_device_dir)
    assert np.array_equal(ours.doc, theirs.doc) and np.array_equal(ours.weight, theirs.weight)
    difference, se = paired_difference(tmp_path / "b4", one_device_dir)
    assert difference == pytest.approx(last_eval["eval_loss"] - theirs.loss) and se > 0


@pytest.mark.slow  # a subprocess on 8 simulated devices that compiles from scratch
def test_a_mesh_reports_the_same_eval_and_standard_error_as_one_device(one_device_eval, tiny_corpus, tmp_path):
    one, _ = one_device_eval
    sharded, summary = last_eval_and_summary(tmp_path / "4x2", tiny_corpus + TINY_MODEL + RUN
                                             + ["make_mesh.mesh_shape = (4, 2)"], devices=8)
    assert summary["final_eval_loss_se"] == sharded["eval_loss_se"]
    for key in ("eval_loss", "eval_loss_se", "eval_bpb", "eval_bpb_se"):
        assert sharded[key] == pytest.approx(one[key], rel=1e-4), key
