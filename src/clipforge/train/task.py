"""The contract between the training engine and one kind of model: `Task`.

The engine (`train.loop`) owns what every run shares: seeding, the optimizer and its schedule, gradient
accumulation, data parallelism, logging and progress, evaluation and model selection, checkpoints with
bit-exact resume, and `final/`. A task owns what is particular to a kind of model: it builds the model
and its batches, computes the loss of a batch, adds log fields, supplies the default evaluation and the
score that model selection maximizes. `train.contrastive.ContrastiveTask` (CLIP, SigLIP, LiT) is the one
task today; a new kind of model (a dVAE, an autoregressive transformer) brings its own task module and
one entry in `train.tasks.TASK_FACTORIES` (and its name in `train.config.TASKS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, Self, TypeVar

import torch

from clipforge.models.base import Model


class Batch(Protocol):
    """A global batch, which the engine cuts into rank shards and accumulation micro-batches."""

    def __len__(self) -> int: ...

    def rows(self, start: int, stop: int) -> Self:
        """Samples `start:stop` of the batch."""
        ...

    def to(self, device: torch.device) -> Self:
        """The batch on `device` (where the model trains)."""
        ...


B = TypeVar("B", bound=Batch)
B_co = TypeVar("B_co", bound=Batch, covariant=True)
M = TypeVar("M", bound=Model)


class BatchSource(Protocol[B_co]):
    """An endless, resumable stream of global batches: every rank draws the same ones.

    `state_dict` says where the stream is, so a resumed run sees exactly the batches the interrupted
    one would have seen.
    """

    def next_batch(self) -> B_co: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


EvalHook = Callable[[M, int], dict[str, Any]]  # (model in eval mode, step) -> metrics


class Task(Protocol[M, B]):
    """What the engine needs from one kind of model; built after the engine seeded the RNGs.

    Attributes:
        model: the model being trained (its trainable parameters are the optimizer's).
        batches: the training batches.
    """

    @property
    def model(self) -> M: ...

    @property
    def batches(self) -> BatchSource[B]: ...

    def loss(self, batch: B) -> torch.Tensor:
        """The loss of this rank's share of a micro-batch (ranks may gather features inside)."""
        ...

    def log_fields(self) -> dict[str, float]:
        """Extra numbers for each `log.jsonl` step line (e.g. the logit scale)."""
        ...

    def evaluator(self) -> EvalHook[M] | None:
        """The evaluation run every `eval.every` steps; None when the data has no held-out part."""
        ...

    def selection_score(self, metrics: dict[str, Any]) -> float:
        """The number `eval.select_best` maximizes, from one evaluation's metrics.

        Raises:
            ConfigError: the metrics lack what the score needs.
        """
        ...
