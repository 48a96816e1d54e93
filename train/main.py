"""Trains one model: python -m train.main --gin_file=F [--gin_bindings='a.b = v'] [--gin.a.b=v] --workdir=DIR

gin files are looked up relative to the working directory, then configs/.
Bad input (a missing gin file, an unknown or malformed binding, a bad value,
a missing or empty corpus, a workdir that holds another config) ends with one
line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.main", description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", action="append", default=[], help="gin file; repeatable")
    parser.add_argument("--gin_bindings", action="append", default=[], help="a gin binding 'a.b = v'; repeatable")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--start_over", action="store_true",
                        help="if the workdir holds a run with another config, move it aside and start afresh")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (logs, CI)")
    parser.add_argument("--stop_after_steps", type=int, default=0,
                        help="stop after this step, checkpointed, as if interrupted (a rerun resumes)")
    args, rest = parser.parse_known_args(argv)
    for extra in rest:  # --gin.a.b=v is shorthand for --gin_bindings='a.b = v'
        if not extra.startswith("--gin.") or "=" not in extra:
            parser.error(f"unrecognized argument {extra!r}")
        key, value = extra[len("--gin."):].split("=", 1)
        args.gin_bindings.append(f"{key} = {value}")
    if not args.gin_file:
        parser.error("at least one --gin_file is required")
    return args


def resolve_gin_file(name: str) -> str:
    for candidate in (name, os.path.join(CONFIGS_DIR, name)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise FileNotFoundError(f"gin file {name!r} not found (looked in the working directory and {CONFIGS_DIR})")


def parse_gin(files: list[str], bindings: list[str]) -> None:
    """Imports every configurable, then parses; gin resolves includes against configs/ too."""
    import gin

    import train.trainer  # noqa: F401  registers the configurables of model, data and train
    gin.add_config_file_search_path(CONFIGS_DIR)
    # gin's package-resource reader logs an ERROR for every include it then finds in configs/.
    logging.getLogger().setLevel(logging.CRITICAL)
    try:
        gin.parse_config_files_and_bindings([resolve_gin_file(f) for f in files], bindings)
    finally:
        logging.getLogger().setLevel(logging.WARNING)


def fail(message: str) -> int:
    """One line: gin appends "In call to configurable ..." lines to the errors it passes on."""
    print(f"error: {message.splitlines()[0]}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)  # tfds narrates every step at INFO/WARNING
    import jax

    from data.corpus import CorpusError
    from train import partitioning
    from train.run_config import WorkdirConfigMismatch
    from train import trainer

    partitioning.maybe_initialize_distributed()
    try:
        parse_gin(args.gin_file, args.gin_bindings)
    except FileNotFoundError as error:
        return fail(str(error))
    except (ValueError, SyntaxError, TypeError, IOError) as error:  # gin: unknown name, bad syntax, missing include
        return fail(f"bad gin config: {error}")
    try:
        setup = trainer.configure(args.workdir, start_over=args.start_over)
    except WorkdirConfigMismatch as error:
        return fail(str(error))
    except CorpusError as error:
        return fail(f"corpus: {error}")
    except (ValueError, TypeError) as error:
        return fail(f"bad value: {error}")
    summary = trainer.train(setup, progress=not args.no_progress, stop_after_steps=args.stop_after_steps)
    if jax.process_index() == 0:
        report(summary)
    return 0


def report(summary: dict) -> None:
    def fmt(value, spec):
        return format(value, spec) if isinstance(value, (int, float)) else "n/a"
    print(f"params: {summary['params_total']:,} total, {summary['params_nonembedding']:,} non-embedding")
    print(f"steps {summary['steps']}, tokens {summary['tokens']:,}, wall {fmt(summary['wall_s'], '.1f')} s, "
          f"{fmt(summary['tokens_per_s'], ',.0f')} tokens/s (input pipeline "
          f"{fmt(summary['pipeline_tokens_per_s'], ',.0f')} tokens/s), MFU {fmt(summary['mfu'], '.2%')} "
          f"of {fmt(summary['peak_flops_per_device'] / 1e9, '.1f')} GFLOP/s per device "
          f"({summary['peak_flops_source']})")
    if summary.get("source_epochs"):
        print("epochs per source: " + ", ".join(f"{name} {epochs:.3g}" for name, epochs in summary["source_epochs"].items()))
    loss, unigram = summary["final_eval_loss"], summary["unigram_eval_loss"]
    if loss is not None:
        print(f"final eval loss {loss:.4f} nats/token ({summary['final_eval_bpb']:.4f} bits/byte); "
              f"unigram entropy {unigram:.4f} nats/token; {1 - loss / unigram:.1%} below it")


if __name__ == "__main__":
    sys.exit(main())
