"""Task scaling laws: a held-out run's task scores predicted from smaller runs, in two steps.

    python -m scaling.downstream DIR/results.jsonl [--task NAME ...] [--accounting chinchilla|kaplan]
        [--holdout largest|RUN] [--metric acc|acc_norm|acc_per_token] [--free_asymptotes]
        [--bootstrap K] [--json OUT]

As AI2's OLMo model ladder does (Bhagia et al. 2024, "Establishing Task Scaling Laws via
Compute-Efficient Model Ladders"), from the task scores that each run's row carries (`tasks`: see
evaluation/tasks.py), with the task loss L the gold answer's bits per byte (`bpb`):

- step 1, task loss from compute: L(C) = E + A / C^alpha, C the training FLOPs in the accounting
  (scaling.inputs.ACCOUNTING). Fitted as the loss laws are (and as the ladder does): the Huber loss
  (delta 1e-3) of log residuals, by variable projection (for each alpha on a grid, E and A >= 0 by
  exact least squares; scaling/projection.py), then a converged L-BFGS-B polish.
- step 2, accuracy from task loss: Acc(L) = a / (1 + exp(-k (L - L0))) + b, by least squares. By
  default the sigmoid runs from chance to 1 (b = chance, a = 1 - chance; k < 0, so accuracy rises as
  the loss falls), leaving k and L0; `free_asymptotes` fits a and b as well, as the ladder does.
- chained: the held-out run's score is step 2 at step 1's loss at its compute. By default the run of
  the largest compute is held out and both steps are fitted on the others (never on a sweep's
  verification runs, scaling.inputs.fit_rows). The report gives predicted against measured loss and
  score, their absolute errors, and step 2 alone (the score at the run's measured loss), so that
  each step's share of the error shows.

Intervals are percentile bootstrap intervals over the fitted runs: every resample refits both steps
on the same runs, so the chained prediction's interval carries both steps' uncertainty (not the
held-out measurement's own noise: its standard error is reported beside it). A fit is flagged as not
identified when it has no more runs than parameters, when its scores do not vary beyond their noise
(a chi-squared test against one common value: accuracies stuck at chance, below emergence), or when
a parameter runs to a bound or along a flat direction (scaling/identification.py).

`metric_view` gives each task's score (accuracy or exact match) and answer bits per byte against
compute: a discontinuous metric can jump where the log-likelihood improves smoothly (Schaeffer et
al. 2023, "Are Emergent Abilities of Large Language Models a Mirage?"); notebooks/emergence.ipynb
draws both. Bad input: one line on stderr, exit status 2.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
import scipy.stats

from scaling import cli, laws
from scaling.bootstrap import bootstrap_counts, percentile_intervals
from scaling.identification import diagnose
from scaling.inputs import ACCOUNTING, canonical_order, load_results, positive_arrays
from scaling.optimize import single_threaded
from scaling.projection import (Parametrisation, best_local_minima, log_huber, nnls, polish_best,
                                polish_best_of)
from scaling.result import FitResult

MULTIPLE_CHOICE_SCORES = ("acc", "acc_norm", "acc_per_token")
GENERATION_SCORE = "exact_match"  # a generation task's only score

# Step 1, about the runs' centre c (mean log C): L = E + a exp(-alpha (log C - c)), a = A e^(-alpha c).
TASK_LOSS = Parametrisation(("E", "a", "alpha"), ((0.0, np.inf), (0.0, np.inf), (0.0, 5.0)))
TASK_LOSS_MESSAGES = {
    "E": "E driven to 0: the runs do not reach the irreducible task loss, which is not identified",
    "a": "A driven to 0: the task loss does not fall with compute in these runs",
    "alpha": "alpha is at a bound of [0, 5]: not identified by these runs",
}
ALPHA_GRID = np.geomspace(0.003, 3.0, 64)
DELTA = 1e-3  # the Huber loss's delta, on log residuals: Hoffmann et al.'s and the ladder's

# Step 2. k is per bit per byte; at -1000 the sigmoid is a step, at 0 it is flat.
ACCURACY = ("a", "b", "k", "L0")
ACCURACY_BOUNDS = ((0.0, 1.0), (0.0, 1.0), (-1000.0, 0.0), (0.0, 100.0))
ACCURACY_MESSAGES = {
    "k": "k is at a bound of [-1000, 0]: the score is flat in the loss, or jumps as a step, in these runs",
    "L0": "L0 is at a bound of [0, 100]: the sigmoid's midpoint is not identified by these runs",
    "a": "a is at a bound of [0, 1]: the sigmoid's height is not identified by these runs",
    "b": "b is at a bound of [0, 1]: the sigmoid's floor is not identified by these runs",
}
# Grid of the projection: -k times the runs' spread of loss from 0.03 (nearly straight across the
# runs) to 30 (a step within a tenth of the spread); L0 from a spread below the runs to one above.
K_GRID = np.geomspace(0.03, 30.0, 40)
L0_GRID = np.linspace(-1.0, 2.0, 41)
# Residuals of accuracies are of order 0.01: the objective is divided by that squared while polishing.
SCORE_SCALE = 1e-2

FIT_STARTS, REPLICATE_STARTS = 3, 1
FLAT_P = 0.05  # a chi-squared p-value above this: the scores are consistent with one common value


def _centred_task_loss(theta, log_c):
    e, a, alpha = theta
    return jnp.log(e + a * jnp.exp(-alpha * log_c))


def sigmoid(theta, loss):
    """Step 2's Acc(L) = a / (1 + exp(-k (L - L0))) + b; theta = (a, b, k, L0) (JAX)."""
    a, b, k, l0 = theta
    return a * jax.nn.sigmoid(k * (loss - l0)) + b


