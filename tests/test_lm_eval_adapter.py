"""The lm-evaluation-harness adapter against references computed here: each continuation's log-likelihood
and argmax from its own unbatched forward pass (scipy's logsumexp), the rolling windows rebuilt by hand,
generation from evaluation.generate one prompt at a time, and lm-eval's accuracy on a local JSONL task
recomputed from those log-likelihoods. lm-eval is an optional extra: the tests that need it are slow ones,
and run offline (the task reads a local file through datasets' "json" builder)."""
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from evaluation.generate import generate
from model import build_model
from model.transformer import TransformerConfig
from tests.conftest import REPO, TINY_MODEL, main_env, run_main

OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
WORDS = "def return import class the of value list print string number if else for".split()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module", params=["causal", "prefix"])
def small_model(request, stdlib_text):
    tokenizer, _ = stdlib_text
    model = build_model(TransformerConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=4,
                                          d_ff=64, max_len=32, attention_mask=request.param))
    params = model.init(jax.random.PRNGKey(5), {"inputs": jnp.zeros((1, 8), jnp.int32),
                                                "prefix_len": jnp.zeros(1, jnp.int32)})["params"]
    return model, params, tokenizer


def adapter(small_model, batch_size=4):
    from evaluation.lm_eval_adapter import ScalingLM
    model, params, tokenizer = small_model
    return ScalingLM(model=model, params=params, tokenizer=tokenizer, batch_size=batch_size)


def instances(kind, arguments):
    from lm_eval.api.instance import Instance
    return [Instance(kind, doc={}, arguments=args, idx=0) for args in arguments]


def sequence_scores(model, params, sequence, n):
    """Log-likelihood and all-argmax of a sequence's last n tokens: one forward pass, float64 logsumexp.
    A prefix LM reads the tokens before them as its prefix."""
    batch = {"inputs": jnp.asarray([sequence[:-1]]), "prefix_len": jnp.asarray([len(sequence) - n])}
    logits = np.asarray(model.apply({"params": params}, batch)[0], np.float64)
    positions = range(len(sequence) - 1 - n, len(sequence) - 1)
    total = sum(logits[p, sequence[p + 1]] - logsumexp(logits[p]) for p in positions)
    return total, all(np.argmax(logits[p]) == sequence[p + 1] for p in positions)


def reference_loglikelihood(small_model, context, continuation):
    """The context's trailing whitespace goes to the continuation; the two are encoded apart, after EOS,
    and the context is cut from the left to fit max_len."""
    model, params, tokenizer = small_model
    stripped = context.rstrip()
    ctx, cont = tokenizer.encode([stripped, context[len(stripped):] + continuation])
    return sequence_scores(model, params, ([tokenizer.eos_id] + ctx + cont)[-(model.cfg.max_len + 1):], len(cont))


def random_text(rng, low, high):
    return " ".join(rng.choice(WORDS, rng.integers(low, high)))


@pytest.mark.slow
def test_loglikelihood_and_is_greedy_equal_a_full_forward_pass(small_model):
    pytest.importorskip("lm_eval")
    model, params, tokenizer = small_model
    rng = np.random.default_rng(0)
    pairs = [(random_text(rng, 1, 40) + rng.choice(["", " ", "  ", "\n"]), " " + random_text(rng, 1, 4))
             for _ in range(10)]  # some contexts longer than max_len; some end in whitespace
    pairs.append(("", "import the"))  # an empty context: EOS alone
    for context in ("def value", "import the list", "class"):  # continuations that are the greedy choice
        prompt = [tokenizer.eos_id] + tokenizer.encode([context])[0]
        greedy = generate(model, params, [prompt], 2)[0]
        if tokenizer.encode([tokenizer.decode(greedy)])[0] == greedy:  # one that survives re-encoding
            pairs.append((context, tokenizer.decode(greedy)))
    results = adapter(small_model).loglikelihood(instances("loglikelihood", pairs))
    expected = [reference_loglikelihood(small_model, *pair) for pair in pairs]
    for (logprob, is_greedy), (expected_logprob, expected_greedy) in zip(results, expected):
        assert logprob == pytest.approx(expected_logprob, abs=1e-4) and is_greedy == expected_greedy
    assert {greedy for _, greedy in expected} == {True, False}  # both kinds were checked


