"""Checked inputs: user arrays, and sweep results rows under an accounting choice.

Two conventions coexist in the literature. Kaplan et al. count non-embedding
parameters and C = 6 N D; Hoffmann et al. count all parameters and the full
per-token FLOPs (embeddings, attention). The choice moves the fitted exponents
(Porian et al. 2024), so results rows carry both and the fit names which it used.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

class Accounting(NamedTuple):
    params: str  # the results field of N: the parameters a token uses
    flops: str  # the results field of C, training FLOPs in the same accounting
    dense_params: str  # the field that equals `params` for a dense model (rows that predate the active counts)


# What each accounting counts, defined once: the sweep planner and the ladder (train/) and the fits
# all read N and C through it. N counts the parameters a token uses: for a mixture of experts the
# router and top_k of each layer's experts (params_active*), which for a dense model are all of
# them. C comes from model/accounting.py: 6 N D (Kaplan) or the full per-token count (Chinchilla).
ACCOUNTING = {
    "kaplan": Accounting("params_active_nonembedding", "flops_kaplan", "params_nonembedding"),
    "chinchilla": Accounting("params_active", "flops_chinchilla", "params_total"),
}


def params_of(row: dict, accounting: str):
    """The row's N in the accounting (None when it has none)."""
    fields = ACCOUNTING[accounting]
    value = row.get(fields.params)
    return value if value is not None else row.get(fields.dense_params)


def positive_arrays(min_points=1, **named):
    """The named sequences as float arrays, after checking they fit together.

    All must be 1-D, of one length (at least `min_points`), finite and > 0:
    every law here works in logs. Raises ValueError naming the culprit.
    """
    out, length = [], None
    for name, values in named.items():
        x = np.asarray(values, dtype=float)
        if x.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {x.shape}")
        if length is not None and len(x) != length:
            raise ValueError(f"{name} has {len(x)} values, expected {length}")
        if not np.all(np.isfinite(x) & (x > 0)):
            raise ValueError(f"{name} must be finite and positive")
        length = len(x)
        out.append(x)
    if length is not None and length < min_points:
        raise ValueError(f"need at least {min_points} points to fit, got {length}")
    return out


def canonical_order(*arrays):
    """The permutation that sorts points by their first array, then the second, ...

    Fits put their points in this order first, so that a fit is a function of
    the set of points: any order of the same rows gives bit-identical results
    (floating-point sums depend on the order of their terms).
    """
    return np.lexsort(tuple(reversed(arrays)))


