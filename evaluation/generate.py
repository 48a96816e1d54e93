"""Text from a trained decoder: KV-cache decoding with greedy, temperature, top-k and top-p sampling.

    python -m evaluation.generate --workdir=DIR --prompt="def " [--prompt=...] [--max_new_tokens=64]
        [--temperature=0.8] [--top_k=40] [--top_p=0.95] [--stop="\\n\\n"] [--seed=0]

Loads the run's config.gin and its latest checkpoint, and prints one sample per prompt. Prompts of
different lengths go in one batch, left-padded (model/transformer.py: `start`); a prefix LM reads
each prompt as its bidirectional prefix. The prompt is run through the model once (prefill), then
each new token is one call on the cache. temperature 0 is greedy decoding; a seed fixes the draws.
Decoder-only models (causal or prefix); the encoder-decoder is not supported yet.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import cli


@dataclasses.dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy (argmax)
    top_k: int = 0  # 0: no cut
    top_p: float = 1.0  # 1: no cut

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0, top_k >= 0 and 0 < top_p <= 1, got {self}")


def sample(logits, rng, sampling: Sampling):
    """One token id per row of logits (batch, vocab): argmax at temperature 0, else a draw from the
    tempered distribution cut to its top_k tokens and to the smallest set holding top_p of it."""
    if sampling.temperature == 0:
        return jnp.argmax(logits, axis=-1)
    logits = logits.astype(jnp.float32) / sampling.temperature
    if sampling.top_k:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p < 1:
        order = jnp.argsort(-logits, axis=-1)
        ranked = jnp.take_along_axis(logits, order, axis=-1)
        before = jnp.cumsum(jax.nn.softmax(ranked, axis=-1), axis=-1) - jax.nn.softmax(ranked, axis=-1)
        ranked = jnp.where(before < sampling.top_p, ranked, -jnp.inf)  # keep tokens until top_p is reached
        logits = jnp.full_like(logits, -jnp.inf).at[jnp.arange(len(logits))[:, None], order].set(ranked)
    return jax.random.categorical(rng, logits, axis=-1)


def empty_cache(model, batch_size: int) -> dict:
    """The model's KV cache for batch_size rows, all slots empty."""
    max_len = model.cfg.max_len
    batch = {"inputs": jnp.zeros((batch_size, max_len), jnp.int32), "prefix_len": jnp.zeros(batch_size, jnp.int32)}
    shapes = jax.eval_shape(partial(model.init, decode=True), jax.random.PRNGKey(0), batch)["cache"]
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)


@partial(jax.jit, static_argnames=("model",))
def _decode(model, params, cache, batch):
    logits, variables = model.apply({"params": params, "cache": cache}, batch, decode=True, mutable=["cache"])
    return logits[:, -1], variables["cache"]


