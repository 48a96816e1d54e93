"""The ladder (train/ladder.py): target parameter counts become model shapes by a rule, counted on real trees."""
import math

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import accounting, build_model
from model.transformer import TransformerConfig
from tests.conftest import REPO
from train import sweep_plan
from train.ladder import Ladder

VOCABS = (512, 8192)


def base(vocab_size: int) -> TransformerConfig:
    return TransformerConfig(vocab_size=vocab_size, max_len=128)


def random_targets(low: float, high: float, count: int, seed: int) -> np.ndarray:
    return np.exp(np.random.default_rng(seed).uniform(math.log(low), math.log(high), count))


@pytest.mark.parametrize("vocab_size", VOCABS)
@pytest.mark.parametrize("accounting_name", ["chinchilla", "kaplan"])
def test_shapes_are_near_the_target_at_the_target_aspect_ratio_with_heads_head_dim_wide(vocab_size, accounting_name):
    """Within 25% of the target wherever the widths, 16 apart, and the depths of the aspect-ratio window
    leave no wider gap: from 5e4 on (3e5 for an 8192-piece vocabulary counted whole, where one layer
    holds 8192 d embedding parameters). Every head is head_dim wide."""
    ladder = Ladder(accounting=accounting_name)
    low = 3e5 if vocab_size == 8192 and accounting_name == "chinchilla" else 5e4
    for target in random_targets(low, 1e7, 10, seed=vocab_size):
        shape = ladder.shape(target, base(vocab_size))
        assert abs(shape.params / target - 1) <= 0.25, (target, shape)
        assert 0.5 <= shape.d_model / shape.n_layers / ladder.aspect_ratio <= 2.0, (target, shape)
        assert shape.d_model == shape.n_heads * ladder.head_dim, shape
        assert shape.d_ff == 4 * shape.d_model


def test_the_ladder_before_exact_head_widths_is_kept_for_its_sweeps():
    """exact_head_dim = False steps widths by width_multiple and rounds the head count (the committed
    sweeps before 2026-12-05 were planned so): the shapes those sweeps trained come back."""
    old = Ladder(accounting="chinchilla", exact_head_dim=False, min_layers=2)
    shapes = {s.name: s for s in (old.shape(t, base(1024)) for t in (1e4, 4.5e5, 1.8e6))}
    assert {name: (s.n_heads, s.params) for name, s in shapes.items()} == {
        "d8l2": (1, 9768), "d88l4": (4, 462616), "d184l4": (23, 1815160)}  # results/isoflop_cpu_2decades/results.jsonl


def test_head_width_is_exact_for_any_head_dim_and_width_multiple():
    """Random head widths (even, for RoPE) and width multiples: every shape's heads are head_dim wide
    and its width a multiple of both."""
    rng = np.random.default_rng(7)
    for _ in range(6):
        head_dim, multiple = 2 * int(rng.integers(2, 17)), int(rng.integers(1, 13))
        ladder = Ladder(accounting="kaplan", head_dim=head_dim, width_multiple=multiple)
        for target in random_targets(3e4, 3e6, 4, seed=int(rng.integers(1000))):
            shape = ladder.shape(target, base(512))
            assert shape.d_model % multiple == 0 and shape.d_model == shape.n_heads * head_dim, (head_dim, multiple, shape)


def test_larger_targets_never_get_smaller_models():
    for exact in (True, False):
        ladder = Ladder(accounting="chinchilla", exact_head_dim=exact)
        counts = [ladder.shape(target, base(1024)).params for target in np.geomspace(3e3, 3e6, 40)]
        assert counts == sorted(counts) and len(set(counts)) > 15


def test_aspect_tolerance_one_gives_the_fixed_aspect_shape_nearest_in_n_and_depth_rising_with_n():
    """At aspect_tolerance = 1 the ladder considers only d_model = aspect_ratio * n_layers. Reference: every
    such shape built and counted on its own tree, the nearest in log N taken by brute force. Random aspect
    ratios (multiples of the width step) and targets; depth never falls as the target grows."""
    rng = np.random.default_rng(11)
    for ratio in 16 * rng.integers(1, 5, 3):
        ladder = Ladder(accounting="chinchilla", aspect_ratio=float(ratio), aspect_tolerance=1.0, min_layers=2, max_layers=12)
        fixed = {n: ladder.count(ladder.config(base(1024), int(ratio) * n, n)) for n in range(2, 13)}
        low, high = fixed[2], fixed[12]
        targets = np.sort(random_targets(low, high, 12, seed=int(ratio)))
        shapes = [ladder.shape(target, base(1024)) for target in targets]
        for target, shape in zip(targets, shapes):
            nearest = min(fixed, key=lambda n: abs(math.log(fixed[n] / target)))
            assert (shape.d_model, shape.n_layers, shape.params) == (int(ratio) * nearest, nearest, fixed[nearest]), (ratio, target)
        depths = [shape.n_layers for shape in shapes]
        assert depths == sorted(depths) and len(set(depths)) > 2, depths


