"""WiSE-FT (Wortsman et al. 2022): fine-tune from the zero-shot head, then interpolate the weights.

The zero-shot classifier is the model's trainable image part on top of the frozen features (the
projection head of a pretrained-tower model; nothing for a CLIP model, whose frozen features already are
its embeddings) followed by a linear layer whose rows are the classes' prompt-ensemble text
embeddings, scaled by the model's logit scale. Fine-tuning trains all of it with cross-entropy (AdamW,
cosine schedule); the learning rate is picked on the validation split from `LRS`. Every weight is then
mixed as θ(α) = (1 − α)·θ_zero-shot + α·θ_fine-tuned for α in 0, 0.1, ..., 1. With no image head (CLIP models)
this is the paper's linear-classifier variant, where mixing weights equals mixing logits.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.errors import ConfigError
from clipforge.eval.frozen import FeatureSet, hit_rate
from clipforge.progress import Progress, on_terminal, quiet

ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
LRS = (1e-4, 1e-3, 1e-2)


@dataclass(frozen=True)
class WiseFtConfig:
    """Fine-tuning of the zero-shot classifier.

    Attributes:
        epochs: passes over the training features.
        batch_size: features per step.
        lrs: AdamW learning rates tried; the one with the best validation accuracy at α = 1 is kept.
        weight_decay: AdamW weight decay.
        alphas: mixing coefficients reported.
    """

    epochs: int = 10
    batch_size: int = 64
    lrs: tuple[float, ...] = LRS
    weight_decay: float = 0.1
    alphas: tuple[float, ...] = ALPHAS

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lrs or min(self.lrs) <= 0:
            raise ConfigError("wise-ft: epochs and batch_size must be >= 1 and every lr > 0")
        if any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise ConfigError(f"wise-ft: alphas must lie in [0, 1], got {self.alphas}")


class ZeroShotClassifier(nn.Module):
    """Frozen features [N, F] -> image head -> L2 normalization -> linear layer -> times the logit scale.

    The linear layer starts as the class text embeddings [C, E]; the scale stays the model's, so the
    trained weights keep the unit scale the learning rates are chosen for.
    """

    def __init__(self, image_head: nn.Module, class_embeddings: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.image_head = copy.deepcopy(image_head).requires_grad_(True)
        self.classifier = nn.Linear(class_embeddings.shape[1], class_embeddings.shape[0], bias=False)
        self.classifier.weight.data.copy_(class_embeddings)  # [C, E]
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.classifier(F.normalize(self.image_head(features), dim=-1))  # [N, C]


def fine_tune(zero_shot: ZeroShotClassifier, train: FeatureSet, config: WiseFtConfig, lr: float,
              seed: int) -> ZeroShotClassifier:
    """A fine-tuned copy of `zero_shot` (the original is left as it is)."""
    torch.manual_seed(seed)
    model = copy.deepcopy(zero_shot).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(train) / config.batch_size)
    total, generator = config.epochs * per_epoch, torch.Generator().manual_seed(seed)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    bar = Progress(f"wise-ft lr={lr:g}", total, quiet, bar=on_terminal(), unit="step", tenths=False)
    for step in range(total):
        if step % per_epoch == 0:
            order = torch.randperm(len(train), generator=generator)
        batch = order[(step % per_epoch) * config.batch_size :][: config.batch_size]
        loss = F.cross_entropy(model(train.features[batch]), train.labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.update()
    bar.close()
    return model.eval()


def interpolate(zero_shot: nn.Module, fine_tuned: nn.Module, alpha: float) -> nn.Module:
    """A copy of the model with every floating-point tensor at (1 − α)·zero-shot + α·fine-tuned."""
    mixed = copy.deepcopy(zero_shot)
    theta_0, theta_1 = zero_shot.state_dict(), fine_tuned.state_dict()
    mixed.load_state_dict({k: torch.lerp(v, theta_1[k], alpha) if v.is_floating_point() else theta_1[k]
                           for k, v in theta_0.items()})
    return mixed.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: FeatureSet) -> float:
    """Top-1 accuracy of a classifier on frozen features."""
    return hit_rate(model.eval()(data.features).argmax(dim=1), data.labels)


def alpha_curve(zero_shot: ZeroShotClassifier, fine_tuned: ZeroShotClassifier, sets: dict[str, FeatureSet],
                alphas: Sequence[float]) -> dict[str, list[float]]:
    """Accuracy along α on each named feature set."""
    mixes = [interpolate(zero_shot, fine_tuned, a) for a in alphas]
    return {name: [accuracy(m, data) for m in mixes] for name, data in sets.items()}


def best_lr(zero_shot: ZeroShotClassifier, train: FeatureSet, val: FeatureSet, config: WiseFtConfig,
            seed: int) -> tuple[float, ZeroShotClassifier]:
    """The learning rate whose fine-tuned model does best on `val`, and that model."""
    tuned = {lr: fine_tune(zero_shot, train, config, lr, seed) for lr in config.lrs}
    lr = max(tuned, key=lambda r: accuracy(tuned[r], val))
    return lr, tuned[lr]
