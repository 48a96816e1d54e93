"""Fit scaling laws to a sweep's results.

    python -m scaling.fit DIR/results.jsonl [--out DIR/fits.json]
        [--accounting kaplan|chinchilla|both] [--bootstrap K]
        [--fix E=1.7] [--fix alpha=0.3] [--tie_exponents] [--weight_by_se]

Prints a table (parameters with bootstrap intervals, exponents, N_opt and D_opt
at a few budgets, and a warning for each parameter the runs do not identify)
and writes the same as JSON. Fits what the rows allow (scaling/sweep_fits.py):
Chinchilla Approach 3 and the KM laws always, IsoFLOP (Approach 2) when rows
carry `budget`, Approach 1 when the runs' metrics.jsonl lie beside the
results, data-constrained when rows carry `unique_tokens` and some run
repeats data. --fix and --tie_exponents constrain Approach 3's law. With budgets,
the IsoFLOP curvature check (scaling/curvature.py) sets Approach 3's profiles
against the runs' own and warns when their ratio drifts with the budget.
Bad input: one line on stderr, exit status 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from scaling import cli
from scaling.cli import InputError
from scaling.curvature import curvature_line, sweep_curvature
from scaling.inputs import arrays_from_rows, fit_rows, mixed_data_warning, replicate_spread, window_line
from scaling.isoflop import exponent_gap
from scaling.sweep_fits import FORMS, LAWS, fit_sweep

FIXABLE = ("E", "alpha", "beta")


def _budgets(C):
    """The largest budget in the data and 10x, 100x, 1000x it: the extrapolations one plans."""
    return float(np.max(C)) * 10.0 ** np.arange(4)


def _warnings(fit):
    """What the fit says it could not determine: identification diagnostics, Approach 2's budgets."""
    return [*getattr(fit, "diagnostics", {}).get("warnings", []), *getattr(fit, "warnings", [])]


def _report(accounting, arrays, fits, lines, run_sd=0.0):
    """Append the table for one accounting to `lines`; return its JSON form."""
    lines.append(f"== accounting: {accounting} ({len(arrays['loss'])} runs) ==")
    budgets = _budgets(arrays["C"])
    out = {}
    for law, fit in fits.items():
        if isinstance(fit, str):
            lines.append(f"{law}: {fit}")
            out[law] = {"error": fit}
            continue
        d = fit.to_dict()
        lines.append(f"{law}: {FORMS[law]}")
        for name, value in d["estimates"].items():
            if value is None:
                continue
            ci = fit.intervals.get(name)
            ci = f"  [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
            lines.append(f"  {name:<14}{value:>12.4g}{ci}")
        if "huber_objective" in d:
            lines.append(f"  {'objective':<14}{d['huber_objective']:>12.5g}  (summed Huber loss of log residuals)")
        lines.extend(f"  warning: {w}" for w in _warnings(fit))
        if hasattr(fit, "optimal_allocation") and getattr(fit, "a", None) is not None:
            with np.errstate(all="ignore"):
                n_opt, d_opt = fit.optimal_allocation(budgets)
            d["allocation"] = [{"C": float(c), "N_opt": float(n), "D_opt": float(t)}
                               for c, n, t in zip(budgets, n_opt, d_opt)]
            lines.append(f"  {'C':>12}{'N_opt':>12}{'D_opt':>12}")
            lines.extend(f"  {c:>12.3g}{n:>12.3g}{t:>12.3g}" for c, n, t in
                         zip(budgets, n_opt, d_opt))
        out[law] = d
    curvature = sweep_curvature(fits.get("chinchilla"), arrays, run_sd)
    if curvature:
        lines.append(curvature_line(curvature))
        if curvature["warning"]:
            lines.append(f"  warning: {curvature['warning']}")
        out["isoflop_curvature"] = curvature
    return out


def _constraints(args):
    fixed = {}
    for item in args.fix:
        name, equals, value = item.partition("=")
        if not equals or name not in FIXABLE:
            raise InputError(f"--fix {item!r}: expected NAME=VALUE with NAME one of {', '.join(FIXABLE)}")
        try:
            fixed[name] = float(value)
        except ValueError:
            raise InputError(f"--fix {item!r}: {value!r} is not a number") from None
    return {"fixed": fixed, "tie_exponents": args.tie_exponents}


