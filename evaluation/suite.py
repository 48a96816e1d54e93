"""The tasks train.main scores its model on while it trains, chosen in gin:

    TaskSuite.tasks = ('arithmetic_mc', 'gcide_definition')  # evaluation/offline_tasks.TASK_NAMES
    TaskSuite.items = 200  # per task; an offline task has at most its clean candidates
    TaskSuite.shots = 3
    TaskSuite.chain_of_thought = False  # exemplars with their rationales (generation tasks that have them)
    TaskSuite.every = 0  # steps between scorings; 0: with the final eval only

The items are built once, when the run starts (offline tasks from the run's own corpus, held out
and decontaminated: evaluation/offline_tasks.py), and prompted with their seeded shots. Each
scoring writes a metrics.jsonl row {"step", "task/NAME/METRIC": mean, "task/NAME/METRIC_se": its
standard error, "task_eval_s"}; the final one goes to summary.json as "tasks" {NAME: the scores of
evaluation/tasks.score, with "shots"}, beside "task_eval_s" (seconds spent scoring, this start of
the run) and "task_eval_fraction" (of its wall time). A sweep's results.jsonl then carries them.
"""
from __future__ import annotations

import dataclasses
import time

import gin


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TaskSuite:
    tasks: tuple = ()
    items: int = 200
    shots: int = 0
    chain_of_thought: bool = False
    seed: int = 0  # the items of built-in tasks, the offline tasks' choices, the shots' draws
    every: int = 0

    def __post_init__(self):
        from evaluation.offline_tasks import TASK_NAMES
        unknown = [name for name in self.tasks if name not in TASK_NAMES]
        if unknown:
            raise ValueError(f"TaskSuite.tasks: unknown {unknown}; known: {', '.join(TASK_NAMES)}")
        for name, least in (("items", 2), ("shots", 0), ("every", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"TaskSuite.{name} must be an integer of at least {least}, got {value!r}")

    def build(self, data) -> dict[str, list[dict]]:
        """Each task's prompted items (context with its shots), from the run's data.loader.Data."""
        from evaluation.offline_tasks import build_task
        from evaluation.tasks import with_shots
        return {name: with_shots(build_task(name, data, self.items, self.seed), self.shots, self.seed,
                                 self.chain_of_thought) for name in self.tasks}


def score_suite(model, params, tokenizer, prompted: dict[str, list[dict]], shots: int) -> tuple[dict, float]:
    """({task: scores}, seconds taken)."""
    from evaluation.tasks import score
    start = time.perf_counter()
    scores = {name: {**score(model, params, tokenizer, items), "shots": shots} for name, items in prompted.items()}
    return scores, time.perf_counter() - start


def metrics_row(scores: dict) -> dict:
    """The scores as flat metrics.jsonl fields: task/NAME/METRIC and task/NAME/METRIC_se."""
    row = {}
    for name, task in scores.items():
        for metric, value in task.items():
            if isinstance(value, dict):
                row[f"task/{name}/{metric}"], row[f"task/{name}/{metric}_se"] = value["mean"], value["se"]
    return row
