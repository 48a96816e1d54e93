"""A sentencepiece BPE tokenizer with byte fallback, trained on the corpus' train split.

It is cached beside the data set (`<data set dir>/spm_bpe_<vocab>.model`) and
reused. Normalisation is off and whitespace is kept as it is, because half the
default corpus is source code, where indentation carries meaning; byte
fallback means no character is ever unknown, so newlines survive as <0x0A>.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from typing import Iterable

import numpy as np
import sentencepiece as spm

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


class Tokenizer:
    """A loaded sentencepiece model plus the byte length of every piece (for bits per byte)."""

    def __init__(self, path: str):
        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.vocab_size = self.sp.get_piece_size()
        self.eos_id = self.sp.eos_id()
        self.piece_bytes = np.array([self._byte_length(i) for i in range(self.vocab_size)], np.int64)

    def _byte_length(self, piece_id: int) -> int:
        if self.sp.is_control(piece_id) or self.sp.is_unknown(piece_id):
            return 0
        if self.sp.is_byte(piece_id):
            return 1
        return len(self.sp.id_to_piece(piece_id).replace("\u2581", " ").encode())

    def encode(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=num_threads)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])


def _training_lines(texts: Iterable[str], max_lines: int, seed: int) -> list[str]:
    """A reservoir sample of lines: sentencepiece trains on lines, and memory stays bounded."""
    rng = random.Random(seed)
    sample: list[str] = []
    seen = 0
    for text in texts:
        for line in text.split("\n"):
            if not line.strip():
                continue
            seen += 1
            if len(sample) < max_lines:
                sample.append(line)
            else:
                j = rng.randrange(seen)
                if j < max_lines:
                    sample[j] = line
    return sample


def train_tokenizer(texts: Iterable[str], path: str, vocab_size: int, max_lines: int = 400_000,
                    seed: int = 0) -> Tokenizer:
    lines = _training_lines(texts, max_lines, seed)
    if not lines:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    tmp = path + ".tmp"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=tmp, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        allow_whitespace_only_pieces=True, split_digits=True, character_coverage=0.9995,
        max_sentence_length=8192, pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
        num_threads=os.cpu_count() or 1, minloglevel=2)
    os.replace(tmp + ".model", path)
    os.remove(tmp + ".vocab")
    return Tokenizer(path)


def load_or_train(directory: str, vocab_size: int, texts) -> Tokenizer:
    """texts: a callable returning an iterable of training texts, called only when training."""
    path = os.path.join(directory, f"spm_bpe_{vocab_size}.model")
    if os.path.exists(path):
        return Tokenizer(path)
    return train_tokenizer(texts(), path, vocab_size)


def corpus_token_stats(tokenizer: Tokenizer, train_texts: Iterable[str], cache_path: str | None = None) -> dict:
    """How often each token occurs in the train split (documents end with EOS, as in
    training), cached at cache_path: `train_tokens` is how many unique tokens a run
    sees before it repeats data, and `token_counts` give the unigram baseline."""
    if cache_path and os.path.exists(cache_path):
        with open(cache_path) as f:
            return json.load(f)
    counts = np.zeros(tokenizer.vocab_size, np.int64)
    for ids in _encoded(tokenizer, train_texts):
        counts += np.bincount(ids, minlength=tokenizer.vocab_size)
    stats = {"train_tokens": int(counts.sum()), "token_counts": counts.tolist()}
    if cache_path:
        with open(cache_path, "w") as f:
            json.dump(stats, f)
    return stats


class TokenizedDocuments:
    """Every document's token ids, EOS appended, in one memory-mapped array with document offsets.

    The input pipeline slices documents from it instead of running the tokenizer at every step:
    on 2 CPU cores the tokenizer took most of a core from the smallest models' training steps.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray):
        self.tokens, self.offsets = tokens, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index]:self.offsets[index + 1]]


def tokenized_documents(tokenizer: Tokenizer, texts, directory: str, name: str) -> TokenizedDocuments:
    """The documents of `texts` (a callable returning them in order, called only when building)
    tokenized once, cached in directory as name.<tokenizer's hash>.{tokens,offsets}.npy: a
    retrained tokenizer gets its own cache. The offsets are written last, so a build cut short
    is built again."""
    with open(tokenizer.path, "rb") as f:
        prefix = os.path.join(directory, f"{name}.{hashlib.sha256(f.read()).hexdigest()[:16]}")
    paths = {part: f"{prefix}.{part}.npy" for part in ("tokens", "offsets")}
    if not os.path.exists(paths["offsets"]):
        pieces = list(_encoded(tokenizer, texts()))
        dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
        offsets = np.concatenate([[0], np.cumsum([len(ids) for ids in pieces])]).astype(np.int64)
        for part, array in (("tokens", np.concatenate(pieces).astype(dtype)), ("offsets", offsets)):
            with open(f"{paths[part]}.tmp", "wb") as f:
                np.save(f, array)
            os.replace(f"{paths[part]}.tmp", paths[part])
    return TokenizedDocuments(np.load(paths["tokens"], mmap_mode="r"), np.load(paths["offsets"]))


def unigram_loss(token_counts, batches: list[dict]) -> float:
    """Nats per token of the best context-free model (train-split frequencies, add-one
    smoothed) on exactly the targets and weights of `batches`. A language model has
    learnt something beyond token frequencies only when its eval loss is below this.
    Targets past the tokenizer's vocabulary (span corruption's sentinels) are left out."""
    counts = np.asarray(token_counts, np.float64) + 1.0
    log_p = np.append(np.log(counts / counts.sum()), 0.0)
    nats = weight = 0.0
    for b in batches:
        in_vocab = b["weights"] * (b["targets"] < len(counts))
        nats += float((-log_p[np.minimum(b["targets"], len(counts))] * in_vocab).sum())
        weight += float(in_vocab.sum())
    return nats / weight


def _encoded(tokenizer: Tokenizer, texts: Iterable[str], chunk: int = 256):
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == chunk:
            yield from (np.array(ids + [tokenizer.eos_id]) for ids in tokenizer.encode(batch, os.cpu_count() or 1))
            batch = []
    if batch:
        yield from (np.array(ids + [tokenizer.eos_id]) for ids in tokenizer.encode(batch, os.cpu_count() or 1))