@pytest.mark.slow
def test_rolling_loglikelihood_sums_disjoint_windows_of_max_len(small_model):
    pytest.importorskip("lm_eval")
    model, params, tokenizer = small_model
    max_len, eos = model.cfg.max_len, tokenizer.eos_id
    rng = np.random.default_rng(1)
    texts = [random_text(rng, 60, 90), random_text(rng, 3, 8), random_text(rng, 30, 50)]
    lm = adapter(small_model, batch_size=3)
    results = lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(t,) for t in texts]))
    for text, result in zip(texts, results):
        sequence = [eos] + tokenizer.encode([text])[0]  # sequence[i + 1] is the text's i-th token
        n, expected, start = len(sequence) - 1, 0.0, 0
        while start < n:  # each chunk of max_len tokens predicted from the max_len tokens before its last
            end = min(start + max_len, n)
            window = sequence[max(0, end - max_len):end + 1]
            expected += sequence_scores(model, params, window, end - start)[0]
            start = end
        assert result == pytest.approx(expected, abs=1e-4)
    assert len(tokenizer.encode([texts[0]])[0]) > 2 * max_len  # three windows or more
    # a text that fits max_len: the whole text after EOS, as an empty context's continuation
    assert results[1] == pytest.approx(lm.loglikelihood(instances("loglikelihood", [("", texts[1])]))[0][0], abs=1e-5)


@pytest.mark.slow
def test_generate_until_is_greedy_generation_cut_at_the_first_stop_string(small_model):
    pytest.importorskip("lm_eval")
    model, params, tokenizer = small_model
    rng = np.random.default_rng(2)
    settings = [{"until": ["\n", "e"], "max_gen_toks": 8, "do_sample": False}, {"until": "s", "max_gen_toks": 5}]
    requests = [(random_text(rng, 1, 40), settings[i % 2]) for i in range(9)]  # two kinds, interleaved
    results = adapter(small_model).generate_until(instances("generate_until", requests))
    cut = 0
    for (context, kwargs), result in zip(requests, results):
        room = kwargs["max_gen_toks"]
        prompt = ([tokenizer.eos_id] + tokenizer.encode([context])[0])[-(model.cfg.max_len - room):]
        text = tokenizer.decode(generate(model, params, [prompt], room, eos_id=tokenizer.eos_id)[0])
        stops = [kwargs["until"]] if isinstance(kwargs["until"], str) else kwargs["until"]
        first = min([text.find(s) for s in stops if s in text], default=len(text))
        assert result == text[:first]
        cut += first < len(text)
    assert 0 < cut < len(requests)  # some were cut at a stop string, some ran to max_gen_toks