def test_monotone_depth_gives_each_shape_the_depth_of_the_fixed_aspect_model_nearest_its_n():
    """Reference, by brute force on counted trees: every shape on the width grid whose depth is that of the
    fixed-aspect model (d_model = aspect_ratio * n_layers, counted on its own tree) nearest its N in log,
    the nearest in log N to the target taken (ties: nearer aspect ratio, fewer layers). Random integer
    aspect ratios and targets; depth never falls as N grows, and the widths stay 16 apart."""
    rng = np.random.default_rng(5)
    for ratio in rng.integers(18, 48, 2):
        ladder = Ladder(accounting="chinchilla", aspect_ratio=float(ratio), monotone_depth=True, min_layers=2, max_layers=7)
        fixed = np.array([ladder.count(ladder.config(base(1024), int(ratio) * n, n)) for n in range(2, 8)])
        grid = [(d, n, ladder.count(ladder.config(base(1024), d, n))) for d in range(16, 16 * 17, 16) for n in range(2, 8)]
        kept = [(d, n, count) for d, n, count in grid
                if 2 + int(np.argmin(np.abs(np.log(fixed / count)))) == n and 0.5 <= d / n / ratio <= 2]
        targets = np.sort(random_targets(fixed[0], fixed[-2], 10, seed=int(ratio)))
        shapes = [ladder.shape(target, base(1024)) for target in targets]
        for target, shape in zip(targets, shapes):
            nearest = min(kept, key=lambda s: (abs(math.log(s[2] / target)), abs(math.log(s[0] / s[1] / ratio)), s[1]))
            assert (shape.d_model, shape.n_layers, shape.params) == nearest, (ratio, target)
        order = sorted(kept, key=lambda s: s[2])
        assert [n for _, n, _ in order] == sorted(n for _, n, _ in order)
        assert len({shape.n_layers for shape in shapes}) > 2


def test_the_default_window_mixes_depths_and_a_window_of_one_puts_them_in_order():
    """Five sizes 2x apart around 5.4e5 (the sixth CPU sweep's 6e13 placement): within 2x of aspect
    ratio 32 the nearest shapes go 3, 4, 4, 3, 8 layers deep; at aspect_tolerance = 1, 2 to 5 in order."""
    targets = 5.4e5 * 2.0 ** np.arange(-2, 3)
    default = Ladder(accounting="chinchilla", min_layers=2)
    assert [default.shape(t, base(1024)).name for t in targets] == ["d48l3", "d64l4", "d96l4", "d160l3", "d144l8"]
    fixed = Ladder(accounting="chinchilla", min_layers=2, aspect_tolerance=1.0)
    assert [fixed.shape(t, base(1024)).name for t in targets] == ["d64l2", "d96l3", "d96l3", "d128l4", "d160l5"]


def test_below_the_window_the_one_layer_shapes_go_on_narrower():
    """Nothing in the aspect-ratio window is as small as 1e4 parameters with a 1024-piece vocabulary:
    the ladder gives the nearest in N of the narrower one-layer shapes, the narrowest whose heads are
    16 wide (d16l1, 19,504), or with widths 8 apart, d8l1 (8,984)."""
    assert Ladder(accounting="chinchilla").shape(1e4, base(1024)).name == "d16l1"
    shape = Ladder(accounting="chinchilla", exact_head_dim=False).shape(1e4, base(1024))
    assert (shape.name, shape.n_heads, shape.params) == ("d8l1", 1, 8984)


def test_min_layers_keeps_every_size_at_that_depth_or_deeper():
    """With min_layers = 2 the narrow end goes on with two-layer shapes, counted on their own trees,
    and larger targets still never get smaller models; at the top the ladder is unchanged."""
    shallow = Ladder(accounting="chinchilla", exact_head_dim=False)
    deep = Ladder(accounting="chinchilla", min_layers=2, exact_head_dim=False)
    shapes = [deep.shape(target, base(1024)) for target in np.geomspace(5e3, 3e6, 30)]
    assert all(shape.n_layers >= 2 for shape in shapes)
    assert [s.params for s in shapes] == sorted(s.params for s in shapes)
    smallest = deep.shape(1e4, base(1024))  # width 8: 8,192 embedding, 2 layers of 784 (attention 256, MLP 512, norms 16), a final norm
    assert (smallest.name, smallest.params) == ("d8l2", 8 * 1024 + 2 * (4 * 64 + 2 * 8 * 32 + 2 * 8) + 8)
    for target in random_targets(1e6, 1e7, 5, seed=3):
        assert deep.shape(target, base(1024)) == shallow.shape(target, base(1024))


