"""Exact deduplication, and the key store that near-dedup shares with it.

A document's fingerprint is one or more 64-bit keys; a document is a duplicate
when any of its keys was seen before (in an earlier batch or earlier in its
own batch). Only the keys of kept documents are remembered, 8 bytes each, in
sorted numpy arrays rather than a Python set (which costs ~70 bytes a key).
"""
from __future__ import annotations

import dataclasses

import gin
import numpy as np

from data.clean import hashing
from data.clean.report import StageLog
from data.clean.stage import StatefulStage


_FILTER_BITS = 22


class KeyStore:
    """A growing set of uint64 keys: a large sorted array and a small sorted one for recent
    keys, merged into the large one when it reaches 1/8 of its size (amortised O(log n)).

    A 4 MB table marks the top 22 bits of every key stored, so that most absent keys are
    turned away by one lookup instead of a binary search (decontamination asks about
    every n-gram of every document)."""

    def __init__(self):
        self._main = np.zeros(0, np.uint64)
        self._recent = np.zeros(0, np.uint64)
        self._filter = np.zeros(1 << _FILTER_BITS, bool)

    def __len__(self) -> int:
        return len(self._main) + len(self._recent)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        found = self._filter[keys >> np.uint64(64 - _FILTER_BITS)]
        maybe = np.flatnonzero(found)
        found[maybe] = False
        for part in (self._main, self._recent):
            if len(part) and len(maybe):
                at = np.minimum(np.searchsorted(part, keys[maybe]), len(part) - 1)
                found[maybe] |= part[at] == keys[maybe]
        return found

    def add(self, keys: np.ndarray) -> None:
        self._filter[keys >> np.uint64(64 - _FILTER_BITS)] = True
        self._recent = np.sort(np.concatenate([self._recent, keys]))
        if len(self._recent) * 8 >= max(len(self._main), 1 << 16):
            self._main = np.sort(np.concatenate([self._main, self._recent]))
            self._recent = np.zeros(0, np.uint64)


def keep_first_seen(store: KeyStore, docs: list[dict], keys: np.ndarray, reason: str,
                    log: StageLog) -> np.ndarray:
    """Keeps each document (row of `keys`) none of whose keys was seen before, in order, and
    remembers its keys. Key 0 stands for "no key" (a document without words)."""
    seen_before = (store.contains(keys.ravel()).reshape(keys.shape) & (keys != 0)).any(axis=1)
    keep = np.zeros(len(docs), bool)
    seen_in_batch: set[int] = set()
    for i, (doc, row) in enumerate(zip(docs, keys.tolist())):
        row = [key for key in row if key]
        if seen_before[i] or not seen_in_batch.isdisjoint(row):
            log.removed(doc, reason)
        else:
            keep[i] = True
            seen_in_batch.update(row)
    new_keys = keys[keep].ravel()
    store.add(new_keys[new_keys != 0])
    return keep


@gin.configurable
@dataclasses.dataclass
class ExactDedup(StatefulStage):
    """Drops documents whose normalised words (data/clean/hashing.py) were seen before, in
    that order: texts that differ only in case, whitespace or punctuation."""
    name = "exact_dedup"

    def __post_init__(self):
        self._store = KeyStore()

    def fingerprints(self, texts: list[str]) -> np.ndarray:
        return hashing.encode(texts).words.doc_digests()[:, None]

    def keep(self, docs: list[dict], fingerprints: np.ndarray, log: StageLog) -> np.ndarray:
        return keep_first_seen(self._store, docs, fingerprints, "exact_duplicate", log)
