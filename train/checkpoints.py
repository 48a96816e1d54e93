"""Orbax checkpoints of the train state and the data iterator's position, each with a checksum.

Saves are asynchronous: training continues while the previous checkpoint is
written. Orbax writes a checkpoint under a temporary name and renames it once
complete, and deletes the oldest kept one only after that, so the last complete
checkpoint survives a kill or a full disk at any moment. Restoring with an
abstract state that carries shardings puts every array straight onto the mesh.

Every checkpoint stores a checksum of its arrays' bits beside the data position.
A restore that fails, or gives arrays that do not match their checksum (a
truncated or overwritten file), falls back to the checkpoint before it, with a
warning, and the broken one is moved to checkpoints.broken/ (never deleted).
"""
from __future__ import annotations

import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


@jax.jit
def _leaf_checksums(state) -> list:
    """Each array's bits summed as unsigned integers, wrapping: exact, so it does not depend on how
    the array is sharded or in which order the sum runs."""
    def checksum(leaf):
        bits = jax.lax.bitcast_convert_type(leaf, _UNSIGNED[leaf.dtype.itemsize])
        return jnp.sum(bits.astype(jnp.uint32), dtype=jnp.uint32)
    return [checksum(leaf) for leaf in jax.tree.leaves(state)]


def checksum(state) -> list[int]:
    return [int(value) for value in jax.device_get(_leaf_checksums(state))]


class CheckpointError(Exception):
    """No checkpoint in the run's directory can be restored."""


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


class Checkpointer:
    def __init__(self, directory: str, keep: int):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "data"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict) -> None:
        data = {**data_state, "state_checksum": checksum(state)}
        self.manager.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)))

    def _restore(self, step: int, abstract_state):
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        data = dict(restored.data)
        expected = data.pop("state_checksum", None)
        if expected is not None and checksum(restored.state) != expected:
            names = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(restored.state)[0]]
            bad = [name for name, a, b in zip(names, checksum(restored.state), expected) if a != b]
            raise ValueError(f"its arrays differ from the checksum saved with them ({', '.join(bad[:3])})")
        return restored.state, data

    def steps(self) -> list[int]:
        """The steps saved, oldest first."""
        self.manager.wait_until_finished()
        return sorted(self.manager.all_steps())

    def restore(self, step: int, abstract_state):
        """(state, data position) saved at `step`; CheckpointError naming the step if it will not restore."""
        try:
            return self._restore(step, abstract_state)
        except Exception as error:  # orbax and tensorstore raise many kinds for a damaged file
            raise CheckpointError(f"checkpoint at step {step} in {self.directory} cannot be restored: "
                                  f"{_first_line(error)}") from None

    def restore_latest(self, abstract_state):
        """(step, state, data position) of the newest checkpoint that restores intact, or None if
        there is none. Broken newer ones are moved aside, with a warning on stderr."""
        self.manager.wait_until_finished()
        steps = sorted(self.manager.all_steps(), reverse=True)
        broken = []
        for step in steps:
            try:
                state, data = self._restore(step, abstract_state)
            except Exception as error:  # orbax and tensorstore raise many kinds for a damaged file
                broken.append((step, _first_line(error)))
                continue
            self._move_aside(broken)
            return step, state, data
        if broken:
            raise CheckpointError(f"no checkpoint in {self.directory} can be restored: step {broken[0][0]}: "
                                  f"{broken[0][1]}")
        return None

    def _move_aside(self, broken: list) -> None:
        if not broken or jax.process_index() != 0:
            return
        aside = f"{self.directory}.broken"
        os.makedirs(aside, exist_ok=True)
        for step, reason in broken:
            target = os.path.join(aside, str(step))
            shutil.move(os.path.join(self.directory, str(step)), target if not os.path.exists(target)
                        else f"{target}.{np.random.randint(1 << 30)}")
            print(f"warning: checkpoint at step {step} is broken ({reason}); moved it to {aside} and "
                  f"resumed from the one before", file=sys.stderr)
        self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
