"""From documents to packed batches: tokenize, append EOS, concatenate, cut rows.

Each epoch visits the documents in a fresh seeded permutation, dealt out to
interleaved streams, one per row of a batch (see PackedBatches). Rows hold
seq_len + 1 tokens (inputs and targets shifted by one) and a stream's
consecutive rows overlap by one token, so every token is a target exactly
once. A stream's whole state is three integers: the epoch, the position in its
share of that epoch's permutation of the document at the head of its buffer,
and how many of its tokens were consumed. A checkpoint stores them and a
restart re-tokenizes from there, so a resumed run sees exactly the batches it
would have seen.

Objectives: 'lm' weighs every target; 'prefix_lm' draws a prefix length per
row and weighs only the targets after the prefix; 'span_corruption' (T5,
data/span_corruption.py) turns each row's seq_len tokens into encoder inputs
with sentinels and decoder targets listing the masked spans. Its shapes depend
on seq_len alone, so its batches need no padding.
"""
from __future__ import annotations

import collections
import functools
import os
import queue
import threading
import time
from typing import Callable, Optional, Sequence

import numpy as np

from data import span_corruption
from data.order import DocumentOrder

OBJECTIVES = ("lm", "prefix_lm", "span_corruption")
DECODER_START_ID = 0  # T5 starts the decoder with the padding id


class EndOfData(Exception):
    """A source read once (repeat=False, for evaluation) has no full row left."""


def _every_nth(order: Callable[[int], np.ndarray], first: int, step: int, epoch: int) -> np.ndarray:
    """Documents first, first + step, ... of an epoch's order: one stream's share."""
    return order(epoch)[first::step]


def _text(doc, text_key: str) -> str:
    value = doc[text_key]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


class _Stream:
    """Rows of seq_len + 1 tokens cut from documents read in a given order, epoch after epoch.

    The whole state is three integers: the epoch, the position in that epoch's
    order of the document at the head of the buffer, and how many of its
    tokens were consumed.
    """

    def __init__(self, tokens_of: Callable[[list[int]], list[np.ndarray]], seq_len: int,
                 order: Callable[[int], np.ndarray], repeat: bool, encode_chunk: int):
        self.tokens_of, self.seq_len, self.order = tokens_of, seq_len, order
        self.repeat, self.encode_chunk = repeat, encode_chunk
        self.set_state({"epoch": 0, "index": 0, "offset": 0})

    def get_state(self) -> dict:
        if self._buffer:
            (epoch, index), _ = self._buffer[0]
            return {"epoch": epoch, "index": index, "offset": self._offset}
        return {"epoch": self._next[0], "index": self._next[1], "offset": self._offset}

    def set_state(self, state: dict) -> None:
        self._next = (int(state["epoch"]), int(state["index"]))
        self._buffer: collections.deque = collections.deque()  # ((epoch, index), tokens)
        self._buffered = 0
        self._offset = int(state["offset"])
        self._order_epoch, self._order = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            self._order, self._order_epoch = self.order(epoch), epoch
        return self._order

    def _read_chunk(self) -> None:
        epoch, index = self._next
        order = self._permutation(epoch)
        if len(order) == 0:  # a stream with no documents of its own (more streams than documents)
            raise EndOfData
        positions = list(range(index, min(index + self.encode_chunk, len(order))))
        for i, tokens in zip(positions, self.tokens_of([int(order[i]) for i in positions])):
            self._buffer.append(((epoch, i), tokens))
            self._buffered += len(tokens)
        self._next = (epoch + 1, 0) if positions[-1] + 1 == len(order) else (epoch, positions[-1] + 1)

    def row(self) -> tuple[np.ndarray, dict]:
        """seq_len + 1 tokens from the head of the stream, then consume seq_len of them."""
        while self._buffered - self._offset < self.seq_len + 1:
            if not self.repeat and self._next[0] > 0:
                raise EndOfData
            self._read_chunk()
        start = self.get_state()
        pieces, need, skip = [], self.seq_len + 1, self._offset
        for _, tokens in self._buffer:
            take = tokens[skip:skip + need]
            pieces.append(take)
            need -= len(take)
            skip = 0
            if need == 0:
                break
        self._offset += self.seq_len
        while self._buffer and self._offset >= len(self._buffer[0][1]):
            self._offset -= len(self._buffer[0][1])
            self._buffered -= len(self._buffer[0][1])
            self._buffer.popleft()
        return np.concatenate(pieces), start


