"""Few-shot task scoring against references written here: each continuation's log-likelihood from
its own unbatched forward pass (scipy's logsumexp), the accuracies from hand-set log-likelihoods,
and the built-in arithmetic checked by evaluating its questions independently."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from evaluation import tasks
from model import build_model
from model.transformer import TransformerConfig


@pytest.fixture(scope="module")
def small_model(stdlib_text):
    tokenizer, _ = stdlib_text
    model = build_model(TransformerConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=4,
                                          d_ff=64, max_len=48))
    params = model.init(jax.random.PRNGKey(3), {"inputs": jnp.zeros((1, 8), jnp.int32)})["params"]
    return model, params, tokenizer


def reference_logprob(model, params, tokenizer, context, continuation):
    ctx, cont = tokenizer.encode([context])[0], tokenizer.encode([continuation])[0]
    sequence = ([tokenizer.eos_id] + ctx + cont)[-(model.cfg.max_len + 1):]
    logits = np.asarray(model.apply({"params": params}, {"inputs": jnp.asarray([sequence[:-1]])})[0], np.float64)
    total = 0.0
    for position in range(len(sequence) - 1 - len(cont), len(sequence) - 1):
        total += logits[position, sequence[position + 1]] - logsumexp(logits[position])
    return total, len(cont)


def test_batched_log_likelihoods_equal_one_sequence_at_a_time_in_any_order(small_model):
    model, params, tokenizer = small_model
    rng = np.random.default_rng(0)
    words = "def return import class the of value list print string number".split()
    pairs = [(" ".join(rng.choice(words, rng.integers(1, 40))), " " + " ".join(rng.choice(words, rng.integers(1, 4))))
             for _ in range(11)]  # some contexts longer than max_len: cut from the left
    batched = tasks.continuation_logprobs(model, params, tokenizer, pairs, batch_size=4)
    for (logprob, n), pair in zip(batched, pairs):
        expected, expected_n = reference_logprob(model, params, tokenizer, *pair)
        assert n == expected_n and logprob == pytest.approx(expected, abs=1e-4)
    order = rng.permutation(len(pairs))
    shuffled = tasks.continuation_logprobs(model, params, tokenizer, [pairs[i] for i in order], batch_size=3)
    for i, result in zip(order, shuffled):
        assert result[1] == batched[i][1] and result[0] == pytest.approx(batched[i][0], abs=1e-5)


def test_accuracies_from_hand_set_log_likelihoods(monkeypatch):
    """Two items: the summed, per-byte and per-token choices differ, as they are set up to."""
    items = [{"context": "q1", "choices": [" a", " bbbbbb", " cc"], "gold": 1},
             {"context": "q2", "choices": [" yes", " no"], "gold": 0}]
    # (log-likelihood, tokens) per choice, in order
    fake = [(-2.0, 1), (-3.0, 4), (-2.5, 1), (-1.0, 1), (-0.9, 2)]
    monkeypatch.setattr(tasks, "continuation_logprobs", lambda *args, **kw: fake)
    result = tasks.score(None, None, None, items)
    # item 1: summed picks " a" (wrong); per byte -3/7 beats -2/2 and -2.5/3 (right); per token -0.75 (right)
    # item 2: summed picks " no" (wrong); per byte -1/4 vs -0.9/3 picks " yes" (right); per token -0.45 (wrong)
    assert result["acc"]["mean"] == 0.0 and result["acc_norm"]["mean"] == 1.0
    assert result["acc_per_token"]["mean"] == 0.5
    assert result["bpb"]["mean"] == pytest.approx(np.mean([3.0 / np.log(2) / 7, 1.0 / np.log(2) / 4]))
    assert result["chance"] == pytest.approx((1 / 3 + 1 / 2) / 2)


@pytest.mark.parametrize("seed", range(3))
def test_arithmetic_items_are_right_and_reproducible(seed):
    gen, mc = tasks.arithmetic(50, seed, False), tasks.arithmetic(50, seed, True)
    assert gen == tasks.arithmetic(50, seed, False) and gen != tasks.arithmetic(50, seed + 10, False)
    for g, m in zip(gen, mc):
        a, op, b = re.match(r"Q: What is (\d+) (plus|minus) (\d+)\?", g["context"]).groups()
        truth = int(a) + int(b) if op == "plus" else int(a) - int(b)
        assert int(g["target"]) == truth and 2 <= g["digits"] <= 5 and len(a) == g["digits"]
        a2, op2, b2 = re.match(r"Q: What is (\d+) (plus|minus) (\d+)\?", m["context"]).groups()
        truth2 = int(a2) + int(b2) if op2 == "plus" else int(a2) - int(b2)
        assert int(m["choices"][m["gold"]]) == truth2 and len(set(m["choices"])) == 4
    assert {m["gold"] for m in mc} == {0, 1, 2, 3}  # the answer's place is drawn


def test_shots_are_other_items_drawn_with_the_seed():
    items = tasks.arithmetic(20, 0, False)
    shot = tasks.with_shots(items, 3, seed=1)
    assert shot == tasks.with_shots(items, 3, seed=1) and shot != tasks.with_shots(items, 3, seed=2)
    for item, prompted in zip(items, shot):
        exemplars = prompted["context"][:-len(item["context"])].split("\n\n")[:-1]
        assert len(exemplars) == 3 and prompted["context"].endswith(item["context"])
        assert item["context"] + item["target"] not in exemplars  # never the item itself
        assert all(e in [i["context"] + i["target"] for i in items] for e in exemplars)


@pytest.mark.parametrize("seed", range(3))
def test_arithmetic_rationales_are_correct_steps_to_the_answer(seed):
    """Each step of a rationale checked by evaluating it here; the last step's value is the answer."""
    for item in tasks.arithmetic(60, seed, False):
        a, op, b = re.match(r"Q: What is (\d+) (plus|minus) (\d+)\?", item["context"]).groups()
        rationale = item["rationale"]
        assert rationale.startswith(f"{a} ") and rationale.endswith(".")
        running, parts = int(a), []
        for word, part, value in re.findall(r"(plus|minus) (\d+) is (-?\d+)", rationale):
            assert word == op
            running = running + int(part) if op == "plus" else running - int(part)
            assert running == int(value)
            parts.append(int(part))
        assert sum(parts) == int(b) and all(len(str(p).rstrip("0")) == 1 for p in parts)  # a digit each
        assert running == int(item["target"])


