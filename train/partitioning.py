"""The device mesh and the one table that maps logical axis names onto it.

Models name their axes ("batch", "embed", "heads", ...); only this file knows
the mesh. The same model therefore runs on one CPU (a 1x1 mesh), with data
parallelism (N x 1), tensor parallelism (1 x N) or both, by changing
`mesh_shape` in gin, and with its parameters and optimizer state fully sharded
over the data axis (FSDP) by `logical_axis_rules.preset = 'fsdp'` (or
'fsdp_tensor', both).

State is created directly sharded (the t5x / Flax lm1b recipe): trace the
initialiser with `jax.eval_shape`, read the logical partition specs off the
abstract parameters, map them to mesh shardings, then `jax.jit` the
initialiser with those `out_shardings`. No device ever holds a full copy.
"""
from __future__ import annotations

import contextlib
import logging
import os

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# Every mesh has these axes; make_mesh adds those a config leaves out with size 1, so
# that the rules below always name axes that exist.
MESH_AXES = ("data", "expert", "model")

# Logical axis -> mesh axis (None: replicated). Order matters: the first rule
# whose mesh axis is still free wins, as in flax's logical_to_mesh, so an axis may
# have several rules (FSDP's "embed" takes "data" in a parameter, and stays
# replicated in an activation whose batch already holds "data").
#
# Mixture of experts: the batch is split over the data and expert axes together;
# inside an MoE layer the per-expert buffers (expert, expert_group, capacity, embed)
# put experts on the expert axis and groups (sequences) on the data axis, so the
# dispatch einsum becomes an all-to-all over the expert axis.
_ALWAYS = (
    ("batch", ("data", "expert")),
    ("expert", "expert"),
    ("expert_group", "data"),
    ("router_experts", None),
    ("capacity", None),
    ("head_dim", None),
    ("length", None),
    ("position_bucket", None),
    ("layers", None),  # scan_layers' stacked dimension: each device holds every layer's slice
)
# Tensor parallelism (Megatron): attention heads, MLP width and vocabulary over `model`.
_TENSOR = (("vocab", "model"), ("mlp", "model"), ("heads", "model"), ("kv_heads", "model"))
_UNSPLIT = (("vocab", None), ("mlp", None), ("heads", None), ("kv_heads", None))
# Fully sharded data parallelism (ZeRO-3): every parameter, and so its optimizer moments, split
# along its embedding dimension over `data`; XLA gathers each layer's weights where it is used.
_FSDP = (("embed", "data"), ("embed", None))
_REPLICATED = (("embed", None),)

RULE_PRESETS = {
    # Parameters whole on every data-parallel replica (split over `model` where the mesh has one).
    "data_parallel": _ALWAYS + _TENSOR + _REPLICATED,
    "fsdp": _ALWAYS + _UNSPLIT + _FSDP,
    "fsdp_tensor": _ALWAYS + _TENSOR + _FSDP,
}


@gin.configurable
def logical_axis_rules(preset: str = "data_parallel", overrides: tuple = ()) -> tuple:
    """The rules in use: a preset of RULE_PRESETS, with `overrides` ((logical, mesh axis or None), ...)
    taking precedence, e.g. logical_axis_rules.overrides = (('vocab', None),)."""
    if preset not in RULE_PRESETS:
        raise ValueError(f"logical_axis_rules.preset {preset!r} is not one of {sorted(RULE_PRESETS)}")
    for rule in overrides:
        if len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(f"logical_axis_rules.overrides entry {rule!r} is not (logical name, mesh axis)")
        axes = rule[1] if isinstance(rule[1], tuple) else (rule[1],)
        if any(axis is not None and axis not in MESH_AXES for axis in axes):
            raise ValueError(f"logical_axis_rules.overrides entry {rule!r} names a mesh axis not in {MESH_AXES}")
    return tuple(overrides) + RULE_PRESETS[preset]


def maybe_initialize_distributed() -> None:
    """Starts jax.distributed on multi-host jobs (TPU pods, SLURM / Open MPI GPU clusters).

    jax finds the coordinator itself on Cloud TPU and under SLURM or Open MPI;
    elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
    """
    explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
    cluster = any(k in os.environ for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"))
    multi = int(os.environ.get("SLURM_NTASKS", os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))) > 1
    if explicit:
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"],
                                   int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"]))
    elif cluster and (multi or "TPU_WORKER_HOSTNAMES" in os.environ):
        jax.distributed.initialize()
    else:
        return
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