def write_task(directory, items) -> str:
    """A multiple-choice lm-eval task reading a local JSONL file; returns its name."""
    data = directory / "items.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items))
    (directory / "tiny_mc.yaml").write_text(f"""task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {directory / "hf_cache"}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")
    return "tiny_mc"


def random_items(seed, n=12):
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        choices = list(dict.fromkeys(random_text(rng, 1, 4) for _ in range(4)))
        items.append({"context": random_text(rng, 2, 12) + "?", "choices": choices,
                      "gold": int(rng.integers(len(choices)))})
    return items


def reference_accuracies(small_model, items) -> tuple[float, float]:
    """lm-eval's acc and acc_norm: the choice (after a space, its target delimiter) of the highest
    log-likelihood, and of the highest per character."""
    acc, acc_norm = [], []
    for item in items:
        logprobs = np.array([reference_loglikelihood(small_model, item["context"], " " + choice)[0]
                             for choice in item["choices"]])
        lengths = np.array([len(c) for c in item["choices"]])
        acc.append(np.argmax(logprobs) == item["gold"])
        acc_norm.append(np.argmax(logprobs / lengths) == item["gold"])
    return float(np.mean(acc)), float(np.mean(acc_norm))


@pytest.mark.slow
def test_simple_evaluate_on_a_local_task_gives_the_accuracy_of_the_log_likelihoods(small_model, tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    items = random_items(seed=3)
    name = write_task(tmp_path, items)
    results = simple_evaluate(model=adapter(small_model), tasks=[name], num_fewshot=0, log_samples=False,
                              task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    scores = results["results"][name]
    acc, acc_norm = reference_accuracies(small_model, items)
    assert scores["acc,none"] == pytest.approx(acc) and scores["acc_norm,none"] == pytest.approx(acc_norm)


@pytest.mark.slow
def test_the_model_is_registered_for_lm_eval():
    pytest.importorskip("lm_eval")
    from lm_eval.api.registry import get_model

    from evaluation.lm_eval_adapter import ScalingLM
    assert get_model("scalinglm") is ScalingLM


def adapter_command(*args) -> list[str]:
    return [sys.executable, "-m", "evaluation.lm_eval_adapter", *args]


def run_adapter(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(adapter_command(*args), cwd=REPO, env={**(env or main_env()), **OFFLINE},
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_command_line_prints_lm_evals_table_for_a_trained_run(tiny_corpus, tmp_path):
    pytest.importorskip("lm_eval")
    import gin

    from evaluation.generate import load_run
    workdir = tmp_path / "run"
    assert run_main(workdir, tiny_corpus + TINY_MODEL + ["TrainConfig.train_steps = 3"]).returncode == 0
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    items = random_items(seed=4, n=10)
    name = write_task(tasks_dir, items)
    result = run_adapter(f"--workdir={workdir}", f"--tasks={name}", f"--include_path={tasks_dir}", "--limit=8")
    assert result.returncode == 0, result.stderr
    assert f"{workdir} at step 3" in result.stdout
    row = re.search(r"\|\s*tiny_mc\s*\|.*?\|\s*acc\s*\|[^|]*\|\s*([0-9.]+)\s*\|", result.stdout)
    gin.clear_config()
    try:
        model, params, tokenizer, _ = load_run(str(workdir))
    finally:
        gin.clear_config()
    acc, _ = reference_accuracies((model, params, tokenizer), items[:8])  # --limit: the first 8
    assert row and float(row.group(1)) == pytest.approx(acc, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["workdir", "task", "include_path"])
def test_bad_input_to_the_command_line_is_one_line(tmp_path, problem):
    pytest.importorskip("lm_eval")
    (tmp_path / "tasks").mkdir()
    args = {"workdir": f"--workdir={tmp_path / 'none'}", "task": "--tasks=no_such_task",
            "include_path": f"--include_path={tmp_path / 'tasks'}"}
    expected = {"workdir": f"{tmp_path / 'none'} holds no run (no config.gin)",
                "task": "unknown lm-eval task no_such_task", "include_path": "is not a directory"}
    if problem == "workdir":
        write_task(tmp_path / "tasks", random_items(seed=5, n=2))
        args["task"] = "--tasks=tiny_mc"
    if problem == "include_path":
        args["include_path"] = f"--include_path={tmp_path / 'missing'}"
    result = run_adapter(*args.values())
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and expected[problem] in lines[0], result.stderr


def test_without_lm_eval_the_command_line_says_how_to_install_it(tmp_path):
    """lm_eval made unimportable by a package of that name, first on the path, that raises ImportError."""
    (tmp_path / "lm_eval").mkdir()
    (tmp_path / "lm_eval" / "__init__.py").write_text("raise ImportError('No module named lm_eval')\n")
    env = {**main_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    result = run_adapter(f"--workdir={tmp_path}", "--tasks=anything", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: needs lm-eval: pip install -e .[lm_eval]"]


def test_the_adapter_takes_a_decoder_from_a_workdir_or_given_and_nothing_else():
    from evaluation.lm_eval_adapter import ScalingLM
    encoder_decoder = build_model(TransformerConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                                    max_len=16, architecture="encoder_decoder"))
    with pytest.raises(ValueError, match="decoder-only models, not 'encoder_decoder'"):
        ScalingLM(model=encoder_decoder, params=None, tokenizer=None)
    with pytest.raises(ValueError, match="needs a workdir, or a model"):
        ScalingLM()
