"""Where an IsoFLOP sweep puts its sizes: around each budget's expected N_opt, then wherever its minimum is open.

With `Sweep.placement = @Placement()` and `Sweep.flops`, each budget C starts with `sizes_per_budget`
sizes log-spaced from N_opt / span to N_opt x span around its expected N_opt:

- centre_on = 'prior': the prior law N_opt = prior_coefficient x C^prior_exponent;
- centre_on = 'minima': the prior until a smaller budget has a bracketed minimum; with one, the prior's
  exponent through that minimum; with two or more, a power law fitted through their minima. A budget is
  then placed only once every smaller budget is done, so budgets are planned in increasing order.

Once a budget's runs have finished, its IsoFLOP profile (scaling.isoflop.budget_profile: loss =
final_eval_loss against N in the sweep's accounting) says whether its minimum is bracketed. If not, and
it has had fewer than `max_waves` waves, the next wave continues the budget's log spacing beyond its
smallest or largest size on the open side: 2 sizes when the lowest loss is at the edge (no interior
minimum), as many as that side lacks of min_each_side when the minimum is interior, one on each side
when both are open. Sizes snap to the ladder's shapes; a target that snaps to a shape the budget
already has adds nothing, and a budget that cannot grow on its open side is done, like one out of waves.

Everything here is a function of the sweep's config and its finished runs' rows: a rerun makes the same
decisions. The runs themselves are built by the caller (`place`, from train/sweep_plan.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import gin
import numpy as np

CENTRES = ("minima", "prior")
# Hoffmann et al.'s 20 tokens per parameter: C = 6 N (20 N), so N_opt = (C / 120)^0.5.
CHINCHILLA_COEFFICIENT = 120 ** -0.5


def compact(x: float) -> str:
    """Three significant digits, exponents without padding: 2e4, 1.25e5, 0.0015."""
    return f"{x:.3g}".replace("e+0", "e").replace("e+", "e")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Placement:
    sizes_per_budget: int = 5  # sizes of a budget's first wave
    span: float = 4.0  # they reach from N_opt / span to N_opt x span, log-spaced
    prior_coefficient: float = CHINCHILLA_COEFFICIENT  # prior N_opt = coefficient x C^exponent
    prior_exponent: float = 0.5
    centre_on: str = "minima"  # 'minima': smaller budgets' bracketed minima move the centre; 'prior': never
    max_waves: int = 3  # waves a budget may have: its first, and bracketing ones
    # Runs per size: every size, and the verification run, trained with seeds 0 .. seeds - 1 (initialisation
    # and data order). One configuration's loss has a standard deviation over seeds of 0.038 nats (pooled) on
    # the CPU sweep (results/isoflop_cpu_ablation/), 6x its eval SE: replicates let the fits measure that spread
    # (scaling.inputs.replicate_spread) and the profiles and the verification average over it.
    seeds: int = 1

    def __post_init__(self):
        if self.sizes_per_budget < 2:
            raise ValueError(f"Placement.sizes_per_budget must be at least 2, got {self.sizes_per_budget}")
        if not self.span > 1:
            raise ValueError(f"Placement.span must be above 1 (a factor on each side of N_opt), got {self.span!r}")
        if not self.prior_coefficient > 0:
            raise ValueError(f"Placement.prior_coefficient must be positive, got {self.prior_coefficient!r}")
        if self.centre_on not in CENTRES:
            raise ValueError(f"Placement.centre_on = {self.centre_on!r} is not one of {list(CENTRES)}")
        if self.max_waves < 1:
            raise ValueError(f"Placement.max_waves must be at least 1, got {self.max_waves}")
        if self.seeds < 1:
            raise ValueError(f"Placement.seeds must be at least 1, got {self.seeds}")

    @property
    def step(self) -> float:
        """The factor between neighbouring sizes of a first wave."""
        return self.span ** (2 / (self.sizes_per_budget - 1))

    def first_targets(self, expected_n_opt: float) -> list[float]:
        return list(np.geomspace(expected_n_opt / self.span, expected_n_opt * self.span, self.sizes_per_budget))

    def expected_n_opt(self, budget: float, minima: list[tuple[float, float]]) -> tuple[float, str]:
        """(expected N_opt at `budget`, where it came from), from smaller budgets' (C, N_opt) minima."""
        from scaling.powerlaw import fit_power_law
        if self.centre_on == "prior" or not minima:
            return (self.prior_coefficient * budget ** self.prior_exponent,
                    f"prior {compact(self.prior_coefficient)} C^{self.prior_exponent:g}")
        if len(minima) == 1:
            (c, n_opt), = minima
            return (n_opt * (budget / c) ** self.prior_exponent,
                    f"minimum of C={compact(c)} with the prior's exponent {self.prior_exponent:g}")
        law = fit_power_law(*zip(*minima))
        return float(law(budget)), (f"power law through the minima of C={', '.join(compact(c) for c, _ in minima)}"
                                    f" (exponent {law.exponent:.3f})")