def load_results(path):
    """Rows of a sweep's results.jsonl; ValueError (with the line number) when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"results file not found: {path}")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: malformed JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object per line")
        rows.append(row)
    if not rows:
        raise ValueError(f"results file is empty: {path}")
    return rows


def mixed_data_warning(rows):
    """A warning when the rows' runs were trained on different data, else None.

    Runs read the same data when their tokenizers (trained on the corpus) and their corpora's token
    counts agree. The corpus fingerprint is not compared: it hashes the shards' bytes, which differ
    between builds of the same text (the committed CPU sweep's 3e13 runs have another than its smaller
    budgets', with the same tokenizer, counts and unigram loss). A corpus built from a machine's own
    files (the Python standard library, Debian's documentation) changes with their versions, so a
    sweep that spans machines or sessions can mix corpora; its losses are then not one experiment's.
    """
    groups = {}
    for row in rows:
        key = (row.get("tokenizer_fingerprint"), row.get("corpus_train_tokens"))
        if None not in key:
            groups.setdefault(key, []).append(row.get("run", "?"))
    if len(groups) < 2:
        return None
    parts = [f"{len(runs)} with tokenizer {tokenizer} and {tokens:,} train tokens (e.g. {runs[0]})"
             for (tokenizer, tokens), runs in sorted(groups.items(), key=lambda item: -len(item[1]))]
    return f"these runs were trained on {len(groups)} different corpora: {'; '.join(parts)}"


SEED_BINDINGS = ("TrainConfig.seed", "DataConfig.seed")


def replicate_spread(rows):
    """The run-to-run spread of the eval loss, from configurations the rows train more than once.

    Runs whose `config` differs only in SEED_BINDINGS (initialisation, data order), and whose
    parameters, tokens and budget agree, are replicates of one configuration. Returns {'sd': the
    pooled standard deviation, 'dof': its degrees of freedom (runs minus configurations),
    'configurations': how many were repeated}, or None when none was.
    """
    groups = {}
    for row in fit_rows(rows):
        config, loss = row.get("config"), row.get("final_eval_loss")
        if isinstance(config, dict) and loss is not None:
            rest = {key: value for key, value in config.items() if key not in SEED_BINDINGS}
            key = json.dumps([rest, row.get("params_total"), row.get("tokens"), row.get("budget")], sort_keys=True)
            groups.setdefault(key, []).append(float(loss))
    repeated = [np.asarray(losses) for losses in groups.values() if len(losses) > 1]
    if not repeated:
        return None
    dof = sum(len(losses) - 1 for losses in repeated)
    squares = sum(float(np.sum((losses - losses.mean()) ** 2)) for losses in repeated)
    return {"sd": float(np.sqrt(squares / dof)), "dof": dof, "configurations": len(repeated)}


def fit_rows(rows):
    """The rows a fit uses: all but a sweep's verification runs, which are held out to test predictions."""
    return [r for r in rows if r.get("role") != "verification"]


def budget_window(rows, min_budget=0.0):
    """The rows of the IsoFLOP budgets of at least `min_budget` FLOPs, and the verification rows (which fits
    leave out anyway): the fit's window (scaling.fit and scaling.predict --min_budget, Sweep.fit_min_budget).

    The smallest budgets' best runs are the least trained and the most embedding; where the best loss
    bends against compute they pull a trend through every budget off the larger ones (results/README.md, "The fifth
    version"). 0 keeps every row. ValueError when a run has no budget or none is that large.
    """
    if not min_budget:
        return list(rows)
    if not (isinstance(min_budget, (int, float)) and np.isfinite(min_budget) and min_budget > 0):
        raise ValueError(f"the fit window's smallest budget must be a positive number of FLOPs, got {min_budget!r}")
    budgets = [row.get("budget") for row in fit_rows(rows)]
    if any(not isinstance(budget, (int, float)) for budget in budgets):
        run = next(row.get("run", "?") for row in fit_rows(rows) if not isinstance(row.get("budget"), (int, float)))
        raise ValueError(f"a fit window by budget needs every run's IsoFLOP budget; run {run} has none")
    kept = [row for row in rows if row.get("role") == "verification" or row["budget"] >= min_budget]
    if not fit_rows(kept):
        raise ValueError(f"no run's budget is at least {min_budget:g} FLOPs (the largest is {max(budgets):g})")
    return kept


def window_line(rows, min_budget):
    """One line saying which budgets a windowed fit uses."""
    def flops(value):
        return f"{value:.3g}".replace("e+", "e")
    budgets = sorted({row["budget"] for row in fit_rows(rows)})
    return (f"fit window: the {len(budgets)} budgets of at least {flops(min_budget)} FLOPs "
            f"({', '.join(map(flops, budgets))}; {len(fit_rows(rows))} runs)")


def arrays_from_rows(rows, accounting="chinchilla"):
    """{N, D, C, loss[, loss_se][, budget][, unique_tokens]} arrays from results rows.

    accounting: 'kaplan' (non-embedding N, C = 6 N D) or 'chinchilla' (all
    parameters, full FLOP count). loss is `final_eval_loss` when every row has
    one (held-out loss is what the laws describe), else `final_loss`; then
    `loss_se` is its standard error over eval documents, where every row has it.
    `budget` and `unique_tokens` come back only when every row has them.
    Verification runs (role 'verification') are left out: see `fit_rows`.
    """
    if accounting not in ACCOUNTING:
        raise ValueError(f"unknown accounting {accounting!r}; use one of {sorted(ACCOUNTING)}")
    rows = fit_rows(rows)
    if not rows:
        raise ValueError("no rows to fit: every row is a verification run")
    rows = [{**r, "N": params_of(r, accounting)} for r in rows]
    evals = all(r.get("final_eval_loss") is not None for r in rows)
    keys = {"N": "N", "D": "tokens", "C": ACCOUNTING[accounting].flops,
            "loss": "final_eval_loss" if evals else "final_loss"}
    if evals and all(r.get("final_eval_loss_se") is not None for r in rows):
        keys["loss_se"] = "final_eval_loss_se"
    keys.update({k: k for k in ("budget", "unique_tokens") if all(k in r for r in rows)})
    out = {}
    for name, key in keys.items():
        missing = [i for i, r in enumerate(rows, 1) if r.get(key) is None]
        if missing:
            wanted = f"{ACCOUNTING[accounting].params!r} or {ACCOUNTING[accounting].dense_params!r}" if key == "N" \
                else repr(key)
            raise ValueError(f"row {missing[0]} has no {wanted}")
        try:
            values = [float(r[key]) for r in rows]
        except (TypeError, ValueError):
            raise ValueError(f"{key!r} is not a number in every row") from None
        bad = [i for i, v in enumerate(values) if not (np.isfinite(v) and v > 0)]
        if bad:
            run = rows[bad[0]].get("run")
            raise ValueError(f"row {bad[0] + 1}{f' (run {run})' if run else ''} has {key} = {values[bad[0]]}, "
                             f"not a finite positive number (a diverged run?); {len(bad)} such row(s)")
        out[name], = positive_arrays(**{key: values})
    return out