def _squared_error(free, consts, points, w):
    """Half the weighted sum of squared score residuals of the sigmoid, in its free parameters."""
    matrix, base = consts
    loss, score = points
    return 0.5 * jnp.sum(w * (laws.mapped(sigmoid)(free, matrix, base, loss) - score) ** 2)


@dataclass(kw_only=True)
class TaskLossFit(FitResult):
    """Step 1: L(C) = E + A / C^alpha."""
    law = "task_loss"
    E: float
    A: float
    alpha: float
    objective: float = float("nan")
    diagnostics: dict = field(default_factory=dict)
    theta: np.ndarray = field(default=None, repr=False)  # centred (E, a, alpha): a replicate's start
    centre: float = 0.0

    def predict(self, C):
        with np.errstate(divide="ignore"):
            return self.E + np.exp(np.log(self.A) - self.alpha * np.log(np.asarray(C, float)))

    def estimates(self):
        return {"E": self.E, "A": self.A, "alpha": self.alpha}

    def extra(self):
        return {"form": "L = E + A / C^alpha", "huber_objective": self.objective, "diagnostics": self.diagnostics}


@dataclass(kw_only=True)
class AccuracyFit(FitResult):
    """Step 2: Acc(L) = a / (1 + exp(-k (L - L0))) + b."""
    law = "accuracy"
    a: float
    b: float
    k: float
    L0: float
    fixed: dict = field(default_factory=dict)
    objective: float = float("nan")
    diagnostics: dict = field(default_factory=dict)

    def predict(self, loss):
        return self.a * scipy.special.expit(self.k * (np.asarray(loss, float) - self.L0)) + self.b

    def estimates(self):
        return {"a": self.a, "b": self.b, "k": self.k, "L0": self.L0}

    def extra(self):
        return {"form": "Acc = a / (1 + exp(-k (L - L0))) + b", "fixed": self.fixed,
                "least_squares_objective": self.objective, "diagnostics": self.diagnostics}


def _sorted(*arrays):
    order = canonical_order(*arrays)
    return [np.asarray(x)[order] for x in arrays]


def _distinct(x, w):
    return len(np.unique(x[w > 0]))


