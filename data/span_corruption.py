"""T5's span corruption (Raffel et al. 2020, section 3.1.4), in numpy.

A fraction `noise_density` of the tokens, in spans of mean length
`mean_noise_span_length`, is masked. The inputs keep the other tokens with each
masked span replaced by one sentinel; the targets list each sentinel followed
by the span it replaced:

    tokens   a b c d e f g h
    inputs   a <s0> d e <s1> h        (spans "b c" and "f g")
    targets  <s0> b c <s1> f g

As in T5, the number of noise tokens is round(length * noise_density) and the
number of spans round(noise tokens / mean span length), both at least 1; the
noise tokens and the kept tokens are each cut into that many non-empty
pieces uniformly at random, and the sequence alternates kept, noise, kept,
noise, ... starting with kept tokens. So the span counts and lengths are exact
functions of the length, and only where the cuts fall is random.

Sentinels are ids the caller reserves, e.g. `sentinels_from_vocab(vocab_size,
100)` for the last 100 ids, as T5 does; `corrupt_spans` uses them in order.
"""
from __future__ import annotations

import numpy as np


def sentinels_from_vocab(vocab_size: int, count: int) -> np.ndarray:
    """The last `count` ids of the vocabulary, highest first (T5's <extra_id_0> is the last id)."""
    if not 0 < count <= vocab_size:
        raise ValueError(f"cannot take {count} sentinel ids from a vocabulary of {vocab_size}")
    return np.arange(vocab_size - 1, vocab_size - 1 - count, -1)


def span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for a sequence of `length` tokens."""
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens, got {length}")
    if not 0 < noise_density < 1 or mean_noise_span_length < 1:
        raise ValueError(f"need 0 < noise_density < 1 and mean_noise_span_length >= 1, got "
                         f"{noise_density} and {mean_noise_span_length}")
    noise = min(max(int(round(length * noise_density)), 1), length - 1)
    spans = max(int(round(noise / mean_noise_span_length)), 1)
    return noise, min(spans, noise, length - noise)


def _segment_lengths(total: int, segments: int, rng: np.random.Generator) -> np.ndarray:
    """`total` items cut into `segments` non-empty pieces, every cut equally likely."""
    cuts = np.sort(rng.choice(np.arange(1, total), segments - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(length: int, rng: np.random.Generator, noise_density: float = 0.15,
               mean_noise_span_length: float = 3.0) -> np.ndarray:
    """Boolean mask of the noise tokens: kept and noise spans alternating, kept first."""
    noise, spans = span_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _segment_lengths(noise, spans, rng)
    kept_lengths = _segment_lengths(length - noise, spans, rng)
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).ravel()
    return np.repeat(np.tile([False, True], spans), interleaved)


def corrupted_lengths(length: int, noise_density: float = 0.15,
                      mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(len(inputs), len(targets)) that `corrupt_spans` gives for `length` tokens; it
    depends on the length only, so batches can be padded to fixed shapes."""
    noise, spans = span_counts(length, noise_density, mean_noise_span_length)
    return length - noise + spans, noise + spans


def corrupt_spans(tokens: np.ndarray, sentinels: np.ndarray, rng: np.random.Generator | int,
                  noise_density: float = 0.15, mean_noise_span_length: float = 3.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of T5 span corruption of the 1-D int array `tokens`.

    `sentinels` are ids that must not occur in `tokens`; span i is marked by
    sentinels[i]. `rng` is a numpy Generator or a seed.
    """
    tokens = np.asarray(tokens)
    sentinels = np.asarray(sentinels, dtype=tokens.dtype)
    if tokens.ndim != 1:
        raise ValueError(f"corrupt_spans takes one sequence (a 1-D array), got shape {tokens.shape}")
    if np.isin(tokens, sentinels).any():
        raise ValueError("the tokens contain sentinel ids, so the corruption could not be undone")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    mask = noise_mask(len(tokens), rng, noise_density, mean_noise_span_length)
    noise_starts = mask & ~np.concatenate([[False], mask[:-1]])
    if noise_starts.sum() > len(sentinels):
        raise ValueError(f"{noise_starts.sum()} noise spans but only {len(sentinels)} sentinel ids")
    kept_starts = ~mask & np.concatenate([[True], mask[:-1]])
    # Noise span i follows kept span i, and both are marked by sentinels[i].
    inputs = _replace_spans(tokens, mask, np.cumsum(noise_starts) - 1, sentinels)
    targets = _replace_spans(tokens, ~mask, np.cumsum(kept_starts) - 1, sentinels)
    return inputs, targets


def _replace_spans(tokens: np.ndarray, drop: np.ndarray, span_of: np.ndarray,
                   sentinels: np.ndarray) -> np.ndarray:
    """`tokens` with each run of `drop` tokens replaced by sentinels[span index of the run]."""
    first_of_run = drop & ~np.concatenate([[False], drop[:-1]])
    out = tokens.copy()
    out[first_of_run] = sentinels[span_of[first_of_run]]
    return out[~drop | first_of_run]


def uncorrupt_spans(inputs: np.ndarray, targets: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """The tokens that `corrupt_spans` turned into (inputs, targets): each sentinel in the
    inputs is replaced by what follows the same sentinel in the targets."""
    sentinel_ids = set(np.asarray(sentinels).tolist())
    spans: dict[int, list] = {}
    current = None
    for token in np.asarray(targets).tolist():
        if token in sentinel_ids:
            current = spans.setdefault(token, [])
        elif current is None:
            raise ValueError("the targets do not start with a sentinel")
        else:
            current.append(token)
    out = []
    for token in np.asarray(inputs).tolist():
        if token in sentinel_ids:
            if token not in spans:
                raise ValueError(f"sentinel {token} of the inputs is missing from the targets")
            out += spans[token]
        else:
            out.append(token)
    return np.asarray(out, dtype=np.asarray(inputs).dtype)
