"""How precisely eval losses are known, and how precisely two runs' losses differ.

A run's eval loss is a ratio mean R = Σ_d y_d / Σ_d w_d over eval documents d
(y_d: the nll summed over the document's weighted targets, w_d: their count).
Its standard error treats documents as the independent units (tokens of one
document are correlated); most of it comes from WHICH documents the eval
split holds. Every run of a sweep is scored on the same documents, so that
part is common to all runs and cancels in a difference: the paired standard
error of L_a - L_b, over documents, is what says whether two sizes differ.

Linearised (delta-method) estimators, with n documents:

    SE(R)       = sqrt(n/(n-1) Σ_d (y_d - R w_d)²) / Σ_d w_d
    SE(Ra - Rb) = sqrt(n/(n-1) Σ_d z_d²) / Σ_d w_d,  z_d = (y_a,d - Ra w_d) - (y_b,d - Rb w_d)

Each finished run writes its per-document sums to `eval_documents.json` in its
workdir (train/trainer.py, through `EvalDocuments.save`).

    python -m scaling.eval_precision DIR/results.jsonl [--group_key budget] [--size_key params_total]
    python -m scaling.eval_precision DIR/results.jsonl --size_key config.lr_schedule.peak_lr   # a rate check

prints, for each group of a sweep's runs (e.g. an IsoFLOP budget), the loss
differences between neighbouring sizes with their paired and unpaired
standard errors.

It also prints, per pair, n_eff = (Σ z_d²)² / Σ z_d⁴, how many documents the
paired variance rests on, and names the documents that carry most of it. On
the CPU sweeps' corpus a dozen long tables (codec maps, Unicode property lists),
on which two sizes differ by up to a nat per token, give a median n_eff of 14
(3 to 72) among 7,224 documents (results/isoflop_cpu_depth/paired_se_by_split.txt):
such an SE is itself uncertain, and a larger split shrinks it only as it dilutes them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from scaling import cli
from scaling.inputs import load_results

FILENAME = "eval_documents.json"


def document_sums(clusters, *columns) -> tuple[np.ndarray, list[np.ndarray]]:
    """(the distinct cluster ids, sorted; each column summed per cluster, in that order)."""
    ids, cluster = np.unique(np.asarray(clusters), return_inverse=True)
    cluster = cluster.ravel()
    return ids, [np.bincount(cluster, weights=np.asarray(c, np.float64), minlength=len(ids)) for c in columns]


def _residuals(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """y_d - R w_d: each cluster's term of the linearised ratio mean R = Σ y / Σ w."""
    return y - y.sum() / w.sum() * w


def _linearised_se(z: np.ndarray) -> float:
    """sqrt(n/(n-1) Σ z²) for n clusters' linearised terms z (each y_d - R w_d over Σ w); nan for fewer than two."""
    n = len(z)
    if n < 2:
        return math.nan
    return float(math.sqrt(n / (n - 1) * (z ** 2).sum()))


def ratio_se_of_sums(y, w) -> float:
    """Standard error of R = Σ y / Σ w from per-cluster sums y_d, w_d (clusters independent)."""
    y, w = np.asarray(y, np.float64), np.asarray(w, np.float64)
    return _linearised_se(_residuals(y, w) / w.sum())


def paired_terms(y_a, w_a, y_b, w_b) -> np.ndarray:
    """Each cluster's linearised term of R_a - R_b (R = Σ y / Σ w), from two ratios' sums over the same clusters:
    z_d = (y_a,d - R_a w_a,d) / Σ w_a - (y_b,d - R_b w_b,d) / Σ w_b. Their weights may differ (two runs on the
    same documents share them; two windows of one run's positions do not)."""
    y_a, w_a, y_b, w_b = (np.asarray(x, np.float64) for x in (y_a, w_a, y_b, w_b))
    return _residuals(y_a, w_a) / w_a.sum() - _residuals(y_b, w_b) / w_b.sum()


def ratio_difference_se(y_a, w_a, y_b, w_b) -> float:
    """Standard error of R_a - R_b, paired over clusters (`paired_terms`)."""
    return _linearised_se(paired_terms(y_a, w_a, y_b, w_b))