@dataclasses.dataclass
class BudgetPlan:
    """One budget's waves so far, what its profile says, and the decision lines that explain them."""
    budget: float
    expected_n_opt: Optional[float] = None  # None: waits for smaller budgets
    source: str = ""
    waves: list = dataclasses.field(default_factory=list)  # one list of Runs per wave
    profile: object = None  # scaling.isoflop.BudgetProfile after the last finished wave
    state: str = "waiting"  # 'waiting', 'training', 'bracketed', 'out of waves', 'no sizes beyond'
    lines: list = dataclasses.field(default_factory=list)

    @property
    def runs(self) -> list:
        return [run for wave in self.waves for run in wave]

    @property
    def done(self) -> bool:
        return self.state in ("bracketed", "out of waves", "no sizes beyond")

    @property
    def label(self) -> str:
        return f"C={compact(self.budget)}"


def _sizes(runs: list, expected: float) -> str:
    """Each size once, however many seeds train it."""
    return ", ".join(dict.fromkeys(f"{run.model} {run.params / expected:.2g}x" for run in runs))


def _found(profile) -> str:
    if profile.bracketed:
        return (f"bracketed: N_opt {compact(profile.n_opt)} ({profile.sizes_below} sizes below, "
                f"{profile.sizes_above} above within the window)")
    where = f"N_opt {compact(profile.n_opt)}" if profile.interior else f"lowest loss at N {compact(profile.best_n)}"
    return f"not bracketed ({where}): {profile.reason}"


def extension(profile, sizes: list[float], step: float, min_each_side: int) -> tuple[list[float], str]:
    """Targets beyond the budget's extreme sizes on its open side(s), and why."""
    if profile.open_side == "both":
        wanted, why = {"low": 1, "high": 1}, "both sides open"
    elif not profile.interior:
        side = profile.open_side
        if side is None:  # the sizes around the lowest loss suffice, but the parabola's vertex lies beyond them
            c2, c1, _ = profile.parabola
            side = "low" if -c1 / (2 * c2) < math.log(profile.best_n) else "high"
        wanted, why = {side: 2}, "the minimum is at or beyond the edge"
    else:
        have = profile.sizes_below if profile.open_side == "low" else profile.sizes_above
        wanted, why = {profile.open_side: min_each_side - have}, f"{have} of {min_each_side} sizes on that side"
    targets = [min(sizes) / step ** k for k in range(1, wanted.get("low", 0) + 1)]
    targets += [max(sizes) * step ** k for k in range(1, wanted.get("high", 0) + 1)]
    sides = " and ".join(f"{n} {'below' if side == 'low' else 'above'}" for side, n in wanted.items())
    return targets, f"{why}: {sides}"


def plan_budgets(placement: Placement, budgets: tuple, place: Callable, rows: dict, n_key: str) -> list[BudgetPlan]:
    """Every budget's waves, given the finished runs' rows (run name -> results row).

    place(budget, targets, existing runs) returns the new runs for those targets at that budget:
    one per ladder shape the budget does not have yet.
    """
    plans = []
    for budget in sorted(budgets):
        plan = BudgetPlan(budget)
        plans.append(plan)
        if placement.centre_on == "minima" and not all(p.done for p in plans[:-1]):
            plan.lines.append(f"{plan.label}: waits until every smaller budget is done")
            continue
        minima = [(p.budget, p.profile.n_opt) for p in plans[:-1] if p.state == "bracketed"]
        plan.expected_n_opt, plan.source = placement.expected_n_opt(budget, minima)
        _grow(plan, placement, place, rows, n_key)
    return plans