def _too_few(distinct, free):
    """Raises when the resample has fewer distinct points than free parameters (no unique fit)."""
    if distinct < free:
        raise ValueError(f"need runs at {free} distinct values to fit {free} parameters, got {distinct}")


# --- step 1: task loss against compute -----------------------------------------------------------

def _task_loss_starts(x, loss, w, count):
    """Centred (E, a, alpha) at the `count` best local minima of the alpha grid, E and a >= 0 by exact
    non-negative least squares of relative residuals for each alpha."""
    columns = np.exp(-ALPHA_GRID[:, None] * x)  # (alphas, points)
    omega = w / loss**2
    ones = np.full(len(ALPHA_GRID), omega.sum())
    cross, square = columns @ omega, (columns**2) @ omega
    gram = np.stack([np.stack([ones, cross], -1), np.stack([cross, square], -1)], -2)
    rhs = np.stack([np.full(len(ALPHA_GRID), np.sum(omega * loss)), columns @ (omega * loss)], -1)
    coefs, _ = nnls(gram, rhs, np.full(len(ALPHA_GRID), w.sum()))
    values = log_huber(coefs[:, :1] + coefs[:, 1:] * columns, np.log(loss), w, DELTA)
    grid = np.concatenate([coefs, ALPHA_GRID[:, None]], axis=1)
    return grid[best_local_minima(values, count)]


def _fit_task_loss(C, loss, w, centre, starts, data_fit=None):
    """(full centred theta, free theta, objective) of step 1, polished from the grid (and data_fit)."""
    _too_few(_distinct(C, w), len(TASK_LOSS.free_names))
    x = np.log(C) - centre
    candidates = _task_loss_starts(x, loss, w, starts)
    if data_fit is not None:
        candidates = [data_fit, *candidates]
    return polish_best(_centred_task_loss, TASK_LOSS, candidates, (x, np.log(loss)), w, DELTA)


def _task_loss_result(theta, centre, n_points, **kw):
    e, a, alpha = (float(t) for t in theta)
    with np.errstate(divide="ignore"):
        big_a = float(np.exp(np.log(a) + alpha * centre))
    return TaskLossFit(E=e, A=big_a, alpha=alpha, theta=np.asarray(theta), centre=centre,
                       n_points=n_points, **kw)


@single_threaded
def fit_task_loss(C, loss, se=None):
    """Step 1, L(C) = E + A / C^alpha, fitted to runs' compute C and task loss (bits per byte).

    se: each run's standard error of its loss, for the flatness check (optional). Any order of the
    runs gives the same fit. Raises ValueError with fewer than 3 distinct C.
    """
    n_free = len(TASK_LOSS.free_names)
    C, loss = positive_arrays(min_points=n_free, C=C, loss=loss)
    se = np.full(len(C), np.nan) if se is None else np.asarray(se, float)
    C, loss, se = _sorted(C, loss, se)
    w = np.ones(len(C))
    centre = float(np.mean(np.log(C)))
    full, free, value = _fit_task_loss(C, loss, w, centre, FIT_STARTS)
    fit = _task_loss_result(full, centre, len(C), objective=float(value))
    x = np.log(C) - centre
    fit.diagnostics = diagnose(TASK_LOSS.free_names, free, TASK_LOSS.free_bounds, laws.mapped(_centred_task_loss),
                               (TASK_LOSS.matrix, TASK_LOSS.base, x), w, TASK_LOSS_MESSAGES)
    _add_warnings(fit.diagnostics, _too_few_warning(_distinct(C, w), "runs of distinct compute", n_free),
                  _flat_loss_warning(loss, se))
    return fit


def _refit_task_loss(fit, C, loss, counts):
    """`fit` refitted to a bootstrap resample (counts per run), from its own parameters and the grid's
    best; None where the resample cannot be fitted."""
    C, loss, w = _sorted(C, loss, counts)
    try:
        theta, _, _ = _fit_task_loss(C, loss, w, fit.centre, REPLICATE_STARTS, fit.theta)
    except (ValueError, RuntimeError):
        return None
    return _task_loss_result(theta, fit.centre, len(C))


