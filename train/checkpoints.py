"""Orbax checkpoints of the train state and the data iterator's position.

Saves are asynchronous: training continues while the previous checkpoint is
written. Restoring with an abstract state that carries shardings puts every
array straight onto the mesh in its final layout.
"""
from __future__ import annotations

import os

import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, save_every: int, keep: int):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory), item_names=("state", "data"),
            options=ocp.CheckpointManagerOptions(
                save_interval_steps=save_every, max_to_keep=keep, enable_async_checkpointing=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
        return self.manager.save(step, force=force, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))

    def restore(self, step: int, abstract_state):
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored.state, restored.data

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