def _accounting_gap(data, bootstrap, lines):
    """Approach 2's a under the Kaplan accounting minus a under Chinchilla's, with a paired interval."""
    k, c = data["kaplan"], data["chinchilla"]
    try:
        gap = exponent_gap(k["N"], c["N"], c["D"], c["loss"], c["budget"], bootstrap=bootstrap)
    except ValueError as err:
        lines.append(f"accounting gap (Approach 2): not fitted: {err}")
        return None
    interval = gap["interval"]
    within = (f" [{interval[0]:.4g}, {interval[1]:.4g}] (paired bootstrap, {gap['replicates']} of {bootstrap} "
              f"resamples usable; {gap['at_or_below_zero']:.1%} of them <= 0)" if interval
              else " (no usable bootstrap resample)")
    lines.append(f"accounting gap (Approach 2): a_kaplan - a_chinchilla = {gap['gap']:.4g}{within}")
    return gap


def _spread_line(spread: dict) -> str:
    if spread["source"] == "--run_sd":
        return f"run-to-run spread: {spread['sd']:.4g} nats (--run_sd), counted beside each run's eval SE"
    if spread["source"] == "replicates":
        return (f"run-to-run spread: {spread['sd']:.4g} nats, pooled over {spread['configurations']} configurations "
                f"trained with other seeds ({spread['dof']} dof), counted beside each run's eval SE")
    return ("run-to-run spread: not measured (no configuration was trained with two seeds): the lack-of-fit "
            "check counts each run's eval SE alone, and a seed's spread can exceed it many times")


def _main(argv):
    parser = cli.ArgumentParser(prog="python -m scaling.fit", description=__doc__.split("\n")[0])
    parser.add_argument("results", help="a sweep's results.jsonl")
    parser.add_argument("--out", help="where to write the fits (default: fits.json beside results)")
    parser.add_argument("--accounting", choices=["kaplan", "chinchilla", "both"], default="both")
    parser.add_argument("--bootstrap", type=cli.non_negative_int, default=0, metavar="K",
                        help="bootstrap resamples for confidence intervals (default 0: none)")
    parser.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                        help="hold an Approach 3 parameter (E, alpha or beta) at a value; repeatable")
    parser.add_argument("--tie_exponents", action="store_true", help="Approach 3 with alpha = beta")
    parser.add_argument("--run_sd", type=float, metavar="S",
                        help="run-to-run spread of one configuration's loss (nats), counted beside each run's eval "
                             "SE in the lack-of-fit check (default: measured on the runs trained with other seeds "
                             "only, 0 without any)")
    parser.add_argument("--weight_by_se", action="store_true",
                        help="weight each run by 1/SE^2 of its eval loss (rows need final_eval_loss_se)")
    cli.add_min_budget(parser)
    args = parser.parse_args(argv)
    constraints = _constraints(args)
    if args.run_sd is not None and not (args.run_sd >= 0 and np.isfinite(args.run_sd)):
        raise InputError(f"--run_sd must be a number of nats >= 0, got {args.run_sd}")
    rows = cli.windowed_results(args)
    accountings = ["kaplan", "chinchilla"] if args.accounting == "both" else [args.accounting]
    data = {acc: arrays_from_rows(rows, acc) for acc in accountings}
    minimum = 6 - len(constraints["fixed"]) - constraints["tie_exponents"]
    if len(fit_rows(rows)) < minimum:
        raise InputError(f"{args.results}: {len(fit_rows(rows))} runs, need at least {minimum} to fit")
    if args.weight_by_se and "loss_se" not in data[accountings[0]]:
        raise InputError("--weight_by_se: some row has no final_eval_loss_se")
    lines, result = [], {"results": str(args.results), "fits": {}}
    if args.min_budget:
        result["min_budget"] = args.min_budget
        lines.append(window_line(rows, args.min_budget))
    mixed = mixed_data_warning(rows)
    if mixed:
        lines.append(f"warning: {mixed}")
        result["warnings"] = [mixed]
    spread = replicate_spread(rows)
    result["run_sd"] = {"sd": args.run_sd, "source": "--run_sd"} if args.run_sd is not None else \
        {**spread, "source": "replicates"} if spread else {"sd": 0.0, "source": "no replicates"}
    lines.append(_spread_line(result["run_sd"]))
    for acc, arrays in data.items():
        fits = fit_sweep(rows, acc, args.bootstrap, results_dir=Path(args.results).parent, laws=LAWS,
                         weight_by_se=args.weight_by_se, chinchilla_options=constraints,
                         run_sd=result["run_sd"]["sd"])
        result["fits"][acc] = _report(acc, arrays, fits, lines, result["run_sd"]["sd"])
    if args.accounting == "both" and args.bootstrap and "budget" in data["kaplan"]:
        result["accounting_gap"] = _accounting_gap(data, args.bootstrap, lines)
    out = Path(args.out) if args.out else Path(args.results).with_name("fits.json")
    cli.write_json(out, result)
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


def main(argv=None):
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
