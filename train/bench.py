"""Times a run's training step alone and inside the loop: python -m train.bench --gin_file=F [--steps=K] [--gin.a.b=v]

Builds the run as train.main would (in a temporary workdir, removed afterwards) and prints one JSON
object: the compile time of the step; tokens/s of the bare jitted step, repeated on one batch
already on the devices; tokens/s of train.main's loop over the same number of steps (input
pipeline, hooks, metrics, a checkpoint at the end), and the loop's fraction of the bare step;
model FLOP/s and MFU of each (model/accounting.py's model count, train/metrics.py's peak); and the
compiled step's memory (arguments, outputs, temporaries). Both timings leave out the first step.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings

import cli


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m train.bench", description=__doc__.splitlines()[0], gin=True)
    parser.add_argument("--steps", type=cli.whole_number(2), default=50, help="timed steps of each (default 50)")
    args = parser.parse_args(argv)
    if not args.gin_file:
        parser.error("at least one --gin_file is required")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
    import flax.linen as nn
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
        with warnings.catch_warnings(), setup.mesh, nn.logical_axis_rules(setup.rules):
            warnings.simplefilter("ignore", DeprecationWarning)  # `with mesh:`, as train/trainer.py uses it
            run = trainer._Run(setup, progress=False)
            batch, _ = run.prefetch.next()
            run.prefetch.close()
            batch = partitioning.shard_batch(batch, setup.mesh)
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
    tokens_per_step = setup.data_cfg.batch_size * setup.data_cfg.seq_len
    flops = trainer.flops_per_text_token(setup.model_cfg, setup.data_cfg, summary["params_active_nonembedding"])
    peak = summary["peak_flops_per_device"] * summary["devices"]
    step_tokens_per_s, loop_tokens_per_s = tokens_per_step / step_s, summary["tokens_per_s"]

    def rates(tokens_per_s):
        model_flops = tokens_per_s * flops["model"]
        return {"tokens_per_s": tokens_per_s, "model_flops_per_s": model_flops, "mfu": model_flops / peak,
                "mfu_note": mfu_note(model_flops / peak)}
    print(json.dumps({
        "gin_files": args.gin_file, "steps": args.steps, "compile_s": compile_s,
        "step": rates(step_tokens_per_s), "loop": rates(loop_tokens_per_s),
        "loop_fraction_of_step": loop_tokens_per_s / step_tokens_per_s,
        "peak_flops_per_device": summary["peak_flops_per_device"], "peak_flops_source": summary["peak_flops_source"],
        "devices": summary["devices"], "params_total": summary["params_total"],
        "memory_bytes": {"arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
                         "temporaries": memory.temp_size_in_bytes},
        "code_revision": summary["code_revision"],
    }, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
