"""AdamW with CLIP's parameter groups and a warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from clipforge.train.config import TrainSection


def exempt_from_decay(name: str, param: nn.Parameter) -> bool:
    """Gains, biases and temperatures are not decayed: pulling them to 0 only hurts (CLIP, sec. 2.5)."""
    return param.ndim < 2 or "logit_" in name


def is_backbone(name: str) -> bool:
    """Parameters of a pretrained tower's backbone (TowerCLIP's `visual.backbone.*`, `text.backbone.*`)."""
    return ".backbone." in f".{name}"


def param_groups(modules: Iterable[nn.Module], config: TrainSection) -> list[dict[str, object]]:
    """Splits the trainable parameters of `modules` by weight decay and by backbone learning rate.

    Empty groups are dropped, so a model without backbones keeps the two classic groups.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for module in modules:
        for name, param in module.named_parameters():
            if param.requires_grad:
                key = (exempt_from_decay(name, param), is_backbone(name))
                groups.setdefault(key, []).append(param)
    return [
        {"params": params,
         "weight_decay": 0.0 if no_decay else config.weight_decay,
         "lr": config.lr * (config.backbone_lr_scale if backbone else 1.0)}
        for (no_decay, backbone), params in sorted(groups.items())
    ]


def build_optimizer(modules: Iterable[nn.Module], config: TrainSection) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `modules` (the model and the loss)."""
    groups = param_groups(modules, config)
    betas = (config.betas[0], config.betas[1])
    return torch.optim.AdamW(groups, lr=config.lr, betas=betas, eps=config.eps)  # type: ignore[arg-type]


def lr_factor(step: int, config: TrainSection) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warmup, then cosine or flat."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    decay_steps = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / decay_steps, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainSection) -> LambdaLR:
    """Per-step schedule (call `.step()` after every optimizer step); its state goes into checkpoints."""
    return LambdaLR(optimizer, lambda step: lr_factor(step, config))
