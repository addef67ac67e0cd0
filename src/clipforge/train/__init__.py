"""Training engine: typed run configs, contrastive losses, the resumable (and torchrun-able) loop."""

from clipforge.train.config import TrainRunConfig, load_config
from clipforge.train.loop import TrainResult, train
from clipforge.train.loss import InfoNCELoss, PairFeatures, SigLipLoss, build_loss
from clipforge.train.state import load_run_config

__all__ = [
    "InfoNCELoss",
    "PairFeatures",
    "SigLipLoss",
    "TrainResult",
    "TrainRunConfig",
    "build_loss",
    "load_config",
    "load_run_config",
    "train",
]
