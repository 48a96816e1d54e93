"""Will a sweep's design pin the allocation exponent? Sweeps simulated from an assumed law, before any run.

    python -m scaling.design DIR/results.jsonl [--budgets 1e13,3e13,1e14] [--sizes 5] [--span 4]
        [--noise 0.005] [--sims 200] [--min_budget C] [--out design.json]
    python -m scaling.design --law E=2.1,A=63,B=507,alpha=0.38,beta=0.44 --budgets 1e12,1e13,1e14 --noise 0.005

Each simulated sweep puts `sizes` models at every budget C, log-spaced from N_opt / span to N_opt x span
around the law's own N_opt, with D = C / (6 N), and gives each run the law's loss times exp(noise x z),
z standard normal and independent across runs. Approach 2 (`fit_isoflop`) and Approach 3
(`fit_chinchilla`) are fitted to every simulated sweep as to a real one. The table gives, for each, the
median fitted a (N_opt ∝ C^a), the central 95% of its spread over the sweeps, and how many sweeps it
could be fitted to; and the share of sweeps whose every budget was bracketed.

This is the spread a sweep of that design shows when the law holds and runs scatter only by the noise:
a parametric bootstrap of the design. From a results file the law is the sweep's own Approach 3 fit
(in the window of --min_budget), the noise its runs' median relative eval SE, and the budgets, sizes per
budget and span its own (medians over its budgets) unless the flags say otherwise; the command also prints
the law's RMS residual on those runs. A sweep whose own bootstrap interval is much wider than the spread
simulated at its eval SE scatters by more than its evals' noise: the form misfits its runs (the fit's
lack-of-fit check says so too), and more budgets of the same kind narrow the interval less than this
table says. Rerun with --noise set to the RMS residual for the spread that scatter would give if it were
random.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from scaling import cli
from scaling.bootstrap import percentile_intervals
from scaling.chinchilla import ChinchillaFit, fit_chinchilla
from scaling.isoflop import fit_isoflop

APPROACHES = {"isoflop": "Approach 2", "chinchilla": "Approach 3"}
LAW_PARAMETERS = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class Design:
    """An IsoFLOP sweep's shape: its budgets, and the sizes each gets around the law's N_opt."""
    budgets: tuple
    sizes: int = 5
    span: float = 4.0  # the sizes reach N_opt / span and N_opt x span

    def __post_init__(self):
        if len(self.budgets) < 2 or min(self.budgets) <= 0:
            raise ValueError("a design needs at least two positive budgets")
        if self.sizes < 3:
            raise ValueError(f"a design needs at least 3 sizes per budget to place a minimum, got {self.sizes}")
        if not self.span > 1:
            raise ValueError(f"span must exceed 1, got {self.span}")

    def runs(self, law: ChinchillaFit) -> tuple:
        """(N, D, budget) of every run, budget by budget."""
        offsets = self.span ** np.linspace(-1.0, 1.0, self.sizes)
        n_opt = np.asarray(law.optimal_allocation(np.asarray(self.budgets, float))[0], float)
        N = (n_opt[:, None] * offsets[None, :]).ravel()
        budget = np.repeat(np.asarray(self.budgets, float), self.sizes)
        return N, budget / (6.0 * N), budget


def _fitted_a(N, D, loss, budget):
    """{approach: a, or nan where the simulated sweep cannot be fitted}, and whether every budget was bracketed."""
    out, bracketed = {}, False
    try:
        isoflop = fit_isoflop(N, D, loss, budget)
        out["isoflop"] = isoflop.a
        bracketed = all(p.bracketed for p in isoflop.profiles)
    except ValueError:
        out["isoflop"] = np.nan
    try:
        out["chinchilla"] = fit_chinchilla(N, D, loss).a
    except (ValueError, RuntimeError):
        out["chinchilla"] = np.nan
    return out, bracketed


def simulate(law: ChinchillaFit, design: Design, noise: float, sims: int = 200, seed: int = 0,
             progress: bool = False) -> dict:
    """Fit `sims` sweeps of `design` drawn from `law` with relative noise `noise`.

    Returns {'a': {approach: array of fitted a, nan where a sweep could not be fitted}, 'bracketed':
    the share of sweeps whose every budget Approach 2 found bracketed, 'true_a': the law's own a}.
    """
    if not np.isfinite(law.G):
        raise ValueError("the law has no compute-optimal allocation (an exponent or coefficient is not positive)")
    if noise < 0 or sims < 2:
        raise ValueError("noise must be >= 0 and sims >= 2")
    N, D, budget = design.runs(law)
    clean = law.predict(N, D)
    rng = np.random.default_rng(seed)
    fitted = {approach: np.full(sims, np.nan) for approach in APPROACHES}
    brackets = 0
    draws = range(sims)
    if progress:
        from tqdm import tqdm
        draws = tqdm(draws, desc="simulated sweeps", unit="sweep", dynamic_ncols=True, file=sys.stderr)
    for i in draws:
        loss = clean * np.exp(noise * rng.standard_normal(len(N)))
        a, bracketed = _fitted_a(N, D, loss, budget)
        brackets += bracketed
        for approach, value in a.items():
            fitted[approach][i] = value
    return {"a": fitted, "bracketed": brackets / sims, "true_a": law.a}


def spread(values, level=0.95) -> dict:
    """Median, central `level` range and count of the finite values."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return {"median": None, "range": None, "fitted": int(len(values))}
    interval = percentile_intervals([{"a": v} for v in values], level)["a"]
    return {"median": float(np.median(values)), "range": list(interval), "fitted": int(len(values))}


def report(result: dict, design: Design, noise: float, sims: int) -> tuple[list, dict]:
    """The table's lines and its JSON form."""
    budgets = ", ".join(f"{c:.3g}" for c in design.budgets)
    lines = [f"design: budgets {budgets}; {design.sizes} sizes each from N_opt/{design.span:.3g} to "
             f"N_opt x {design.span:.3g}; relative noise {noise:.3g}; {sims} simulated sweeps",
             f"the law's own a: {result['true_a']:.3f}"]
    out = {"budgets": list(design.budgets), "sizes": design.sizes, "span": design.span, "noise": noise,
           "sims": sims, "true_a": result["true_a"], "bracketed": result["bracketed"], "a": {}}
    for approach, label in APPROACHES.items():
        s = spread(result["a"][approach])
        out["a"][approach] = s
        if s["median"] is None:
            lines.append(f"{label}: fitted in {s['fitted']} of {sims} sweeps, too few for a spread")
            continue
        lo, hi = s["range"]
        lines.append(f"{label}: a {s['median']:.3f}, 95% of sweeps in [{lo:.3f}, {hi:.3f}] "
                     f"(±{(hi - lo) / 2:.3f}); fitted in {s['fitted']} of {sims}")
    lines.append(f"every budget bracketed (Approach 2's check) in {result['bracketed']:.0%} of sweeps")
    return lines, out


def _law(text: str) -> ChinchillaFit:
    """'E=2.1,A=63,B=507,alpha=0.38,beta=0.44' -> the law."""
    values = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in LAW_PARAMETERS:
            raise cli.InputError(f"--law: expected E=..,A=..,B=..,alpha=..,beta=.., got {part.strip()!r}")
        try:
            values[name] = float(value)
        except ValueError:
            raise cli.InputError(f"--law: {name} is not a number: {value.strip()!r}") from None
    missing = [p for p in LAW_PARAMETERS if p not in values]
    if missing:
        raise cli.InputError(f"--law: missing {', '.join(missing)}")
    return ChinchillaFit(n_points=0, **values)


def _budgets(text: str) -> tuple:
    try:
        return tuple(float(c) for c in text.split(","))
    except ValueError:
        raise cli.InputError(f"--budgets: expected comma-separated FLOP counts, got {text!r}") from None


def from_runs(law: ChinchillaFit, arrays: dict) -> dict:
    """What a sweep's runs say of their own design and scatter (arrays from scaling.arrays_from_rows):

    'design': its budgets, their median number of sizes, and the median half-span sqrt(max N / min N);
        None where the runs make no design, and 'why' then says what is missing;
    'eval_se': the runs' median relative eval SE (None where the rows carry none);
    'rms_residual': the RMS relative residual of `law` on the runs.
    """
    N, D, loss = arrays["N"], arrays["D"], arrays["loss"]
    design, why = None, "the rows carry no budget"
    if "budget" in arrays:
        budgets = np.unique(arrays["budget"])
        per_budget = [N[arrays["budget"] == c] for c in budgets]
        try:
            design = Design(tuple(float(c) for c in budgets), int(np.median([len(n) for n in per_budget])),
                            float(np.median([np.sqrt(n.max() / n.min()) for n in per_budget])))
        except ValueError as err:
            why = f"the sweep's own design will not do: {err}"
    se = arrays.get("loss_se")
    return {"design": design, "why": None if design else why,
            "eval_se": None if se is None else float(np.median(se / loss)),
            "rms_residual": float(np.sqrt(np.mean(np.log(loss / law.predict(N, D)) ** 2)))}


def _main(argv) -> int:
    p = cli.ArgumentParser(prog="python -m scaling.design",
                           description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?", help="a sweep's results.jsonl: its Approach 3 law, eval SE and budgets")
    p.add_argument("--law", help="the law instead: E=..,A=..,B=..,alpha=..,beta=.. (L = E + A/N^alpha + B/D^beta)")
    p.add_argument("--budgets", help="comma-separated FLOP budgets (C = 6 N D); default: the sweep's own")
    p.add_argument("--sizes", type=cli.whole_number(3),
                   help="sizes per budget; default: the sweep's median, or 5 with --law")
    p.add_argument("--span", type=float,
                   help="the sizes reach N_opt/span to N_opt x span; default: the sweep's median, or 4 with --law")
    p.add_argument("--noise", type=float, help="relative SD of a run's loss; default: the sweep's median eval SE")
    p.add_argument("--sims", type=cli.whole_number(2), default=200, help="simulated sweeps (default 200)")
    p.add_argument("--seed", type=int, default=0)
    cli.add_min_budget(p)
    p.add_argument("--out", help="also write the table as JSON here")
    args = p.parse_args(argv)
    if (args.results is None) == (args.law is None):
        raise cli.InputError("give a sweep's results.jsonl or --law, not both")
    lines, own = [], {"design": None, "why": "--law has none of its own", "eval_se": None}
    if args.law is not None:
        law = _law(args.law)
    else:
        from scaling.inputs import arrays_from_rows, fit_rows
        arrays = arrays_from_rows(fit_rows(cli.windowed_results(args)), "chinchilla")
        law = fit_chinchilla(arrays["N"], arrays["D"], arrays["loss"])
        own = from_runs(law, arrays)
        lines.append(f"law: the sweep's Approach 3 fit, E={law.E:.4g}, A={law.A:.4g}, B={law.B:.4g}, "
                     f"alpha={law.alpha:.4g}, beta={law.beta:.4g}; its RMS relative residual on the runs: "
                     f"{own['rms_residual']:.4f}")
    if args.budgets is None and own["design"] is None:
        raise cli.InputError(f"--budgets is needed: {own['why']}")
    noise = args.noise if args.noise is not None else own["eval_se"]
    if noise is None:
        raise cli.InputError("--noise is needed: " + ("--law has no eval SE of its own" if args.law
                                                     else "the rows carry no final_eval_loss_se"))
    budgets = _budgets(args.budgets) if args.budgets else own["design"].budgets
    sizes = args.sizes if args.sizes is not None else own["design"].sizes if own["design"] else 5
    span = args.span if args.span is not None else own["design"].span if own["design"] else 4.0
    design = Design(budgets, sizes, span)
    result = simulate(law, design, noise, args.sims, args.seed, progress=True)
    table, out = report(result, design, noise, args.sims)
    print("\n".join(lines + table))
    if args.out:
        cli.write_json(args.out, out)
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
