"""The training loop: sharded state, a jitted step with donated state, eval, checkpoints, metrics.

`run` is what `python -m train.main` calls once gin is parsed. A sweep's runs
are the same call with other bindings.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from functools import partial
from typing import Optional

import flax.linen as nn
import flax.struct
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from data import loader
from data.corpus import CorpusError
from data.order import DocumentOrder
from data.pipeline import PackedBatches, Prefetcher, eval_batches, model_inputs
from data.span_corruption import span_counts
from data.tokenizer import unigram_loss
from model import accounting, build_model
from model.transformer import TransformerConfig
from scaling.eval_precision import EvalDocuments
from train import partitioning
from train.checkpoints import Checkpointer
from train.metrics import MetricsWriter, peak_flops_per_device, progress_bar
from train.optimizer import lr_schedule, make_optimizer
from train.run_config import check_workdir_config, claim_workdir


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: dict
    opt_state: optax.OptState
    rng: jax.Array


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    train_steps: int = 0  # exactly one of train_steps and train_tokens
    train_tokens: int = 0  # rounded up to whole steps
    grad_accum_steps: int = 1
    z_loss: float = 0.0  # PaLM's auxiliary log(Z)^2 penalty, e.g. 1e-4
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 500
    keep_checkpoints: int = 3

    def total_steps(self, tokens_per_step: int) -> int:
        if (self.train_steps > 0) == (self.train_tokens > 0):
            raise ValueError("set exactly one of TrainConfig.train_steps and TrainConfig.train_tokens")
        return self.train_steps or math.ceil(self.train_tokens / tokens_per_step)


def _token_losses(logits, batch):
    log_z = jax.nn.logsumexp(logits, axis=-1)
    nll = log_z - jnp.take_along_axis(logits, batch["targets"][..., None], axis=-1)[..., 0]
    return nll, log_z


def loss_sums(params, batch, rng, model: nn.Module, z_loss: float, train: bool):
    """Summed (not averaged) weighted losses, so micro-batches add up exactly to the full batch.

    Layers report auxiliary losses (names ending in "_loss", already weighted,
    per token) and diagnostics such as expert load by sowing them into the
    "intermediates" collection; the losses are added here and everything is
    returned for logging.
    """
    logits, variables = model.apply({"params": params}, batch, deterministic=not train,
                                    rngs={"dropout": rng} if train else None, mutable=["intermediates"])
    nll, log_z = _token_losses(logits, batch)
    w = batch["weights"]
    nll_sum = (nll * w).sum()
    # A module sows once per call: average over calls, keep vectors such as expert load whole.
    sown = {"/".join(str(getattr(k, "key", k)) for k in path): jnp.mean(jnp.stack(value), axis=0)
            for path, value in jax.tree_util.tree_flatten_with_path(
                variables.get("intermediates", {}), is_leaf=lambda x: isinstance(x, tuple))[0]}
    aux_loss = sum((v for k, v in sown.items() if k.endswith("_loss")), jnp.float32(0.0))
    total = nll_sum + z_loss * (log_z ** 2 * w).sum() + aux_loss * w.sum()
    return total, (nll_sum, w.sum(), sown)


def train_step(state: TrainState, batch, *, model, optimizer, schedule, z_loss, accum_steps):
    rng = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.grad(partial(loss_sums, model=model, z_loss=z_loss, train=True), has_aux=True)

    def micro_step(carry, micro):
        grads, nll_sum, weight = carry
        g, (n, w, sown) = grad_fn(state.params, micro, jax.random.fold_in(rng, weight.astype(jnp.int32)))
        return (jax.tree.map(jnp.add, grads, g), nll_sum + n, weight + w), sown

    micro_batches = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (grads, nll_sum, weight), sown = jax.lax.scan(micro_step, (zeros, 0.0, 0.0), micro_batches)
    grads = jax.tree.map(lambda g: g / weight, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": nll_sum / weight, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step),
               **jax.tree.map(lambda v: v.mean(0), sown)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, batch, *, model):
    """Per-row sums of the weighted nll and of the weights, so that the host can group rows by document."""
    nll, _ = _token_losses(model.apply({"params": params}, batch, deterministic=True), batch)
    w = batch["weights"]
    return (nll * w).sum(axis=-1), w.sum(axis=-1)


def create_state(rng, model, optimizer, example_batch: dict, unbox: bool) -> TrainState:
    params = model.init(rng, example_batch)["params"]
    params = nn.meta.unbox(params) if unbox else params
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      rng=jax.random.fold_in(rng, 1))


def _evaluate(step_fn, params, batches, mesh) -> tuple[dict, EvalDocuments]:
    """Loss and bits per byte over all eval tokens, each with its standard error over eval documents,
    and the per-document sums they are computed from (a finished run saves them: eval_documents.json)."""
    per_batch = [step_fn(params, partitioning.shard_batch(model_inputs(batch), mesh)) for batch in batches]
    nll, weight = (np.concatenate(rows).astype(np.float64) for rows in zip(*per_batch))
    doc, row_bytes = (np.concatenate([batch[key] for batch in batches]) for key in ("doc", "bytes"))
    documents = EvalDocuments.from_rows(doc, nll, weight, row_bytes)
    return {"eval_loss": documents.loss, "eval_loss_se": documents.loss_se,
            "eval_bpb": documents.bpb, "eval_bpb_se": documents.bpb_se}, documents


def _sown_metrics(step_metrics: dict) -> dict:
    """Layer diagnostics (e.g. MoE expert load, a vector) as flat scalars for metrics.jsonl."""
    row = {}
    for key, value in step_metrics.items():
        if key in ("loss", "lr", "grad_norm"):
            continue
        value = np.asarray(value)
        if value.ndim == 0:
            row[key] = float(value)
        else:
            row.update({f"{key}/{i}": float(v) for i, v in enumerate(value.ravel())})
    return row


def _truncate_metrics(path: str, last_step: int) -> None:
    """Drops rows logged after the checkpoint a resumed run restarts from, so none is duplicated."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if json.loads(line)["step"] <= last_step]
    with open(path, "w") as f:
        f.writelines(rows)