class PackedBatches:
    """Deterministic, resumable iterator of packed batches over a random-access document source.

    Row i of every batch comes from stream i of `streams` (default: one per
    row). Stream i reads documents i, i + streams, i + 2 streams, ... of each
    epoch's order, so a batch holds rows from as many different places in the
    corpus as it has rows. (Rows cut from one contiguous stream would fill a
    batch with one long source file, the next with dictionary entries: on the
    default corpus the loss then swings by tenths of a nat from batch to batch,
    and runs that differ only in learning rate end tenths apart.)
    """

    def __init__(self, docs: Sequence, tokenizer, seq_len: int, batch_size: int, seed: int = 0,
                 objective: str = "lm", shuffle: bool = True, repeat: bool = True, text_key: str = "text",
                 encode_chunk: int = 64, sentinels: Sequence = (), noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0, order: Optional[Callable[[int], np.ndarray]] = None,
                 streams: Optional[int] = None, shard: tuple[int, int] = (0, 1), tokenized=None):
        """sentinels, noise_density, mean_noise_span_length: for span_corruption; the sentinels are
        ids the tokenizer never produces, one per noise span. order: epoch -> document indices
        (data/order.py; default a seeded permutation per epoch, or the stored order without shuffle).
        streams: interleaved readers, a divisor of batch_size (default batch_size; 1 reads one
        contiguous stream, as the eval set does). shard = (index, count): pack only part `index` of
        `count` equal parts of every batch, its rows and their streams, as one of `count` processes
        does; the parts stacked in order are the whole batch. get_state and set_state then hold
        this part's streams. tokenized: the documents already tokenized (data/tokenizer.py's
        TokenizedDocuments, EOS appended), read instead of running the tokenizer; the batches are
        the same."""
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r} is not one of {list(OBJECTIVES)}")
        if objective == "span_corruption":
            spans = span_corruption.span_counts(seq_len, noise_density, mean_noise_span_length)[1]
            if len(sentinels) < spans:
                raise ValueError(f"span corruption of {seq_len} tokens makes {spans} noise spans but has only "
                                 f"{len(sentinels)} sentinel ids")
        self.sentinels = np.asarray(sentinels, np.int32)
        self.noise_density, self.mean_noise_span_length = noise_density, mean_noise_span_length
        if len(docs) == 0:
            raise ValueError("the document source is empty")
        streams = batch_size if streams is None else streams
        if streams < 1 or batch_size % streams:
            raise ValueError(f"streams = {streams} must be a positive divisor of batch_size {batch_size}")
        index, count = shard
        if count < 1 or not 0 <= index < count or streams % count:
            raise ValueError(f"shard {tuple(shard)}: {streams} streams do not split into {count} equal parts")
        # This part's rows come from streams first_stream, first_stream + 1, ..., rows_per_stream rows each.
        self.first_stream, self.rows_per_stream = index * streams // count, batch_size // streams
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size // count, seed
        self.objective, self.repeat = objective, repeat
        if order is None:
            order = (DocumentOrder(np.zeros(len(docs), np.int64), ["all"], seed) if shuffle
                     else lambda epoch: np.arange(len(docs)))
        self.order = order
        if tokenized is not None:
            if len(tokenized) != len(docs):
                raise ValueError(f"{len(tokenized)} tokenized documents for {len(docs)} documents")
            def tokens_of(indices):
                return [tokenized[i].astype(np.int32) for i in indices]
        else:
            threads = max(1, (os.cpu_count() or 1) // 2)
            def tokens_of(indices):
                texts = [_text(docs[i], text_key) for i in indices]
                return [np.asarray(ids + [tokenizer.eos_id], np.int32) for ids in tokenizer.encode(texts, threads)]
        self.streams = [_Stream(tokens_of, seq_len, functools.partial(_every_nth, order, i, streams), repeat,
                                encode_chunk) for i in range(self.first_stream, self.first_stream + streams // count)]

    def get_state(self) -> dict:
        return {"streams": [stream.get_state() for stream in self.streams]}

    def set_state(self, state: dict) -> None:
        if len(state.get("streams", ())) != len(self.streams):
            raise ValueError(f"the saved data position has {len(state.get('streams', ()))} streams, this "
                             f"pipeline {len(self.streams)}: it was saved by another version or batch size")
        for stream, position in zip(self.streams, state["streams"]):
            stream.set_state(position)

    def _permutation(self, epoch: int) -> np.ndarray:
        return self.order(epoch)

    def next_batch(self) -> dict:
        per_stream = self.rows_per_stream
        rows, starts = zip(*[self.streams[i // per_stream].row() for i in range(self.batch_size)])
        rows = np.stack(rows)
        inputs, targets = rows[:, :-1], rows[:, 1:]
        weights = np.ones(targets.shape, np.float32)
        prefix_len = np.zeros(self.batch_size, np.int32)
        # Random choices are drawn from each row's own stream and position, so a resumed run draws the
        # same, and a row's draws do not depend on which process packs it.
        rngs = [np.random.default_rng([self.seed, self.first_stream + i // per_stream, s["epoch"], s["index"],
                                       s["offset"]])
                for i, s in enumerate(starts)]
        if self.objective == "span_corruption":
            return self._span_corruption(rows[:, :-1], rngs)
        if self.objective == "prefix_lm":
            prefix_len = np.array([rng.integers(1, self.seq_len) for rng in rngs], np.int32)
            weights = (np.arange(self.seq_len)[None, :] >= prefix_len[:, None] - 1).astype(np.float32)
        return {"inputs": inputs, "targets": targets, "weights": weights, "prefix_len": prefix_len}

    def _span_corruption(self, rows: np.ndarray, rngs: list) -> dict:
        pairs = [span_corruption.corrupt_spans(row, self.sentinels, rng, self.noise_density,
                                               self.mean_noise_span_length) for row, rng in zip(rows, rngs)]
        encoder_inputs, targets = (np.stack(parts) for parts in zip(*pairs))
        decoder_inputs = np.concatenate([np.full_like(targets[:, :1], DECODER_START_ID), targets[:, :-1]], axis=1)
        return {"encoder_inputs": encoder_inputs, "inputs": decoder_inputs, "targets": targets,
                "weights": np.ones(targets.shape, np.float32)}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return self.next_batch()


def eval_batches(docs: Sequence, tokenizer, seq_len: int, batch_size: int, max_batches: int,
                 objective: str = "lm", text_key: str = "text", oversample: int = 20, **objective_options
                 ) -> list[dict]:
    """Up to `max_batches` batches of the eval split. Besides the model's inputs each batch has,
    per row, `bytes`: the raw-text bytes its weighted targets encode (for bits per byte;
    sentinels encode none), and `doc`: the index in `docs` of the document at the row's head
    (a row running into the next document counts for the first), to group rows by document
    for standard errors.

    Rows are taken evenly spaced from the packed eval stream (documents in a fixed
    random order, at most `oversample` times the rows needed), so that the eval set
    stands for the split by token mass instead of being a few long documents.
    """
    stream = PackedBatches(docs, tokenizer, seq_len, batch_size=1, seed=12345, objective=objective,
                           repeat=False, text_key=text_key, streams=1, **objective_options)
    order = stream.order(0)  # the stream is read once: epoch 0 only
    wanted = max_batches * batch_size
    rows = []
    try:
        while len(rows) < oversample * wanted:
            head, = stream.get_state()["streams"]  # the next row's start: its first token is in this document
            row = stream.next_batch()
            rows.append({**row, "doc": order[head["index"]:head["index"] + 1]})
    except EndOfData:
        pass
    if len(rows) < batch_size:
        raise ValueError(f"the eval split is too small for one batch of {batch_size} x {seq_len} tokens")
    n_batches = min(max_batches, len(rows) // batch_size)
    picked = [rows[i] for i in np.linspace(0, len(rows) - 1, n_batches * batch_size).round().astype(int)]
    batches = []
    for b in range(n_batches):
        chunk = picked[b * batch_size:(b + 1) * batch_size]
        batch = {key: np.concatenate([row[key] for row in chunk]) for key in chunk[0]}
        piece_bytes = np.append(tokenizer.piece_bytes, 0)  # ids past the tokenizer's (sentinels): no text
        targets = np.minimum(batch["targets"], len(piece_bytes) - 1)
        batch["bytes"] = (piece_bytes[targets] * batch["weights"]).sum(axis=1)
        batches.append(batch)
    return batches


def model_inputs(batch: dict) -> dict:
    """A batch without eval_batches' bookkeeping (`bytes`, `doc`), which the model does not read."""
    return {key: value for key, value in batch.items() if key not in ("bytes", "doc")}


class Prefetcher:
    """Runs a PackedBatches in a background thread, `depth` batches ahead of training.

    Each item carries the iterator state after its batch, so a checkpoint taken
    after training on it resumes right behind it. `tokens_per_s` is the
    producer's own rate (tokens over time spent producing), to compare with
    training's consumption.
    """

    def __init__(self, batches: PackedBatches, depth: int = 4):
        self.batches = batches
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._busy_s, self._tokens = 0.0, 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                start = time.perf_counter()
                batch = self.batches.next_batch()
                self._busy_s += time.perf_counter() - start
                self._tokens += batch["inputs"].size
                item = (batch, self.batches.get_state())
            except Exception as error:  # surfaced in the training thread
                item = error
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, Exception):
                return

    def next(self) -> tuple[dict, dict]:
        item = self._queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    @property
    def tokens_per_s(self) -> float:
        return self._tokens / self._busy_s if self._busy_s else float("nan")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
