"""Text from a trained model: KV-cache decoding with greedy, temperature, top-k and top-p sampling.

    python -m evaluation.generate --workdir=DIR --prompt="def " [--prompt=...] [--max_new_tokens=64]
        [--temperature=0.8] [--top_k=40] [--top_p=0.95] [--stop="\\n\\n"] [--seed=0]

Loads the run's config.gin and its latest checkpoint, and prints one sample per prompt. Prompts of
different lengths go in one batch, left-padded (model/transformer.py: `start`); a prefix LM reads
each prompt as its bidirectional prefix. The prompt is run through the model once (prefill), then
each new token is one call on the cache. temperature 0 is greedy decoding; a seed fixes the draws.

An encoder-decoder encodes the prompt once (prompts of different lengths right-padded and masked)
and its decoder generates from DECODER_START_ID (T5); cross-attention's keys and values are computed
on the first call and cached (model/encoder_decoder.py). Trained on span corruption, it writes what
fills the spans of its input: its samples look like a T5 target, sentinels (the ids past the
tokenizer's, printed <extra_id_N>) each followed by the text it stands for. A prompt is encoded as
plain text and can hold no sentinel: unlike its training inputs, it has no span masked, and what the
model writes is its guess at a target for it.
"""
from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import cli
from data.pipeline import DECODER_START_ID


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


def prompt_batch(cfg, prompts: list[list[int]], max_new_tokens: int) -> dict:
    """The first decoding call's batch. A decoder reads the prompts left-padded to a common length
    (`start`: each row's first real slot), a prefix LM each as its prefix. An encoder-decoder encodes
    them right-padded (`encoder_mask`: the real tokens), and its decoder starts from DECODER_START_ID."""
    lengths = np.array([len(p) for p in prompts], np.int32)
    longest = int(lengths.max())
    inputs = np.zeros((len(prompts), longest), np.int32)
    if cfg.architecture == "encoder_decoder":
        if longest > cfg.max_len:
            raise ValueError(f"a prompt of {longest} tokens exceeds the encoder's max_len {cfg.max_len}")
        if max_new_tokens > cfg.max_len:
            raise ValueError(f"{max_new_tokens} new tokens exceed the decoder's max_len {cfg.max_len}")
        for row, prompt in enumerate(prompts):
            inputs[row, :len(prompt)] = prompt
        return {"encoder_inputs": inputs, "encoder_mask": np.arange(longest)[None] < lengths[:, None],
                "inputs": np.full((len(prompts), 1), DECODER_START_ID, np.int32)}
    if longest + max_new_tokens > cfg.max_len:
        raise ValueError(f"a prompt of {longest} tokens and {max_new_tokens} new ones exceed max_len {cfg.max_len}")
    for row, prompt in enumerate(prompts):
        inputs[row, longest - len(prompt):] = prompt
    return {"inputs": inputs, "start": longest - lengths, "prefix_len": lengths}  # a prefix LM's prefix: the prompt


def empty_cache(model, batch: dict) -> dict:
    """The model's KV cache for the first decoding call's batch, all slots empty."""
    shapes = jax.eval_shape(partial(model.init, decode=True), jax.random.PRNGKey(0), batch)["cache"]
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)


@partial(jax.jit, static_argnames=("model",))
def _decode(model, params, cache, batch):
    """One decoding call: the last position's logits and the cache after it. cache=None: the first call,
    on an empty cache made inside the compiled program (tracing the model's init on every call costs
    more than decoding a short sample)."""
    if cache is None:
        cache = empty_cache(model, batch)
    logits, variables = model.apply({"params": params, "cache": cache}, batch, decode=True, mutable=["cache"])
    return logits[:, -1], variables["cache"]


def generate(model, params, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling = Sampling(),
             seed: int = 0, stop=None, eos_id: int | None = None) -> list[list[int]]:
    """The new tokens of each prompt (token ids), at most max_new_tokens of them: a decoder's continuation
    of the prompt, an encoder-decoder's output for it.

    stop(row, tokens) -> True ends a row (its tokens so far are kept); so does eos_id, which is not
    returned. Rows that have ended are computed on with the others but their tokens are dropped."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    batch = prompt_batch(model.cfg, prompts, max_new_tokens)
    logits, cache = _decode(model, params, None, batch)
    later = {k: v for k, v in batch.items() if not k.startswith("encoder_")}  # the encoder runs once
    rng = jax.random.PRNGKey(seed)
    out, done = [[] for _ in prompts], [False] * len(prompts)
    for made in range(1, max_new_tokens + 1):
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
        if all(done) or made == max_new_tokens:
            break
        logits, cache = _decode(model, params, cache, {**later, "inputs": jnp.asarray(tokens)[:, None]})
    return out


def load_run(workdir: str, step: int | None = None):
    """(model, params, tokenizer, step) of a run directory's checkpoint at `step` (default: its latest).
    The run's config.gin replaces whatever gin config was parsed before, so that one process can load
    several runs."""
    import os

    import gin

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
    with gin.unlock_config():
        gin.clear_config()
        parse_gin([os.path.join(workdir, "config.gin")], [])
    model_cfg, data_cfg = TransformerConfig(), loader.DataConfig()
    total_steps = TrainConfig().total_steps(data_cfg.batch_size * data_cfg.seq_len)
    optimizer = make_optimizer(lr_schedule(total_steps))
    model = build_model(model_cfg)
    # The parameters' shapes do not depend on lengths; a decoder ignores encoder_inputs.
    example = {"inputs": jnp.zeros((1, data_cfg.seq_len), jnp.int32), "prefix_len": jnp.zeros(1, jnp.int32),
               "encoder_inputs": jnp.zeros((1, data_cfg.seq_len), jnp.int32)}
    mesh = partitioning.make_mesh()
    rules = partitioning.logical_axis_rules()
    init = partial(create_state, model=model, optimizer=optimizer, example_batch=example)
    shardings = partitioning.logical_shardings(jax.eval_shape(partial(init, unbox=False), jax.random.PRNGKey(0)),
                                               mesh, rules)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            jax.eval_shape(partial(init, unbox=True), jax.random.PRNGKey(0)), shardings)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=1000)
    try:
        if step is None:
            restored = checkpointer.restore_latest(abstract)
            if restored is None:
                raise cli.InputError(f"{workdir} has no checkpoint yet")
            step, state, _ = restored
        elif step in checkpointer.steps():
            state, _ = checkpointer.restore(step, abstract)
        else:
            raise cli.InputError(f"{workdir} has no checkpoint at step {step} (it has {checkpointer.steps()})")
    finally:
        checkpointer.close()
    return model, state.params, loader.load(data_cfg).tokenizer, step


def decode_text(tokenizer, ids) -> str:
    """The text of generated ids. Ids past the tokenizer's are an encoder-decoder's span corruption
    sentinels (train.trainer.objective_options: the n-th is tokenizer.vocab_size + n), written as T5's
    <extra_id_n> between the spans' texts."""
    pieces = []
    for is_text, run in itertools.groupby(ids, key=lambda i: i < tokenizer.vocab_size):
        pieces += [tokenizer.decode(list(run))] if is_text else [f"<extra_id_{i - tokenizer.vocab_size}>" for i in run]
    return " ".join(pieces)


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
        return any(s in decode_text(tokenizer, tokens) for s in args.stop)
    started = time.perf_counter()
    samples = generate(model, params, prompts, args.max_new_tokens, sampling, args.seed, stop if args.stop else None,
                       tokenizer.eos_id)
    seconds = time.perf_counter() - started
    continues = model.cfg.architecture == "decoder"  # an encoder-decoder's sample fills the prompt's spans
    for prompt, tokens in zip(args.prompt, samples):
        text = decode_text(tokenizer, tokens)
        for s in args.stop:
            text = text.split(s)[0]
        print(f"--- {prompt!r} (step {step}) ---\n{prompt if continues else ''}{text}")
    made = sum(map(len, samples))
    print(f"{made} tokens in {seconds:.2f} s ({made / seconds:.1f} tokens/s, compilation included)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv, errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
