"""Tasks scored during training (evaluation/suite.py): chosen in gin, written to metrics.jsonl and
summary.json, and equal to scores computed here from the final checkpoint by plain forward passes."""
import json
import math

import numpy as np
import pytest
from scipy.special import log_softmax

from tests.conftest import TINY_MODEL, metrics_rows, run_main

SUITE = ["TaskSuite.tasks = ('arithmetic_mc', 'arithmetic')", "TaskSuite.items = 12", "TaskSuite.shots = 1",
         "TaskSuite.seed = 3", "TaskSuite.every = 4"]


@pytest.fixture(scope="module")
def scored_run(tiny_corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("suite") / "run"
    result = run_main(workdir, [*tiny_corpus, *TINY_MODEL, "TrainConfig.train_steps = 8", *SUITE])
    assert result.returncode == 0, result.stderr
    return workdir


def _loglikelihood(model, params, tokens: list[int], continuation: int) -> float:
    """The last `continuation` tokens' summed log-probability, by one forward pass over the whole
    sequence (cut from the left to max_len + 1 tokens)."""
    tokens = tokens[-(model.cfg.max_len + 1):]
    logits = np.asarray(model.apply({"params": params}, {"inputs": np.asarray([tokens[:-1]], np.int32)}))[0]
    logprobs = log_softmax(logits.astype(np.float64), axis=-1)
    return sum(logprobs[i - 1, tokens[i]] for i in range(len(tokens) - continuation, len(tokens)))


def test_scores_are_in_metrics_at_every_scoring(scored_run):
    rows = [row for row in metrics_rows(scored_run) if "task_eval_s" in row]
    assert [row["step"] for row in rows] == [4, 8]
    for row in rows:
        assert 0 <= row["task/arithmetic_mc/acc"] <= 1 and row["task/arithmetic_mc/bpb"] > 0
        assert 0 <= row["task/arithmetic/exact_match"] <= 1 and row["task/arithmetic/bpb"] > 0


def test_final_scores_match_plain_forward_passes(scored_run):
    from evaluation.generate import load_run
    from evaluation.suite import TaskSuite
    summary = json.loads((scored_run / "summary.json").read_text())
    model, params, tokenizer, step = load_run(str(scored_run))
    assert step == 8
    items = TaskSuite(tasks=("arithmetic_mc",), items=12, shots=1, seed=3).build(None)["arithmetic_mc"]
    acc, bits = [], []
    for item in items:
        context = [tokenizer.eos_id] + tokenizer.encode([item["context"]])[0]
        choices = [tokenizer.encode([choice])[0] for choice in item["choices"]]
        ll = [_loglikelihood(model, params, context + c, len(c)) for c in choices]
        acc.append(int(np.argmax(ll)) == item["gold"])
        bits.append(-ll[item["gold"]] / math.log(2) / len(item["choices"][item["gold"]].encode()))
    scores = summary["tasks"]["arithmetic_mc"]
    assert scores["items"] == 12 and scores["shots"] == 1 and scores["chance"] == 0.25
    assert scores["acc"]["mean"] == pytest.approx(np.mean(acc))
    assert scores["bpb"]["mean"] == pytest.approx(np.mean(bits), rel=1e-4)
    assert scores["bpb"]["se"] == pytest.approx(np.std(bits, ddof=1) / math.sqrt(len(bits)), rel=1e-3)
    final_row = [row for row in metrics_rows(scored_run) if "task_eval_s" in row][-1]
    assert final_row["task/arithmetic_mc/acc"] == scores["acc"]["mean"]
    assert 0 < summary["task_eval_fraction"] < 1
    assert summary["tasks"]["arithmetic"]["chance"] == 0.0


def test_a_run_without_tasks_has_no_task_fields(tiny_corpus, tmp_path):
    result = run_main(tmp_path / "run", [*tiny_corpus, *TINY_MODEL, "TrainConfig.train_steps = 2"])
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "tasks" not in summary and not any("task_eval_s" in row for row in metrics_rows(tmp_path / "run"))