# --- step 2: accuracy against task loss ----------------------------------------------------------

def _accuracy_parametrisation(chance, free_asymptotes):
    fixed = () if free_asymptotes else (("a", 1.0 - chance), ("b", chance))
    return Parametrisation(ACCURACY, ACCURACY_BOUNDS, fixed)


def _accuracy_starts(parametrisation, loss, score, w, count):
    """Full (a, b, k, L0) at the `count` best local minima of a (k, L0) grid: with the asymptotes
    free, a and b by weighted least squares at each grid point (the sigmoid is linear in them)."""
    used = loss[w > 0]
    spread = float(np.ptp(used)) or 1.0
    k_low, k_high = ACCURACY_BOUNDS[2]
    ks = np.clip(-K_GRID / spread, k_low, k_high)
    l0s = np.clip(used.min() + L0_GRID * spread, *ACCURACY_BOUNDS[3])
    s = scipy.special.expit(ks[:, None, None] * (loss - l0s[:, None])[None])  # (k, L0, points)
    fixed = dict(parametrisation.fixed)
    if fixed:
        a, b = np.full(s.shape[:2], fixed["a"]), np.full(s.shape[:2], fixed["b"])
    else:
        total, s_sum, ss, sy, y = w.sum(), s @ w, (s**2) @ w, s @ (w * score), np.sum(w * score)
        det = ss * total - s_sum**2
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(det > 1e-12 * total**2, (sy * total - s_sum * y) / det, 0.0)
        b = (y - a * s_sum) / total
        a, b = np.clip(a, 0.0, 1.0), np.clip(b, 0.0, 1.0)
    values = np.sum(w * (a[..., None] * s + b[..., None] - score) ** 2, axis=-1)
    grid = np.stack(np.broadcast_arrays(a, b, ks[:, None], l0s[None, :]), -1)
    return grid.reshape(-1, 4)[best_local_minima(values, count)]


def _fit_accuracy(parametrisation, loss, score, w, starts, data_fit=None):
    """(full theta, free theta, objective) of step 2: the best converged polish from the starts."""
    _too_few(_distinct(loss, w), len(parametrisation.free_names))
    candidates = list(_accuracy_starts(parametrisation, loss, score, w, starts))
    if data_fit is not None:
        candidates = [data_fit, *candidates]
    return polish_best_of(_squared_error, parametrisation, candidates, (parametrisation.matrix, parametrisation.base),
                          (loss, score), w, 1.0 / (SCORE_SCALE**2 * float(np.sum(w))))


def _accuracy_result(parametrisation, theta, n_points, **kw):
    a, b, k, l0 = (float(t) for t in theta)
    return AccuracyFit(a=a, b=b, k=k, L0=l0, fixed=dict(parametrisation.fixed), n_points=n_points, **kw)


@single_threaded
def fit_accuracy(loss, score, chance, items=None, free_asymptotes=False):
    """Step 2, Acc(L) = a / (1 + exp(-k (L - L0))) + b, fitted to runs' task loss and score.

    chance: the score of guessing (0 for exact match); the sigmoid's floor b and height a = 1 - b are
    fixed there unless free_asymptotes. items: each run's number of task items, for the flatness
    check (optional). Any order of the runs gives the same fit.
    """
    loss, = positive_arrays(min_points=1, loss=loss)
    score = np.asarray(score, float)
    if score.shape != loss.shape or not np.all((score >= 0) & (score <= 1)):
        raise ValueError("scores must be one per run, between 0 and 1")
    items = np.full(len(loss), np.nan) if items is None else np.asarray(items, float)
    loss, score, items = _sorted(loss, score, items)
    w = np.ones(len(loss))
    parametrisation = _accuracy_parametrisation(chance, free_asymptotes)
    full, free, value = _fit_accuracy(parametrisation, loss, score, w, FIT_STARTS)
    fit = _accuracy_result(parametrisation, full, len(loss), objective=float(value))
    fit.diagnostics = diagnose(parametrisation.free_names, free, parametrisation.free_bounds, laws.mapped(sigmoid),
                               (parametrisation.matrix, parametrisation.base, loss), w, ACCURACY_MESSAGES)
    n_free = len(parametrisation.free_names)
    _add_warnings(fit.diagnostics, _too_few_warning(_distinct(loss, w), "runs of distinct task loss", n_free),
                  _flat_score_warning(score, items))
    return fit


