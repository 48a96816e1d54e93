"""Predict, then verify: the compute-optimal run at a budget, and its loss, from each approach.

    python -m scaling.predict DIR/results.jsonl --flops C [--accounting chinchilla|kaplan]
        [--bootstrap K] [--out prediction.json]
    python -m scaling.predict DIR/results.jsonl --backtest [--flops C] ...

C counts FLOPs as 6 N D with the accounting's N (the sweep's nominal budgets).
For each approach the table gives N_opt, D_opt and the loss predicted there,
each with its percentile bootstrap interval:

- Approach 3 and KM: the fitted law's optimum along C = 6 N D and the law's
  loss at it;
- Approach 2: N_opt and D_opt from the power laws through the IsoFLOP minima,
  and the loss from a power law in C through the minima's losses (Approach 2
  has no L(N, D) of its own).

`--backtest` asks the sweep's own budgets first, before any larger run is paid for: each budget
with two or more below it is predicted from the runs of the budgets below it alone, and set
against the minimum of its own IsoFLOP parabola (the loss of its best run where the parabola has
no interior vertex). Errors of one sign that grow with the step say the laws miss a bend in the
loss's fall, which a prediction beyond the largest budget then inherits.

A sweep with `Sweep.verify_factor` trains the Approach 3 optimum at a budget
beyond its largest and records this prediction beside what it measured
(train/sweep.py). Verification rows never enter the fits (scaling.inputs.fit_rows).
"""
from __future__ import annotations

import sys

import numpy as np

from scaling import cli
from scaling.inputs import arrays_from_rows, fit_rows, mixed_data_warning, window_line
from scaling.isoflop import budget_profile
from scaling.powerlaw import fit_power_law
from scaling.sweep_fits import LABELS, fit_sweep

APPROACHES = ("chinchilla", "kaplan", "isoflop")


def _interval(values, level):
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if len(values) < 2:
        return None
    tail = 50.0 * (1.0 - level)
    return [float(v) for v in np.percentile(values, [tail, 100.0 - tail])]


def _optimum(law, fit, flops):
    """(N_opt, D_opt, loss there) of one fit at `flops`; Nones where the fit cannot give them."""
    with np.errstate(all="ignore"):
        try:
            n_opt, d_opt = (float(x) for x in fit.optimal_allocation(flops))
        except (ValueError, TypeError):
            return None, None, None
        if law == "isoflop":
            C, _, _, loss_opt = np.array(fit.minima).T
            trend = fit_power_law(C, loss_opt)
            loss = None if trend is None else float(trend(flops))
        else:
            loss = float(fit.predict(n_opt, d_opt))
    return n_opt, d_opt, loss


def predict_from_fits(fits, flops, level=0.95):
    """{approach: {N_opt, D_opt, loss, and their intervals}} at `flops`, from fit_sweep's fits."""
    out = {}
    for law, fit in fits.items():
        if isinstance(fit, str):
            out[law] = {"error": fit}
            continue
        n_opt, d_opt, loss = _optimum(law, fit, flops)
        replicates = [_optimum(law, r, flops) for r in fit.replicate_fits]
        out[law] = {"N_opt": n_opt, "D_opt": d_opt, "loss": loss,
                    "N_opt_interval": _interval([r[0] for r in replicates], level),
                    "D_opt_interval": _interval([r[1] for r in replicates], level),
                    "interval": _interval([r[2] for r in replicates], level),
                    "a": None if fit.a is None else float(fit.a), "replicates": fit.replicates}
    return out


def loss_from_fits(fits, N, D, level=0.95):
    """{approach: {loss, interval}} at a given (N, D), for the fits with an L(N, D)."""
    out = {}
    for law, fit in fits.items():
        if isinstance(fit, str) or law == "isoflop":
            continue
        with np.errstate(all="ignore"):
            out[law] = {"loss": float(fit.predict(N, D)),
                        "interval": _interval([float(r.predict(N, D)) for r in fit.replicate_fits
                                               if r.law != "kaplan" or r.joint is not None], level)}
    return out


