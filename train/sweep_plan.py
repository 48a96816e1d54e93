"""What a sweep is: its gin description, and the runs it expands to.

A sweep names the gin files every run starts from (`base`), the settings all
its runs share (`bindings`), and what it varies: model sizes, either files of
the ladder (`models`: configs/models/<name>.gin) or target parameter counts
(`sizes`: each becomes the shape train/ladder.py's rule gives, named like
d48l2), crossed with token budgets D (each size trains for each D), compute
budgets C (IsoFLOP: each size trains for D = C / (6 N)) or a number of tokens
per parameter (`train_tokens_per_param`: each size trains for D = ratio x N),
and optionally with any other binding (`grid`). `rules` set per-size
hyperparameters from N (train/sweep_rules.py). For example:

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
from typing import Optional

import gin
import gin.config_parser

from train import sweep_rules
from train.ladder import Ladder
from train.main import parse_gin, resolve_gin_file

# N in C = 6 N D. Kaplan et al. count non-embedding parameters, Hoffmann et al. all of
# them; a mixture of experts counts those a token uses, which for a dense model is all.
ACCOUNTING = {"kaplan": "params_active_nonembedding", "chinchilla": "params_active"}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Sweep:
    base: tuple  # gin files every run starts from
    models: tuple = ()  # sizes from files: configs/models/<name>.gin
    sizes: tuple = ()  # or sizes by target N (in the ladder's accounting), each a shape of `ladder`
    ladder: Ladder = dataclasses.field(default_factory=Ladder)  # the rule that turns a target N into a shape
    bindings: tuple = ()  # settings every run shares, on top of base: ('DataConfig.seq_len = 64', ...)
    tokens: Optional[tuple] = None  # token budgets D: every size trains for each
    flops: Optional[tuple] = None  # compute budgets C (IsoFLOP): every size trains for D = C / (6 N)
    train_tokens_per_param: Optional[float] = None  # every size trains for D = ratio x N
    accounting: str = "kaplan"  # the N of 6 N: 'kaplan' (non-embedding) or 'chinchilla' (all parameters)
    tokens_per_param: Optional[tuple] = None  # (low, high): keep only runs with low <= D / N <= high
    grid: dict = dataclasses.field(default_factory=dict)  # more axes: {'binding': (value, ...)}
    rules: tuple = ()  # per-size hyperparameters (train/sweep_rules.py), e.g. (@lr/PowerLaw(), @SizeTable())
    slurm_directives: tuple = ()  # #SBATCH options for --slurm, e.g. ('--gres=gpu:1', '--time=24:00:00')

    def __post_init__(self):
        if bool(self.models) == bool(self.sizes):
            raise ValueError("set one of Sweep.models and Sweep.sizes: "
                             + ("both are set" if self.models else "the sweep has no runs"))
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


SWEEP_CONFIGURABLES = ("Sweep", "Ladder", *sweep_rules.RULES)


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    model: str
    config: dict  # binding -> value: what makes this run differ from the sweep's base
    params: int  # N, counted as Sweep.accounting says
    tokens: int  # D: what it trains for, in whole steps
    budget: Optional[float]  # C of an IsoFLOP sweep
    flops: float  # its training FLOPs in the Chinchilla accounting: its share of the sweep's time

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


def _short(x: float) -> str:
    return f"{x:.3g}".replace("e+0", "e").replace("e+", "e")


def _name_part(binding: str, value) -> str:
    text = _short(value) if isinstance(value, (int, float)) else str(value)
    return binding.rsplit(".", 1)[-1] + re.sub(r"[^A-Za-z0-9.+-]", "-", text)


def _budgets(sweep: Sweep, params: int) -> list[tuple[str, Optional[float], dict]]:
    """(name part, IsoFLOP budget, train_tokens binding) for each point of the budget axis."""
    if sweep.flops is not None:
        return [(f"C{_short(c)}", c, {"TrainConfig.train_tokens": round(c / (6 * params))}) for c in sweep.flops]
    if sweep.tokens is not None:
        return [(f"D{_short(d)}", None, {"TrainConfig.train_tokens": round(d)}) for d in sweep.tokens]
    if sweep.train_tokens_per_param is not None:
        return [("", None, {"TrainConfig.train_tokens": round(sweep.train_tokens_per_param * params)})]
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


def _model_runs(sweep: Sweep, shared: tuple, model: str, model_bindings: dict) -> list[Run]:
    """The runs of one model size: its budgets crossed with the grid."""
    from model import accounting
    runs = []
    for extras in _grid_points(sweep.grid):
        shape = {**model_bindings, **extras}
        settings = run_settings(sweep.base, [*shared, *as_bindings(shape)])
        counts = count_params(settings.model)
        params = counts[ACCOUNTING[sweep.accounting]]
        for label, budget, length in _budgets(sweep, params):
            if length and settings.train.train_steps:
                length = {"TrainConfig.train_steps": 0, **length}  # the base counts steps; this run, tokens
            config = {**model_bindings, **length}
            for rule in sweep.rules:
                config.update(rule(model, params))
            config.update(extras)
            name = "_".join(filter(None, [model, label, *(_name_part(k, v) for k, v in extras.items())]))
            final = run_settings(sweep.base, [*shared, *as_bindings(config)])
            if final.model != settings.model:
                raise ValueError(f"run {name}: Sweep.rules may not change the model's shape")
            tokens = final.train.total_steps(final.tokens_per_step) * final.tokens_per_step
            per_token = accounting.training_flops_per_token(final.model, final.data.seq_len,
                                                            counts["params_active_nonembedding"])
            runs.append(Run(name, model, config, params, tokens, budget, per_token["chinchilla"] * tokens))
    return runs


def plan_sweep(files: list[str], bindings: list[str]) -> Plan:
    """Reads the sweep and builds every run's config, checking each as train.main will.

    Raises FileNotFoundError, or ValueError / TypeError / SyntaxError for bad input.
    """
    sweep_bindings, run_bindings = split_bindings(bindings)
    sweep = load_sweep(files, sweep_bindings)
    shared = (*sweep.bindings, *run_bindings)
    runs = []
    for model, model_bindings in model_sizes(sweep, shared):
        try:
            runs.extend(_model_runs(sweep, shared, model, model_bindings))
        except (ValueError, TypeError) as error:  # gin's errors go on with lines about where they arose
            raise ValueError(f"model {model!r}: {str(error).splitlines()[0]}") from None
    if sweep.tokens_per_param is not None:
        low, high = sweep.tokens_per_param
        runs = [run for run in runs if low <= run.tokens / run.params <= high]
        if not runs:
            raise ValueError(f"no run has tokens per parameter within Sweep.tokens_per_param = {low, high}")
    names = [run.name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"several runs would be named {repeated[0]!r}: make the sweep's axes distinct")
    return Plan(tuple(sweep.base), shared, runs, tuple(sweep.slurm_directives))
