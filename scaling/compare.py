"""Sweeps side by side: what each one's fits say about allocation, and how its verification runs came out.

    python -m scaling.compare DIR1/fits.json DIR2/fits.json ... [--markdown] [--eval_se]
                              [--agree 0.05] [--half_width 0.1] [--within 0.01]

Each argument is a file that `python -m scaling.fit ... --out` wrote. From it, under the Chinchilla
accounting: the fit's window and runs, how many IsoFLOP budgets are bracketed, a (N_opt ∝ C^a) from
Approach 2, Approach 3 and KM with their intervals, Approach 3's lack of fit, and Approach 2's paired
gap a_kaplan − a_chinchilla. From the verification rows of the sweep's results.jsonl (train.sweep's
`role: verification`, beside the fits file or where the fits file says), each verification budget's
measured loss, the mean of its seeds with its standard error over the seeds, against each law's
prediction: measured − predicted, relative, and whether the measurement is inside the prediction's
interval. `--eval_se` adds the median paired SE of neighbouring sizes (`scaling.eval_precision`) over
the budgets the fits file holds, which reads every run's eval documents. The verification rows are
the sweep's, predicted as the runner predicted them (prediction.json says from which budgets),
whatever window the fits file has.

Each sweep ends with its checks: every budget bracketed; Approaches 2 and 3 within `--agree` of each
other; each a's interval within ±`--half_width` of it; the gap's interval above 0; and, per law, the
verification within `--within` of its prediction and inside its interval. The defaults are the
thresholds the README's CPU sweeps are judged by.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from scaling import cli
from scaling.predict import verification_targets

APPROACHES = (("isoflop", "Approach 2"), ("chinchilla", "Approach 3"), ("kaplan", "KM"))


def _estimate(fit: dict, name: str):
    """(value, [lo, hi] or None) of a fit's estimate, or None when the fit has none."""
    value = (fit.get("estimates") or {}).get(name)
    if value is None:
        return None
    interval = (fit.get("intervals") or {}).get(name)
    return float(value), interval if interval and None not in interval else None


def _results_path(fits_path: Path, recorded) -> Path | None:
    """The sweep's results.jsonl: where the fits file says, else beside the fits file."""
    for candidate in ([Path(recorded)] if recorded else []) + [fits_path.parent / "results.jsonl"]:
        if candidate.is_file():
            return candidate
    return None


def verifications(rows) -> list[dict]:
    """One entry per verification budget: its runs (the seeds), the N and D predicted for, their mean loss
    and its standard error over the seeds (None for one seed), each seed's eval SE, and per approach the
    prediction, its interval, the relative error (measured − predicted) / predicted and whether the
    measurement lies inside the interval. Rows still training (no final_eval_loss), or without the
    prediction train.sweep records in them, are left out. train.sweep's report and the notebook read the same entries."""
    by_budget = {}
    for row in rows:
        if (row.get("role") == "verification" and row.get("final_eval_loss") is not None
                and isinstance(row.get("prediction"), dict)):
            by_budget.setdefault(float(row["budget"]), []).append(row)
    entries = []
    for budget in sorted(by_budget):
        seeds = sorted(by_budget[budget], key=lambda r: r["run"])
        losses = np.array([r["final_eval_loss"] for r in seeds], float)
        measured = float(losses.mean())
        # Seeds differ in initialisation and data order; the eval documents are the same for all of them,
        # so this is the spread a rerun would show, not the eval set's sampling error (final_eval_loss_se).
        seed_se = float(losses.std(ddof=1) / np.sqrt(len(losses))) if len(losses) > 1 else None
        prediction = seeds[0]["prediction"]
        laws = {}
        for approach, (loss, interval) in verification_targets(prediction).items():
            inside = None if not interval else bool(interval[0] <= measured <= interval[1])
            laws[approach] = {"predicted": loss, "interval": interval, "error": (measured - loss) / loss,
                              "inside": inside}
        entries.append({"budget": budget, "runs": [r["run"] for r in seeds], "N": seeds[0].get("params_total"),
                        "D": prediction.get("D"), "accounting": prediction.get("accounting", "chinchilla"),
                        "measured": measured, "seed_se": seed_se,
                        "eval_se": [r.get("final_eval_loss_se") for r in seeds], "laws": laws})
    return entries


