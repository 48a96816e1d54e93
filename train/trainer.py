"""The training loop: sharded state, a jitted step with donated state, eval, checkpoints, metrics.

`run` is what `python -m train.main` calls once gin is parsed. A sweep's runs
are the same call with other bindings.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from functools import partial
from typing import Iterator, Optional

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
from data.span_corruption import corrupted_lengths, span_counts
from data.tokenizer import unigram_loss
from evaluation.suite import TaskSuite, metrics_row, score_suite
from model import accounting, build_model
from model.transformer import TransformerConfig
from scaling.eval_precision import EvalDocuments
from train import partitioning, provenance
from train.checkpoints import Checkpointer
from train.loop import Hooks, Preemption, Spike, SpikeGuard, StepTimer, train_rows
from train.metrics import MetricsWriter, mfu_note, peak_flops_per_device, progress_bar
from train.optimizer import lr_schedule, make_optimizer
from train.run_config import check_workdir_config, claim_workdir, read_summary, workdir_lock


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
    # A loss spike (non-finite, or above spike_factor x the median of the last spike_window losses;
    # spike_factor 0: non-finite only) rolls the run back to its last checkpoint and skips the
    # batches since, plus skip_batches more (PaLM skipped 200-500); after max_rollbacks it stops.
    spike_factor: float = 2.0
    spike_window: int = 32
    skip_batches: int = 0
    max_rollbacks: int = 3

    def __post_init__(self):
        for name, least in (("train_steps", 0), ("train_tokens", 0), ("grad_accum_steps", 1), ("seed", 0),
                            ("log_every", 1), ("eval_every", 0), ("checkpoint_every", 1),
                            ("keep_checkpoints", 1), ("spike_window", 1), ("skip_batches", 0),
                            ("max_rollbacks", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"TrainConfig.{name} must be an integer of at least {least}, got {value!r}")
        for name in ("z_loss", "spike_factor"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0 or not math.isfinite(value):
                raise ValueError(f"TrainConfig.{name} must be a finite number of at least 0, got {value!r}")

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
    # Summed: under scan_layers a sown loss is one value per scanned group of layers.
    aux_loss = sum((v.sum() for k, v in sown.items() if k.endswith("_loss")), jnp.float32(0.0))
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
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # Gradients holding NaN or Inf leave the parameters and the optimizer's moments as they were.
    finite = jnp.isfinite(grad_norm)
    params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), (params, opt_state),
                                     (state.params, state.opt_state))
    metrics = {"loss": nll_sum / weight, "grad_norm": grad_norm, "lr": schedule(state.step),
               "update_skipped": ~finite, **jax.tree.map(lambda v: v.mean(0), sown)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def position_losses(params, batch, *, model):
    """The weighted nll of every eval target and its weight, each [rows, positions]."""
    nll, _ = _token_losses(model.apply({"params": params}, batch, deterministic=True), batch)
    w = batch["weights"]
    return nll * w, w


def eval_step(params, batch, *, model):
    """Per-row sums of the weighted nll and of the weights, so that the host can group rows by document."""
    nll, w = position_losses(params, batch, model=model)
    return nll.sum(axis=-1), w.sum(axis=-1)


def create_state(rng, model, optimizer, example_batch: dict, unbox: bool) -> TrainState:
    params = model.init(rng, example_batch)["params"]
    params = nn.meta.unbox(params) if unbox else params
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      rng=jax.random.fold_in(rng, 1))


def _evaluate(step_fn, params, batches, mesh) -> tuple[dict, EvalDocuments]:
    """Loss and bits per byte over all eval tokens, each with its standard error over eval documents,
    and the per-document sums they are computed from (a finished run saves them: eval_documents.json)."""
    per_batch = [step_fn(params, partitioning.shard_batch(partitioning.process_rows(model_inputs(batch)), mesh))
                 for batch in batches]
    nll, weight = (np.concatenate(rows).astype(np.float64) for rows in zip(*per_batch))
    doc, row_bytes = (np.concatenate([batch[key] for batch in batches]) for key in ("doc", "bytes"))
    documents = EvalDocuments.from_rows(doc, nll, weight, row_bytes)
    # An eval set of one document has no standard error (None, not NaN, in the JSON files).
    return {"eval_loss": documents.loss, "eval_loss_se": _finite_or_none(documents.loss_se),
            "eval_bpb": documents.bpb, "eval_bpb_se": _finite_or_none(documents.bpb_se)}, documents


def _sown_metrics(step_metrics: dict) -> dict:
    """Layer diagnostics (e.g. MoE expert load, a vector) as flat scalars for metrics.jsonl."""
    row = {}
    for key, value in step_metrics.items():
        if key in ("loss", "lr", "grad_norm", "update_skipped"):
            continue
        value = np.asarray(value)
        if value.ndim == 0:
            row[key] = float(value)
        else:
            row.update({f"{key}/{i}": float(v) for i, v in enumerate(value.ravel())})
    return row


def _read_rows(path: str) -> list[dict]:
    """metrics.jsonl's rows; a last line cut short by a kill or a full disk is left out."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def _truncate_metrics(path: str, last_step: int) -> list[dict]:
    """Drops rows logged after the checkpoint a run restarts from, so that none is duplicated
    (process 0 writes metrics.jsonl); returns the rows kept."""
    rows = [row for row in _read_rows(path) if row["step"] <= last_step]
    if os.path.exists(path) and jax.process_index() == 0:
        with open(path, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    return rows


def _all_streams(own: dict) -> dict:
    """The data position of every process's streams, in process order (a checkpoint stores it
    whole), from this process's own (PackedBatches.get_state)."""
    if jax.process_count() == 1:
        return own
    from jax.experimental import multihost_utils
    keys = ("epoch", "index", "offset")
    rows = np.array([[stream[key] for key in keys] for stream in own["streams"]], np.int32)
    gathered = np.asarray(multihost_utils.process_allgather(rows)).reshape(-1, len(keys))
    return {"streams": [dict(zip(keys, map(int, row))) for row in gathered]}


def _own_streams(every: dict, batches: PackedBatches) -> dict:
    """This process's part of a data position saved whole."""
    first = batches.first_stream
    return {"streams": every["streams"][first:first + len(batches.streams)]}


class Diverged(Exception):
    """The loss spiked again after every rollback allowed."""


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
    rules: tuple  # logical axis -> mesh axis (train/partitioning.py)
    data: loader.Data
    evals: list  # the held-out batches, built once
    order: Optional[DocumentOrder]  # the train documents' order per epoch; None: a seeded permutation
    suite: TaskSuite  # the tasks scored during training (evaluation/suite.py) ...
    tasks: dict  # ... and their prompted items, built once: {task: [item, ...]}

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


def held_out_batches(data: loader.Data, model_cfg: TransformerConfig, data_cfg: loader.DataConfig) -> list[dict]:
    """A run's eval set, built the same way by training and by the tools that score its checkpoints
    (evaluation.context_loss). CorpusError when the eval split is too small for one batch."""
    try:
        return eval_batches(data.eval_docs, data.tokenizer, data_cfg.seq_len, data_cfg.eval_rows_per_batch,
                            data_cfg.eval_batches, text_key=data_cfg.text_key,
                            **objective_options(model_cfg, data_cfg, data.tokenizer.vocab_size))
    except ValueError as error:
        raise CorpusError(str(error)) from error


def check_settings(model_cfg: TransformerConfig, data_cfg: loader.DataConfig, train_cfg: TrainConfig) -> int:
    """The checks of a run's settings that need neither its data nor its devices, made by train.main
    and, for every run it plans, by train.sweep (--dry_run included). Returns the run's steps.
    (Building each config checks its own values.)"""
    total_steps = train_cfg.total_steps(data_cfg.batch_size * data_cfg.seq_len)
    if data_cfg.batch_size % train_cfg.grad_accum_steps:
        raise ValueError(f"batch_size {data_cfg.batch_size} is not divisible by grad_accum_steps "
                         f"{train_cfg.grad_accum_steps}")
    if data_cfg.seq_len > model_cfg.max_len:
        raise ValueError(f"DataConfig.seq_len {data_cfg.seq_len} exceeds TransformerConfig.max_len "
                         f"{model_cfg.max_len}")
    return total_steps


def configure(workdir: str, start_over: bool = False) -> Setup:
    """Builds the run from the parsed gin config. Every error raised here is the user's input:
    ValueError / TypeError (bad values), CorpusError, WorkdirConfigMismatch."""
    model_cfg, data_cfg, train_cfg, suite = TransformerConfig(), loader.DataConfig(), TrainConfig(), TaskSuite()
    total_steps = check_settings(model_cfg, data_cfg, train_cfg)
    schedule = lr_schedule(total_steps)
    optimizer = make_optimizer(schedule)
    mesh = partitioning.make_mesh()
    rules = partitioning.logical_axis_rules()
    for name, rows in (("batch_size", data_cfg.batch_size), ("eval_batch_size", data_cfg.eval_rows_per_batch)):
        if rows % (mesh.shape["data"] * mesh.shape.get("expert", 1)):
            raise ValueError(f"DataConfig.{name} {rows} is not divisible by the mesh's data axis "
                             f"{dict(mesh.shape)}")
        partitioning.check_rows_split_over_processes(mesh, rows, f"DataConfig.{name}")
    check_workdir_config(workdir, None, start_over)  # early: before the corpus is built
    data = partitioning.on_process_zero_first(lambda: loader.load(data_cfg))
    # After the corpus is opened, so that its bindings (sources, sizes, cleaning) are recorded too.
    config = gin.operative_config_str()
    check_workdir_config(workdir, config, start_over)
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
    evals = held_out_batches(data, model_cfg, data_cfg)
    order = None
    if data.doc_sources is not None:
        order = DocumentOrder(data.doc_sources, data.source_names, data_cfg.seed, dict(data_cfg.mixture),
                              data_cfg.max_docs_per_source)
    elif data_cfg.mixture:
        raise ValueError("DataConfig.mixture needs a corpus whose documents name their source")
    tasks = suite.build(data)
    claim_workdir(workdir, config)  # only now, when every check has passed
    return Setup(workdir, model_cfg, data_cfg, train_cfg, total_steps, schedule, optimizer, mesh, rules, data,
                 evals, order, suite, tasks)


def run(workdir: str, start_over: bool = False, **train_options) -> dict:
    """Trains one model in workdir (resuming it if it holds this run) and returns its summary."""
    return train(configure(workdir, start_over), **train_options)


def train(setup: Setup, progress: bool = True, stop_after_steps: int = 0) -> dict:
    """Trains (or resumes) the run and returns its summary; a finished run's summary is returned as it is.

    progress: show a progress bar. stop_after_steps: stop there, checkpointed, as if interrupted.
    Neither changes what is computed, so neither is part of the gin config."""
    with workdir_lock(setup.workdir), Preemption() as preemption, partitioning.activate(setup.mesh, setup.rules):
        finished = read_summary(setup.workdir)  # read under the lock: another process may just have finished it
        if finished is not None:
            print(f"{setup.workdir} holds a finished run: its summary.json is kept as it is", file=sys.stderr)
            return finished
        return _Run(setup, progress).train(stop_after_steps, preemption)


def _finite_or_none(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def flops_per_text_token(model_cfg: TransformerConfig, data_cfg: loader.DataConfig,
                         params_active_nonembedding: int) -> dict:
    """Training FLOPs per token of text read, in every count of model/accounting.py; the trainer's
    summaries and the sweep planner both use it. An encoder-decoder's counts are per decoder token
    (its targets), scaled by decoder tokens per text token; span corruption fixes both lengths."""
    encoder_len, decoder_len = None, data_cfg.seq_len
    if model_cfg.architecture == "encoder_decoder":
        encoder_len, decoder_len = corrupted_lengths(data_cfg.seq_len, data_cfg.noise_density,
                                                     data_cfg.mean_noise_span_length)
    per_decoder_token = accounting.training_flops_per_token(model_cfg, decoder_len, params_active_nonembedding,
                                                            encoder_len)
    return {name: value * decoder_len / data_cfg.seq_len for name, value in per_decoder_token.items()}


class _Run:
    """One run between its steps: the state, the data position, pending metrics and the hooks' work.

    `steps` trains and yields step numbers; `log`, `evaluate` and `checkpoint` are the hooks that
    `train` fires on them; `roll_back` answers a loss spike."""

    def __init__(self, setup: Setup, progress: bool):
        self.setup, self.cfg, self.mesh = setup, setup.train_cfg, setup.mesh
        # Read now: commits that land while the run trains are not the code it runs.
        self.code_revision = provenance.code_revision()
        data_cfg, train_cfg = setup.data_cfg, setup.train_cfg
        self.model = build_model(setup.model_cfg)
        example = {k: jnp.asarray(v[:1]) for k, v in model_inputs(setup.evals[0]).items()}
        init = partial(create_state, model=self.model, optimizer=setup.optimizer, example_batch=example)
        rng = jax.random.PRNGKey(train_cfg.seed)
        state_shardings = partitioning.logical_shardings(jax.eval_shape(partial(init, unbox=False), rng), self.mesh,
                                                         setup.rules)
        self.fresh_state = lambda: jax.jit(partial(init, unbox=True), out_shardings=state_shardings)(rng)
        self.abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                           jax.eval_shape(partial(init, unbox=True), rng), state_shardings)
        self.step_fn = jax.jit(partial(train_step, model=self.model, optimizer=setup.optimizer,
                                       schedule=setup.schedule, z_loss=train_cfg.z_loss,
                                       accum_steps=train_cfg.grad_accum_steps),
                               out_shardings=(state_shardings, None), donate_argnums=(0,))
        # Per-row results replicated, so that every process can read all of them.
        self.eval_fn = jax.jit(partial(eval_step, model=self.model),
                               out_shardings=NamedSharding(self.mesh, PartitionSpec()))
        self.batches = PackedBatches(setup.data.train_docs, setup.data.tokenizer, data_cfg.seq_len,
                                     data_cfg.batch_size, seed=data_cfg.seed, text_key=data_cfg.text_key,
                                     order=setup.order, shard=(jax.process_index(), jax.process_count()),
                                     tokenized=setup.data.train_tokens, **setup.objective)
        self.checkpointer = Checkpointer(os.path.join(setup.workdir, "checkpoints"), train_cfg.keep_checkpoints)
        self.metrics_path = os.path.join(setup.workdir, "metrics.jsonl")
        self.tokens_per_step = data_cfg.batch_size * data_cfg.seq_len
        self.guard = SpikeGuard(train_cfg.spike_factor, train_cfg.spike_window)
        self.timer = StepTimer()
        self.progress, self.bar = progress, None
        # Before the input pipeline's thread starts: it would take cores from the measurement.
        self.peak, self.peak_source = peak_flops_per_device(setup.model_cfg.dtype)
        self.initial_data_state = self.batches.get_state()
        self._restore()
        kept = _truncate_metrics(self.metrics_path, self.step)
        self.last_row = next((row for row in reversed(kept) if "loss" in row), {})
        self.skipped_updates = sum(bool(row.get("update_skipped")) for row in kept)
        self.rollbacks = sum(row.get("event") == "rollback" for row in kept)
        self.last_eval, self.final_documents = {}, None
        self.final_task_scores, self.task_eval_s = None, 0.0
        counts = accounting.param_counts(self.state.params, setup.model_cfg)
        self.counts = counts
        self.flops = flops_per_text_token(setup.model_cfg, setup.data_cfg, counts["params_active_nonembedding"])
        self.writer = MetricsWriter(setup.workdir)

    def _restore(self, skip_batches: int = 0) -> None:
        """The state and data position of the newest intact checkpoint (or of step 0), then
        skip_batches batches further on."""
        restored = self.checkpointer.restore_latest(self.abstract_state)
        if restored is None:
            self.state, self.step = self.fresh_state(), 0
            self.batches.set_state(self.initial_data_state)
        else:
            self.step, self.state, data_state = restored
            self.batches.set_state(_own_streams(data_state, self.batches))
        for _ in range(skip_batches):
            self.batches.next_batch()
        self.restored = (self.step, skip_batches)
        self.data_state = self.batches.get_state()
        self.pending = []
        self.prefetch = Prefetcher(self.batches)

    def steps(self, end_step: int) -> Iterator[int]:
        """Trains up to end_step, yielding each step's number once it has been dispatched."""
        while self.step < end_step:
            wait_start = time.perf_counter()
            batch, self.data_state = self.prefetch.next()
            data_wait = time.perf_counter() - wait_start
            self.state, metrics = self.step_fn(self.state, partitioning.shard_batch(batch, self.mesh))
            self.step += 1
            self.pending.append((self.step, metrics))
            if not self.timer.started:  # this step compiled: keep it out of the timings
                jax.block_until_ready(metrics)
                self.timer.begin()
            else:
                self.timer.step(data_wait)
            yield self.step

    def log(self, step: int) -> None:
        """Writes the pending steps' rows, after checking their losses (raises Spike)."""
        if not self.pending:
            return
        jax.block_until_ready(self.pending[-1][1])
        step_time, data_wait = self.timer.close_window()
        window = []
        for s, metrics in self.pending:
            values = {"loss": float(metrics["loss"]), "lr": float(metrics["lr"]),
                      "grad_norm": _finite_or_none(float(metrics["grad_norm"])), **_sown_metrics(metrics)}
            self.guard.check(s, values["loss"])
            if bool(metrics["update_skipped"]):
                values["update_skipped"] = True
            window.append((s, values))
        for row in train_rows(window, self.tokens_per_step, step_time, data_wait, self.flops["model"],
                              self.peak * jax.device_count()):
            self.skipped_updates += bool(row.get("update_skipped"))
            self.writer.write(row)
            self.last_row = row
        self.pending = []
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.last_row['loss']:.3f}", tok_s=f"{self.last_row['tokens_per_s'] or 0:.0f}",
                                 refresh=False)

    def evaluate(self, step: int) -> None:
        with self.timer.pause():
            eval_metrics, documents = _evaluate(self.eval_fn, self.state.params, self.setup.evals, self.mesh)
        self.last_eval = {"step": step, **eval_metrics}
        self.writer.write(self.last_eval)
        if step == self.setup.total_steps:
            self.final_documents = dataclasses.replace(documents, step=step)

    def score_tasks(self, step: int) -> None:
        with self.timer.pause():
            scores, seconds = score_suite(self.model, self.state.params, self.setup.data.tokenizer, self.setup.tasks,
                                          self.setup.suite.shots)
        self.task_eval_s += seconds
        self.writer.write({"step": step, **metrics_row(scores), "task_eval_s": seconds})
        if step == self.setup.total_steps:
            self.final_task_scores = scores

    def checkpoint(self, step: int) -> None:
        """Saves the state, once the losses that led to it have passed the spike check."""
        self.log(step)
        if self.checkpointer.latest_step() != step:
            with self.timer.pause():
                self.checkpointer.save(step, self.state, _all_streams(self.data_state))

    def roll_back(self, spike: Spike) -> None:
        """Back to the last good checkpoint, past the batches since it (the bad one among them)."""
        self.rollbacks += 1
        if self.rollbacks > self.cfg.max_rollbacks:
            raise Diverged(f"{spike.reason} at step {spike.step} after {self.cfg.max_rollbacks} rollbacks; no "
                           f"summary.json written (lower lr_schedule.peak_lr, or raise TrainConfig.max_rollbacks)")
        # The batches trained since the checkpoint restarted from (the bad one last), past those
        # already skipped if this checkpoint was restarted from before.
        restart_step = self.checkpointer.latest_step() or 0
        already = self.restored[1] if self.restored[0] == restart_step else 0
        skipped = already + spike.step - restart_step + self.cfg.skip_batches
        with self.timer.pause():
            self.prefetch.close()
            self._restore(skipped)
        _truncate_metrics(self.metrics_path, self.step)
        event = {"step": self.step, "event": "rollback", "spike_step": spike.step,
                 "spike_loss": _finite_or_none(spike.loss), "reason": spike.reason, "skipped_batches": skipped,
                 "rollback": self.rollbacks}
        self.writer.write(event)
        self.last_row = next((row for row in reversed(_read_rows(self.metrics_path)) if "loss" in row), {})
        if jax.process_index() == 0:
            print(f"warning: {spike.reason} at step {spike.step}: rolled back to step {self.step} and skipped "
                  f"{skipped} batches (rollback {self.rollbacks} of at most {self.cfg.max_rollbacks})", file=sys.stderr)

    def train(self, stop_after_steps: int, preemption: Preemption) -> dict:
        setup, cfg = self.setup, self.cfg
        end_step = min(setup.total_steps, stop_after_steps or setup.total_steps)
        hooks = Hooks()
        hooks.add(cfg.log_every, self.log)
        hooks.add(cfg.eval_every, self.evaluate, at_interrupt=False)
        if setup.tasks:
            hooks.add(setup.suite.every, self.score_tasks, at_interrupt=False)
        hooks.add(cfg.checkpoint_every, self.checkpoint)
        run_start = time.perf_counter()
        self.bar = progress_bar(setup.total_steps, self.step, self.progress)
        try:
            while True:
                try:
                    for step in self.steps(end_step):
                        hooks.step(step)
                        self.bar.update(1)
                        if preemption.requested:
                            break
                    hooks.force(self.step, interrupted=self.step < setup.total_steps)
                    break
                except Spike as spike:
                    self.roll_back(spike)
                    hooks.rewind(self.step)
                    self.bar.reset(setup.total_steps)
                    self.bar.update(self.step)
        finally:
            self.bar.close()
            self.prefetch.close()
            self.checkpointer.close()
            self.writer.close()
        if preemption.requested and self.step < setup.total_steps:
            print(f"stopped by {preemption.requested} at step {self.step}, checkpointed: rerun the same command "
                  f"to resume", file=sys.stderr)
        summary = self.summary(time.perf_counter() - run_start)
        if self.step == setup.total_steps and jax.process_index() == 0:
            if self.final_documents is not None:  # before summary.json: a run with a summary has its documents
                self.final_documents.save(setup.workdir)
            with open(os.path.join(setup.workdir, "summary.json"), "w") as f:
                json.dump(summary, f, indent=1, allow_nan=False)
        return summary

    def summary(self, wall_s: float) -> dict:
        setup, data = self.setup, self.setup.data
        tokens = self.step * self.tokens_per_step
        timer = self.timer
        tokens_per_s = timer.total_steps * self.tokens_per_step / timer.total_s if timer.total_s else None
        peak_total = self.peak * jax.device_count()
        mfu = tokens_per_s * self.flops["model"] / peak_total if tokens_per_s else None
        return {
            **self.counts,
            "tokens": tokens,
            "flops_kaplan": self.flops["kaplan"] * tokens,
            "flops_chinchilla": self.flops["chinchilla"] * tokens,
            "final_loss": self.last_row.get("loss"), "final_eval_loss": self.last_eval.get("eval_loss"),
            "final_eval_bpb": self.last_eval.get("eval_bpb"), "final_eval_loss_se": self.last_eval.get("eval_loss_se"),
            "final_eval_bpb_se": self.last_eval.get("eval_bpb_se"),
            "eval_documents": len(np.unique(np.concatenate([b["doc"] for b in setup.evals]))),
            "eval_tokens": int(sum(b["weights"].sum() for b in setup.evals)),
            "wall_s": wall_s, "steps": self.step,
            "mfu": mfu, "mfu_note": mfu_note(mfu),
            "model_flops_per_s": tokens_per_s and tokens_per_s * self.flops["model"],
            "tokens_per_s": tokens_per_s, "pipeline_tokens_per_s": _finite_or_none(self.prefetch.tokens_per_s),
            "peak_flops_per_device": self.peak, "peak_flops_source": self.peak_source,
            "devices": jax.device_count(),
            "skipped_updates": self.skipped_updates, "rollbacks": self.rollbacks,
            "unigram_eval_loss": unigram_loss(data.token_stats["token_counts"], setup.evals),
            "corpus_train_tokens": data.token_stats["train_tokens"], "corpus": data.name,
            "objective": setup.objective["objective"],
            **({"tasks": self.final_task_scores, "task_eval_s": self.task_eval_s,
                "task_eval_fraction": self.task_eval_s / wall_s if wall_s else None} if setup.tasks else {}),
            **provenance.fingerprints(data.fingerprint, data.tokenizer.path, self.code_revision),
            # Documents started, the one being read included.
            "source_epochs": setup.order and setup.order.source_epochs(
                [(s["epoch"], s["index"] + (s["offset"] > 0)) for s in _all_streams(self.data_state)["streams"]]),
        }