def effective_documents(z) -> float:
    """(Σ z²)² / Σ z⁴: how many documents the variance Σ z² rests on. n equal terms give n; one term
    carrying it all gives 1. A standard error is itself only as precise as the documents behind it: with a
    heavy-tailed split (a few long, tabular documents on which two sizes differ by a nat per token) doubling
    the split moves it by whether the new half brings such documents, not by 1/sqrt(2)."""
    z2 = np.asarray(z, np.float64) ** 2
    return float(z2.sum() ** 2 / (z2 ** 2).sum()) if z2.sum() > 0 else math.nan


def ratio_standard_error(values, weights, clusters) -> float:
    """Standard error of the ratio mean R = Σ values / Σ weights, with rows grouped into clusters.

    For eval loss: per row the summed nll (`values`), its weight (`weights`) and the
    document it comes from (`clusters`). Clusters are documents because tokens, and
    rows, of one document are correlated (one topic, style, vocabulary): a per-token
    SE treats them as independent and comes out too small. Documents are roughly
    independent draws from the split, so the delta-method (linearised) variance of
    the ratio over cluster sums y_d, w_d is
        SE = sqrt(n / (n - 1) · Σ_d (y_d - R w_d)²) / Σ_d w_d
    for n clusters; nan for fewer than two.
    """
    _, (y, w) = document_sums(clusters, values, weights)
    return ratio_se_of_sums(y, w)


def _json_numbers(x: np.ndarray) -> list:
    """A plain list, of ints where every value is a whole number (token and byte counts)."""
    return x.astype(np.int64).tolist() if np.all(x == np.round(x)) else x.tolist()


@dataclasses.dataclass(frozen=True)
class EvalDocuments:
    """One evaluation's per-document sums: ids (sorted, distinct), nll, weight (targets counted), bytes."""
    doc: np.ndarray
    nll: np.ndarray
    weight: np.ndarray
    bytes: Optional[np.ndarray] = None
    step: Optional[int] = None

    @classmethod
    def from_rows(cls, doc, nll, weight, row_bytes=None, step=None) -> "EvalDocuments":
        """Groups eval rows (per row: its document, summed nll, weight, bytes) by document."""
        columns = (nll, weight) if row_bytes is None else (nll, weight, row_bytes)
        ids, sums = document_sums(doc, *columns)
        return cls(ids, *sums, step=step)

    @property
    def loss(self) -> float:
        """Nats per weighted target: Σ nll / Σ weight."""
        return float(self.nll.sum() / self.weight.sum())

    @property
    def loss_se(self) -> float:
        return ratio_se_of_sums(self.nll, self.weight)

    @property
    def bpb(self) -> float:
        """Bits per byte of the text the weighted targets encode."""
        return float(self.nll.sum() / math.log(2) / self.bytes.sum())

    @property
    def bpb_se(self) -> float:
        return ratio_se_of_sums(self.nll, self.bytes) / math.log(2)

    def save(self, run_dir, step: Optional[int] = None) -> Path:
        """Writes run_dir/eval_documents.json, compact, atomically (a temp file, then os.replace)."""
        step = self.step if step is None else step
        record = {"step": None if step is None else int(step), "doc": _json_numbers(self.doc),
                  "nll": self.nll.tolist(), "weight": _json_numbers(self.weight)}
        if self.bytes is not None:
            record["bytes"] = _json_numbers(self.bytes)
        path = Path(run_dir) / FILENAME
        temp = path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(record, separators=(",", ":")) + "\n")
        os.replace(temp, path)
        return path


def load_eval_documents(run_dir) -> EvalDocuments:
    """The per-document sums a run's final evaluation wrote; ValueError naming the file when absent or malformed."""
    path = Path(run_dir) / FILENAME
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: not found (written when a run finishes)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from None
    if not isinstance(record, dict) or not all(k in record for k in ("doc", "nll", "weight")):
        raise ValueError(f"{path}: expected an object with doc, nll and weight lists")
    try:
        doc = np.asarray(record["doc"], np.int64)
        columns = [np.asarray(record[k], np.float64) for k in ("nll", "weight", "bytes") if k in record]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: doc, nll, weight and bytes must be lists of numbers") from None
    if doc.ndim != 1 or any(c.shape != doc.shape for c in columns):
        raise ValueError(f"{path}: doc, nll, weight and bytes must be lists of one length")
    if len(doc) == 0 or not all(np.isfinite(c).all() for c in columns) or (columns[1] < 0).any() \
            or columns[1].sum() <= 0:
        raise ValueError(f"{path}: needs at least one document, finite sums and weights >= 0 (not all 0)")
    order = np.argsort(doc, kind="stable")
    doc, columns = doc[order], [c[order] for c in columns]
    if (np.diff(doc) == 0).any():
        raise ValueError(f"{path}: a document id appears twice")
    return EvalDocuments(doc, *columns, step=record.get("step"))


