"""The best learning rate of each model size, and a power law through them.

    python -m scaling.learning_rate DIR/results.jsonl [DIR2/results.jsonl ...] [--accounting chinchilla|kaplan]
        [--key lr_schedule.peak_lr] [--bootstrap K] [--reference_params 1e5] [--window 4] [--out DIR/lr_fit.json]

A learning-rate sweep trains each size at several rates (configs/sweeps/lr_cpu.gin).
For each size, a parabola of eval loss in log(rate) through the rates within
4x of its best (--window) gives the optimal rate; a size whose best rate sits at the
edge of its grid is left out (its optimum is outside what was tried). Then
eta_opt = value * (N / reference_params)^exponent is fitted by least squares
in log-log space, as DeepSeek LLM (2024) fitted eta_opt and B_opt against
compute; bootstrap intervals resample the runs within each size.

A "size" is one (N, D) pair. Where the runs' tokens per parameter differ by
2x or more, the best rate may fall with the run's length as well as its size
(Bjorck et al. 2024), and the law gains a factor (D / reference_tokens)^
token_exponent, fitted jointly; with one length per size it cannot be told
from N's exponent, and the fit says so.

The command prints the per-size optima, the law with its intervals, and the
gin lines that make a sweep use it (train/sweep_rules.py's PowerLaw). Several
results files are fitted as one sweep (runs of one N form one size), e.g. a
learning-rate sweep and a later check of a larger size; it warns when their
runs were trained on different corpora, and needs --out.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from scaling import cli
from scaling.bootstrap import bootstrap_counts, percentile_intervals
from scaling.inputs import canonical_order, fit_rows, load_results, mixed_data_warning, params_of, positive_arrays
from scaling.isoflop import windowed_parabola
from scaling.powerlaw import fit_power_law

WINDOW = 4.0  # rates within this factor of a size's best enter its parabola (--window)
KEY = "lr_schedule.peak_lr"
LENGTH_SPREAD = 2.0  # tokens-per-parameter ratios this far apart put D in the law
# Grids are written with rates rounded to three digits, so neighbours "a factor 2 apart" can be 2.005 apart
# (0.00216, 0.00433); --window 2 must still keep them. The window is widened by 1%, far less than any grid's step.
ROUNDING_SLACK = 1.01


@dataclass
class LearningRateFit:
    sizes: list  # per (N, D): {N, D, rates, losses, best_rate, optimal_rate (None at the grid's edge), reason}
    exponent: float
    value: float  # eta_opt at reference_params (and reference_tokens)
    reference_params: float
    token_exponent: Optional[float] = None  # None: a law in N alone
    reference_tokens: Optional[float] = None
    intervals: dict = field(default_factory=dict)  # 'exponent', 'value', 'token_exponent' -> (lo, hi)
    replicates: int = 0

    def __call__(self, N, D=None):
        rate = self.value * (np.asarray(N, float) / self.reference_params) ** self.exponent
        if self.token_exponent is None:
            return rate
        if D is None:
            raise ValueError("this law scales with the run's tokens: give D")
        return rate * (np.asarray(D, float) / self.reference_tokens) ** self.token_exponent

    def gin_rule(self, source: str, scope: str = "lr"):
        """The gin lines that make a sweep set its peak rate by this law."""
        lines = [f"{scope}/PowerLaw.binding = '{KEY}'", f"{scope}/PowerLaw.value = {self.value:.3g}",
                 f"{scope}/PowerLaw.reference_params = {self.reference_params:.3g}",
                 f"{scope}/PowerLaw.exponent = {self.exponent:.3g}"]
        if self.token_exponent is not None:
            lines += [f"{scope}/PowerLaw.reference_tokens = {self.reference_tokens:.3g}",
                      f"{scope}/PowerLaw.token_exponent = {self.token_exponent:.3g}"]
        # Not carried below the smallest size that fixed it (sizes at the grid's edge did not).
        smallest = min(s["N"] for s in self.sizes if s["optimal_rate"] is not None)
        return lines + [f"{scope}/PowerLaw.min_params = {smallest:.6g}", f"{scope}/PowerLaw.source = {source!r}"]

    def to_dict(self):
        return {"sizes": self.sizes, "exponent": self.exponent, "value": self.value,
                "reference_params": self.reference_params, "token_exponent": self.token_exponent,
                "reference_tokens": self.reference_tokens,
                "intervals": {k: list(v) for k, v in self.intervals.items()}, "replicates": self.replicates}


def _size_optimum(log_rate, loss, w, window):
    """(optimal rate or None, why not) of one size's runs."""
    rates, _, _, vertex = windowed_parabola(log_rate, loss, w, window * ROUNDING_SLACK)
    if vertex is None:
        best = log_rate[w > 0][np.argmin(loss[w > 0])]
        edge = "lowest" if best == rates[0] else "highest" if best == rates[-1] else None
        return None, (f"the best rate is the {edge} tried" if edge else "no parabola minimum near the best rate")
    return float(np.exp(vertex)), ""