def _refit_accuracy(fit, loss, score, counts):
    parametrisation = Parametrisation(ACCURACY, ACCURACY_BOUNDS, tuple(fit.fixed.items()))
    loss, score, w = _sorted(loss, score, counts)
    theta = np.array([fit.a, fit.b, fit.k, fit.L0])
    try:
        full, _, _ = _fit_accuracy(parametrisation, loss, score, w, REPLICATE_STARTS, theta)
    except (ValueError, RuntimeError):
        return None
    return _accuracy_result(parametrisation, full, len(loss))


# --- identification beyond the curvature -------------------------------------------------------

def _add_warnings(diagnostics, *warnings):
    warnings = [w for w in warnings if w]
    diagnostics["warnings"] = [*diagnostics["warnings"], *warnings]
    diagnostics["identified"] = diagnostics["identified"] and not warnings


def _too_few_warning(distinct, what, parameters):
    if distinct > parameters:
        return None
    return (f"too few runs: {distinct} {what} for {parameters} parameters leave no residual to judge the fit "
            f"by: not identified")


def _flat(chi2, dof, what):
    """The flatness warning when chi2 on dof degrees of freedom does not reject one common value."""
    p = float(scipy.stats.chi2.sf(chi2, dof)) if dof >= 1 else 1.0
    if p < FLAT_P:
        return None
    return (f"flat: the runs' {what} are consistent with one common value (chi-squared p = {p:.2g}): "
            f"these runs show no trend to fit, and the fit is not identified")


def _flat_loss_warning(loss, se):
    """Whether the losses differ by more than their standard errors (skipped where a run has none)."""
    if not np.all(np.isfinite(se) & (se > 0)):
        return None
    precision = 1.0 / se**2
    mean = np.sum(precision * loss) / precision.sum()
    return _flat(float(np.sum(precision * (loss - mean) ** 2)), len(loss) - 1, "task losses")


def _flat_score_warning(score, items):
    """Whether the scores differ by more than binomial noise: the chi-squared test of equal
    proportions (skipped where a run's item count is unknown)."""
    if not np.all(np.isfinite(items) & (items > 0)):
        return None
    pooled = np.sum(items * score) / items.sum()
    spread = np.sum(items * (score - pooled) ** 2)
    chi2 = 0.0 if spread == 0 else spread / (pooled * (1.0 - pooled))
    return _flat(float(chi2), len(score) - 1, "scores")


# --- the runs' task scores -----------------------------------------------------------------------

def task_rows(rows):
    """The rows that carry task scores; ValueError when none does."""
    out = [r for r in rows if isinstance(r.get("tasks"), dict) and r["tasks"]]
    if not out:
        raise ValueError("no row has task scores ('tasks'): were the runs evaluated on tasks?")
    return out


def task_names(rows):
    return sorted({name for row in task_rows(rows) for name in row["tasks"]})


def _mean_and_se(entry, name):
    value = entry.get(name)
    if not isinstance(value, dict) or value.get("mean") is None:
        return None, None
    se = value.get("se")
    return float(value["mean"]), (np.nan if se is None else float(se))


def score_name(entry, metric="acc"):
    """The score a task reports in `metric` (a multiple-choice accuracy), or exact match for a
    generation task; None when it has neither."""
    return metric if metric in entry else GENERATION_SCORE if GENERATION_SCORE in entry else None