def generate(model, params, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling = Sampling(),
             seed: int = 0, stop=None, eos_id: int | None = None) -> list[list[int]]:
    """The new tokens of each prompt (token ids), at most max_new_tokens of them.

    stop(row, tokens) -> True ends a row (its tokens so far are kept); so does eos_id, which is not
    returned. Rows that have ended are computed on with the others but their tokens are dropped."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    longest = max(map(len, prompts))
    if longest + max_new_tokens > model.cfg.max_len:
        raise ValueError(f"a prompt of {longest} tokens and {max_new_tokens} new ones exceed max_len "
                         f"{model.cfg.max_len}")
    inputs = np.zeros((len(prompts), longest), np.int32)
    for row, prompt in enumerate(prompts):
        inputs[row, longest - len(prompt):] = prompt
    start = jnp.asarray([longest - len(p) for p in prompts], jnp.int32)
    prefix_len = jnp.asarray([len(p) for p in prompts], jnp.int32)  # a prefix LM's prefix: the prompt
    batch = {"inputs": jnp.asarray(inputs), "start": start, "prefix_len": prefix_len}
    logits, cache = _decode(model, params, empty_cache(model, len(prompts)), batch)
    rng = jax.random.PRNGKey(seed)
    out, done = [[] for _ in prompts], [False] * len(prompts)
    for _ in range(max_new_tokens):
        rng, key = jax.random.split(rng)
        tokens = np.asarray(sample(logits, key, sampling))
        for row, token in enumerate(tokens):
            if done[row]:
                continue
            if eos_id is not None and token == eos_id:
                done[row] = True
                continue
            out[row].append(int(token))
            done[row] = bool(stop and stop(row, out[row]))
        if all(done):
            break
        logits, cache = _decode(model, params, cache, {**batch, "inputs": jnp.asarray(tokens)[:, None]})
    return out


def load_run(workdir: str):
    """(model, params, tokenizer) of a run directory's latest checkpoint."""
    import os

    from data import loader
    from model import build_model
    from model.transformer import TransformerConfig
    from train import partitioning
    from train.checkpoints import Checkpointer
    from train.main import parse_gin
    from train.optimizer import lr_schedule, make_optimizer
    from train.trainer import TrainConfig, create_state
    if not os.path.exists(os.path.join(workdir, "config.gin")):
        raise cli.InputError(f"{workdir} holds no run (no config.gin)")
    parse_gin([os.path.join(workdir, "config.gin")], [])
    model_cfg, data_cfg = TransformerConfig(), loader.DataConfig()
    if model_cfg.architecture != "decoder":
        raise cli.InputError(f"{workdir}: generation supports decoder-only models, not {model_cfg.architecture!r}")
    total_steps = TrainConfig().total_steps(data_cfg.batch_size * data_cfg.seq_len)
    optimizer = make_optimizer(lr_schedule(total_steps))
    model = build_model(model_cfg)
    example = {"inputs": jnp.zeros((1, data_cfg.seq_len), jnp.int32), "prefix_len": jnp.zeros(1, jnp.int32)}
    mesh = partitioning.make_mesh()
    rules = partitioning.logical_axis_rules()
    init = partial(create_state, model=model, optimizer=optimizer, example_batch=example)
    shardings = partitioning.logical_shardings(jax.eval_shape(partial(init, unbox=False), jax.random.PRNGKey(0)),
                                               mesh, rules)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            jax.eval_shape(partial(init, unbox=True), jax.random.PRNGKey(0)), shardings)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=1000)
    restored = checkpointer.restore_latest(abstract)
    checkpointer.close()
    if restored is None:
        raise cli.InputError(f"{workdir} has no checkpoint yet")
    step, state, _ = restored
    return model, state.params, loader.load(data_cfg).tokenizer, step


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m evaluation.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a train.main run directory")
    parser.add_argument("--prompt", action="append", required=True, help="repeatable: one sample per prompt")
    parser.add_argument("--max_new_tokens", type=cli.whole_number(1), default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--top_k", type=cli.whole_number(0), default=0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--stop", action="append", default=[], help="a string that ends a sample; repeatable")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
    model, params, tokenizer, step = load_run(args.workdir)
    prompts = [tokenizer.encode([p])[0] for p in args.prompt]

    def stop(row, tokens):
        return any(s in tokenizer.decode(tokens) for s in args.stop)
    started = time.perf_counter()
    samples = generate(model, params, prompts, args.max_new_tokens, sampling, args.seed, stop if args.stop else None,
                       tokenizer.eos_id)
    seconds = time.perf_counter() - started
    for prompt, tokens in zip(args.prompt, samples):
        text = tokenizer.decode(tokens)
        for s in args.stop:
            text = text.split(s)[0]
        print(f"--- {prompt!r} (step {step}) ---\n{prompt}{text}")
    made = sum(map(len, samples))
    print(f"{made} tokens in {seconds:.2f} s ({made / seconds:.1f} tokens/s, compilation included)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv, errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
