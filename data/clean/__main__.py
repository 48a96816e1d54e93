"""Cleans raw sources and prints the report and the throughput.

    python -m data.clean --sources python_stdlib python_docs --workers 1 --preload
    python -m data.clean --workers 2 --json /tmp/clean_report.json --gin_bindings "NearDedup.threshold = 0.7"

Documents are split into train and validation as the corpus builder splits
them (data.corpus.is_validation); validation documents are the held-out text.
Only the train documents are cleaned and counted in the throughput.
"""
from __future__ import annotations

import resource
import sys

import cli
from data import corpus, sources
from data.clean.pipeline import CleaningPipeline


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pipeline's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m data.clean", description=__doc__.split("\n")[0], gin=True)
    parser.add_argument("--sources", nargs="+", default=list(corpus.DEFAULT_SOURCES))
    parser.add_argument("--validation_percent", type=float, default=1.0)
    parser.add_argument("--workers", type=cli.whole_number(0), default=0, help="0: one per CPU core")
    parser.add_argument("--json", help="also write the report as JSON to this file")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--preload", action="store_true",
                        help="read the documents into memory first, so that the timing counts the cleaning only")
    args = parser.parse_args(argv)
    if not 0 <= args.validation_percent <= 100:
        parser.error(f"--validation_percent must be within [0, 100], got {args.validation_percent}")
    # base.gin binds the model's and the trainer's configurables too: only the cleaning stages' are read.
    cli.parse_gin(args.gin_file, args.gin_bindings, skip_unknown=True)
    try:
        present, missing = sources.available(args.sources)
        pipeline = CleaningPipeline(workers=args.workers, progress=args.progress)
    except (ValueError, TypeError) as error:  # an unknown source, a bad stage setting
        raise cli.InputError(str(error)) from None
    if missing:
        print(f"leaving out sources that are not installed: {missing}", file=sys.stderr)

    def split(validation: bool):
        for name in present:
            for doc in sources.iter_documents(name):
                if corpus.is_validation(doc, args.validation_percent) == validation:
                    yield doc

    heldout = list(split(True))
    train = list(split(False)) if args.preload else split(False)
    cpu_before = _cpu_seconds()
    kept = sum(1 for _ in pipeline.run(train, heldout=heldout))
    cpu = _cpu_seconds() - cpu_before
    report = pipeline.report
    print(report.to_text())
    first, last = report.stage_names[0], report.stage_names[-1]
    bytes_in = report.totals(first)["bytes_in"]
    print(f"\n{kept} documents kept, {report.totals(last)['bytes_out'] / 1e6:.1f} of {bytes_in / 1e6:.1f} MB; "
          f"{report.seconds:.1f} s with {pipeline.workers} worker(s): {bytes_in / 1e6 / report.seconds:.2f} MB/s; "
          f"{cpu:.1f} CPU-seconds in all processes: {bytes_in / 1e6 / cpu:.2f} MB per CPU-second")
    if args.json:
        with open(args.json, "w") as f:
            f.write(report.to_json(indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