def metric_view(rows, task, accounting="chinchilla", metric="acc"):
    """One task's runs by compute: {run, C, score, score_se, bpb, bpb_se, items, verification,
    score_name, chance}, arrays in a canonical order (by C, then bpb, then score).

    A score (accuracy or exact match) beside the answer's bits per byte, against compute: the two
    metrics of Schaeffer et al.'s argument. Rows without the task, or without its score or bpb,
    are left out. SEs are NaN where a row has none.
    """
    if accounting not in ACCOUNTING:
        raise ValueError(f"unknown accounting {accounting!r}; use one of {sorted(ACCOUNTING)}")
    flops = ACCOUNTING[accounting].flops
    records, names, chances = [], set(), []
    for row in task_rows(rows):
        entry = row["tasks"].get(task)
        if not isinstance(entry, dict):
            continue
        name = score_name(entry, metric)
        (score, score_se), (bpb, bpb_se) = _mean_and_se(entry, name or ""), _mean_and_se(entry, "bpb")
        if score is None or bpb is None:
            continue
        if row.get(flops) is None:
            raise ValueError(f"run {row.get('run')} has no {flops!r}")
        names.add(name)
        chances.append(float(entry.get("chance", 0.0)))
        records.append((float(row[flops]), bpb, score, bpb_se, score_se, float(entry.get("items") or np.nan),
                        row.get("role") == "verification", str(row.get("run"))))
    if not records:
        raise ValueError(f"no run has both a score and bpb on task {task!r}")
    C, bpb, score, bpb_se, score_se, items, verification, run = (np.array(x) for x in zip(*records))
    order = canonical_order(C, bpb, score)
    view = dict(run=run, C=C, score=score, score_se=score_se, bpb=bpb, bpb_se=bpb_se, items=items,
                verification=verification)
    return {**{k: v[order] for k, v in view.items()}, "score_name": "/".join(sorted(names)),
            "chance": float(np.mean(chances))}


# --- fit, hold out, predict ----------------------------------------------------------------------

def _held_out(view, holdout):
    """Index in the view of the run to predict: the largest compute, or the named run."""
    if holdout == "largest":
        return len(view["C"]) - 1  # the view is ordered by compute
    where = np.flatnonzero(view["run"] == holdout)
    if not len(where):
        raise ValueError(f"run {holdout!r} has no score and bpb on this task")
    return int(where[0])


def _compare(predicted, replicates, measured, se, level):
    """A prediction (with the percentile interval of its bootstrap replicates) beside the measurement."""
    interval = percentile_intervals([{"x": float(r)} for r in replicates], level).get("x")
    inside = None if interval is None else bool(interval[0] <= measured <= interval[1])
    predicted, measured = float(predicted), float(measured)
    return {"predicted": predicted, "interval": None if interval is None else list(interval),
            "measured": measured, "se": float(se) if np.isfinite(se) else None,
            "abs_error": abs(predicted - measured), "error": predicted - measured,
            "relative_error": (predicted - measured) / measured if measured else None, "inside": inside}


