"""Few-shot tasks scored by log-likelihood, in lm-evaluation-harness's conventions.

    python -m evaluation.tasks --workdir=DIR --task=arithmetic_mc [--shots=3] [--items=200] [--seed=0]
    python -m evaluation.tasks --workdir=DIR --task=cloze_mc  (an offline task: evaluation/offline_tasks.py)
    python -m evaluation.tasks --workdir=DIR --task_file=TASK.jsonl [--shots=0]

A task is JSONL, one item per line:
- multiple choice: {"context": str, "choices": [str, ...], "gold": int}
- generation: {"context": str, "target": str, "stop": [str, ...]}

Multiple-choice items are scored by the log-likelihood of each choice after its context (the
context tokens, then the choice's, encoded apart): `acc` picks the highest summed log-likelihood,
`acc_norm` the highest per byte of the choice (lm-eval's normalisation), `acc_per_token` the highest
per token; `bpb` is the gold answer's bits per byte. Generation items are decoded greedily (with the
KV cache) up to a stop string and scored by exact match of the stripped text. Every score comes with
its standard error over items and with chance: the mean of 1 / choices (0 for exact match).

k-shot prompts put k other items of the task (drawn with the seed, never the item itself) before
each, with their answers, separated by blank lines. With chain of thought (`--chain_of_thought`, for
generation items that carry a "rationale"), each exemplar shows its rationale, then " The answer is"
and its answer; the model's generation is scored on what follows the last " The answer is" in it
(Wei et al. 2022). Built-in tasks are made here, deterministically
from their seed: `arithmetic` (generation) and `arithmetic_mc` (four choices), 2- to 5-digit
addition and subtraction, the probe of emergence in GPT-3 (Brown et al. 2020, sec. 3.9.1).
"""
from __future__ import annotations

import json
import math
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import cli


# --- the task format -------------------------------------------------------------

def check_item(item, where: str) -> dict:
    """An item of either kind, checked; ValueError naming `where` otherwise."""
    if not isinstance(item, dict) or not isinstance(item.get("context"), str):
        raise ValueError(f"{where}: an item needs a 'context' string")
    if "choices" in item:
        choices, gold = item["choices"], item.get("gold")
        if (not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices)
                or not isinstance(gold, int) or not 0 <= gold < len(choices)):
            raise ValueError(f"{where}: a multiple-choice item needs 2 or more non-empty 'choices' and a 'gold' index")
    elif not isinstance(item.get("target"), str) or not all(isinstance(s, str) for s in item.get("stop", [])):
        raise ValueError(f"{where}: an item needs 'choices' and 'gold', or a 'target' string (and 'stop' strings)")
    return item


def read_task(path: str) -> list[dict]:
    try:
        with open(path) as f:
            lines = [line for line in f if line.strip()]
    except OSError as error:
        raise cli.InputError(f"cannot read task file {path}: {error.strerror}") from None
    items = []
    for number, line in enumerate(lines, 1):
        try:
            items.append(check_item(json.loads(line), f"{path}:{number}"))
        except json.JSONDecodeError:
            raise cli.InputError(f"{path}:{number} is not JSON") from None
    if not items:
        raise cli.InputError(f"{path} holds no items")
    if len({"choices" in item for item in items}) > 1:
        raise cli.InputError(f"{path} mixes multiple-choice and generation items")
    return items


def answer(item: dict) -> str:
    return item["choices"][item["gold"]] if "choices" in item else item["target"]


ANSWER_MARK = " The answer is"  # chain of thought: what precedes the answer after a rationale


def with_shots(items: list[dict], shots: int, seed: int, chain_of_thought: bool = False) -> list[dict]:
    """Each item with `shots` others (seeded draws, never itself) and their answers before its context;
    with chain_of_thought, each exemplar's rationale before its answer, and the item marked to be
    scored on the answer after its own rationale."""
    if shots and shots >= len(items):
        raise ValueError(f"{shots} shots need more than {len(items)} items")
    if chain_of_thought and not all("target" in item and item.get("rationale") for item in items):
        raise ValueError("chain of thought needs generation items that each carry a 'rationale'")
    rng = np.random.default_rng(seed)
    out = []
    for i, item in enumerate(items):
        others = [j for j in range(len(items)) if j != i]
        exemplars = [items[j] for j in rng.choice(others, shots, replace=False)] if shots else []
        shown = (lambda e: f" {e['rationale']}{ANSWER_MARK}{e['target']}") if chain_of_thought else answer
        prompt = "".join(f"{e['context']}{shown(e)}\n\n" for e in exemplars)
        out.append({**item, "context": prompt + item["context"], **({"chain_of_thought": True} if chain_of_thought
                                                                      else {})})
    return out