def _law(group, log_rate, loss, w, sizes, reference_params, reference_tokens, window):
    """The law through the sizes' optima; None when too few sizes have one to fix it."""
    optima = [(n, d, _size_optimum(log_rate[group == i], loss[group == i], w[group == i], window)[0])
              for i, (n, d) in enumerate(sizes)]
    n, d, rate = np.array([o for o in optima if o[2] is not None], float).reshape(-1, 3).T
    if reference_tokens is None:
        law = fit_power_law(n / reference_params, rate) if len(rate) >= 2 else None
        return None if law is None else {"exponent": law.exponent, "value": law.coefficient}
    # D's exponent needs optima at lengths LENGTH_SPREAD apart; 10 N against 10.2 N would fix it by noise.
    ratios = d / n
    if len(rate) < 3 or ratios.max() < LENGTH_SPREAD * ratios.min():
        return None
    design = np.column_stack([np.ones(len(rate)), np.log(n / reference_params), np.log(d / reference_tokens)])
    if np.linalg.matrix_rank(design) < 3:
        return None
    (log_value, exponent, token_exponent), *_ = np.linalg.lstsq(design, np.log(rate), rcond=None)
    return {"exponent": float(exponent), "value": float(np.exp(log_value)), "token_exponent": float(token_exponent)}


def fit_optimal_learning_rate(rows, accounting="chinchilla", key=KEY, bootstrap=0, seed=0, level=0.95,
                              reference_params=None, window=WINDOW):
    """Fit eta_opt = value (N / reference_params)^exponent to a learning-rate sweep's results rows, times
    (D / reference_tokens)^token_exponent where the runs' tokens per parameter differ by LENGTH_SPREAD or more.

    reference_params (reference_tokens): default the geometric mean of the sizes (their lengths), where
    value is best determined. window: rates within this factor of a size's best enter its parabola; 2 keeps
    the best and its neighbours on a grid a factor 2 apart, where a rate that diverges would bend the parabola.
    """
    rows = fit_rows(rows)
    missing = [r.get("run", i) for i, r in enumerate(rows) if key not in r.get("config", {})]
    if missing:
        raise ValueError(f"run {missing[0]} does not set {key} in its config")
    N, D, rate, loss = positive_arrays(N=[params_of(r, accounting) for r in rows], D=[r["tokens"] for r in rows],
                                       rate=[r["config"][key] for r in rows], loss=[r["final_eval_loss"] for r in rows])
    order = canonical_order(N, D, rate, loss)  # any order of the rows gives the same fit, bit for bit
    N, D, rate, loss = N[order], D[order], rate[order], loss[order]
    sizes, group = np.unique(np.column_stack([N, D]), axis=0, return_inverse=True)
    group = group.ravel()
    if len(np.unique(N)) < 2:
        raise ValueError(f"need runs of at least 2 sizes, got {len(np.unique(N))}")
    reference_params = float(np.exp(np.mean(np.log(sizes[:, 0])))) if reference_params is None else reference_params
    ratios = sizes[:, 1] / sizes[:, 0]
    reference_tokens = (float(np.exp(np.mean(np.log(sizes[:, 1])))) if ratios.max() >= LENGTH_SPREAD * ratios.min()
                        else None)
    log_rate, w = np.log(rate), np.ones(len(N))
    table = []
    for i, (n, d) in enumerate(sizes):
        m = group == i
        optimum, reason = _size_optimum(log_rate[m], loss[m], w[m], window)
        order = np.argsort(rate[m])
        table.append({"N": float(n), "D": float(d), "rates": rate[m][order].tolist(),
                      "losses": loss[m][order].tolist(), "best_rate": float(rate[m][np.argmin(loss[m])]),
                      "optimal_rate": optimum, "reason": reason})
    law = _law(group, log_rate, loss, w, sizes, reference_params, reference_tokens, window)
    if law is None:
        raise ValueError("too few sizes have their best rate inside the rates tried to fix the law"
                         + (" in N and D (3 needed, not all of one length)" if reference_tokens else "")
                         + ": widen the grid")
    fit = LearningRateFit(sizes=table, reference_params=reference_params, reference_tokens=reference_tokens, **law)
    if bootstrap:
        replicates = [_law(group, log_rate, loss, c, sizes, reference_params, reference_tokens, window)
                      for c in bootstrap_counts(len(N), bootstrap, seed, groups=group)]
        replicates = [r for r in replicates if r is not None]
        fit.intervals, fit.replicates = percentile_intervals(replicates, level), len(replicates)
    return fit


