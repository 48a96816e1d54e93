"""Loss against context (evaluation/context_loss.py): the per-position losses of a trained run against
plain forward passes and against the run's own eval loss, the in-context score and its standard error
against a delete-one-document jackknife, and its bad input."""
import json
import subprocess

import numpy as np
import pytest
from scipy.special import log_softmax

from evaluation import context_loss
from evaluation.context_loss import ContextLosses
from tests.conftest import TINY_MODEL, metrics_rows, run_main
from tests.test_bad_input import assert_one_line_error


def random_losses(seed, rows=400, positions=24, documents=90, gain=0.0):
    """Rows of random per-position losses, each row from one of `documents`, whose loss falls by `gain`
    nats between its first and last position, with a per-document offset (so rows of a document correlate)
    and some unweighted targets."""
    rng = np.random.default_rng(seed)
    doc = rng.integers(0, documents, rows)
    offset = rng.normal(0, 0.5, documents)[doc][:, None]
    nll = 3.0 + offset - gain * np.linspace(0, 1, positions)[None] + rng.gamma(2.0, 0.3, (rows, positions))
    weight = (rng.random((rows, positions)) > 0.1).astype(float)
    return ContextLosses(nll * weight, weight, doc)


def jackknife_se(losses: ContextLosses, early, late) -> float:
    """Delete-one-document jackknife of (late-window loss - early-window loss), from the row arrays."""
    def score(keep):
        def window(span):
            return losses.nll[keep, span[0]:span[1]].sum() / losses.weight[keep, span[0]:span[1]].sum()
        return window(late) - window(early)
    documents = np.unique(losses.doc)
    leave_one_out = np.array([score(losses.doc != d) for d in documents])
    n = len(documents)
    return float(np.sqrt((n - 1) / n * ((leave_one_out - leave_one_out.mean()) ** 2).sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_and_its_standard_error_against_a_jackknife(seed):
    rng = np.random.default_rng(100 + seed)
    gain = rng.uniform(0.1, 0.8)
    losses = random_losses(seed, gain=gain)
    early, late = (2, 6), (16, 24)
    value, se = losses.score(early, late)
    by_hand = [losses.nll[:, a:b].sum() / losses.weight[:, a:b].sum() for a, b in (late, early)]
    assert value == pytest.approx(by_hand[0] - by_hand[1], rel=1e-12)
    # The linearised (delta-method) and the jackknife standard errors agree to O(1/n) over 90 documents.
    assert se == pytest.approx(jackknife_se(losses, early, late), rel=0.05)
    assert 0 < se < 0.1
    # The late window sits about gain * (19.5 - 3.5) / 23 below the early one.
    assert value == pytest.approx(-gain * 16 / 23, abs=5 * se)


def test_rows_in_any_order_give_the_same_profile_and_score():
    losses = random_losses(3, gain=0.4)
    order = np.random.default_rng(4).permutation(len(losses.doc))
    shuffled = ContextLosses(losses.nll[order], losses.weight[order], losses.doc[order])
    np.testing.assert_allclose(shuffled.per_position(), losses.per_position(), rtol=1e-12)
    np.testing.assert_allclose(shuffled.score((0, 4), (20, 24)), losses.score((0, 4), (20, 24)), rtol=1e-10)
    assert shuffled.loss == pytest.approx(losses.loss, rel=1e-12)


def test_a_loss_the_same_at_every_position_scores_zero_with_no_spread():
    nll = np.tile(np.random.default_rng(5).gamma(2.0, 1.0, 50)[:, None], (1, 16))  # each row flat
    losses = ContextLosses(nll, np.ones_like(nll), np.arange(50))
    value, se = losses.score((0, 4), (8, 16))
    assert value == pytest.approx(0.0, abs=1e-12) and se == pytest.approx(0.0, abs=1e-12)


class FakeTokenizer:
    def __init__(self, vocab_size, seed):
        self.piece_bytes = np.random.default_rng(seed).integers(0, 4, vocab_size)  # 0: a control piece


@pytest.mark.parametrize("seq_len, rows_per_batch", [(32, 8), (33, 5), (128, 32)])
def test_repeated_tokens_windows_cover_the_two_readings(seq_len, rows_per_batch):
    tokenizer = FakeTokenizer(300, seq_len)
    batches = context_loss.repeated_token_batches(tokenizer, seq_len, 21, rows_per_batch, seed=seq_len)
    rows = -(-21 // rows_per_batch) * rows_per_batch
    assert [len(b["doc"]) for b in batches] == [rows_per_batch] * (rows // rows_per_batch)
    inputs, targets, doc = (np.concatenate([b[k] for b in batches]) for k in ("inputs", "targets", "doc"))
    assert inputs.shape == targets.shape == (rows, seq_len) and sorted(doc) == list(range(rows))
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    assert (tokenizer.piece_bytes[inputs] > 0).all()
    half = seq_len // 2
    sequence = inputs[:, :half]
    assert len({tuple(row) for row in sequence}) == rows  # every row its own sequence
    windows = context_loss.reading_windows(seq_len)
    early, late = (targets[:, slice(*windows[name])] for name in ("early", "late"))
    np.testing.assert_array_equal(early, sequence[:, 1:])  # the first reading, after its first piece
    np.testing.assert_array_equal(late, np.roll(sequence, -1, axis=1))  # the second, and the third's first piece
    # Each late target follows, one reading back, the same piece its input is: what a copying head uses.
    np.testing.assert_array_equal(inputs[:, slice(*windows["late"])], sequence)


@pytest.fixture(scope="module")
def trained_run(tiny_corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("context") / "run"
    result = run_main(workdir, [*tiny_corpus, *TINY_MODEL, "TrainConfig.train_steps = 6", "TrainConfig.eval_every = 2",
                                "TrainConfig.checkpoint_every = 2", "TrainConfig.keep_checkpoints = 10"])
    assert result.returncode == 0, result.stderr
    return workdir


def test_a_trained_run_scored_per_position(trained_run, tmp_path, capsys):
    out, plot = tmp_path / "context.json", tmp_path / "context.png"
    assert context_loss.main([f"--workdir={trained_run}", "--early=2:6", "--late=24:32", f"--out={out}",
                              f"--plot={plot}"]) == 0
    printed = capsys.readouterr().out
    row, = json.loads(out.read_text())["runs"]
    summary = json.loads((trained_run / "summary.json").read_text())
    # Rebuilt as training built it: the mean over positions is the eval loss the run recorded.
    assert row["eval_loss"] == pytest.approx(summary["final_eval_loss"], rel=1e-5)
    assert row["step"] == 6 and row["run"] in printed and plot.stat().st_size > 0 and row["tokens"] == 6 * 8 * 32
    assert row["score"] == pytest.approx(row["late_loss"] - row["early_loss"], rel=1e-9)

    # Every position's loss from plain forward passes over the same eval rows, log-softmax by scipy.
    from data import loader
    from evaluation.generate import load_run
    from model.transformer import TransformerConfig
    from train.trainer import held_out_batches
    model, params, _, _ = load_run(str(trained_run))
    data_cfg = loader.DataConfig()
    batches = held_out_batches(loader.load(data_cfg), TransformerConfig(), data_cfg)
    nll_sum, weight_sum = np.zeros(data_cfg.seq_len), np.zeros(data_cfg.seq_len)
    for batch in batches:
        logits = np.asarray(model.apply({"params": params}, {"inputs": batch["inputs"]}), np.float64)
        logprobs = np.take_along_axis(log_softmax(logits, axis=-1), batch["targets"][..., None], axis=-1)[..., 0]
        nll_sum += (-logprobs * batch["weights"]).sum(axis=0)
        weight_sum += batch["weights"].sum(axis=0)
    np.testing.assert_allclose(row["loss_per_position"], nll_sum / weight_sum, rtol=2e-5)


def test_every_checkpoint_scored_as_training_evaluated_it(trained_run, tmp_path):
    out = tmp_path / "context.json"
    assert context_loss.main([f"--workdir={trained_run}", "--early=2:6", "--late=24:32", "--every_checkpoint",
                              f"--out={out}", f"--plot={tmp_path / 'context.png'}"]) == 0
    rows = json.loads(out.read_text())["runs"]
    assert [row["step"] for row in rows] == [2, 4, 6]
    assert [row["tokens"] for row in rows] == [step * 8 * 32 for step in (2, 4, 6)]  # TINY_MODEL: 8 rows of 32
    trained = {row["step"]: row["eval_loss"] for row in metrics_rows(trained_run) if "eval_loss" in row}
    for row in rows:
        assert row["eval_loss"] == pytest.approx(trained[row["step"]], rel=1e-5)
    assert len({round(row["eval_loss"], 6) for row in rows}) == 3


def test_repeated_tokens_on_a_trained_run(trained_run, tmp_path):
    out = tmp_path / "repeated.json"
    assert context_loss.main([f"--workdir={trained_run}", "--repeated_tokens=12", f"--out={out}"]) == 0
    row, = json.loads(out.read_text())["runs"]
    assert (row["early"], row["late"]) == ([0, 15], [16, 32])
    assert row["score"] == pytest.approx(row["late_loss"] - row["early_loss"], rel=1e-9)
    # Six steps of training: random pieces cost about as much to predict as the 512-piece vocabulary's log.
    assert 0.7 * np.log(512) < row["early_loss"] < 1.5 * np.log(512)


def test_a_step_without_a_checkpoint(trained_run):
    from cli import InputError
    from evaluation.generate import load_run
    with pytest.raises(InputError, match=r"no checkpoint at step 3 \(it has \[2, 4, 6\]\)"):
        load_run(str(trained_run), step=3)


@pytest.mark.parametrize("args, words", [
    (["--late=24:40"], ["--late=24:40", "32"]),
    (["--early=6:2"], ["START < STOP"]),
    (["--early=a:b"], ["START:STOP"]),
    (["--repeated_tokens=8", "--late=16:32"], ["--repeated_tokens", "--late"]),
    (["--repeated_tokens=0"], ["at least 1"]),
    (["--out=/no/such/directory/context.json"], ["/no/such/directory/context.json", "does not exist"]),
])
def test_bad_windows(trained_run, capfd, args, words):
    code = context_loss.main([f"--workdir={trained_run}", *args])
    assert_one_line_error(subprocess.CompletedProcess(args, code, *capfd.readouterr()), *words)


def test_a_directory_without_a_run(tmp_path, capfd):
    code = context_loss.main([f"--workdir={tmp_path}"])
    assert_one_line_error(subprocess.CompletedProcess([], code, *capfd.readouterr()), "no run")