@dataclasses.dataclass
class Setup:
    """Everything a run needs, built and checked before anything is trained or written."""
    workdir: str
    model_cfg: TransformerConfig
    data_cfg: loader.DataConfig
    train_cfg: TrainConfig
    total_steps: int
    schedule: optax.Schedule
    optimizer: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    data: loader.Data
    evals: list  # the held-out batches, built once
    order: Optional[DocumentOrder]  # the train documents' order per epoch; None: a seeded permutation

    @property
    def objective(self) -> dict:
        """The PackedBatches options of this model's training objective."""
        return objective_options(self.model_cfg, self.data_cfg, self.data.tokenizer.vocab_size)


def objective_options(model_cfg: TransformerConfig, data_cfg: loader.DataConfig, tokenizer_vocab: int) -> dict:
    """Span corruption for an encoder-decoder, prefix LM for a prefix mask, else LM.

    Span corruption's sentinels are the model's ids past the tokenizer's vocabulary (T5 keeps 100).
    """
    if model_cfg.architecture == "encoder_decoder":
        return {"objective": "span_corruption", "sentinels": range(tokenizer_vocab, model_cfg.vocab_size),
                "noise_density": data_cfg.noise_density, "mean_noise_span_length": data_cfg.mean_noise_span_length}
    return {"objective": "prefix_lm" if model_cfg.attention_mask == "prefix" else "lm"}


def configure(workdir: str, start_over: bool = False) -> Setup:
    """Builds the run from the parsed gin config. Every error raised here is the user's input:
    ValueError / TypeError (bad values), CorpusError, WorkdirConfigMismatch."""
    model_cfg, data_cfg, train_cfg = TransformerConfig(), loader.DataConfig(), TrainConfig()
    total_steps = train_cfg.total_steps(data_cfg.batch_size * data_cfg.seq_len)
    if data_cfg.batch_size % train_cfg.grad_accum_steps:
        raise ValueError(f"batch_size {data_cfg.batch_size} is not divisible by grad_accum_steps "
                         f"{train_cfg.grad_accum_steps}")
    if data_cfg.seq_len > model_cfg.max_len:
        raise ValueError(f"DataConfig.seq_len {data_cfg.seq_len} exceeds TransformerConfig.max_len "
                         f"{model_cfg.max_len}")
    schedule = lr_schedule(total_steps)
    optimizer = make_optimizer(schedule)
    mesh = partitioning.make_mesh()
    if data_cfg.batch_size % (mesh.shape["data"] * mesh.shape.get("expert", 1)):
        raise ValueError(f"batch_size {data_cfg.batch_size} is not divisible by the mesh's data axis "
                         f"{dict(mesh.shape)}")
    config = gin.operative_config_str()
    check_workdir_config(workdir, config, start_over)  # early: before the corpus is built
    data = loader.load(data_cfg)
    objective = objective_options(model_cfg, data_cfg, data.tokenizer.vocab_size)
    if objective["objective"] == "span_corruption":
        spans = span_counts(data_cfg.seq_len, data_cfg.noise_density, data_cfg.mean_noise_span_length)[1]
        if model_cfg.vocab_size < data.tokenizer.vocab_size + spans:
            raise ValueError(f"span corruption needs {spans} sentinel ids past the tokenizer's "
                             f"{data.tokenizer.vocab_size}: set TransformerConfig.vocab_size to at least "
                             f"{data.tokenizer.vocab_size + spans} (T5 adds 100)")
    elif data.tokenizer.vocab_size != model_cfg.vocab_size:
        raise ValueError(f"TransformerConfig.vocab_size {model_cfg.vocab_size} differs from the tokenizer's "
                         f"{data.tokenizer.vocab_size} (DataConfig.vocab_size {data_cfg.vocab_size})")
    try:
        evals = eval_batches(data.eval_docs, data.tokenizer, data_cfg.seq_len, data_cfg.batch_size,
                             data_cfg.eval_batches, text_key=data_cfg.text_key, **objective)
    except ValueError as error:
        raise CorpusError(str(error)) from error
    order = None
    if data.doc_sources is not None:
        order = DocumentOrder(data.doc_sources, data.source_names, data_cfg.seed, dict(data_cfg.mixture),
                              data_cfg.max_docs_per_source)
    elif data_cfg.mixture:
        raise ValueError("DataConfig.mixture needs a corpus whose documents name their source")
    claim_workdir(workdir, config)  # only now, when every check has passed
    return Setup(workdir, model_cfg, data_cfg, train_cfg, total_steps, schedule, optimizer, mesh, data, evals,
                 order)