def generated_answer(item: dict, text: str) -> str:
    """The part of a generation that is scored: up to the first stop string, and after a chain of
    thought only what follows its last ANSWER_MARK ("" if it never gave one)."""
    for stop in item.get("stop", []):
        text = text.split(stop)[0]
    if item.get("chain_of_thought"):
        text = text.rpartition(ANSWER_MARK)[2] if ANSWER_MARK in text else ""
    return text.strip()


# --- a built-in task ---------------------------------------------------------------

def arithmetic_rationale(a: int, b: int, plus: bool) -> str:
    """a plus (minus) b worked one place value of b at a time, largest first: the steps a chain of
    thought shows before the answer."""
    word, sign = ("plus", 1) if plus else ("minus", -1)
    steps, running = [], a
    for place in range(len(str(b)) - 1, -1, -1):
        part = (b // 10 ** place % 10) * 10 ** place
        if part:
            running += sign * part
            steps.append(f"{word} {part} is {running}")
    return f"{a} " + ", then ".join(steps) + "."


def arithmetic(n_items: int, seed: int, multiple_choice: bool) -> list[dict]:
    """Addition and subtraction of 2- to 5-digit numbers, the digits drawn per item; generation items
    carry a rationale for chain-of-thought prompts."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n_items):
        digits = int(rng.integers(2, 6))
        a, b = (int(rng.integers(10 ** (digits - 1), 10 ** digits)) for _ in range(2))
        plus = bool(rng.integers(2))
        result = a + b if plus else a - b
        item = {"context": f"Q: What is {a} {'plus' if plus else 'minus'} {b}?\nA:", "digits": digits}
        if multiple_choice:
            wrong = sorted({result + d for d in (-10, -1, 1, 10, 100)} - {result})
            choices = [result, *[wrong[k] for k in rng.choice(len(wrong), 3, replace=False)]]
            order = rng.permutation(4)
            item.update(choices=[f" {choices[k]}" for k in order], gold=int(np.argmin(order)))
        else:
            item.update(target=f" {result}", stop=["\n"], rationale=arithmetic_rationale(a, b, plus))
        items.append(item)
    return items


TASKS = {"arithmetic": lambda n, seed: arithmetic(n, seed, False),
         "arithmetic_mc": lambda n, seed: arithmetic(n, seed, True)}


# --- scoring --------------------------------------------------------------------------

@partial(jax.jit, static_argnames=("model",))
def _target_logprobs(model, params, inputs, targets):
    logits = model.apply({"params": params}, {"inputs": inputs})
    return jnp.take_along_axis(jax.nn.log_softmax(logits, -1), targets[..., None], -1)[..., 0]


def _padded_width(width: int, max_len: int) -> int:
    """Rows are padded to a power of two (at least 16, at most max_len): a few shapes to compile,
    however the lengths of a task's items vary."""
    return min(max_len, max(16, 1 << (width - 1).bit_length()))


def continuation_logprobs(model, params, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16) -> list:
    """(summed log-likelihood, tokens) of each continuation after its context, in nats.

    A sequence is EOS (where documents start in training), the context's tokens, then the
    continuation's, kept to the model's max_len by cutting the context from the left."""
    max_len = model.cfg.max_len
    rows = []
    for context, continuation in pairs:
        ctx, cont = (tokenizer.encode([text])[0] for text in (context, continuation))
        if not cont:
            raise ValueError(f"the continuation {continuation!r} has no tokens")
        if len(cont) >= max_len:
            raise ValueError(f"a continuation of {len(cont)} tokens does not fit max_len {max_len}")
        sequence = ([tokenizer.eos_id] + ctx + cont)[-(max_len + 1):]
        rows.append((sequence, len(cont)))
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = _padded_width(max(len(sequence) for sequence, _ in chunk) - 1, max_len)
        # Right-padded (causal: padding is never seen), and as many rows as every other chunk.
        inputs, targets = np.zeros((2, batch_size, width), np.int32)
        for r, (sequence, _) in enumerate(chunk):
            inputs[r, :len(sequence) - 1], targets[r, :len(sequence) - 1] = sequence[:-1], sequence[1:]
        logprobs = np.asarray(_target_logprobs(model, params, jnp.asarray(inputs), jnp.asarray(targets)))
        for r, (sequence, n) in enumerate(chunk):
            out.append((float(logprobs[r, len(sequence) - 1 - n:len(sequence) - 1].sum()), n))
    return out


def _mean_and_se(values) -> dict:
    values = np.asarray(values, float)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
    return {"mean": float(values.mean()), "se": se}


def score(model, params, tokenizer, items: list[dict], max_new_tokens: int | None = None,
          batch_size: int = 16) -> dict:
    """The task's scores over its items (see the module's docstring), with chance. max_new_tokens
    (generation items): default 16, or 96 to leave room for a chain of thought."""
    if "choices" in items[0]:
        pairs = [(item["context"], choice) for item in items for choice in item["choices"]]
        scored = iter(continuation_logprobs(model, params, tokenizer, pairs, batch_size))
        acc, acc_norm, acc_token, bits, chance = [], [], [], [], []
        for item in items:
            logprob, tokens = zip(*[next(scored) for _ in item["choices"]])
            logprob, tokens = np.array(logprob), np.array(tokens)
            size = np.array([len(c.encode()) for c in item["choices"]])
            gold = item["gold"]
            acc.append(np.argmax(logprob) == gold)
            acc_norm.append(np.argmax(logprob / size) == gold)
            acc_token.append(np.argmax(logprob / tokens) == gold)
            bits.append(-logprob[gold] / math.log(2) / size[gold])
            chance.append(1 / len(item["choices"]))
        return {"items": len(items), "acc": _mean_and_se(acc), "acc_norm": _mean_and_se(acc_norm),
                "acc_per_token": _mean_and_se(acc_token), "bpb": _mean_and_se(bits), "chance": float(np.mean(chance))}
    from evaluation.generate import generate
    max_new_tokens = max_new_tokens or (96 if items[0].get("chain_of_thought") else 16)
    keep = model.cfg.max_len - max_new_tokens  # prompt tokens kept (cut from the left), room left to answer
    if keep < 2:
        raise ValueError(f"{max_new_tokens} new tokens leave no room for a prompt within max_len {model.cfg.max_len}")
    matches = []
    for start in range(0, len(items), batch_size):  # a batch of prompts decoded together, each to its own stops
        chunk = items[start:start + batch_size]
        prompts = [([tokenizer.eos_id] + tokenizer.encode([item["context"]])[0])[-keep:] for item in chunk]

        def stop(row, tokens, chunk=chunk):
            return any(s in tokenizer.decode(tokens) for s in chunk[row].get("stop", []))
        for item, tokens in zip(chunk, generate(model, params, prompts, max_new_tokens, stop=stop,
                                                eos_id=tokenizer.eos_id)):
            matches.append(generated_answer(item, tokenizer.decode(tokens)) == item["target"].strip())
    # The target's bits per byte too: the smooth measure beside exact match's all or nothing.
    scored = continuation_logprobs(model, params, tokenizer, [(item["context"], item["target"]) for item in items])
    bits = [-logprob / math.log(2) / len(item["target"].encode()) for (logprob, _), item in zip(scored, items)]
    return {"items": len(items), "exact_match": _mean_and_se(matches), "bpb": _mean_and_se(bits), "chance": 0.0}


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m evaluation.tasks", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a train.main run directory")
    source = parser.add_mutually_exclusive_group(required=True)
    from evaluation import offline_tasks  # it imports this module
    source.add_argument("--task", choices=offline_tasks.TASK_NAMES, help="a built-in or offline task")
    source.add_argument("--task_file", help="a JSONL task")
    parser.add_argument("--shots", type=cli.whole_number(0), default=0)
    parser.add_argument("--chain_of_thought", action="store_true",
                        help="exemplars show their rationale before the answer (generation items with one)")
    parser.add_argument("--items", type=cli.whole_number(1), default=200, help="items of a --task (at most)")
    parser.add_argument("--seed", type=int, default=0, help="a --task's items and the shots' draws")
    args = parser.parse_args(argv)
    items = read_task(args.task_file) if args.task_file else None
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
    from evaluation.generate import load_run
    model, params, tokenizer, step = load_run(args.workdir)
    if args.task:  # load_run has parsed the run's gin: an offline task is made from the run's corpus
        from data import loader
        data = loader.load(loader.DataConfig()) if args.task in offline_tasks.OFFLINE_TASKS else None
        items = offline_tasks.build_task(args.task, data, args.items, args.seed)
    prompted = with_shots(items, args.shots, args.seed, args.chain_of_thought)
    result = {"task": args.task or args.task_file, "shots": args.shots, "chain_of_thought": args.chain_of_thought,
              "step": step,
              **score(model, params, tokenizer, prompted)}
    print(json.dumps(result, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv, errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