def predict(rows, flops, accounting="chinchilla", bootstrap=200, seed=0, level=0.95):
    """Each approach's compute-optimal N and D at `flops` and its predicted loss there (see the module doc)."""
    return predict_from_fits(fit_sweep(rows, accounting, bootstrap, seed, laws=APPROACHES), flops, level)


def predicted_loss(rows, N, D, accounting="chinchilla", bootstrap=200, seed=0, level=0.95):
    """Approach 3's and KM's predicted loss at (N, D), with bootstrap intervals."""
    return loss_from_fits(fit_sweep(rows, accounting, bootstrap, seed, laws=("chinchilla", "kaplan")),
                          N, D, level)


def verification_targets(prediction: dict) -> dict:
    """What a verification run's loss is set against, from its prediction (train.sweep's prediction.json):
    {approach: (loss, interval)}, Approach 3's and KM's L(N, D) at the run's N and D, and Approach 2's
    trend through the minima's losses at its own N_opt (Approach 2 has no L(N, D))."""
    targets = {law: (entry["loss"], entry.get("interval"))
               for law, entry in prediction["predicted_loss"].items() if entry.get("loss") is not None}
    trend = prediction.get("predict", {}).get("isoflop") or {}
    if trend.get("loss") is not None:
        targets["isoflop"] = (trend["loss"], trend.get("interval"))
    return targets


def backtest(rows, accounting="chinchilla", bootstrap=0, seed=0, level=0.95, min_budgets=2):
    """Each budget predicted from the budgets below it (see the module's docstring).

    Returns one dict per budget with at least `min_budgets` budgets below it: `budget`,
    `fitted_runs`, `measured` and `measured_from` ('vertex' or 'best run'), and `approaches`:
    {approach: {loss, interval, error, inside}}, error = (measured - predicted) / predicted.
    """
    rows = fit_rows(rows)
    arrays = arrays_from_rows(rows, accounting)
    if "budget" not in arrays:
        raise ValueError("a backtest needs the rows' IsoFLOP budgets, and these rows carry none")
    budgets = np.unique(arrays["budget"])
    if len(budgets) <= min_budgets:
        raise ValueError(f"a backtest needs more than {min_budgets} budgets, these rows have {len(budgets)}")
    out = []
    for budget in budgets[min_budgets:]:
        at = arrays["budget"] == budget
        profile = budget_profile(arrays["N"][at], arrays["D"][at], arrays["loss"][at], budget)
        measured = profile.loss_opt if profile.interior else float(arrays["loss"][at].min())
        below = [row for row, b in zip(rows, arrays["budget"]) if b < budget]
        approaches = {}
        for law, entry in predict(below, budget, accounting, bootstrap, seed, level).items():
            if entry.get("loss") is None:
                approaches[law] = {"error": None, "why": entry.get("error", "no loss at this budget")}
                continue
            interval = entry["interval"]
            approaches[law] = {"loss": entry["loss"], "interval": interval,
                               "error": (measured - entry["loss"]) / entry["loss"],
                               "inside": None if interval is None else bool(interval[0] <= measured <= interval[1])}
        out.append({"budget": float(budget), "fitted_runs": len(below), "measured": float(measured),
                    "measured_from": "vertex" if profile.interior else "best run", "approaches": approaches})
    return out


