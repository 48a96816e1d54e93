"""Builds a run's data once: python -m data.prepare --gin_file=F [--gin_bindings='a.b = v'] [--json=PATH]

Reads the same gin files as train.main and prepares what that run will read:
the corpus (through the cleaning pipeline, data/clean), its sentencepiece
tokenizer and the train split's token statistics. Everything is cached, so a
later train.main starts at once; running it again only prints the reports:
what every cleaning stage did to every source, and the documents, bytes and
tokens each source left in each split.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def token_table(data) -> str:
    """Documents, bytes and tokens per source in the train split; tokens count the whole split."""
    lines = [f"{'source':<16}{'split':<12}{'documents':>11}{'MB':>9}"]
    for source, splits in sorted(data.source_stats.items()):
        for split, entry in sorted(splits.items()):
            lines.append(f"{source:<16}{split:<12}{entry['documents']:>11,}{entry['bytes'] / 1e6:>9.2f}")
    lines.append(f"train split: {data.token_stats['train_tokens']:,} tokens under the "
                 f"{data.tokenizer.vocab_size}-piece tokenizer")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", action="append", default=[], help="gin file; repeatable")
    parser.add_argument("--gin_bindings", action="append", default=[], help="a gin binding 'a.b = v'; repeatable")
    parser.add_argument("--json", help="also write the cleaning report as JSON to this path")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)

    from data import corpus, loader
    from train.main import fail, parse_gin
    try:
        parse_gin(args.gin_file or ["base.gin"], args.gin_bindings)
        cfg = loader.DataConfig()
    except FileNotFoundError as error:
        return fail(str(error))
    except (ValueError, SyntaxError, TypeError, IOError) as error:
        return fail(f"bad gin config: {error}")
    start = time.perf_counter()
    try:
        data = loader.load(cfg)
    except corpus.CorpusError as error:
        return fail(f"corpus: {error}")
    seconds = time.perf_counter() - start
    if not cfg.tfds_name:
        builder = corpus.build_corpus(data_dir=cfg.data_dir)
        print(corpus.clean_report_text(builder) or "(corpus built without cleaning)")
        if args.json:
            with open(os.path.join(builder.data_dir, "clean_report.json")) as source, open(args.json, "w") as out:
                json.dump(json.load(source), out, indent=1)
    print(token_table(data))
    print(f"{data.name} ready in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