@gin.configurable
def make_mesh(mesh_shape=(-1, 1), axis_names=("data", "model")) -> Mesh:
    """A mesh over all devices; one entry of mesh_shape may be -1 (the rest of the devices).

    Axes of MESH_AXES missing from axis_names are added with size 1.
    """
    shape = list(mesh_shape)
    if len(shape) != len(axis_names):
        raise ValueError(f"mesh_shape {tuple(mesh_shape)} does not match axis_names {tuple(axis_names)}")
    n = jax.device_count()
    if shape.count(-1) > 1:
        raise ValueError(f"mesh_shape {tuple(mesh_shape)} has more than one -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if n % known:
            raise ValueError(f"mesh_shape {tuple(mesh_shape)} does not divide the {n} devices")
        shape[shape.index(-1)] = n // known
    if int(np.prod(shape)) != n:
        raise ValueError(f"mesh_shape {tuple(shape)} needs {int(np.prod(shape))} devices, but {n} are present")
    missing = [name for name in MESH_AXES if name not in axis_names]
    shape, axis_names = shape + [1] * len(missing), tuple(axis_names) + tuple(missing)
    # Auto axes: XLA's partitioner propagates shardings from the logical constraints (GSPMD),
    # rather than jax's explicit sharding-in-types mode.
    return jax.make_mesh(tuple(shape), axis_names, devices=jax.devices(),
                         axis_types=(AxisType.Auto,) * len(shape))


def _fit_spec(spec: PartitionSpec, shape: tuple, mesh: Mesh) -> PartitionSpec:
    """Replicates any dimension the mesh cannot split evenly (e.g. one kv head on a 2-way model axis)."""
    if len(spec) != len(shape):  # e.g. Adafactor's factored moments: fewer dims than the parameter
        return PartitionSpec()
    fitted = []
    for axis, size in zip(spec, shape):
        names = axis if isinstance(axis, tuple) else (axis,) if axis else ()
        ways = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        fitted.append(axis if size % ways == 0 else None)
    return PartitionSpec(*fitted)


def logical_shardings(abstract_tree, mesh: Mesh, rules: tuple):
    """NamedShardings for a tree of abstract values, some boxed with logical names.

    Leaves without names (step counters, RNG keys) are replicated.
    """
    logical_specs = nn.get_partition_spec(abstract_tree)
    mesh_specs = nn.logical_to_mesh(logical_specs, rules)
    # The boxes' values as they are: unboxing would apply the constraints, which abstract values cannot take.
    shapes = jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, abstract_tree,
                          is_leaf=lambda x: isinstance(x, nn.Partitioned))
    return jax.tree.map(lambda spec, x: NamedSharding(mesh, _fit_spec(spec, x.shape, mesh)),
                        mesh_specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


@contextlib.contextmanager
def activate(mesh: Mesh, rules: tuple):
    """The mesh and the logical axis rules in force: what the model's logical constraints and the
    parameters' logical names resolve against. The trainer, the benchmark and generation enter it."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Rows over the data axis (and the expert axis, which also splits the batch), the rest replicated."""
    rows = tuple(a for a in ("data", "expert") if a in mesh.axis_names and mesh.shape[a] > 1)
    return NamedSharding(mesh, PartitionSpec(rows or None, *([None] * (ndim - 1))))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Places this process's rows of a batch on the mesh: the global batch is the processes' rows
    stacked in process order (data/pipeline.py's PackedBatches(shard=...) packs them)."""
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x,
                                                      (x.shape[0] * jax.process_count(), *x.shape[1:]))
    return {k: put(v) for k, v in batch.items()}


def process_rows(batch: dict) -> dict:
    """This process's part of a batch that every process holds whole (the eval set)."""
    def part(x):
        per_process = len(x) // jax.process_count()
        return x[jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
    return {k: part(v) for k, v in batch.items()}


def check_rows_split_over_processes(mesh: Mesh, batch_size: int, name: str = "batch_size") -> None:
    """Each process feeds its own rows: the batch must split evenly over the processes, along mesh
    axes that split it. `name`: the setting that gave batch_size, for the error."""
    processes = jax.process_count()
    rows_ways = mesh.shape["data"] * mesh.shape.get("expert", 1)
    if processes > 1 and (rows_ways % processes or batch_size % processes):
        raise ValueError(f"{processes} processes each feed their own rows of the batch: the mesh's data x expert "
                         f"axes ({rows_ways}) and {name} ({batch_size}) must be multiples of {processes}")


def on_process_zero_first(build):
    """build() on process 0, then on the others once process 0 has finished (or failed): what
    process 0 builds and caches (the corpus, the tokenizer) the others then only read."""
    if jax.process_count() == 1:
        return build()
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
        try:
            return build()
        finally:
            multihost_utils.sync_global_devices("process 0 has built")
    multihost_utils.sync_global_devices("process 0 has built")
    return build()