def _grow(plan: BudgetPlan, placement: Placement, place: Callable, rows: dict, n_key: str) -> None:
    """Adds the budget's waves while its finished runs call for them."""
    from scaling.isoflop import MIN_EACH_SIDE, budget_profile
    expected = plan.expected_n_opt
    first = _with_record(place(plan.budget, placement.first_targets(expected), []), plan, 0, None)
    plan.waves.append(first)
    plan.lines.append(f"{plan.label}: expected N_opt {compact(expected)} from the {plan.source}; "
                      f"wave 0: {_sizes(first, expected)}")
    while True:
        wave = len(plan.waves) - 1
        finished = [rows.get(run.name) for run in plan.runs]
        if any(row is None for row in finished):
            plan.state = "training"
            return
        for run, row in zip(plan.runs, finished):
            if row.get("final_eval_loss") is None:
                raise ValueError(f"run {run.name} has no final_eval_loss: the profile of {plan.label} needs one")
        plan.profile = profile = budget_profile([row[n_key] for row in finished], [row["tokens"] for row in finished],
                                                [row["final_eval_loss"] for row in finished], plan.budget)
        found = f"{plan.label} wave {wave}: {_found(profile)}"
        if profile.bracketed:
            plan.state = "bracketed"
            plan.lines.append(found)
            return
        if len(plan.waves) >= placement.max_waves:
            plan.state = "out of waves"
            plan.lines.append(f"{found}; out of waves ({placement.max_waves}): left unbracketed")
            return
        targets, why = extension(profile, [run.params for run in plan.runs], placement.step, MIN_EACH_SIDE)
        added = _with_record(place(plan.budget, targets, plan.runs), plan, wave + 1, why)
        if not added:
            plan.state = "no sizes beyond"
            plan.lines.append(f"{found}; {why}, but the ladder has no other shape there: left unbracketed")
            return
        plan.waves.append(added)
        plan.lines.append(f"{found}; wave {wave + 1} adds {_sizes(added, expected)} ({why})")


def _with_record(runs: list, plan: BudgetPlan, wave: int, reason: Optional[str]) -> list:
    """The runs with what their results rows record about their placement."""
    def record(run) -> dict:
        placement = {"expected_n_opt": plan.expected_n_opt, "ratio": run.params / plan.expected_n_opt,
                     "source": plan.source}
        return {"wave": wave, "placement": placement if reason is None else {**placement, "reason": reason}}
    return [dataclasses.replace(run, record=record(run)) for run in runs]


class PredictionError(Exception):
    """The fits give no Approach 3 optimum to verify."""


def predict_verification(budget: float, rows: list[dict], accounting: str, bootstrap: int,
                         place: Callable, min_budget: float = 0.0) -> dict:
    """What the fits predict at `budget` (scaling.predict), for the run that tests it (Approach 3's N_opt
    on the ladder, D = C / (6 N)): written to prediction.json before that run trains. With more than two
    budgets it carries their backtest too (scaling.predict.backtest): how well the same fits predicted
    each budget from those below it, the evidence for or against the extrapolation before it is paid for.
    The fits use the budgets of at least `min_budget` FLOPs (Sweep.fit_min_budget; 0: all)."""
    from scaling.inputs import budget_window, fit_rows
    from scaling.predict import backtest, predict, predicted_loss
    rows = budget_window(rows, min_budget)
    at_budget = predict(rows, budget, accounting, bootstrap)
    approach_3 = at_budget.get("chinchilla", {})
    n_opt = approach_3.get("N_opt")
    if n_opt is None or not math.isfinite(n_opt) or n_opt <= 0:
        raise PredictionError(f"no compute-optimal N at C={compact(budget)} from Approach 3: "
                              f"{approach_3.get('error', f'N_opt = {n_opt}')}")
    run = place(budget, [n_opt], [])[0]  # its seeds' replicates share N and D
    prediction = {"budget": budget, "accounting": accounting, "bootstrap": bootstrap, "fitted_rows": len(fit_rows(rows)),
                  **({"min_budget": min_budget} if min_budget else {}), "run": run.name, "N": run.params, "D": run.tokens,
                  "predicted_loss": predicted_loss(rows, run.params, run.tokens, accounting, bootstrap),
                  "predict": at_budget}
    try:
        prediction["backtest"] = backtest(rows, accounting, bootstrap)
    except ValueError:  # two budgets or fewer: nothing to predict from below
        pass
    return prediction


def backtest_line(prediction: dict) -> Optional[str]:
    """The prediction's backtest in one line: each approach's errors, budget by budget."""
    steps = (prediction or {}).get("backtest")
    if not steps:
        return None
    from scaling.predict import APPROACHES
    from scaling.sweep_fits import LABELS
    parts = []
    for law in APPROACHES:
        errors = [step["approaches"].get(law, {}).get("error") for step in steps]
        parts.append(f"{LABELS[law]} " + " ".join("n/a" if e is None else f"{e:+.1%}" for e in errors))
    return (f"backtest, each of C={', '.join(compact(step['budget']) for step in steps)} predicted from the budgets "
            f"below it (measured - predicted): {'; '.join(parts)}")
