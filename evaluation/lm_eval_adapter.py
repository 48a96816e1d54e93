"""lm-evaluation-harness's model interface over a run's checkpoint, so that lm-eval scores this project's models.

    pip install -e '.[lm_eval]'
    python -m evaluation.lm_eval_adapter --workdir=DIR --tasks=NAME[,NAME...] [--include_path=DIR_OF_YAML]
        [--limit=N] [--num_fewshot=K] [--batch_size=16]

evaluates the run's latest checkpoint on lm-eval tasks (its own, whose data sets must already be in the
Hugging Face cache when there is no network, or YAML tasks under --include_path reading local files,
e.g. `dataset_path: json` with `dataset_kwargs: {data_files: ...}`) and prints lm-eval's results table.
From Python, importing this module registers the model as "scalinglm":
`lm_eval.simple_evaluate(model="scalinglm", model_args="workdir=DIR", tasks=[...])`, or pass
`ScalingLM(model=..., params=..., tokenizer=...)` itself as the model.

The conventions are evaluation/tasks.py's, which are lm-eval's Hugging Face model's where it has them:
- every sequence starts with EOS, where training documents start (lm-eval's prefix token);
- a context and its continuation are encoded apart, the context's trailing whitespace moved to the
  continuation (lm-eval's HF model encodes the two together and splits, which can merge a piece across
  the boundary; encoded apart, a choice is scored on its own tokens, as evaluation.tasks scores it);
- a context too long for max_len is cut from the left; `is_greedy` says whether every continuation
  token is the model's argmax;
- loglikelihood_rolling scores a whole text in lm-eval's disjoint windows of max_len tokens
  (lm_eval.utils.get_rolling_token_windows, EOS first);
- generate_until decodes with evaluation.generate's KV cache: greedy, or sampled when the task's
  generation_kwargs say do_sample (temperature, top_k, top_p), up to max_gen_toks (default: the
  smaller of 256 and half of max_len) or a stop string from `until`; the prompt keeps its last
  max_len - max_gen_toks tokens.
Decoder-only models; a prefix LM reads each context as its prefix, as evaluation.generate gives it
its prompt.
"""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import cli
from evaluation.generate import Sampling, generate, load_run

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.models.utils import normalize_gen_kwargs, postprocess_generated_text
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    HAVE_LM_EVAL = True
except ImportError:  # the command line says how to install it; the adapter below needs it
    HAVE_LM_EVAL, LM = False, object

    def register_model(*names):
        return lambda cls: cls


# --- scoring token sequences -----------------------------------------------------------------
# evaluation/tasks.py's continuation_logprobs scores text pairs without the argmax; this scores token
# sequences with it, for loglikelihood and for the rolling windows alike.

@partial(jax.jit, static_argnames=("model",))
def _target_scores(model, params, inputs, targets, prefix_len):
    """Each target's log-probability and whether it is the argmax, (batch, width) each."""
    logits = model.apply({"params": params}, {"inputs": inputs, "prefix_len": prefix_len})
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    picked = jnp.take_along_axis(logprobs, targets[..., None], -1)[..., 0]
    return picked, jnp.argmax(logprobs, -1) == targets


def _padded_width(length: int, max_len: int) -> int:
    """The next power of two (at most max_len): a handful of shapes to compile, whatever the lengths."""
    return min(max_len, 1 << (length - 1).bit_length())


def score_tokens(model, params, rows: list[tuple[list[int], int]], batch_size: int = 16) -> list[tuple[float, bool]]:
    """(summed log-likelihood in nats, whether each token is the argmax) of the last n tokens of each
    (tokens, n), predicted from the tokens before them; a sequence longer than max_len + 1 keeps its end.
    The tokens before the last n are a prefix LM's prefix."""
    max_len = model.cfg.max_len
    kept = [(tokens[-(max_len + 1):], n) for tokens, n in rows]
    for tokens, n in kept:
        if not 0 < n < len(tokens):
            raise ValueError(f"cannot score {n} of {len(tokens)} tokens: the first one is only context")
    order = sorted(range(len(kept)), key=lambda i: -len(kept[i][0]))  # similar lengths share a batch
    out = [None] * len(kept)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = _padded_width(len(kept[chunk[0]][0]) - 1, max_len)
        inputs, targets = np.zeros((2, batch_size, width), np.int32)  # right-padded: causal, never seen
        prefix_len = np.zeros(batch_size, np.int32)
        for r, i in enumerate(chunk):
            tokens, n = kept[i]
            inputs[r, :len(tokens) - 1], targets[r, :len(tokens) - 1] = tokens[:-1], tokens[1:]
            prefix_len[r] = len(tokens) - n
        picked, greedy = (np.asarray(a) for a in _target_scores(model, params, jnp.asarray(inputs),
                                                                jnp.asarray(targets), jnp.asarray(prefix_len)))
        for r, i in enumerate(chunk):
            tokens, n = kept[i]
            scored = slice(len(tokens) - 1 - n, len(tokens) - 1)
            out[i] = (float(picked[r, scored].astype(np.float64).sum()), bool(greedy[r, scored].all()))
    return out


# --- the model lm-eval calls -------------------------------------------------------------------