def backtest_report(steps, accounting, bootstrap):
    laws = [law for law in APPROACHES if any(law in step["approaches"] for step in steps)]
    lines = [f"backtest: each budget predicted from the budgets below it ({accounting} accounting; "
             f"{bootstrap} bootstrap resamples, 95% intervals); error = (measured - predicted) / predicted",
             f"{'budget':<9}{'fitted on':<11}{'measured':<20}" + "".join(f"{LABELS[law]:<28}" for law in laws)]
    for step in steps:
        cells = []
        for law in laws:
            entry = step["approaches"].get(law, {})
            if entry.get("error") is None:
                cells.append(f"{'n/a':<28}")
                continue
            where = "" if entry["inside"] is None else ", inside" if entry["inside"] else ", outside"
            cells.append(f"{entry['loss']:.4f} ({100 * entry['error']:+.1f}%{where})".ljust(28))
        measured = f"{step['measured']:.4f} ({step['measured_from']})"
        lines.append(f"{step['budget']:<9.3g}{str(step['fitted_runs']) + ' runs':<11}{measured:<20}" + "".join(cells))
    means = []
    for law in laws:
        errors = [step["approaches"][law]["error"] for step in steps
                  if step["approaches"].get(law, {}).get("error") is not None]
        means.append(f"{100 * np.mean(errors):+.1f}%".ljust(28) if errors else f"{'n/a':<28}")
    lines.append(f"{'mean error':<40}" + "".join(means))
    return "\n".join(lines)


def _with_interval(value, interval, spec):
    if value is None:
        return "n/a"
    text = format(value, spec)
    return text if interval is None else f"{text} [{format(interval[0], spec)}, {format(interval[1], spec)}]"


def report(prediction, flops, accounting, bootstrap):
    lines = [f"compute-optimal run at C = {flops:.3g} FLOPs ({accounting} accounting; "
             f"{bootstrap} bootstrap resamples, 95% intervals)",
             f"{'approach':<12}{'N_opt':<30}{'D_opt':<30}{'loss (nats/token)':<28}a"]
    for law, entry in prediction.items():
        if "error" in entry:
            lines.append(f"{LABELS[law]:<12}{entry['error']}")
            continue
        lines.append(f"{LABELS[law]:<12}{_with_interval(entry['N_opt'], entry['N_opt_interval'], '.3g'):<30}"
                     f"{_with_interval(entry['D_opt'], entry['D_opt_interval'], '.3g'):<30}"
                     f"{_with_interval(entry['loss'], entry['interval'], '.4f'):<28}{_with_interval(entry['a'], None, '.3f')}")
    return "\n".join(lines)


def _main(argv):
    parser = cli.ArgumentParser(prog="python -m scaling.predict", description=__doc__.split("\n")[0])
    parser.add_argument("results", help="a sweep's results.jsonl")
    parser.add_argument("--flops", type=float, help="the budget C = 6 N D to plan for")
    parser.add_argument("--backtest", action="store_true",
                        help="predict each budget from the budgets below it, against its own minimum")
    parser.add_argument("--accounting", choices=["kaplan", "chinchilla"], default="chinchilla")
    parser.add_argument("--bootstrap", type=cli.non_negative_int, default=200, metavar="K")
    parser.add_argument("--out", help="also write the prediction as JSON here")
    cli.add_min_budget(parser)
    args = parser.parse_args(argv)
    if args.flops is None and not args.backtest:
        raise cli.InputError("give --flops C (the budget to predict), --backtest, or both")
    if args.flops is not None and not (args.flops > 0 and np.isfinite(args.flops)):
        raise cli.InputError(f"--flops must be a positive number, got {args.flops}")
    rows = cli.windowed_results(args)
    mixed = mixed_data_warning(rows)
    if mixed:
        print(f"warning: {mixed}")
    if args.min_budget:
        print(window_line(rows, args.min_budget))
    steps = backtest(rows, args.accounting, args.bootstrap) if args.backtest else None
    prediction = None if args.flops is None else predict(rows, args.flops, args.accounting, args.bootstrap)
    if args.out:
        cli.write_json(args.out, {"flops": args.flops, "accounting": args.accounting, "min_budget": args.min_budget,
                                  "prediction": prediction,
                                  **({"backtest": steps} if args.backtest else {})})
    if steps is not None:
        print(backtest_report(steps, args.accounting, args.bootstrap))
    if prediction is not None:
        print(report(prediction, args.flops, args.accounting, args.bootstrap))
    return 0


def main(argv=None):
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