def _paired(a: EvalDocuments, b: EvalDocuments, name_a, name_b) -> tuple[float, float]:
    """(L_a - L_b, its standard error paired over documents); ValueError unless both scored the same documents."""
    if not np.array_equal(a.doc, b.doc):
        only_a, only_b = len(np.setdiff1d(a.doc, b.doc)), len(np.setdiff1d(b.doc, a.doc))
        raise ValueError(f"runs {name_a} and {name_b} were not scored on the same eval documents "
                         f"({only_a} only in the first, {only_b} only in the second)")
    if not np.array_equal(a.weight, b.weight):
        differ = int((a.weight != b.weight).sum())
        raise ValueError(f"runs {name_a} and {name_b} weigh {differ} of their {len(a.doc)} eval documents "
                         f"differently (another tokenizer, sequence length or objective?)")
    return a.loss - b.loss, ratio_difference_se(a.nll, a.weight, b.nll, b.weight)


def heaviest_documents(doc, z, count: int = 3) -> list[int]:
    """The ids (`doc`) of the `count` documents whose terms `z` carry the most of a variance Σ z²."""
    return [int(doc[i]) for i in np.argsort(-np.asarray(z) ** 2, kind="stable")[:count]]


def paired_difference(run_dir_a, run_dir_b) -> tuple[float, float]:
    """(eval loss of run a - eval loss of run b, its standard error with documents as paired clusters).

    Documents are matched by id; ValueError naming the runs unless both were scored on the same
    documents with the same weights."""
    return _paired(load_eval_documents(run_dir_a), load_eval_documents(run_dir_b), run_dir_a, run_dir_b)


def _group_order(value):
    return (isinstance(value, str), value)


def row_field(row: dict, key: str):
    """A results row's field; 'config.B' reads binding B of the row's config (e.g. config.lr_schedule.peak_lr)."""
    if key.startswith("config."):
        return (row.get("config") or {}).get(key[len("config."):])
    return row.get(key)


def neighbour_differences(rows, results_dir, group_key: str = "budget", size_key: str = "params_total") -> dict:
    """Loss differences between neighbouring sizes within each group of a sweep's results rows.

    Rows are grouped by `group_key` (an IsoFLOP budget, a token count), sorted by `size_key`
    within a group (either may be 'config.B', a binding of the row's config: a learning-rate
    check orders its runs by config.lr_schedule.peak_lr), and each neighbouring pair is compared
    on its runs' eval documents (results_dir/<run>/eval_documents.json). Returns {"pairs": [...], "skipped": [...]}: per pair
    {group, run_a, run_b, N_a, N_b, difference (L_a - L_b, a the smaller), se_difference (paired),
    se_a, se_b (each run's own), effective_documents (behind the paired variance), heaviest_documents
    (the ids of the 3 that carry most of it)}; per row left out {run, reason} (no run directory, no
    eval_documents.json, no group or size). A pair scored on different documents raises ValueError.
    """
    results_dir = Path(results_dir)
    groups, skipped = {}, []
    for row in rows:
        run = row.get("run")
        if run is None:
            reason = "no run name"
        elif not (results_dir / run).is_dir():
            reason = f"no run directory {results_dir / run}"
        elif not (results_dir / run / FILENAME).is_file():
            reason = f"no {FILENAME} (an older or an unfinished run)"
        elif row_field(row, group_key) is None:
            reason = f"no {group_key}"
        elif row_field(row, size_key) is None:
            reason = f"no {size_key}"
        else:
            groups.setdefault(row_field(row, group_key), []).append(row)
            continue
        skipped.append({"run": run, "reason": reason})
    pairs, loaded = [], {}

    def documents(run):
        if run not in loaded:
            loaded[run] = load_eval_documents(results_dir / run)
        return loaded[run]

    for group in sorted(groups, key=_group_order):
        members = sorted(groups[group], key=lambda r: (row_field(r, size_key), r["run"]))
        for row_a, row_b in zip(members, members[1:]):
            a, b = documents(row_a["run"]), documents(row_b["run"])
            difference, se = _paired(a, b, row_a["run"], row_b["run"])
            z = paired_terms(a.nll, a.weight, b.nll, b.weight)
            pairs.append({"group": group, "run_a": row_a["run"], "run_b": row_b["run"],
                          "N_a": row_field(row_a, size_key), "N_b": row_field(row_b, size_key),
                          "difference": difference,
                          "se_difference": se, "se_a": a.loss_se, "se_b": b.loss_se,
                          "effective_documents": effective_documents(z), "heaviest_documents": heaviest_documents(a.doc, z)})
    return {"pairs": pairs, "skipped": skipped}