def run(workdir: str, start_over: bool = False, **train_options) -> dict:
    """Trains one model in workdir (resuming it if it holds this run) and returns its summary."""
    return train(configure(workdir, start_over), **train_options)


def train(setup: Setup, progress: bool = True, stop_after_steps: int = 0) -> dict:
    """progress: show a progress bar. stop_after_steps: stop there (after a checkpoint) as if
    interrupted. Neither changes what is computed, so neither is part of the gin config."""
    model = build_model(setup.model_cfg)
    data_cfg, train_cfg, mesh = setup.data_cfg, setup.train_cfg, setup.mesh
    with mesh, nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES):
        example = {k: jnp.asarray(v[:1]) for k, v in model_inputs(setup.evals[0]).items()}
        init = partial(create_state, model=model, optimizer=setup.optimizer, example_batch=example)
        rng = jax.random.PRNGKey(train_cfg.seed)
        state_shardings = partitioning.logical_shardings(jax.eval_shape(partial(init, unbox=False), rng), mesh)
        step_fn = jax.jit(partial(train_step, model=model, optimizer=setup.optimizer, schedule=setup.schedule,
                                  z_loss=train_cfg.z_loss, accum_steps=train_cfg.grad_accum_steps),
                          out_shardings=(state_shardings, None), donate_argnums=(0,))
        # Per-row results replicated, so that every process can read all of them.
        eval_fn = jax.jit(partial(eval_step, model=model), out_shardings=NamedSharding(mesh, PartitionSpec()))
        train_batches = PackedBatches(setup.data.train_docs, setup.data.tokenizer, data_cfg.seq_len,
                                      data_cfg.batch_size, seed=data_cfg.seed, text_key=data_cfg.text_key,
                                      order=setup.order, **setup.objective)
        checkpointer = Checkpointer(os.path.join(setup.workdir, "checkpoints"), train_cfg.checkpoint_every,
                                    train_cfg.keep_checkpoints)
        start_step = checkpointer.latest_step()
        if start_step is None:
            state = jax.jit(partial(init, unbox=True), out_shardings=state_shardings)(rng)
            start_step = 0
        else:
            abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                    jax.eval_shape(partial(init, unbox=True), rng), state_shardings)
            state, data_state = checkpointer.restore(start_step, abstract)
            train_batches.set_state(data_state)
        _truncate_metrics(os.path.join(setup.workdir, "metrics.jsonl"), start_step)
        return _train_loop(setup, state, start_step, step_fn, eval_fn, train_batches, checkpointer, progress,
                           stop_after_steps)


def training_flops_per_text_token(setup: Setup, counts: dict) -> dict:
    """Training FLOPs per token of text read, in both accountings. An encoder-decoder's count is
    per decoder token (its targets), scaled by decoder tokens per text token."""
    example = setup.evals[0]
    decoder_len = example["targets"].shape[1]
    encoder_len = example["encoder_inputs"].shape[1] if "encoder_inputs" in example else None
    per_decoder_token = accounting.training_flops_per_token(
        setup.model_cfg, decoder_len, counts["params_active_nonembedding"], encoder_len)
    return {name: value * decoder_len / setup.data_cfg.seq_len for name, value in per_decoder_token.items()}


