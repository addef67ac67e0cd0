"""Which `Task` trains which kind of model: `TrainRunConfig.task` -> the task's factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clipforge.progress import Say
from clipforge.train.config import TrainRunConfig
from clipforge.train.contrastive import ContrastiveTask
from clipforge.train.dalle_tasks import DVAETask, PriorTask
from clipforge.train.spatial import SpatialTask
from clipforge.train.task import Task

TaskFactory = Callable[[TrainRunConfig, Say], Task[Any, Any]]

# Keys match `train.config.TASKS`, which validates the config before anything is built.
TASK_FACTORIES: dict[str, TaskFactory] = {
    "contrastive": ContrastiveTask,
    "spatial": SpatialTask,
    "dvae": DVAETask,
    "prior": PriorTask,
}


def build_task(config: TrainRunConfig, say: Say) -> Task[Any, Any]:
    """The task `config.task` names, with its model and batches built (call after seeding)."""
    return TASK_FACTORIES[config.task](config, say)