def _number(x) -> str:
    """A size with thousands separators; a fractional value (a learning rate) to 4 significant digits."""
    return f"{int(x):,}" if float(x).is_integer() else f"{x:.4g}"


def _report(result: dict, group_key: str, size_key: str) -> list[str]:
    pairs = result["pairs"]
    width = max(5, *(len(name) for p in pairs for name in (p["run_a"], p["run_b"])))
    label = "N" if size_key.startswith("params") else size_key.rsplit(".", 1)[-1][:9]
    header = (f"  {'run a':<{width}}  {'run b':<{width}}  {label + ' a':>11}  {label + ' b':>11}  {'L_a - L_b':>10}  "
              f"{'paired SE':>9}  {'z':>7}  {'SE a':>7}  {'SE b':>7}  {'n_eff':>7}")
    lines, group = [], object()
    for p in pairs:
        if p["group"] != group:
            group = p["group"]
            lines += [f"{group_key} {group:g}" if isinstance(group, (int, float)) else f"{group_key} {group}", header]
        z = p["difference"] / p["se_difference"] if p["se_difference"] > 0 else math.inf
        lines.append(f"  {p['run_a']:<{width}}  {p['run_b']:<{width}}  {_number(p['N_a']):>11}  {_number(p['N_b']):>11}  "
                     f"{p['difference']:>+10.4f}  {p['se_difference']:>9.5f}  {z:>7.1f}  {p['se_a']:>7.4f}  "
                     f"{p['se_b']:>7.4f}  {p['effective_documents']:>7.1f}")
    for s in result["skipped"]:
        lines.append(f"skipped {s['run']}: {s['reason']}")
    paired = np.array([p["se_difference"] for p in pairs])
    own = np.array([se for p in pairs for se in (p["se_a"], p["se_b"])])
    independent = np.array([math.hypot(p["se_a"], p["se_b"]) for p in pairs])
    largest = pairs[int(np.nanargmax(paired))] if np.isfinite(paired).any() else pairs[0]
    lines.append(
        f"summary: {len(pairs)} neighbouring pairs in {len({p['group'] for p in pairs})} groups by {size_key}: "
        f"median |difference| {np.median([abs(p['difference']) for p in pairs]):.4f}, "
        f"median paired SE {np.median(paired):.5f}, median unpaired SE {np.median(own):.4f} per run "
        f"({np.median(independent):.4f} for a difference taken as independent), largest paired SE "
        f"{largest['se_difference']:.5f} ({largest['run_a']} vs {largest['run_b']})")
    heavy = Counter(doc for p in pairs for doc in p["heaviest_documents"])
    lines.append(
        f"documents behind the paired SEs: median n_eff {np.nanmedian([p['effective_documents'] for p in pairs]):.1f} "
        f"((Σ z²)² / Σ z⁴ over a pair's documents; n equal shares give n); most often among a pair's 3 heaviest "
        f"(document id: pairs): {', '.join(f'{doc}: {n}' for doc, n in heavy.most_common(5))}")
    return lines


def _main(argv) -> int:
    parser = cli.ArgumentParser(prog="python -m scaling.eval_precision", description=__doc__.split("\n")[0])
    parser.add_argument("results", help="a sweep's results.jsonl (run directories beside it)")
    parser.add_argument("--group_key", default="budget",
                        help="results field that groups runs, or config.BINDING (default: budget)")
    parser.add_argument("--size_key", default="params_total",
                        help="results field that orders runs within a group, or config.BINDING (default: params_total)")
    args = parser.parse_args(argv)
    rows = load_results(args.results)
    result = neighbour_differences(rows, Path(args.results).parent, args.group_key, args.size_key)
    if not result["pairs"]:
        first = result["skipped"][0] if result["skipped"] else None
        raise cli.InputError(f"{args.results}: no {args.group_key} has two runs with {FILENAME}"
                             + (f" ({len(result['skipped'])} rows skipped, e.g. {first['run']}: {first['reason']})"
                                if first else ""))
    print("\n".join(_report(result, args.group_key, args.size_key)))
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