@register_model("scalinglm")
class ScalingLM(LM):
    """A run's checkpoint (workdir=DIR), or a model, its params and tokenizer, as lm-eval's LM."""

    def __init__(self, workdir: str | None = None, *, model=None, params=None, tokenizer=None,
                 batch_size: int | str | None = 16, seed: int = 0, device=None, max_batch_size=None):
        # lm-eval passes device and max_batch_size to every model; JAX places the arrays itself.
        super().__init__()
        if (workdir is None) == (model is None):
            raise ValueError("ScalingLM needs a workdir, or a model with its params and tokenizer")
        self.step = None  # the checkpoint's, when read from a workdir
        if workdir is not None:
            model, params, tokenizer, self.step = load_run(workdir)
        if model.cfg.architecture != "decoder":  # scoring reads logits of the input itself, as a decoder's
            raise cli.InputError(f"the lm-eval adapter scores decoder-only models, not {model.cfg.architecture!r}")
        self.model, self.params, self.tokenizer = model, params, tokenizer
        # "auto" (lm-eval's search for the largest batch that fits) is not needed on these scales
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        self.seed = seed
        self.max_len = model.cfg.max_len
        self.max_gen_toks = min(256, self.max_len // 2)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode([text])[0]

    def _pair_tokens(self, context: str, continuation: str) -> tuple[list[int], int]:
        """EOS, the context's tokens, then the continuation's, encoded apart; and how many the continuation has."""
        spaces = len(context) - len(context.rstrip())
        context, continuation = context[:len(context) - spaces], context[len(context) - spaces:] + continuation
        cont = self._encode(continuation)
        if not cont:
            raise ValueError(f"the continuation {continuation!r} has no tokens")
        if len(cont) > self.max_len:
            raise ValueError(f"a continuation of {len(cont)} tokens does not fit max_len {self.max_len}")
        return [self.tokenizer.eos_id] + self._encode(context) + cont, len(cont)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        rows = [self._pair_tokens(*request.args) for request in requests]
        return score_tokens(self.model, self.params, rows, self.batch_size)

    def loglikelihood_rolling(self, requests) -> list[float]:
        rows, owner = [], []
        for i, request in enumerate(requests):
            windows = get_rolling_token_windows(token_list=self._encode(request.args[0]),
                                                prefix_token=self.tokenizer.eos_id, max_seq_len=self.max_len,
                                                context_len=1)
            for context, predicted in map(make_disjoint_window, windows):
                rows.append((context + predicted, len(predicted)))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owner, score_tokens(self.model, self.params, rows, self.batch_size)):
            totals[i] += logprob
        return totals

    def _generation_settings(self, gen_kwargs: dict) -> tuple[Sampling, int, list[str]]:
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        max_gen_toks = kwargs["max_gen_toks"]
        if not 0 < max_gen_toks < self.max_len:
            raise ValueError(f"max_gen_toks {max_gen_toks} leaves no room for a prompt within max_len {self.max_len}")
        sampling = Sampling(kwargs["temperature"], int(kwargs.get("top_k") or 0),
                            float(kwargs.get("top_p") or 1.0)) if kwargs["do_sample"] else Sampling()
        return sampling, max_gen_toks, [s for s in kwargs["until"] if s]

    def generate_until(self, requests) -> list[str]:
        settings = [self._generation_settings(request.args[1]) for request in requests]
        prompts = [([self.tokenizer.eos_id] + self._encode(request.args[0]))[-(self.max_len - max_gen_toks):]
                   for request, (_, max_gen_toks, _) in zip(requests, settings)]
        groups = defaultdict(list)  # one generate() call decodes a batch with one sampling and length
        for i, (sampling, max_gen_toks, _) in enumerate(settings):
            groups[sampling, max_gen_toks].append(i)
        out = [None] * len(requests)
        for (sampling, max_gen_toks), members in groups.items():
            members.sort(key=lambda i: -len(prompts[i]))  # similar lengths share a batch: less padding
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]

                def stop(row, tokens, chunk=chunk):
                    return any(s in self.tokenizer.decode(tokens) for s in settings[chunk[row]][2])
                samples = generate(self.model, self.params, [prompts[i] for i in chunk], max_gen_toks, sampling,
                                   self.seed, stop, self.tokenizer.eos_id)
                for i, tokens in zip(chunk, samples):
                    out[i] = postprocess_generated_text(self.tokenizer.decode(tokens), settings[i][2], None)
        return out


# --- the command line ------------------------------------------------------------------------------

def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m evaluation.lm_eval_adapter", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a train.main run directory")
    parser.add_argument("--tasks", required=True, help="lm-eval task names (or YAML files), comma-separated")
    parser.add_argument("--include_path", help="a directory of lm-eval YAML tasks, searched besides lm-eval's own")
    parser.add_argument("--limit", type=cli.whole_number(1), help="at most this many items per task")
    parser.add_argument("--num_fewshot", type=cli.whole_number(0))
    parser.add_argument("--batch_size", type=cli.whole_number(1), default=16)
    args = parser.parse_args(argv)
    if not HAVE_LM_EVAL:
        raise cli.InputError("needs lm-eval: pip install -e .[lm_eval]")
    if args.include_path and not os.path.isdir(args.include_path):
        raise cli.InputError(f"--include_path {args.include_path} is not a directory")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table
    task_manager = TaskManager(include_path=args.include_path)
    names = [name for name in args.tasks.split(",") if name]
    unknown = [name for name in names if name not in task_manager.all_tasks and not os.path.isfile(name)]
    if not names or unknown:
        raise cli.InputError(f"unknown lm-eval task {', '.join(unknown) or repr(args.tasks)}"
                             f"{'' if args.include_path else ' (a local task needs --include_path)'}")
    lm = ScalingLM(args.workdir, batch_size=args.batch_size)
    results = simple_evaluate(model=lm, tasks=names, num_fewshot=args.num_fewshot, limit=args.limit,
                              task_manager=task_manager, log_samples=False)
    print(f"{args.workdir} at step {lm.step}")
    print(make_table(results))
    if results.get("groups"):
        print(make_table(results, "groups"))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv, errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
