"""What a run reads: the corpus splits, the tokenizer, and the train split's token counts.

By default the offline corpus of data/corpus.py. With a network, any tfds
text data set works with one binding, e.g. `DataConfig.tfds_name = 'lm1b'`
(with `DataConfig.eval_split = 'test'` where it has no validation split).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from typing import Optional

import gin
import numpy as np
import tensorflow_datasets as tfds

from data import corpus as corpus_lib
from data import tokenizer as tokenizer_lib


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
    tfds_name: str = ""  # "" = the offline default corpus
    text_key: str = "text"
    train_split: str = "train"
    eval_split: str = "validation"
    data_dir: str = corpus_lib.DEFAULT_DATA_DIR
    vocab_size: int = 8192
    seq_len: int = 256
    batch_size: int = 32  # global, across all devices and hosts
    seed: int = 0
    eval_batches: int = 16
    # Rows per eval batch; 0: batch_size. The held-out rows are eval_batch_size x eval_batches, so runs
    # whose training batches differ (a sweep's batch rule) are scored on the same rows when this is set.
    eval_batch_size: int = 0
    # Sampling weights per source, e.g. {'gcide': 0.2, 'python_stdlib': 0.5, ...}: each epoch draws as
    # many documents as the split holds in these proportions (data/order.py). {}: the split as it is.
    mixture: dict = dataclasses.field(default_factory=dict)
    max_docs_per_source: int = 0  # with a mixture: at most this many documents of a source per pass; 0 all
    # The span_corruption objective (encoder-decoder models): T5's defaults.
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0

    @property
    def eval_rows_per_batch(self) -> int:
        return self.eval_batch_size or self.batch_size

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "batch_size", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"DataConfig.{name} must be positive, got {getattr(self, name)}")
        if self.eval_batch_size < 0:
            raise ValueError(f"DataConfig.eval_batch_size must be positive, or 0 for batch_size, "
                             f"got {self.eval_batch_size}")
        if any(not isinstance(w, (int, float)) or w < 0 for w in dict(self.mixture).values()):
            raise ValueError(f"DataConfig.mixture weights must be non-negative numbers, got {self.mixture}")
        # Stored as sorted pairs so that the config stays hashable and compares by value.
        object.__setattr__(self, "mixture", tuple(sorted(dict(self.mixture).items())))
        if not 0 < self.noise_density < 1 or self.mean_noise_span_length < 1:
            raise ValueError(f"DataConfig.noise_density must be in (0, 1) and mean_noise_span_length at least 1, "
                             f"got {self.noise_density} and {self.mean_noise_span_length}")


@dataclasses.dataclass
class Data:
    train_docs: object
    eval_docs: object
    tokenizer: tokenizer_lib.Tokenizer
    token_stats: dict  # train_tokens, token_counts
    name: str
    source_stats: dict
    doc_sources: Optional[np.ndarray]  # each train document's index into source_names; None: unknown
    source_names: list
    fingerprint: str  # of the data set's shards (verify_shards)
    train_tokens: tokenizer_lib.TokenizedDocuments  # the train documents tokenized, for the input pipeline


def _texts(docs, key: str):
    for doc in docs:
        value = doc[key]
        yield value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def load(cfg: DataConfig) -> Data:
    """Builds (once) and opens the corpus and its tokenizer. Raises CorpusError when unusable."""
    if cfg.tfds_name:
        builder = tfds.builder(cfg.tfds_name, data_dir=os.path.join(cfg.data_dir, "tfds"),
                               file_format="array_record")
        if not builder.is_prepared():
            builder.download_and_prepare()
        stats = {}
    else:
        builder = corpus_lib.build_corpus(data_dir=cfg.data_dir)
        stats = corpus_lib.source_stats(builder)
    fingerprint = verify_shards(str(builder.data_dir))
    train_docs = builder.as_data_source(cfg.train_split)
    eval_docs = builder.as_data_source(cfg.eval_split)
    if len(train_docs) == 0 or len(eval_docs) == 0:
        raise corpus_lib.CorpusError(f"the corpus {builder.name} has an empty train or eval split")
    try:
        tokenizer = tokenizer_lib.load_or_train(builder.data_dir, cfg.vocab_size,
                                                lambda: _texts(train_docs, cfg.text_key))
    except RuntimeError as error:  # sentencepiece: a model file that does not parse
        raise corpus_lib.CorpusError(f"the tokenizer in {builder.data_dir} is unreadable ({error}); delete "
                                     f"the file to train it again") from None
    token_stats = tokenizer_lib.corpus_token_stats(
        tokenizer, _texts(train_docs, cfg.text_key),
        cache_path=os.path.join(builder.data_dir, f"token_stats_{cfg.vocab_size}_{cfg.train_split}.json"))
    doc_sources, source_names = _doc_sources(train_docs, os.path.join(builder.data_dir,
                                                                      f"doc_sources_{cfg.train_split}.json"))
    train_tokens = tokenizer_lib.tokenized_documents(tokenizer, lambda: _texts(train_docs, cfg.text_key),
                                                     str(builder.data_dir), f"tokens_{cfg.vocab_size}_{cfg.train_split}")
    return Data(train_docs, eval_docs, tokenizer, token_stats, f"{builder.name}/{builder.builder_config.name}"
                if builder.builder_config else builder.name, stats, doc_sources, source_names, fingerprint,
                train_tokens)


SHARD_HASHES = "shard_sha256.json"


def verify_shards(data_dir: str) -> str:
    """Checks the data set's array_record shards against the SHA-256 hashes recorded when they were
    first opened (recording them then) and returns their joint fingerprint. A damaged shard is a
    CorpusError naming it: read, it would stop training partway with a reader's traceback."""
    shards = sorted(name for name in os.listdir(data_dir) if ".array_record" in name)
    hashes = {name: _sha256(os.path.join(data_dir, name)) for name in shards}
    path = os.path.join(data_dir, SHARD_HASHES)
    if os.path.exists(path):
        with open(path) as f:
            recorded = json.load(f)
        damaged = [name for name in shards if recorded.get(name, hashes[name]) != hashes[name]]
        if damaged:
            raise corpus_lib.CorpusError(f"{os.path.join(data_dir, damaged[0])} is damaged (its SHA-256 differs "
                                         f"from the one recorded when it was built); delete {data_dir} to "
                                         f"build it again")
    else:
        with open(path, "w") as f:
            json.dump(hashes, f, indent=1)
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _doc_sources(docs, cache_path: str) -> tuple[Optional[np.ndarray], list]:
    """Which source each document came from (read once, then cached); (None, []) for data sets
    whose documents do not say."""
    if os.path.exists(cache_path):
        with open(cache_path) as f:
            cached = json.load(f)
        return np.asarray(cached["doc_sources"], np.int64), cached["source_names"]
    if "source" not in docs[0]:
        return None, []
    names = [doc["source"].decode() if isinstance(doc["source"], bytes) else doc["source"] for doc in docs]
    source_names = sorted(set(names))
    index = {name: i for i, name in enumerate(source_names)}
    doc_sources = [index[name] for name in names]
    with open(cache_path, "w") as f:
        json.dump({"source_names": source_names, "doc_sources": doc_sources}, f)
    return np.asarray(doc_sources, np.int64), source_names