def _train_loop(setup: Setup, state, start_step, step_fn, eval_fn, train_batches, checkpointer, progress,
                stop_after_steps) -> dict:
    data, data_cfg, train_cfg, mesh = setup.data, setup.data_cfg, setup.train_cfg, setup.mesh
    counts = accounting.param_counts(state.params, setup.model_cfg)
    flops = training_flops_per_text_token(setup, counts)
    peak, peak_source = peak_flops_per_device(setup.model_cfg.dtype)
    peak_total = peak * jax.device_count()
    tokens_per_step = data_cfg.batch_size * data_cfg.seq_len
    end_step = min(setup.total_steps, stop_after_steps or setup.total_steps)
    writer = MetricsWriter(setup.workdir)
    prefetch = Prefetcher(train_batches)
    bar = progress_bar(setup.total_steps, start_step, progress)
    run_start = time.perf_counter()
    train_time, timed_steps = 0.0, 0  # excludes evaluation and the first step (compilation)
    last_eval, last_row, pending, final_documents = {}, {}, [], None
    data_wait, data_state = 0.0, train_batches.get_state()
    window_start, window_steps = time.perf_counter(), 0
    for step in range(start_step, end_step):
        wait_start = time.perf_counter()
        batch, data_state = prefetch.next()
        data_wait += time.perf_counter() - wait_start
        state, step_metrics = step_fn(state, partitioning.shard_batch(batch, mesh))
        pending.append(step_metrics)
        done = step + 1
        if step == start_step:  # compiled on this step: keep it out of the timings
            jax.block_until_ready(step_metrics)
            window_start, data_wait = time.perf_counter(), 0.0
        else:
            window_steps += 1
        if done % train_cfg.log_every == 0 or done == end_step:
            jax.block_until_ready(step_metrics)
            elapsed = time.perf_counter() - window_start
            train_time, timed_steps = train_time + elapsed, timed_steps + window_steps
            step_time = elapsed / window_steps if window_steps else None
            for offset, m in enumerate(pending):
                s = done - len(pending) + offset + 1
                last_row = {"step": s, "tokens": s * tokens_per_step, "loss": float(m["loss"]),
                            "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"]), "step_time_s": step_time,
                            "tokens_per_s": step_time and tokens_per_step / step_time,
                            "mfu": step_time and tokens_per_step / step_time * flops["chinchilla"] / peak_total,
                            "data_wait_s": data_wait / window_steps if window_steps else None}
                last_row.update(_sown_metrics(m))
                writer.write(last_row)
            pending, data_wait = [], 0.0
            bar.set_postfix(loss=f"{last_row['loss']:.3f}", tok_s=f"{last_row['tokens_per_s'] or 0:.0f}",
                            refresh=False)
            window_start, window_steps = time.perf_counter(), 0
        if (train_cfg.eval_every and done % train_cfg.eval_every == 0) or done == setup.total_steps:
            eval_start = time.perf_counter()
            eval_metrics, documents = _evaluate(eval_fn, state.params, setup.evals, mesh)
            last_eval = {"step": done, **eval_metrics}
            writer.write(last_eval)
            if done == setup.total_steps:
                final_documents = dataclasses.replace(documents, step=done)
            window_start += time.perf_counter() - eval_start
        checkpointer.save(done, state, data_state, force=done == end_step)
        bar.update(1)
    bar.close()
    prefetch.close()
    checkpointer.close()
    writer.close()
    final_step = int(state.step)
    tokens_per_s = timed_steps * tokens_per_step / train_time if train_time else None
    summary = {
        **counts,
        "tokens": final_step * tokens_per_step,
        "flops_kaplan": flops["kaplan"] * final_step * tokens_per_step,
        "flops_chinchilla": flops["chinchilla"] * final_step * tokens_per_step,
        "final_loss": last_row.get("loss"), "final_eval_loss": last_eval.get("eval_loss"),
        "final_eval_bpb": last_eval.get("eval_bpb"), "final_eval_loss_se": last_eval.get("eval_loss_se"),
        "final_eval_bpb_se": last_eval.get("eval_bpb_se"),
        "eval_documents": len(np.unique(np.concatenate([b["doc"] for b in setup.evals]))),
        "eval_tokens": int(sum(b["weights"].sum() for b in setup.evals)),
        "wall_s": time.perf_counter() - run_start, "steps": final_step,
        "mfu": tokens_per_s * flops["chinchilla"] / peak_total if tokens_per_s else None,
        "tokens_per_s": tokens_per_s, "pipeline_tokens_per_s": prefetch.tokens_per_s,
        "peak_flops_per_device": peak, "peak_flops_source": peak_source, "devices": jax.device_count(),
        "unigram_eval_loss": unigram_loss(data.token_stats["token_counts"], setup.evals),
        "corpus_train_tokens": data.token_stats["train_tokens"], "corpus": data.name,
        "objective": setup.objective["objective"],
        # Documents started, the one being read included.
        "source_epochs": setup.order and setup.order.source_epochs(
            [(s["epoch"], s["index"] + (s["offset"] > 0)) for s in data_state["streams"]]),
    }
    if final_step == setup.total_steps and jax.process_index() == 0:
        if final_documents is not None:  # before summary.json: a run with a summary has its documents
            final_documents.save(setup.workdir)
        with open(os.path.join(setup.workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary
