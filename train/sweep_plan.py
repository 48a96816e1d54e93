"""What a sweep is: its gin description, and the runs it expands to.

A sweep names the gin files every run starts from (`base`), the settings all
its runs share (`bindings`), and what it varies: model sizes, either files of
the ladder (`models`: configs/models/<name>.gin) or target parameter counts
(`sizes`: each becomes the shape train/ladder.py's rule gives, named like
d48l2), crossed with token budgets D (each size trains for each D), compute
budgets C (IsoFLOP: each size trains for D = C / (6 N)) or a number of tokens
per parameter (`train_tokens_per_param`: each size trains for D = ratio x N),
and optionally with any other binding (`grid`). Or, with compute budgets, a
`placement` (train/sweep_design.py) chooses each budget's ladder sizes from the
runs that finished before, and `verify_factor` then trains the fits' predicted
optimum at one larger budget or several. `rules` set per-size hyperparameters from N
(train/sweep_rules.py). For example:

    Sweep.base = ('base.gin',)
    Sweep.models = ('d48', 'tiny', 'd96', 'xs')  # or Sweep.sizes = (2e4, 5e4, 1.25e5) with Ladder.* settings
    Sweep.flops = (1e12, 3e12)
    Sweep.accounting = 'chinchilla'  # N counts all parameters; 'kaplan': non-embedding ones
    Sweep.bindings = ['DataConfig.seq_len = 128', 'TransformerConfig.max_len = 128']
    Sweep.rules = [@lr/PowerLaw()]
    lr/PowerLaw.binding = 'lr_schedule.peak_lr'
    ...

A run's `config` is what makes it differ from the base: the bindings of its
model file (or its ladder shape), its token budget, what the rules set and its
grid values, in that order (a grid value overrides a rule). N is counted on the
model's abstract parameter tree (jax.eval_shape) by model.accounting, never by hand.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
from typing import Optional, Union

import gin
import gin.config_parser

from cli import resolve_gin_file
from scaling.inputs import ACCOUNTING, SEED_BINDINGS
from train import sweep_design, sweep_rules
from train.ladder import Ladder
from train.main import parse_gin
from train.sweep_design import compact

# N in C = 6 N D. Kaplan et al. count non-embedding parameters, Hoffmann et al. all of
# them; a mixture of experts counts those a token uses, which for a dense model is all.


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Sweep:
    base: tuple  # gin files every run starts from
    models: tuple = ()  # sizes from files: configs/models/<name>.gin
    sizes: tuple = ()  # or sizes by target N (in the ladder's accounting), each a shape of `ladder`
    placement: Optional[sweep_design.Placement] = None  # or ladder sizes placed per budget of Sweep.flops
    ladder: Ladder = dataclasses.field(default_factory=Ladder)  # the rule that turns a target N into a shape
    bindings: tuple = ()  # settings every run shares, on top of base: ('DataConfig.seq_len = 64', ...)
    tokens: Optional[tuple] = None  # token budgets D: every size trains for each
    flops: Optional[tuple] = None  # compute budgets C (IsoFLOP): every size trains for D = C / (6 N)
    train_tokens_per_param: Optional[float] = None  # every size trains for D = ratio x N
    accounting: str = "kaplan"  # the N of 6 N: 'kaplan' (non-embedding) or 'chinchilla' (all parameters)
    tokens_per_param: Optional[tuple] = None  # (low, high): keep only runs with low <= D / N <= high
    grid: dict = dataclasses.field(default_factory=dict)  # more axes: {'binding': (value, ...)}
    rules: tuple = ()  # per-size hyperparameters (train/sweep_rules.py), e.g. (@lr/PowerLaw(), @SizeTable())
    # With placement: verify the fits' optimum at this x the largest budget, or at each of several factors,
    # e.g. (4.0, 10.0); 0: off. A factor added after the others have trained is predicted from the same fits.
    verify_factor: Union[float, tuple] = 0.0
    verify_bootstrap: int = 200  # bootstrap resamples of the fits behind that prediction
    # The fits behind that prediction use the budgets of at least this many FLOPs (scaling.inputs.budget_window);
    # 0: every budget. Placement still centres each budget on the minima of all the budgets below it.
    fit_min_budget: float = 0.0
    # Seeds of the verification run; 0: Placement.seeds. The one number the sweep is judged by is worth
    # more seeds than each point of a profile: one run's loss varies by seed as much as the 1% it checks.
    verify_seeds: int = 0
    slurm_directives: tuple = ()  # #SBATCH options for --slurm, e.g. ('--gres=gpu:1', '--time=24:00:00')

    def __post_init__(self):
        given = [name for name in ("models", "sizes", "placement") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("set one of Sweep.models, Sweep.sizes and Sweep.placement: "
                             + (f"{' and '.join(given)} are set" if given else "the sweep has no runs"))
        if self.placement:
            if self.flops is None:
                raise ValueError("Sweep.placement needs Sweep.flops: the budgets it places sizes for")
            if self.grid or self.tokens_per_param is not None:
                raise ValueError("Sweep.placement decides a budget's sizes alone: it takes no Sweep.grid or "
                                 "Sweep.tokens_per_param (Placement.seeds trains each size with several seeds)")
        if (any(factor < 0 for factor in self.verify_factors) or self.verify_bootstrap < 0 or self.verify_seeds < 0
                or not self.fit_min_budget >= 0):
            raise ValueError("Sweep.verify_factor, Sweep.verify_bootstrap, Sweep.verify_seeds and Sweep.fit_min_budget "
                             "must not be negative")
        if self.fit_min_budget and (self.flops is None or self.fit_min_budget > max(self.flops)):
            raise ValueError(f"Sweep.fit_min_budget = {self.fit_min_budget!r}: the fits would have no budget "
                             f"(Sweep.flops = {self.flops!r})")
        if self.verify_factors and (not self.placement or not min(self.verify_factors) > 1):
            raise ValueError(f"Sweep.verify_factor = {self.verify_factor!r}: a verification run needs "
                             f"Sweep.placement and factors above 1 (0 turns it off)")
        if self.sizes and not min(self.sizes) > 0:
            raise ValueError(f"Sweep.sizes = {self.sizes!r}: a target parameter count is not positive")
        lengths = [name for name in ("tokens", "flops", "train_tokens_per_param") if getattr(self, name) is not None]
        if len(lengths) > 1:
            raise ValueError(f"set at most one of Sweep.tokens, Sweep.flops and Sweep.train_tokens_per_param, "
                             f"not {' and '.join(lengths)}")
        if self.train_tokens_per_param is not None and not self.train_tokens_per_param > 0:
            raise ValueError(f"Sweep.train_tokens_per_param must be positive, got {self.train_tokens_per_param!r}")
        for name in ("tokens", "flops"):
            values = getattr(self, name)
            if values is not None and (not values or min(values) <= 0):
                raise ValueError(f"Sweep.{name} = {values!r}: the sweep has no runs, or a budget is not positive")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"Sweep.grid[{key!r}] has no values: the sweep has no runs")
        if self.accounting not in ACCOUNTING:
            raise ValueError(f"Sweep.accounting = {self.accounting!r} is not one of {list(ACCOUNTING)}")
        if self.tokens_per_param is not None and len(self.tokens_per_param) != 2:
            raise ValueError(f"Sweep.tokens_per_param = {self.tokens_per_param!r} is not a (low, high) pair")

    @property
    def verify_factors(self) -> tuple:
        """Sweep.verify_factor as a sorted tuple of distinct factors; () when off."""
        factors = self.verify_factor if isinstance(self.verify_factor, (tuple, list)) else (self.verify_factor,)
        return tuple(sorted({float(factor) for factor in factors if factor != 0}))


SWEEP_CONFIGURABLES = ("Sweep", "Ladder", "Placement", *sweep_rules.RULES)


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    model: str
    config: dict  # binding -> value: what makes this run differ from the sweep's base
    params: int  # N, counted as Sweep.accounting says
    tokens: int  # D: what it trains for, in whole steps
    budget: Optional[float]  # C of an IsoFLOP sweep
    flops: float  # its training FLOPs in the Chinchilla accounting: its share of the sweep's time
    record: dict = dataclasses.field(default_factory=dict)  # more for its results row: wave, placement, role

    @property
    def bindings(self) -> list[str]:
        return as_bindings(self.config)


def as_bindings(config: dict) -> list[str]:
    return [f"{key} = {value!r}" for key, value in config.items()]


@dataclasses.dataclass(frozen=True)
class Plan:
    base: tuple  # gin files every run starts from
    bindings: tuple  # the bindings all runs share: the sweep's, then the command line's
    runs: list
    slurm_directives: tuple
    rules: tuple = ()  # the sweep's rules that set some run's value, for the sources they cite
    accounting: str = "kaplan"  # Sweep.accounting
    budgets: list = dataclasses.field(default_factory=list)  # with Sweep.placement: sweep_design.BudgetPlan each
    verify_budgets: tuple = ()  # C of each verification run, once every budget is done
    verify_bootstrap: int = 0  # Sweep.verify_bootstrap
    fit_min_budget: float = 0.0  # Sweep.fit_min_budget
    place: Optional[object] = None  # place(budget, targets, existing runs) -> new runs: ladder shapes at budget

    @property
    def awaiting_prediction(self) -> list[float]:
        """The verification budgets whose runs wait for their prediction (every budget is done)."""
        verified = {run.budget for run in self.runs if run.record.get("role") == "verification"}
        return [budget for budget in self.verify_budgets if budget not in verified]


def split_bindings(bindings: list[str]) -> tuple[list[str], list[str]]:
    """Command-line bindings of the sweep's own configurables, and those meant for every run."""
    def configurable(binding: str) -> str:  # 'scope/module.Name.param = v' -> 'Name'
        return binding.split("=", 1)[0].strip().rsplit(".", 1)[0].rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    ours = [b for b in bindings if configurable(b) in SWEEP_CONFIGURABLES]
    return ours, [b for b in bindings if b not in ours]


def load_sweep(files: list[str], bindings: list[str]) -> Sweep:
    gin.clear_config()
    parse_gin(files, bindings)
    return Sweep()


def gin_file_bindings(name: str) -> dict:
    """The bindings a model-size file makes (following its includes), so that run configs list them."""
    path = resolve_gin_file(name)
    bindings = {}
    with open(path) as f:
        for statement in gin.config_parser.ConfigParser(f, gin.config.ParserDelegate()):
            if isinstance(statement, gin.config_parser.IncludeStatement):
                bindings.update(gin_file_bindings(statement.filename))
            elif isinstance(statement, gin.config_parser.BindingStatement):
                selector = "/".join(filter(None, [statement.scope, statement.selector]))
                bindings[f"{selector}.{statement.arg_name}"] = statement.value
            else:
                raise ValueError(f"{path}: a model-size file may hold only bindings and includes")
    return bindings


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The configs train.main would build for a run; building them checks every value."""
    model: object  # TransformerConfig
    data: object  # DataConfig
    train: object  # TrainConfig

    @property
    def tokens_per_step(self) -> int:
        return self.data.batch_size * self.data.seq_len


def run_settings(files: tuple, bindings: list[str]) -> RunSettings:
    from data.loader import DataConfig
    from model.transformer import TransformerConfig
    from train.trainer import TrainConfig
    gin.clear_config()
    parse_gin(list(files), bindings)
    return RunSettings(TransformerConfig(), DataConfig(), TrainConfig())


@functools.cache
def count_params(model_cfg) -> dict:
    """model.accounting's counts of the model's parameter tree, built abstractly (no memory, no FLOPs).

    Parameter shapes depend neither on the input's length nor on rematerialisation: a one-token
    input without remat traces fastest.
    """
    import jax
    import jax.numpy as jnp

    from model import accounting, build_model
    tokens = jnp.zeros((1, 1), jnp.int32)
    batch = {"inputs": tokens, "encoder_inputs": tokens, "prefix_len": jnp.zeros((1,), jnp.int32)}
    model = build_model(dataclasses.replace(model_cfg, remat=False))
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
    return accounting.param_counts(variables["params"], model_cfg)


def _name_part(binding: str, value) -> str:
    text = compact(value) if isinstance(value, (int, float)) else str(value)
    return binding.rsplit(".", 1)[-1] + re.sub(r"[^A-Za-z0-9.+-]", "-", text)


def _train_tokens(tokens: float, source: str) -> dict:
    """The train_tokens binding for `tokens`; a budget too small to train one token is an error that
    says so (train_tokens = 0 would otherwise read as unset, and fail further on with a puzzling line)."""
    if round(tokens) < 1:
        raise ValueError(f"{source} gives {tokens:.3g} training tokens, fewer than one")
    return {"TrainConfig.train_tokens": round(tokens)}


def _budgets(sweep: Sweep, params: int, flops: Optional[tuple]) -> list[tuple[str, Optional[float], dict]]:
    """(name part, IsoFLOP budget, train_tokens binding) for each point of the budget axis."""
    if flops is not None:
        return [(f"C{compact(c)}", c, _train_tokens(c / (6 * params), f"the budget C = {c:.3g} at N = {params:,}"))
                for c in flops]
    if sweep.tokens is not None:
        return [(f"D{compact(d)}", None, _train_tokens(d, f"Sweep.tokens entry {d!r}")) for d in sweep.tokens]
    if sweep.train_tokens_per_param is not None:
        ratio = sweep.train_tokens_per_param
        return [("", None, _train_tokens(ratio * params, f"Sweep.train_tokens_per_param = {ratio!r} at N = {params:,}"))]
    return [("", None, {})]  # the base's own training length


def _grid_points(grid: dict) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def model_sizes(sweep: Sweep, shared: tuple) -> list[tuple[str, dict]]:
    """(name, bindings) of the sweep's model sizes: its model files', or the ladder's shapes for its sizes."""
    if sweep.models:
        return [(model, gin_file_bindings(os.path.join("models", f"{model}.gin"))) for model in sweep.models]
    base = run_settings(sweep.base, list(shared)).model
    return [(shape.name, shape.bindings) for shape in (sweep_ladder(sweep).shape(n, base) for n in sweep.sizes)]


