"""The default offline corpus as a tfds data set in array_record format.

Documents come from data/sources.py. Each goes to the validation split when a
hash of its source and id falls under `validation_percent`, so the split is
made by document and is the same on every machine. tfds writes array_record
without TensorFlow, and training reads it back through `as_data_source`, which
gives random access by index.

By default both splits go through the cleaning pipeline (data/clean) as they
are written: the validation documents first, through every stage but
decontamination, then the train documents, through every stage, with the
cleaned validation text as the held-out text that decontamination protects.
What each stage did, per source and split, is saved beside the data as
clean_report.json and clean_report.txt.

The builder config's name lists the sources that were present, so a machine
that later installs another source builds a new data set instead of reusing a
stale one. For the same reason, cleaning settings other than the code's
defaults (`DropGenerated.enabled = True`, a Gopher threshold) add a hash of
those settings to the name, and the settings themselves are saved beside the
data as clean_settings.txt. A change to the defaults themselves (a stage's
code, a default threshold) changes what the plain name means: bump VERSION.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
from typing import Iterator

import gin
import tensorflow_datasets as tfds

from data import sources as sources_lib
from data.clean.decontaminate import Decontaminate
from data.clean.pipeline import CleaningPipeline, settings_changed

DEFAULT_DATA_DIR = os.path.expanduser(os.environ.get("SCALINGLM_DATA", "~/.cache/scalinglm"))
DEFAULT_SOURCES = ("python_stdlib", "gcide", "python_docs", "perl_pod")


class CorpusError(Exception):
    """The corpus cannot be built or read (missing sources, empty split)."""


def is_validation(doc: dict, validation_percent: float) -> bool:
    digest = hashlib.sha256(f"{doc['source']}\0{doc['id']}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 10_000 < validation_percent * 100


@dataclasses.dataclass
class CorpusConfig(tfds.core.BuilderConfig):
    sources: tuple = DEFAULT_SOURCES
    validation_percent: float = 1.0
    max_bytes_per_source: int = 0  # 0: everything; small values make test corpora
    clean: bool = True  # through the cleaning pipeline


class ScalingCorpus(tfds.core.GeneratorBasedBuilder):
    """Real text from the Python standard library, GCIDE, the Python docs and Perl's pod."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "Long files split into sections of at most 16K characters.",
                     "2.0.0": "Built through the cleaning pipeline; Perl's pod read once, not once per alias."}

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(), "source": tfds.features.Text(), "id": tfds.features.Text()}),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is read from local files
        if not self.builder_config.clean:
            self.clean_reports = {}
            return {"train": self._generate_examples(self._raw_documents(False)),
                    "validation": self._generate_examples(self._raw_documents(True))}
        progress = sys.stderr.isatty()
        # Validation text is cleaned like the rest, but decontaminating it against itself would empty it.
        validation = CleaningPipeline(stages=[stage for stage in CleaningPipeline().stages
                                              if not isinstance(stage, Decontaminate)], progress=progress)
        heldout = list(validation.run(self._raw_documents(True)))
        train = CleaningPipeline(progress=progress)
        self.clean_reports = {"validation": validation.report, "train": train.report}
        return {"validation": self._generate_examples(heldout),
                "train": self._generate_examples(train.run(self._raw_documents(False), heldout=heldout))}

    def _raw_documents(self, validation: bool) -> Iterator[dict]:
        cfg = self.builder_config
        for name in cfg.sources:
            size = 0
            for doc in sources_lib.iter_documents(name):
                if cfg.max_bytes_per_source and size >= cfg.max_bytes_per_source:
                    break
                size += len(doc["text"].encode())
                if is_validation(doc, cfg.validation_percent) == validation:
                    yield doc

    def _generate_examples(self, docs) -> Iterator[tuple[str, dict]]:
        for doc in docs:
            yield f"{doc['source']}/{doc['id']}", {key: doc[key] for key in ("text", "source", "id")}


def _source_stats(builder: ScalingCorpus) -> dict:
    """Documents and bytes per source and split, counted from the written data."""
    stats: dict = {}
    for split in ("train", "validation"):
        for doc in builder.as_data_source(split):
            entry = stats.setdefault(doc["source"].decode(), {}).setdefault(split, {"documents": 0, "bytes": 0})
            entry["documents"] += 1
            entry["bytes"] += len(doc["text"])
    return stats


@gin.configurable
def build_corpus(data_dir: str = DEFAULT_DATA_DIR, sources: tuple = DEFAULT_SOURCES,
                 validation_percent: float = 1.0, max_bytes_per_source: int = 0,
                 clean: bool = True) -> ScalingCorpus:
    """Builds the corpus once (cached under data_dir) and returns its prepared builder."""
    present, missing = sources_lib.available(list(sources))
    for name in missing:
        logging.warning("corpus source %s is not installed (%s); leaving it out",
                        name, sources_lib.SOURCES[name][2])
    if not present:
        raise CorpusError(f"none of the corpus sources {list(sources)} is installed")
    # Its stages check their gin settings now, before tfds creates any directory.
    cleaning = settings_changed(CleaningPipeline().stages) if clean else []
    name = "_".join(present) + f"_val{validation_percent:g}".replace(".", "p") + (
        f"_max{max_bytes_per_source}" if max_bytes_per_source else "") + ("" if clean else "_raw") + (
        "_clean" + hashlib.sha256("\n".join(cleaning).encode()).hexdigest()[:8] if cleaning else "")
    config = CorpusConfig(name=name, sources=tuple(present), validation_percent=validation_percent,
                          max_bytes_per_source=max_bytes_per_source, clean=clean)
    builder = ScalingCorpus(config=config, data_dir=os.path.join(data_dir, "tfds"), file_format="array_record")
    if not builder.is_prepared():
        if not sys.stderr.isatty():  # progress bars only for people, not for logs
            tfds.disable_progress_bar()
        try:
            builder.download_and_prepare()
        except AssertionError as error:  # tfds' way of saying that a split came out empty
            if "No examples were yielded" not in str(error):
                raise
            raise CorpusError(f"the corpus {name} has an empty split: {str(error).splitlines()[0]}") from None
        with open(os.path.join(builder.data_dir, "source_stats.json"), "w") as f:
            json.dump(_source_stats(builder), f, indent=1)
        with open(os.path.join(builder.data_dir, "clean_report.json"), "w") as f:
            json.dump({split: report.to_dict() for split, report in builder.clean_reports.items()}, f, indent=1)
        with open(os.path.join(builder.data_dir, "clean_report.txt"), "w") as f:
            f.write("".join(f"{split} split\n{report.to_text()}\n\n"
                            for split, report in builder.clean_reports.items()))
        if cleaning:
            with open(os.path.join(builder.data_dir, "clean_settings.txt"), "w") as f:
                f.write("".join(line + "\n" for line in cleaning))
    for split in ("train", "validation"):
        if builder.info.splits[split].num_examples == 0:
            raise CorpusError(f"the corpus {name} has an empty {split} split")
    return builder


def source_stats(builder: ScalingCorpus) -> dict:
    with open(os.path.join(builder.data_dir, "source_stats.json")) as f:
        return json.load(f)


def clean_report(builder: ScalingCorpus) -> dict:
    """{split: what every cleaning stage did, per source}; empty for a corpus built without cleaning."""
    path = os.path.join(builder.data_dir, "clean_report.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def clean_report_text(builder: ScalingCorpus) -> str:
    """The cleaning report's table; empty for a corpus built without cleaning."""
    path = os.path.join(builder.data_dir, "clean_report.txt")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()
