"""Training engine: typed run configs, the task contract, the contrastive task, the resumable loop."""

from clipforge.train.config import TrainRunConfig, load_config
from clipforge.train.contrastive import ContrastiveTask
from clipforge.train.loop import TrainResult, train
from clipforge.train.loss import InfoNCELoss, PairFeatures, SigLipLoss, build_loss
from clipforge.train.state import load_run_config
from clipforge.train.task import Batch, BatchSource, EvalHook, Task

__all__ = [
    "Batch",
    "BatchSource",
    "ContrastiveTask",
    "EvalHook",
    "InfoNCELoss",
    "PairFeatures",
    "SigLipLoss",
    "Task",
    "TrainResult",
    "TrainRunConfig",
    "build_loss",
    "load_config",
    "load_run_config",
    "train",
]