def test_the_reported_n_is_the_count_of_the_model_built_from_the_shape():
    """Independently of the ladder's abstract counts: initialise the model for real and count its tree."""
    for accounting_name, key, target in [("chinchilla", "params_total", 1.3e5), ("kaplan", "params_nonembedding", 4e4)]:
        shape = Ladder(accounting=accounting_name).shape(target, base(1024))
        cfg = TransformerConfig(vocab_size=1024, max_len=128, **{k.split(".")[1]: v for k, v in shape.bindings.items()})
        tokens = jnp.zeros((1, 8), jnp.int32)
        params = jax.jit(build_model(cfg).init)(jax.random.PRNGKey(0), {"inputs": tokens})["params"]
        assert shape.params == accounting.param_counts(params, cfg)[key], shape


def test_head_count_is_a_divisor_nearest_the_head_width_that_the_base_allows():
    ladder = Ladder(accounting="chinchilla")
    assert ladder.config(base(512), 56, 2).n_heads == 4  # 56 / 16 = 3.5; 4 heads of 14 (7 of 8 is farther)
    assert ladder.config(base(512), 8, 1).n_heads == 1  # at least one
    grouped = TransformerConfig(vocab_size=512, n_kv_heads=2)
    assert ladder.config(grouped, 16, 1).n_heads == 2  # a multiple of the key/value heads


@pytest.mark.parametrize("field, value", [("aspect_ratio", 0), ("aspect_tolerance", 0.9), ("head_dim", -1), ("mlp_ratio", 0.0),
                                          ("width_multiple", 0), ("max_layers", 0), ("min_layers", 0),
                                          ("accounting", "bytes")])
def test_bad_ladder_fields_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Ladder(**{field: value})


def test_min_layers_above_max_layers_is_refused():
    with pytest.raises(ValueError, match="min_layers = 5 is above Ladder.max_layers = 4"):
        Ladder(min_layers=5, max_layers=4)


def test_a_sweep_asks_for_sizes_by_n_and_trains_each_for_a_ratio_of_tokens(tiny_corpus):
    bindings = [*tiny_corpus, "Sweep.models = ()", "Sweep.sizes = (2e4, 6e4)", "Sweep.flops = None",
                "Sweep.train_tokens_per_param = 20.0", "Sweep.rules = []", "Sweep.grid = {'TrainConfig.seed': (0, 1)}"]
    plan = sweep_plan.plan_sweep(["sweeps/tiny.gin"], bindings)
    gin.clear_config()
    ladder = Ladder(accounting="chinchilla")
    shapes = [ladder.shape(target, base(512)) for target in (2e4, 6e4)]
    assert [run.name for run in plan.runs] == [f"{s.name}_seed{seed}" for s in shapes for seed in (0, 1)]
    for run in plan.runs:
        shape = shapes[[s.name for s in shapes].index(run.model)]
        assert run.params == shape.params
        assert {k: run.config[k] for k in shape.bindings} == shape.bindings
        assert run.config["TrainConfig.train_tokens"] == round(20.0 * run.params)
    gin.clear_config()


SMALL_MODEL_FILES = {"d16", "d32", "d48", "d96", "tiny", "xs", "s", "moe_xs", "moe_xs_top2", "moe_xs_top2_e16"}


def model_files() -> list:
    """The dense decoders of configs/models; the GPU-sized ones trace up to 16 layers: slow."""
    names = sorted(p.stem for p in (REPO / "configs" / "models").glob("*.gin"))
    return [name if name in SMALL_MODEL_FILES else pytest.param(name, marks=pytest.mark.slow) for name in names]


@pytest.mark.parametrize("name", model_files())
def test_model_files_still_work_in_sweeps(tiny_corpus, name):
    # tiny.gin's budgets train the small files for a few steps; the GPU-sized ones, planned and never
    # trained here, get budgets that leave them at least one token.
    flops = [] if name in SMALL_MODEL_FILES else ["Sweep.flops = (1e15, 2e15)"]
    plan = sweep_plan.plan_sweep(["sweeps/tiny.gin"], [*tiny_corpus, f"Sweep.models = ('{name}',)",
                                                       "Sweep.rules = [@lr/PowerLaw()]", *flops])
    gin.clear_config()
    assert [run.model for run in plan.runs] == [name, name]
    counts = sweep_plan.count_params(sweep_plan.run_settings(plan.base, [*plan.bindings, *plan.runs[0].bindings]).model)
    gin.clear_config()
    assert plan.runs[0].params == counts["params_active"]