def summarise(fits_path, eval_se: bool = False) -> dict:
    """What one fits file (and its sweep's verification rows) says; see the module's docstring."""
    fits_path = Path(fits_path)
    try:
        content = json.loads(fits_path.read_text())
    except OSError as err:
        raise cli.InputError(f"cannot read {fits_path}: {err.strerror}") from None
    except json.JSONDecodeError:
        raise cli.InputError(f"{fits_path} is not JSON: give a file that `python -m scaling.fit --out` wrote") from None
    every_accounting = content.get("fits") if isinstance(content, dict) else None
    fits = every_accounting.get("chinchilla") if isinstance(every_accounting, dict) else None
    if not isinstance(fits, dict) or "isoflop" not in fits:
        raise cli.InputError(f"{fits_path} holds no Chinchilla-accounting IsoFLOP fit: give a file that "
                             f"`python -m scaling.fit --out` wrote for an IsoFLOP sweep")
    iso = fits["isoflop"]
    profiles = iso.get("profiles") or []
    budgets = [p["budget"] for p in profiles]
    summary = {
        "name": f"{fits_path.parent.name}/{fits_path.stem}",
        "min_budget": content.get("min_budget"),
        "runs": iso.get("n_points"),
        "budgets": (min(budgets), max(budgets)) if budgets else None,
        "bracketed": (sum(bool(p.get("bracketed")) for p in profiles), len(profiles)),
        "a": {approach: _estimate(fits.get(approach) or {}, "a") for approach, _ in APPROACHES},
        "lack_of_fit": ((fits.get("chinchilla") or {}).get("diagnostics") or {}).get("lack_of_fit"),
        "gap": None,
        "verifications": [],
        "paired_se": None,
    }
    gap = content.get("accounting_gap")
    if gap and gap.get("gap") is not None:
        summary["gap"] = (float(gap["gap"]), gap.get("interval"))
    results = _results_path(fits_path, content.get("results"))
    if results is not None:
        from scaling.inputs import load_results
        rows = load_results(results)
        summary["verifications"] = verifications(rows)
        if eval_se:
            from scaling.eval_precision import neighbour_differences
            fitted = [r for r in rows if r.get("role") != "verification" and r.get("budget") in budgets]
            pairs = neighbour_differences(fitted, results.parent)["pairs"]
            if pairs:
                summary["paired_se"] = float(np.median([p["se_difference"] for p in pairs]))
    summary["results"] = str(results) if results else None
    return summary


def checks(summary: dict, agree: float, half_width: float, within: float) -> list[tuple[str, bool | None, str]]:
    """(criterion, met (None: cannot tell), the figure behind it) for one sweep."""
    done, total = summary["bracketed"]
    out = [("every budget bracketed", total > 0 and done == total, f"{done} of {total}")]
    a2, a3 = summary["a"]["isoflop"], summary["a"]["chinchilla"]
    if a2 and a3:
        out.append((f"Approaches 2 and 3 within {agree:g}", abs(a2[0] - a3[0]) <= agree, f"{abs(a2[0] - a3[0]):.3f}"))
    for approach, label in APPROACHES[:2]:
        estimate = summary["a"][approach]
        if estimate and estimate[1]:
            reach = max(estimate[0] - estimate[1][0], estimate[1][1] - estimate[0])
            out.append((f"{label}'s interval within ±{half_width:g}", reach <= half_width, f"±{reach:.3f}"))
        elif estimate:
            out.append((f"{label}'s interval within ±{half_width:g}", None, "no interval (fitted without --bootstrap)"))
    if summary["gap"] and summary["gap"][1]:
        out.append(("Kaplan gap above 0", summary["gap"][1][0] > 0, f"lower end {summary['gap'][1][0]:+.3f}"))
    for entry in summary["verifications"]:
        for approach, label in APPROACHES:
            law = entry["laws"].get(approach)
            if law:
                where = {True: "inside", False: "outside", None: "no interval"}[law["inside"]]
                out.append((f"verification at C={_flops(entry['budget'])}, {label}: within {within:.0%} and inside",
                            _met(law, within), f"{law['error']:+.2%}, {where}"))
    return out


def _with_interval(estimate, digits=3) -> str:
    if not estimate:
        return "—"
    value, interval = estimate
    return f"{value:.{digits}f}" + (f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else "")


def _flops(value) -> str:
    return f"{value:g}".replace("e+", "e")


def _window(summary) -> str:
    low, high = summary["budgets"] or (None, None)
    span = f"{_flops(low)}-{_flops(high)}" if low else "no budgets"
    return f"{span}, {summary['runs']} runs"


def _chi2(summary) -> str:
    lack = summary["lack_of_fit"]
    return f"{lack['chi2_per_dof']:.1f}" if lack and lack.get("chi2_per_dof") is not None else "—"


def _met(law, within) -> bool:
    """Within `within` of the prediction, and inside its interval where it has one."""
    return abs(law["error"]) <= within and law["inside"] is not False


