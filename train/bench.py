"""Times a run's training step alone, inside the loop and, with --torch, against a PyTorch reference.

    python -m train.bench --gin_file=F [--steps=K] [--torch] [--gin.a.b=v]

Builds the run as train.main would (in a temporary workdir, removed afterwards) and prints one JSON
object: the compile time of the step; tokens/s of the bare jitted step, repeated on one batch
already on the devices; tokens/s of train.main's loop over the same number of steps (input
pipeline, hooks, metrics, a checkpoint at the end), and the loop's fraction of the bare step;
model FLOP/s and MFU of each (model/accounting.py's model count, train/metrics.py's peak); and the
compiled step's memory (arguments, outputs, temporaries). Both timings leave out the first step.

--torch adds a PyTorch reference (train/bench_torch.py): the same model from the same initial
parameters, trained on the same batch with torch.optim.AdamW set up as train/optimizer.py sets up
optax's, in the run's micro-batches (TrainConfig.grad_accum_steps), in float32, on all the
machine's cores, under torch.compile and eagerly, after a warm-up; its tokens/s, and the ratios of
the JAX step's and loop's to them. PyTorch is an extra: pip install -e .[torch]. Its OpenMP
threads spin while they wait (libgomp's default): on a machine other jobs share, a descheduled
thread stalls the others, which cost it tenfold on a shared 2-core CPU. OMP_WAIT_POLICY=PASSIVE
makes them sleep instead; the JSON records the policy.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import cli

TORCH_MISSING = "--torch needs PyTorch: pip install torch==2.13.0"


def _bench_torch():
    """train.bench_torch, or one line if PyTorch (not a dependency by default) is not installed."""
    try:
        from train import bench_torch
    except ImportError:
        raise cli.InputError(TORCH_MISSING) from None
    return bench_torch


def _torch_rates(bench_torch, setup, params, batch, steps: int) -> dict:
    """tokens/s of the PyTorch reference under each of bench_torch.MODES, from the same params and batch."""
    train_cfg = setup.train_cfg
    return {mode: bench_torch.tokens_per_s(setup.model_cfg, params, batch, steps, mode, setup.schedule,
                                           accum_steps=train_cfg.grad_accum_steps, z_loss=train_cfg.z_loss,
                                           **bench_torch.adamw_settings())
            for mode in bench_torch.MODES}


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m train.bench", description=__doc__.splitlines()[0],
                                gin="required")
    parser.add_argument("--steps", type=cli.whole_number(2), default=50, help="timed steps of each (default 50)")
    parser.add_argument("--torch", action="store_true", help="also time a PyTorch reference loop (needs torch)")
    args = parser.parse_args(argv)
    bench_torch = _bench_torch() if args.torch else None
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
    import jax

    from train import partitioning, trainer
    from train.main import parse_gin
    from train.metrics import mfu_note
    parse_gin(args.gin_file, [*args.gin_bindings, f"TrainConfig.train_steps = {args.steps + 1}",
                              "TrainConfig.train_tokens = 0", f"TrainConfig.checkpoint_every = {args.steps + 1}"])
    with tempfile.TemporaryDirectory(prefix="train_bench_") as workdir:
        try:
            setup = trainer.configure(workdir)
        except (ValueError, TypeError) as error:
            raise cli.InputError(f"bad value: {error}") from None
        if bench_torch:
            try:
                bench_torch.check_supported(setup.model_cfg)
                bench_torch.adamw_settings()
            except ValueError as error:
                raise cli.InputError(f"--torch: {error}") from None
        with partitioning.activate(setup.mesh, setup.rules):
            run = trainer._Run(setup, progress=False)
            host_batch, _ = run.prefetch.next()
            run.prefetch.close()
            # for --torch, copied now: the step donates the state
            initial_params = jax.device_get(run.state.params) if bench_torch else None
            batch = partitioning.shard_batch(host_batch, setup.mesh)
            start = time.perf_counter()
            compiled = run.step_fn.lower(run.state, batch).compile()
            compile_s = time.perf_counter() - start
            state, metrics = compiled(run.state, batch)
            jax.block_until_ready(metrics)
            start = time.perf_counter()
            for _ in range(args.steps):
                state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
            step_s = (time.perf_counter() - start) / args.steps
            memory = compiled.memory_analysis()
            run.checkpointer.close()
            run.writer.close()
            del state, run
        summary = trainer.train(setup, progress=False)  # a fresh run of steps + 1 in the same workdir
    torch_rates = _torch_rates(bench_torch, setup, initial_params, host_batch, args.steps) if bench_torch else None
    tokens_per_step = setup.data_cfg.batch_size * setup.data_cfg.seq_len
    flops = trainer.flops_per_text_token(setup.model_cfg, setup.data_cfg, summary["params_active_nonembedding"])
    peak = summary["peak_flops_per_device"] * summary["devices"]
    step_tokens_per_s, loop_tokens_per_s = tokens_per_step / step_s, summary["tokens_per_s"]

    def rates(tokens_per_s):
        model_flops = tokens_per_s * flops["model"]
        return {"tokens_per_s": tokens_per_s, "model_flops_per_s": model_flops, "mfu": model_flops / peak,
                "mfu_note": mfu_note(model_flops / peak)}
    report = {
        "gin_files": args.gin_file, "steps": args.steps, "compile_s": compile_s,
        "step": rates(step_tokens_per_s), "loop": rates(loop_tokens_per_s),
        "loop_fraction_of_step": loop_tokens_per_s / step_tokens_per_s,
        "peak_flops_per_device": summary["peak_flops_per_device"], "peak_flops_source": summary["peak_flops_source"],
        "devices": summary["devices"], "params_total": summary["params_total"],
        "memory_bytes": {"arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
                         "temporaries": memory.temp_size_in_bytes},
        "code_revision": summary["code_revision"],
    }
    if torch_rates:
        report["torch"] = {
            "version": bench_torch.torch.__version__, "threads": bench_torch.machine_cores(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            **{mode: rates(tokens_per_s) for mode, tokens_per_s in torch_rates.items()},
            "jax_loop_over_torch_compile": loop_tokens_per_s / torch_rates["compile"],
            "jax_step_over_torch_compile": step_tokens_per_s / torch_rates["compile"],
            "jax_step_over_torch_eager": step_tokens_per_s / torch_rates["eager"],
        }
    print(json.dumps(report, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
