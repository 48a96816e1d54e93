"""Trains one model: python -m train.main --gin_file=F [--gin_bindings='a.b = v'] [--gin.a.b=v] --workdir=DIR

gin files are looked up relative to the working directory, then configs/.
Bad input (a missing gin file, an unknown or malformed binding, a bad value,
a missing, empty or damaged corpus, a workdir that holds another config) ends
with one line on stderr and exit status 2. A run that diverged past its
rollbacks, found no restorable checkpoint or filled the disk ends with one line
and exit status 1; SIGTERM or Ctrl-C checkpoints and exits 0 (README: "The loop,
and what survives what").
"""
from __future__ import annotations

import errno
import logging
import os
import sys

import cli


def parse_args(argv: list[str]):
    parser = cli.ArgumentParser(prog="python -m train.main", description=__doc__.splitlines()[0], gin="required")
    parser.add_argument("--workdir", type=cli.directory, required=True)
    parser.add_argument("--start_over", action="store_true",
                        help="if the workdir holds a run with another config, move it aside and start afresh")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (logs, CI)")
    parser.add_argument("--stop_after_steps", type=cli.whole_number(0), default=0,
                        help="stop after this step, checkpointed, as if interrupted (a rerun resumes)")
    return parser.parse_args(argv)


def parse_gin(files: list[str], bindings: list[str]) -> None:
    """Imports every configurable of model, data and train, then parses."""
    import train.trainer  # noqa: F401  registers the configurables
    cli.parse_gin(files, bindings)


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from absl import logging as absl_logging
    # tfds narrates every step at INFO/WARNING; orbax logs each failed background save with its
    # traceback at ERROR before raising it, and the raised error is reported here, in one line.
    absl_logging.set_verbosity(absl_logging.FATAL)
    import jax

    from data.corpus import CorpusError
    from train import partitioning
    from train.checkpoints import CheckpointError
    from train.loop import stop_with_runner
    from train.run_config import WorkdirBusy, WorkdirConfigMismatch
    from train import trainer

    stop_with_runner()
    partitioning.maybe_initialize_distributed()
    parse_gin(args.gin_file, args.gin_bindings)
    try:
        setup = trainer.configure(args.workdir, start_over=args.start_over)
    except (WorkdirConfigMismatch, OSError) as error:
        raise cli.InputError(str(error)) from None
    except CorpusError as error:
        raise cli.InputError(f"corpus: {error}") from None
    except (ValueError, TypeError) as error:
        raise cli.InputError(f"bad value: {error}") from None
    try:
        summary = trainer.train(setup, progress=not args.no_progress, stop_after_steps=args.stop_after_steps)
    except WorkdirBusy as error:
        raise cli.InputError(str(error)) from None
    except (trainer.Diverged, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        print(f"error: no space left on device writing {error.filename or args.workdir}; the last complete "
              f"checkpoint is kept: free some space and rerun the same command to resume", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)  # not through atexit: TensorBoard's writer would fail again, with tracebacks, on the full disk
    except KeyboardInterrupt:
        print("interrupted at once (a second Ctrl-C): rerun the same command to resume from the last checkpoint",
              file=sys.stderr)
        return 130
    if jax.process_index() == 0 and summary.get("steps") == setup.total_steps:
        report(summary)
    return 0


def report(summary: dict) -> None:
    def fmt(value, spec):
        return format(value, spec) if isinstance(value, (int, float)) else "n/a"
    print(f"params: {summary['params_total']:,} total, {summary['params_nonembedding']:,} non-embedding")
    print(f"steps {summary['steps']}, tokens {summary['tokens']:,}, wall {fmt(summary['wall_s'], '.1f')} s, "
          f"{fmt(summary['tokens_per_s'], ',.0f')} tokens/s (input pipeline "
          f"{fmt(summary['pipeline_tokens_per_s'], ',.0f')} tokens/s)")
    flops_per_s = summary.get("model_flops_per_s")
    mfu = fmt(summary["mfu"], ".1%") if not summary.get("mfu_note") else f"not reported: {summary['mfu_note']}"
    print(f"model FLOP/s {fmt(flops_per_s and flops_per_s / 1e9, ',.1f')} G; MFU {mfu} (against "
          f"{fmt(summary['peak_flops_per_device'] / 1e9, ',.1f')} GFLOP/s per device x {summary['devices']}: "
          f"{summary['peak_flops_source']})")
    if summary.get("source_epochs"):
        print("epochs per source: " + ", ".join(f"{name} {epochs:.3g}" for name, epochs in summary["source_epochs"].items()))
    loss, unigram = summary["final_eval_loss"], summary["unigram_eval_loss"]
    if loss is not None:
        print(f"final eval loss {loss:.4f} nats/token ({summary['final_eval_bpb']:.4f} bits/byte); "
              f"unigram entropy {unigram:.4f} nats/token; {1 - loss / unigram:.1%} below it")


if __name__ == "__main__":
    sys.exit(main())