def _measured(entry) -> str:
    """The measured loss, with its SE over the seeds where there are several."""
    return f"{entry['measured']:.4f}" + (f" ± {entry['seed_se']:.4f}" if entry["seed_se"] is not None else "")


def _verification_cells(entry, within) -> list[str]:
    seeds = f" ({len(entry['runs'])} seeds)" if len(entry["runs"]) > 1 else ""
    cells = [f"{entry['runs'][0]}, {_flops(entry['budget'])}, {_measured(entry)}{seeds}"]
    for approach, _ in APPROACHES:
        law = entry["laws"].get(approach)
        figure = "—" if not law else f"{law['error']:+.2%}" + ("" if law["inside"] is not False else " (outside)")
        cells.append(f"**{figure}**" if law and _met(law, within) else figure)
    return cells


def markdown(summaries, within) -> list[str]:
    """One row per sweep (and one more per further verification budget), in the order given; a verification
    within `within` of its prediction and inside its interval in bold."""
    header = ["sweep (fits file)", "window", "bracketed", "Approach 2 a", "Approach 3 a", "KM a", "Kaplan gap",
              "Approach 3 χ²/dof", "paired eval SE", "verification: run, C, measured",
              "vs Approach 2's trend", "vs Approach 3", "vs KM"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        cells = [f"`{s['name']}`", _window(s), "{} of {}".format(*s["bracketed"]),
                 *(_with_interval(s["a"][approach]) for approach, _ in APPROACHES), _with_interval(s["gap"]),
                 _chi2(s), f"{s['paired_se']:.5f}" if s["paired_se"] is not None else "—"]
        entries = s["verifications"] or [None]
        for i, entry in enumerate(entries):
            row = cells if i == 0 else [""] * len(cells)
            lines.append("| " + " | ".join(row + (_verification_cells(entry, within) if entry else ["—"] * 4)) + " |")
    return lines


def text(summaries, agree, half_width, within) -> list[str]:
    lines = []
    for s in summaries:
        lines.append(f"== {s['name']}: {_window(s)} (Chinchilla accounting; results: {s['results'] or 'not found'})")
        for approach, label in APPROACHES:
            lines.append(f"  {label + ' a':<14} {_with_interval(s['a'][approach])}")
        lines.append(f"  {'Kaplan gap':<14} {_with_interval(s['gap'])} (Approach 2, a_kaplan − a_chinchilla, paired)")
        lines.append(f"  Approach 3's lack of fit: chi2/dof {_chi2(s)}")
        if s["paired_se"] is not None:
            lines.append(f"  median paired SE of neighbouring sizes in the window {s['paired_se']:.5f}")
        for entry in s["verifications"]:
            seeds = f", the mean of {len(entry['runs'])} seeds ± its SE over them" if len(entry["runs"]) > 1 else ""
            lines.append(f"  verification {entry['runs'][0]} at C={_flops(entry['budget'])}: "
                         f"measured {_measured(entry)}{seeds}")
            for approach, label in APPROACHES:
                law = entry["laws"].get(approach)
                if law:
                    interval = f" [{law['interval'][0]:.4f}, {law['interval'][1]:.4f}]" if law["interval"] else ""
                    lines.append(f"    {label:<11} predicted {law['predicted']:.4f}{interval}: {law['error']:+.2%}")
        for criterion, met, figure in checks(s, agree, half_width, within):
            mark = {True: "yes", False: "no", None: "?"}[met]
            lines.append(f"  {mark:<3} {criterion}: {figure}")
    return lines


def _main(argv) -> int:
    parser = cli.ArgumentParser(prog="python -m scaling.compare", description=__doc__.split("\n")[0])
    parser.add_argument("fits", nargs="+", help="fits files that `python -m scaling.fit --out` wrote")
    parser.add_argument("--markdown", action="store_true", help="one Markdown table, a row per sweep")
    parser.add_argument("--eval_se", action="store_true",
                        help="add the median paired SE of neighbouring sizes (reads every run's eval documents)")
    for flag, default, what in (("--agree", 0.05, "how close Approaches 2 and 3 must agree on a"),
                                ("--half_width", 0.1, "the widest an interval on a may reach either side"),
                                ("--within", 0.01, "the verification's largest relative error")):
        parser.add_argument(flag, type=float, default=default, help=f"{what} (default {default})")
    args = parser.parse_args(argv)
    for flag in ("agree", "half_width", "within"):
        if not getattr(args, flag) > 0:
            raise cli.InputError(f"--{flag} must be positive, not {getattr(args, flag)}")
    summaries = [summarise(path, args.eval_se) for path in args.fits]
    print("\n".join(markdown(summaries, args.within) if args.markdown else text(summaries, args.agree, args.half_width,
                                                                   args.within)))
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
