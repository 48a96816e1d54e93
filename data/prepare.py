"""Builds a run's data once: python -m data.prepare --gin_file=F [--gin_bindings='a.b = v'] [--json=PATH]

Reads the same gin files as train.main and prepares what that run will read:
the corpus (through the cleaning pipeline, data/clean), its sentencepiece
tokenizer and the train split's token statistics. Everything is cached, so a
later train.main starts at once; running it again only prints the reports:
what every cleaning stage did to every source (documents and bytes, and tokens
estimated from each source's tokens per byte under the run's tokenizer), and
the documents, bytes and tokens each source left in each split.
"""
from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np

import cli


def tokens_per_byte(data, sample_bytes: int = 1_000_000) -> dict:
    """Each source's tokens (EOS included) per UTF-8 byte, on up to sample_bytes of its train documents."""
    rates = {}
    for s, name in enumerate(data.source_names):
        texts, size = [], 0
        for i in np.flatnonzero(data.doc_sources == s):
            texts.append(data.train_docs[int(i)]["text"].decode("utf-8", errors="replace"))
            size += len(texts[-1].encode())
            if size >= sample_bytes:
                break
        rates[name] = sum(len(ids) + 1 for ids in data.tokenizer.encode(texts)) / max(size, 1)
    return rates


def stage_token_table(report: dict, rates: dict) -> str:
    """Documents and (estimated) tokens in and out of every cleaning stage, per source."""
    lines = [f"{'stage':<15} {'source':<14} {'docs in':>8} {'docs out':>8} {'~M tok in':>10} {'~M tok out':>10}"]
    for stage, entry in report.items():
        for source, e in entry["sources"].items():
            rate = rates.get(source, float("nan"))
            lines.append(f"{stage:<15} {source:<14} {e['docs_in']:>8} {e['docs_out']:>8} "
                         f"{e['bytes_in'] * rate / 1e6:>10.2f} {e['bytes_out'] * rate / 1e6:>10.2f}")
    return "\n".join(lines)


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
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m data.prepare", description=__doc__.splitlines()[0], gin=True)
    parser.add_argument("--json", help="also write the cleaning report as JSON to this path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)

    from data import corpus, loader
    # base.gin binds the model's and the trainer's configurables too: only data's are read here.
    cli.parse_gin(args.gin_file or ["base.gin"], args.gin_bindings, skip_unknown=True)
    try:
        cfg = loader.DataConfig()
    except (ValueError, TypeError) as error:
        raise cli.InputError(f"bad value: {error}") from None
    start = time.perf_counter()
    try:
        data = loader.load(cfg)
    except corpus.CorpusError as error:
        raise cli.InputError(f"corpus: {error}") from None
    except (ValueError, TypeError) as error:  # a bad cleaning setting, raised as the corpus is built
        raise cli.InputError(f"bad value: {error}") from None
    seconds = time.perf_counter() - start
    if not cfg.tfds_name:
        builder = corpus.build_corpus(data_dir=cfg.data_dir)
        print(corpus.clean_report_text(builder) or "(corpus built without cleaning)")
        reports = corpus.clean_report(builder)
        rates = tokens_per_byte(data)
        if "train" in reports:
            print(f"\ntrain split, tokens estimated at each source's tokens per byte "
                  f"({', '.join(f'{name} {rate:.3f}' for name, rate in rates.items())})")
            print(stage_token_table(reports["train"], rates))
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"stages": reports, "tokens_per_byte": rates}, out, indent=1)
    print(token_table(data))
    print(f"{data.name} ready in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