def sweep_ladder(sweep: Sweep) -> Ladder:
    """The sweep's ladder, counting N as the sweep does unless told otherwise."""
    return sweep.ladder if sweep.ladder.accounting else dataclasses.replace(sweep.ladder, accounting=sweep.accounting)


def _model_runs(sweep: Sweep, shared: tuple, model: str, model_bindings: dict, flops: Optional[tuple]) -> list[Run]:
    """The runs of one model size: its budgets (`flops`, or the sweep's tokens) crossed with the grid."""
    try:
        return _expand_size(sweep, shared, model, model_bindings, flops)
    except (ValueError, TypeError) as error:  # gin's errors go on with lines about where they arose
        raise ValueError(f"model {model!r}: {str(error).splitlines()[0]}") from None


def _expand_size(sweep: Sweep, shared: tuple, model: str, model_bindings: dict,
                        flops: Optional[tuple]) -> list[Run]:
    from train.trainer import check_settings, flops_per_text_token
    runs = []
    for extras in _grid_points(sweep.grid):
        shape = {**model_bindings, **extras}
        settings = run_settings(sweep.base, [*shared, *as_bindings(shape)])
        counts = count_params(settings.model)
        params = counts[ACCOUNTING[sweep.accounting].params]
        for label, budget, length in _budgets(sweep, params, flops):
            if length and settings.train.train_steps:
                length = {"TrainConfig.train_steps": 0, **length}  # the base counts steps; this run, tokens
            config = {**model_bindings, **length}
            tokens = length.get("TrainConfig.train_tokens", settings.train.train_tokens or None)
            size = sweep_rules.RunSize(model, params, tokens, settings.data)
            for rule in sweep.rules:
                config.update(rule(size))
            config.update(extras)
            name = "_".join(filter(None, [model, label, *(_name_part(k, v) for k, v in extras.items())]))
            final = run_settings(sweep.base, [*shared, *as_bindings(config)])
            if final.model != settings.model:
                raise ValueError(f"run {name}: Sweep.rules may not change the model's shape")
            try:
                tokens = check_settings(final.model, final.data, final.train) * final.tokens_per_step
            except ValueError as error:  # what train.main would refuse, refused before anything runs
                raise ValueError(f"run {name}: {error}") from None
            per_token = flops_per_text_token(final.model, final.data, counts["params_active_nonembedding"])
            runs.append(Run(name, model, config, params, tokens, budget, per_token["chinchilla"] * tokens))
    return runs


