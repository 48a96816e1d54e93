"""Fit scaling laws to a sweep's results.

    python -m scaling.fit DIR/results.jsonl [--out DIR/fits.json]
        [--accounting kaplan|chinchilla|both] [--bootstrap K]

Prints a table (parameters with bootstrap intervals, exponents, N_opt and D_opt
at a few budgets) and writes the same as JSON. Fits what the rows allow:
Chinchilla Approach 3 and the KM laws always, IsoFLOP (Approach 2) when rows
carry `budget`, data-constrained when they carry `unique_tokens` and some run
repeats data. Bad input: one line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from scaling.chinchilla import fit_chinchilla
from scaling.data_constrained import fit_data_constrained
from scaling.inputs import arrays_from_rows, load_results
from scaling.isoflop import fit_isoflop
from scaling.kaplan import fit_kaplan

MIN_RUNS = 6  # Approach 3 has five parameters

FORMS = {
    "chinchilla": "L = E + A/N^alpha + B/D^beta (Approach 3)",
    "kaplan": "L = (X_c/X)^alpha_X, X = N, D, C; joint [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D",
    "isoflop": "parabolas per budget (Approach 2): N_opt = k C^a, D_opt = k C^b",
    "data_constrained": "Chinchilla's law in effective N', D' (Muennighoff et al. 2023)",
}


class InputError(Exception):
    """Bad input: reported as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise InputError(message)


def _fits(arrays, bootstrap):
    """{law: fit or error message} for everything these arrays allow."""
    N, D, C, loss = (arrays[k] for k in ("N", "D", "C", "loss"))
    tasks = {
        "chinchilla": lambda: fit_chinchilla(N, D, loss, bootstrap=bootstrap),
        "kaplan": lambda: fit_kaplan(N=N, D=D, C=C, loss=loss, bootstrap=bootstrap),
    }
    if "budget" in arrays:
        tasks["isoflop"] = lambda: fit_isoflop(N, D, loss, arrays["budget"], bootstrap=bootstrap)
    if "unique_tokens" in arrays and np.any(D > arrays["unique_tokens"]):
        tasks["data_constrained"] = lambda: fit_data_constrained(
            N, D, arrays["unique_tokens"], loss, bootstrap=bootstrap)
    out = {}
    for law, task in tasks.items():
        try:
            out[law] = task()
        except (ValueError, RuntimeError) as err:
            out[law] = f"not fitted: {err}"
    return out


def _budgets(C):
    """The largest budget in the data and 10x, 100x, 1000x it: the extrapolations one plans."""
    return float(np.max(C)) * 10.0 ** np.arange(4)


def _report(accounting, arrays, fits, lines):
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
        if hasattr(fit, "optimal_allocation") and getattr(fit, "a", None) is not None:
            n_opt, d_opt = fit.optimal_allocation(budgets)
            d["allocation"] = [{"C": float(c), "N_opt": float(n), "D_opt": float(t)}
                               for c, n, t in zip(budgets, n_opt, d_opt)]
            lines.append(f"  {'C':>12}{'N_opt':>12}{'D_opt':>12}")
            lines.extend(f"  {c:>12.3g}{n:>12.3g}{t:>12.3g}" for c, n, t in
                         zip(budgets, n_opt, d_opt))
        out[law] = d
    return out


def main(argv=None):
    parser = _Parser(prog="python -m scaling.fit", description=__doc__.split("\n")[0])
    parser.add_argument("results", help="a sweep's results.jsonl")
    parser.add_argument("--out", help="where to write the fits (default: fits.json beside results)")
    parser.add_argument("--accounting", choices=["kaplan", "chinchilla", "both"], default="both")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="K",
                        help="bootstrap resamples for confidence intervals (default 0: none)")
    try:
        args = parser.parse_args(argv)
        if args.bootstrap < 0:
            raise InputError("--bootstrap must be >= 0")
        rows = load_results(args.results)
        accountings = ["kaplan", "chinchilla"] if args.accounting == "both" else [args.accounting]
        data = {acc: arrays_from_rows(rows, acc) for acc in accountings}
        if len(rows) < MIN_RUNS:
            raise InputError(f"{args.results}: {len(rows)} runs, need at least {MIN_RUNS} to fit")
    except (InputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lines, result = [], {"results": str(args.results), "fits": {}}
    for acc, arrays in data.items():
        result["fits"][acc] = _report(acc, arrays, _fits(arrays, args.bootstrap), lines)
    out = Path(args.out) if args.out else Path(args.results).with_name("fits.json")
    try:
        out.write_text(json.dumps(result, indent=2) + "\n")
    except OSError as err:
        print(f"error: cannot write {out}: {err.strerror}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