def test_chain_of_thought_shows_rationales_and_scores_the_final_answer():
    items = tasks.arithmetic(12, 0, False)
    prompted = tasks.with_shots(items, 2, seed=4, chain_of_thought=True)
    plain = tasks.with_shots(items, 2, seed=4)
    for item, cot, direct in zip(items, prompted, plain):
        assert cot["chain_of_thought"] and "chain_of_thought" not in direct
        exemplars = cot["context"][:-len(item["context"])].split("\n\n")[:-1]
        assert len(exemplars) == 2
        for exemplar in exemplars:
            source = next(i for i in items if exemplar.startswith(i["context"]))
            assert exemplar == f"{source['context']} {source['rationale']}{tasks.ANSWER_MARK}{source['target']}"
    item = prompted[0]
    truth = item["target"].strip()
    assert tasks.generated_answer(item, f" 1 plus 2 is 3.{tasks.ANSWER_MARK} {truth}\nQ: next") == truth
    assert tasks.generated_answer(item, f" {truth}") == ""  # no answer given after a chain of thought
    assert tasks.generated_answer(plain[0], f" {truth}\nmore") == truth
    with pytest.raises(ValueError, match="rationale"):
        tasks.with_shots(tasks.arithmetic(12, 0, True), 2, seed=0, chain_of_thought=True)


def test_chain_of_thought_exact_match_reads_the_answer_after_the_rationale(small_model, monkeypatch):
    """score() with a stand-in decoder that answers every other item right, after a rationale."""
    model, params, tokenizer = small_model
    items = tasks.with_shots(tasks.arithmetic(8, 1, False), 1, seed=0, chain_of_thought=True)
    right = [i % 2 == 0 for i in range(len(items))]
    seen = []

    def stand_in(model, params, prompts, max_new_tokens, stop=None, eos_id=None):  # one batch of every item
        seen.append(max_new_tokens)
        assert len(prompts) == len(items)
        texts = [f" {item['rationale']}{tasks.ANSWER_MARK}{item['target'] if ok else ' 0'}\n"
                 for item, ok in zip(items, right)]
        return [tokenizer.encode([text])[0] for text in texts]
    monkeypatch.setattr("evaluation.generate.generate", stand_in)
    model = build_model(TransformerConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=4,
                                          d_ff=64, max_len=128))
    params = model.init(jax.random.PRNGKey(3), {"inputs": jnp.zeros((1, 8), jnp.int32)})["params"]
    result = tasks.score(model, params, tokenizer, items, batch_size=len(items))
    assert seen == [96]  # room for the chain of thought
    assert result["exact_match"]["mean"] == pytest.approx(np.mean(right))


@pytest.mark.parametrize("line, problem", [('{"choices": ["a", "b"], "gold": 0}', "context"),
                                           ('{"context": "x", "choices": ["a"], "gold": 0}', "choices"),
                                           ('{"context": "x", "choices": ["a", "b"], "gold": 2}', "gold"),
                                           ('{"context": "x"}', "target"), ("not json", "not JSON")])
def test_a_bad_task_file_is_one_line(tmp_path, capsys, line, problem):
    path = tmp_path / "task.jsonl"
    path.write_text(line + "\n")
    assert tasks.main([f"--workdir={tmp_path}", f"--task_file={path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0]


def test_the_command_line_scores_a_trained_run(tiny_corpus, tmp_path, capsys):
    from tests.conftest import TINY_MODEL, run_main
    workdir = tmp_path / "run"
    assert run_main(workdir, tiny_corpus + TINY_MODEL + ["TrainConfig.train_steps = 2"]).returncode == 0
    import gin
    gin.clear_config()
    try:
        assert tasks.main([f"--workdir={workdir}", "--task=arithmetic_mc", "--items=6", "--shots=1"]) == 0
    finally:
        gin.clear_config()
    result = json.loads(capsys.readouterr().out)
    assert result["items"] == 6 and result["chance"] == 0.25 and 0 <= result["acc"]["mean"] <= 1
    assert result["bpb"]["mean"] > 0