def placer(sweep: Sweep, shared: tuple):
    """place(budget, targets, existing runs): a run at `budget` for each target's ladder shape that
    neither `existing` nor an earlier target has (two targets on one shape give one run), and with
    Placement.seeds = k (or `seeds` = k) its k - 1 replicates, named <run>_seed<s>, with TrainConfig.seed
    and DataConfig.seed = s."""
    ladder, base = sweep_ladder(sweep), run_settings(sweep.base, list(shared)).model

    def place(budget: float, targets: list[float], existing: list[Run], seeds: int = 0) -> list[Run]:
        have, runs = {run.model for run in existing}, []
        for target in targets:
            shape = ladder.shape(target, base)
            if shape.name in have:
                continue
            have.add(shape.name)
            for seed in range(seeds or sweep.placement.seeds):
                replicate = {binding: seed for binding in SEED_BINDINGS} if seed else {}
                for run in _model_runs(sweep, shared, shape.name, {**shape.bindings, **replicate}, (budget,)):
                    runs.append(dataclasses.replace(run, name=f"{run.name}_seed{seed}") if seed else run)
        return runs
    return place


def plan_sweep(files: list[str], bindings: list[str], rows: Optional[dict] = None,
               predictions: Optional[dict] = None) -> Plan:
    """Reads the sweep and builds every run's config, checking each as train.main will.

    With Sweep.placement the runs depend on the finished ones: `rows` maps run names to their results
    rows, and `predictions` maps each verification budget C to its prediction (prediction.json) once
    there is one.
    Raises FileNotFoundError, or ValueError / TypeError / SyntaxError for bad input.
    """
    sweep_bindings, run_bindings = split_bindings(bindings)
    sweep = load_sweep(files, sweep_bindings)
    shared = (*sweep.bindings, *run_bindings)
    if sweep.placement:
        return _adaptive_plan(sweep, shared, rows or {}, predictions or {})
    runs = []
    for model, model_bindings in model_sizes(sweep, shared):
        runs.extend(_model_runs(sweep, shared, model, model_bindings, sweep.flops))
    if sweep.tokens_per_param is not None:
        low, high = sweep.tokens_per_param
        runs = [run for run in runs if low <= run.tokens / run.params <= high]
        if not runs:
            raise ValueError(f"no run has tokens per parameter within Sweep.tokens_per_param = {low, high}")
    names = [run.name for run in runs]
    unsafe = [name for name in names if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name)]
    if unsafe:  # a run's name is its directory in the sweep's workdir: no path separators, no '..'
        raise ValueError(f"run name {unsafe[0]!r} is not a plain directory name (letters, digits, '._+-'): "
                         f"rename the model in Sweep.models")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"several runs would be named {repeated[0]!r}: make the sweep's axes distinct")
    # A rule whose binding the grid also sets is overridden on every run, so the plan does not cite it.
    cited_rules = tuple(rule for rule in sweep.rules if getattr(rule, "binding", None) not in sweep.grid)
    return Plan(tuple(sweep.base), shared, runs, tuple(sweep.slurm_directives), cited_rules, sweep.accounting)