@single_threaded
def fit_task(view, holdout="largest", free_asymptotes=False, bootstrap=200, seed=0, level=0.95):
    """Both steps fitted to a task's runs but one, and that run's scores predicted from them.

    view: `metric_view`'s table. Returns {held_out, C, n_fit, fit_runs, step1, step2 (fits with
    bootstrap intervals), prediction: {bpb (step 1), score_at_measured_bpb (step 2 alone), score
    (steps 1 and 2 chained)}, each with predicted, interval, measured, se, abs_error, inside},
    replicate_pairs (the bootstrap's (step 1, step 2) refits on the same resamples, for bands of the
    chain), identified, warnings}. Raises ValueError when the runs cannot support a fit.
    """
    held = _held_out(view, holdout)
    use = ~view["verification"]
    use[held] = False
    C, bpb, score, bpb_se, items = (view[k][use] for k in ("C", "bpb", "score", "bpb_se", "items"))
    step1 = fit_task_loss(C, bpb, se=bpb_se)
    step2 = fit_accuracy(bpb, score, view["chance"], items=items, free_asymptotes=free_asymptotes)
    # The same resamples of the runs for both steps: replicate i of the chain is both steps' i-th refit.
    pairs = [(_refit_task_loss(step1, C, bpb, counts), _refit_accuracy(step2, bpb, score, counts))
             for counts in bootstrap_counts(len(C), bootstrap, seed)]
    step1.set_intervals([p for p, _ in pairs], level)
    step2.set_intervals([q for _, q in pairs], level)
    pairs = [(p, q) for p, q in pairs if p is not None and q is not None]
    c, loss, score_held, score_se = (view[k][held] for k in ("C", "bpb", "score", "score_se"))
    prediction = {
        "bpb": _compare(step1.predict(c), [p.predict(c) for p in step1.replicate_fits], loss, view["bpb_se"][held],
                        level),
        "score_at_measured_bpb": _compare(step2.predict(loss), [q.predict(loss) for q in step2.replicate_fits],
                                          score_held, score_se, level),
        "score": _compare(step2.predict(step1.predict(c)), [q.predict(p.predict(c)) for p, q in pairs],
                          score_held, score_se, level),
    }
    warnings = [f"step 1: {w}" for w in step1.diagnostics["warnings"]] + \
               [f"step 2: {w}" for w in step2.diagnostics["warnings"]]
    return {"held_out": str(view["run"][held]), "C": float(c), "n_fit": int(use.sum()),
            "fit_runs": [str(r) for r in view["run"][use]], "step1": step1, "step2": step2,
            "replicate_pairs": pairs, "prediction": prediction, "identified": not warnings, "warnings": warnings}


def downstream(rows, tasks=None, accounting="chinchilla", holdout="largest", metric="acc", free_asymptotes=False,
               bootstrap=200, seed=0, level=0.95):
    """{task: {view, and fit_task's result, or error}} for the named tasks (default: every task).

    ValueError for rows without task scores, an unknown task, or a held-out run no row names; a task
    whose runs cannot support the fits gets 'error': 'not fitted: why' instead.
    """
    known = task_names(rows)
    unknown = [t for t in (tasks or []) if t not in known]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}; the rows have {', '.join(known)}")
    if holdout != "largest" and holdout not in {str(r.get("run")) for r in task_rows(rows)}:
        raise ValueError(f"held-out run {holdout!r}: no run of that name has task scores")
    out = {}
    for task in tasks or known:
        try:
            view = metric_view(rows, task, accounting, metric)
        except ValueError as err:
            out[task] = {"error": f"not fitted: {err}"}
            continue
        try:
            out[task] = {"view": view, **fit_task(view, holdout, free_asymptotes, bootstrap, seed, level)}
        except ValueError as err:
            out[task] = {"view": view, "error": f"not fitted: {err}"}
    return out


# --- the command -------------------------------------------------------------------------------

def to_json(result):
    """A task's result as JSON-ready values: fits through their to_dict, arrays as lists, and of the
    bootstrap's refits only their number."""
    out = {}
    for key, value in result.items():
        if key == "replicate_pairs":
            out["chained_replicates"] = len(value)
        elif isinstance(value, FitResult):
            out[key] = value.to_dict()
        elif key == "view":
            out[key] = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in value.items()}
        else:
            out[key] = value
    return out


def _with_se(value, se, spec):
    return format(value, spec) + ("" if se is None or not np.isfinite(se) else f" ± {format(se, spec)}")


def _fit_lines(label, fit):
    lines = [f"{label}: {fit.extra()['form']}, fitted on {fit.n_points} runs "
             f"({fit.replicates} bootstrap resamples, {fit.level:.0%} intervals)"]
    fixed = getattr(fit, "fixed", {})
    for name, value in fit.estimates().items():
        ci = fit.intervals.get(name)
        note = "  (fixed)" if name in fixed else f"  [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
        lines.append(f"  {name:<8}{value:>12.4g}{note}")
    return lines