def report(fit, accounting):
    lines = [f"{'N (' + accounting + ')':>18}  {'D / N':>6}  {'best tried':>10}  {'optimum':>10}  eval loss by rate"]
    for s in fit.sizes:
        losses = "  ".join(f"{r:.3g}:{l:.4f}" for r, l in zip(s["rates"], s["losses"]))
        optimum = f"{s['optimal_rate']:.3g}" if s["optimal_rate"] else f"- ({s['reason']})"
        lines.append(f"{s['N']:>18,.0f}  {s['D'] / s['N']:>6.1f}  {s['best_rate']:>10.3g}  {optimum:>10}  {losses}")
    law = f"eta_opt = {fit.value:.3g} (N / {fit.reference_params:.3g})^{fit.exponent:.3f}"
    if fit.token_exponent is None:
        lines.append(f"one length per size (tokens per parameter within {LENGTH_SPREAD:g}x): a law in N alone")
    else:
        law += f" (D / {fit.reference_tokens:.3g})^{fit.token_exponent:.3f}"
    ci = fit.intervals
    if ci:
        law += "; 95% intervals: " + ", ".join(f"{name} [{ci[name][0]:.3g}, {ci[name][1]:.3g}]" for name in ci) + \
               f" ({fit.replicates} resamples)"
    lines.append(law)
    return "\n".join(lines)


def _main(argv):
    parser = cli.ArgumentParser(prog="python -m scaling.learning_rate", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="a learning-rate sweep's results.jsonl; several are fitted together")
    parser.add_argument("--accounting", choices=["kaplan", "chinchilla"], default="chinchilla")
    parser.add_argument("--key", default=KEY, help=f"the config binding swept (default {KEY})")
    parser.add_argument("--bootstrap", type=cli.non_negative_int, default=200, metavar="K")
    parser.add_argument("--reference_params", type=float, help="N at which the law's value is quoted")
    parser.add_argument("--window", type=float, default=WINDOW,
                        help=f"rates within this factor of a size's best enter its parabola (default {WINDOW:g})")
    parser.add_argument("--out", help="where to write the fit (default: lr_fit.json beside the results)")
    args = parser.parse_args(argv)
    if len(args.results) > 1 and not args.out:
        raise cli.InputError("several results files: say where their joint fit goes with --out "
                             "(lr_fit.json beside the first would replace its own fit)")
    rows = [row for path in args.results for row in load_results(path)]
    mixed = mixed_data_warning(rows)
    if mixed:
        print(f"warning: {mixed}")
    if not args.window > 1:
        raise cli.InputError(f"--window must be above 1, got {args.window:g}")
    fit = fit_optimal_learning_rate(rows, args.accounting, args.key, args.bootstrap,
                                    reference_params=args.reference_params, window=args.window)
    out = Path(args.out) if args.out else Path(args.results[0]).with_name("lr_fit.json")
    source = f"scaling.learning_rate on {' '.join(args.results)}"
    cli.write_json(out, {**fit.to_dict(), "accounting": args.accounting, "source": source})
    print(report(fit, args.accounting))
    print("gin lines for a sweep:\n  " + "\n  ".join(fit.gin_rule(source)))
    print(f"wrote {out}")
    return 0


def main(argv=None):
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