def _adaptive_plan(sweep: Sweep, shared: tuple, rows: dict, predictions: dict) -> Plan:
    """The budgets' waves so far (train/sweep_design.py) and, once all are done, the verification runs of
    the budgets that `predictions` ({C: prediction}) predicts."""
    place = placer(sweep, shared)
    budgets = sweep_design.plan_budgets(sweep.placement, sweep.flops, place, rows,
                                        ACCOUNTING[sweep.accounting].params)
    runs = [run for budget in budgets for run in budget.runs]
    verify_budgets = ()
    if sweep.verify_factors and all(budget.done for budget in budgets):
        verify_budgets = tuple(factor * max(sweep.flops) for factor in sweep.verify_factors)
        unplanned = [budget for budget in predictions if budget not in verify_budgets]
        if unplanned:
            raise ValueError(f"prediction.json predicts for C={', '.join(map(compact, unplanned))} but the sweep "
                             f"verifies at C={', '.join(map(compact, verify_budgets))}; use another --workdir")
    for verify_budget in verify_budgets:
        if verify_budget in predictions:
            runs += _verification_runs(sweep, place, predictions[verify_budget])
    return Plan(tuple(sweep.base), shared, runs, tuple(sweep.slurm_directives), tuple(sweep.rules), sweep.accounting,
                budgets, verify_budgets, sweep.verify_bootstrap, sweep.fit_min_budget, place)


def _verification_runs(sweep: Sweep, place, prediction: dict) -> list[Run]:
    """The run (and its seeds' replicates) that tests `prediction`: Approach 3's N_opt on the ladder."""
    try:
        n_opt = float(prediction["predict"]["chinchilla"]["N_opt"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"prediction.json holds no Approach 3 N_opt at C={compact(prediction['budget'])}; "
                         f"use another --workdir") from None
    replicates = place(prediction["budget"], [n_opt], [], sweep.verify_seeds)
    if replicates[0].name != prediction.get("run"):
        raise ValueError(f"prediction.json is for run {prediction.get('run')} but the sweep now plans "
                         f"{replicates[0].name}; use another --workdir")
    return [dataclasses.replace(run, record={"role": "verification", "prediction": prediction})
            for run in replicates]