def report(task, result, accounting):
    """The table for one task: its runs, both fits with intervals, the prediction and its errors."""
    if "view" not in result:
        return [f"== {task}: {result['error']}"]
    view = result["view"]
    score = view["score_name"]
    lines = [f"== {task}: {score} and answer bits per byte against compute ({accounting} accounting; "
             f"chance {view['chance']:.3g}) =="]
    lines.append(f"  {'run':<28}{'C':>11}  {score:<18}{'bpb':<18}")
    for i, run in enumerate(view["run"]):
        mark = "  held out" if run == result.get("held_out") else "  verification" if view["verification"][i] else ""
        score_text = _with_se(view["score"][i], view["score_se"][i], ".3f")
        lines.append(f"  {run:<28}{view['C'][i]:>11.3g}  {score_text:<18}"
                     f"{_with_se(view['bpb'][i], view['bpb_se'][i], '.4f'):<18}{mark}")
    if "error" in result:
        return [*lines, f"  {result['error']}"]
    lines += _fit_lines("step 1", result["step1"]) + _fit_lines("step 2", result["step2"])
    lines.append(f"prediction for {result['held_out']} (C = {result['C']:.3g}) from the other {result['n_fit']} runs:")
    labels = {"bpb": "bpb (step 1)", "score_at_measured_bpb": f"{score} at the measured bpb (step 2)",
              "score": f"{score} (steps 1 and 2 chained)"}
    width = max(map(len, labels.values())) + 2
    lines.append(f"  {'':<{width}}{'predicted [interval]':<30}{'measured':<20}{'abs error':>10}")
    for key, label in labels.items():
        p = result["prediction"][key]
        interval = "" if p["interval"] is None else f" [{p['interval'][0]:.4f}, {p['interval'][1]:.4f}]"
        inside = {True: "  inside", False: "  outside", None: ""}[p["inside"]]
        measured = _with_se(p["measured"], p["se"], ".4f")
        lines.append(f"  {label:<{width}}{p['predicted']:.4f}{interval:<24}{measured:<20}"
                     f"{p['abs_error']:>10.4f}{inside}")
    lines.extend(f"  warning, {w}" for w in result["warnings"])
    lines.append(f"  identified: {'yes' if result['identified'] else 'no'}")
    return lines


def _main(argv):
    parser = cli.ArgumentParser(prog="python -m scaling.downstream", description=__doc__.split("\n")[0])
    parser.add_argument("results", help="a sweep's results.jsonl, its rows with task scores ('tasks')")
    parser.add_argument("--task", action="extend", nargs="+", default=[], metavar="NAME",
                        help="the tasks to fit (default: every task in the rows)")
    parser.add_argument("--accounting", choices=sorted(ACCOUNTING), default="chinchilla")
    parser.add_argument("--holdout", default="largest", metavar="largest|RUN",
                        help="the run to predict from the others (default: the largest compute)")
    parser.add_argument("--metric", choices=MULTIPLE_CHOICE_SCORES, default="acc",
                        help="the multiple-choice score of step 2 (generation tasks: exact match)")
    parser.add_argument("--free_asymptotes", action="store_true",
                        help="fit the sigmoid's floor and height too (default: chance to 1)")
    parser.add_argument("--bootstrap", type=cli.non_negative_int, default=200, metavar="K",
                        help="bootstrap resamples of the fitted runs for the intervals (default 200)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    results = downstream(load_results(args.results), args.task or None, args.accounting, args.holdout, args.metric,
                         args.free_asymptotes, args.bootstrap)
    if args.json:
        cli.write_json(args.json, {"results": str(args.results), "accounting": args.accounting,
                                   "holdout": args.holdout, "bootstrap": args.bootstrap,
                                   "tasks": {t: to_json(r) for t, r in results.items()}})
    print("\n".join(line for task, result in results.items() for line in report(task, result, args.accounting)))
    return 0


def main(argv=None):
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
