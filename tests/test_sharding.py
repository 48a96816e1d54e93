"""The logical-axis presets shard what they say, on 8 simulated devices: the actual shardings of named
parameters and of their optimizer moments, the bytes each device holds, and the compiled step's memory.

One subprocess (8 CPU devices) builds the train state under each preset, as the trainer does (the
sharded-init recipe), compiles the training step and reports; the tests read its JSON."""
import json
import subprocess
import sys

import jax
import pytest

from tests.conftest import REPO, main_env

PROBE = r'''
import json, warnings
warnings.filterwarnings('error', category=DeprecationWarning, module='jax')  # no deprecated jax on this path
from functools import partial
import jax, jax.numpy as jnp
from model import build_model
from model.transformer import TransformerConfig
from train import partitioning
from train.optimizer import lr_schedule, make_optimizer
from train.trainer import create_state, train_step

def probe(preset, mesh_shape):
    cfg = TransformerConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_len=32)
    mesh = jax.make_mesh(mesh_shape, ("data", "model", "expert"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    rules = partitioning.logical_axis_rules(preset)
    model, schedule = build_model(cfg), lr_schedule(10, peak_lr=1e-3, warmup_steps=1)
    tx = make_optimizer(schedule)
    batch = {"inputs": jnp.zeros((8, 32), jnp.int32), "targets": jnp.zeros((8, 32), jnp.int32),
             "weights": jnp.ones((8, 32)), "prefix_len": jnp.zeros((8,), jnp.int32)}
    with partitioning.activate(mesh, rules):  # as the trainer does
        init = partial(create_state, model=model, optimizer=tx, example_batch={k: v[:1] for k, v in batch.items()})
        rng = jax.random.PRNGKey(0)
        shardings = partitioning.logical_shardings(jax.eval_shape(partial(init, unbox=False), rng), mesh, rules)
        state = jax.jit(partial(init, unbox=True), out_shardings=shardings)(rng)
        step = jax.jit(partial(train_step, model=model, optimizer=tx, schedule=schedule, z_loss=0.0, accum_steps=1),
                       out_shardings=(shardings, None))
        memory = step.lower(state, partitioning.shard_batch(jax.device_get(batch), mesh)).compile().memory_analysis()
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {"specs": {jax.tree_util.keystr(p): [list(a) if isinstance(a, tuple) else a for a in x.sharding.spec]
                      for p, x in leaves},
            "bytes_per_device": sum(x.addressable_shards[0].data.nbytes for _, x in leaves),
            "bytes": sum(x.nbytes for _, x in leaves),
            "argument_bytes": memory.argument_size_in_bytes, "temp_bytes": memory.temp_size_in_bytes}

print(json.dumps({preset: probe(preset, shape) for preset, shape in
                  (("data_parallel", (8, 1, 1)), ("fsdp", (8, 1, 1)), ("fsdp_tensor", (4, 2, 1)))}))
'''


@pytest.fixture(scope="module")
def probed():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=main_env(devices=8), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


WI, WO, EMBED = ("['decoder']['layer_0']['mlp']['wi']['kernel']", "['decoder']['layer_0']['mlp']['wo']['kernel']",
                 "['token_embed']['embedding']")


def spec(probed, preset, name, where=".params"):
    """The mesh axes of a parameter (where='.params') or of one of its Adam moments."""
    matches = [v for k, v in probed[preset]["specs"].items() if k.startswith(where) and k.endswith(name)] \
        if where == ".params" else [v for k, v in probed[preset]["specs"].items() if where in k and k.endswith(name)]
    assert matches, (preset, name, where)
    return matches


@pytest.mark.parametrize("preset, expected", [
    ("data_parallel", {WI: [None, "model"], WO: ["model", None], EMBED: ["model", None]}),
    ("fsdp", {WI: ["data", None], WO: [None, "data"], EMBED: [None, "data"]}),
    ("fsdp_tensor", {WI: ["data", "model"], WO: ["model", "data"], EMBED: ["model", "data"]}),
])
def test_parameters_and_their_adam_moments_are_split_as_the_preset_says(probed, preset, expected):
    for name, axes in expected.items():
        assert spec(probed, preset, name) == [axes]
        moments = spec(probed, preset, name, where="opt_state")
        assert len(moments) == 2 and all(m == axes for m in moments)  # mu and nu, split like the parameter


def test_data_parallel_keeps_every_parameter_whole_on_each_data_replica(probed):
    assert all("data" not in str(axes) for axes in probed["data_parallel"]["specs"].values())


def test_fsdp_holds_an_eighth_of_the_state_per_device(probed):
    dp, fsdp = probed["data_parallel"], probed["fsdp"]
    assert dp["bytes_per_device"] == dp["bytes"]
    assert fsdp["bytes_per_device"] <= dp["bytes_per_device"] / 6  # the bound; 8 devices give ~1/8
    assert fsdp["argument_bytes"] <= dp["argument_bytes"] / 6  # the compiled step's own accounting


def test_every_logical_name_the_models_use_has_a_rule_in_every_preset():
    import flax.linen as nn
    import jax.numpy as jnp

    from model import build_model
    from model.transformer import TransformerConfig
    from train import partitioning
    base = dict(vocab_size=128, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=16)
    variants = [dict(), dict(tie_embeddings=False, position="learned", use_bias=True, norm="layernorm"),
                dict(moe_every=1, num_experts=4, moe_top_k=2), dict(activation="swiglu", n_kv_heads=2),
                dict(architecture="encoder_decoder", n_encoder_layers=1, position="t5_bias")]
    names = set()
    for options in variants:
        batch = {"inputs": jnp.zeros((1, 16), jnp.int32), "encoder_inputs": jnp.zeros((1, 16), jnp.int32)}
        params = jax.eval_shape(build_model(TransformerConfig(**base, **options)).init, jax.random.PRNGKey(0), batch)
        for axes in jax.tree.leaves(nn.get_partition_spec(params), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)):
            names.update(a for a in axes if a)
    names |= {"batch", "length", "capacity", "expert_group"}  # activations' names (with_logical_constraint)
    for preset in partitioning.RULE_PRESETS:
        ruled = {name for name, _ in partitioning.logical_axis_rules(preset)}
        assert names <= ruled, (preset, names - ruled)


@pytest.mark.parametrize("binding, problem", [("logical_axis_rules.preset = 'zero9'", "zero9"),
                                              ("logical_axis_rules.overrides = (('vocab', 'rows'),)", "rows")])
def test_a_bad_preset_or_override_is_refused(binding, problem):
    import gin

    from train import partitioning
    gin.clear_config()
    gin.parse_config(binding)
    try:
        with pytest.raises(ValueError, match=problem):
            partitioning.logical_axis_rules()
    finally:
        gin.clear_config()
