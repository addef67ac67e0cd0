"""Typed training configs, read from TOML plus dotted `--set section.key=value` overrides.

A run is described by one `TrainRunConfig`; the resolved config is saved in the run folder as
`config.json`, so `--resume` trains with exactly what the interrupted run used.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipforge.device import DEVICES
from clipforge.errors import ConfigError
from clipforge.fileio import MAX_JSON_BYTES, read_regular_file
from clipforge.synthetic.style import StyleConfig
from clipforge.train.dalle_objectives import DVAEObjective, PriorObjective
from clipforge.typed import parse_dataclass, to_dict

# One entry per kind of model the engine trains (see `train.tasks`).
TASKS = ("contrastive", "spatial", "dvae", "prior")
LOSSES = ("infonce", "siglip")
SCHEDULES = ("cosine", "constant")
SKILL_SCENES = "skill-scenes"  # the generator's skill scenes and prompts (`train.dvae_views`)
RENDERED = ("synthetic", SKILL_SCENES)  # data sources drawn on the fly (`train.sources`)


@dataclass(frozen=True)
class ModelSection:
    """Which model to train and which of its parts learn.

    Attributes:
        name: a registry name (random init; tower models start from their pretrained backbones) or a
            clipforge model folder (fine-tune).
        lock_image: freeze the image backbone (LiT); its projection head still learns.
        lock_text: freeze the text backbone; its projection head still learns.
        unlocked_image_blocks: with `lock_image`, the last N backbone blocks still learn.
        unlocked_text_blocks: with `lock_text`, the last N backbone layers still learn.
        feature_cache: folder of the on-disk image-feature cache ("" = none); needs `lock_image` with no
            unlocked image blocks, and real (non-synthetic) data.
        start_from: a trained mean-pool LiT model folder whose projection heads become this (grid- or
            token-head) model's mean heads, frozen (`TowerCLIP.start_from_pooled`); "" = none.
    """

    name: str = "tiny-convnet"
    lock_image: bool = False
    lock_text: bool = False
    unlocked_image_blocks: int = 0
    unlocked_text_blocks: int = 0
    feature_cache: str = ""
    start_from: str = ""


@dataclass(frozen=True)
class DataSection:
    """Where the training pairs come from.

    Attributes:
        source: ``synthetic`` (in-memory scenes), ``skill-scenes`` (the generator's skill scenes captioned
            with their prompts, `train.dvae_views`) or a data spec such as ``flickr8k:ROOT:train``.
        n_train: synthetic scenes per epoch; for the dVAE and prior tasks on real data, how many of the
            source's usable images they train on (the first ones; 0 = all of them).
        n_val: synthetic held-out scenes for the built-in evaluation; with real data, at most this many
            held-out samples (images for the dVAE and prior tasks) from `eval_source`.
        seed: synthetic generator seed.
        num_workers: DataLoader worker processes (0: load in the training process).
        eval_source: data spec of the held-out split for real data ("" = no built-in evaluation).
        root: substituted for ``{root}`` in `source` and `eval_source`, so one `--set data.root=PATH`
            moves a config to another copy of the data.
        style: randomized rendering of synthetic scenes (`clipforge.synthetic.style`; a TOML section
            ``[data.style]``, empty for the default ranges); None draws them plainly.
        dvae: a dVAE folder ("" = none): synthetic scenes are rendered at its image size and seen through
            its round trip (encode to tokens, decode), so a re-ranker of its generator trains on
            generated-looking images (`train.dvae_views`).
    """

    source: str = "synthetic"
    n_train: int = 1024
    n_val: int = 128
    seed: int = 0
    num_workers: int = 0
    eval_source: str = ""
    root: str = ""
    style: StyleConfig | None = None
    dvae: str = ""

    def spec(self, template: str) -> str:
        """A data spec with ``{root}`` filled in."""
        return template.replace("{root}", self.root)


@dataclass(frozen=True)
class TrainSection:
    """Optimization and bookkeeping.

    Attributes:
        steps: optimizer steps.
        batch_size: samples per optimizer step, summed over processes and accumulation micro-batches.
        accum_steps: micro-batches per optimizer step (contrastive negatives stay within a micro-batch).
        lr: peak learning rate, reached after `warmup_steps`.
        schedule: ``cosine`` (decay to `min_lr_ratio * lr`) or ``constant`` (after warmup).
        grad_clip: max global gradient norm (0 = no clipping).
        threads: torch intra-op threads (0 = torch's default); pin it for reproducible float sums.
        device: where the model trains: ``cpu`` (default), ``cuda`` (also ``cuda:N``) or ``auto``. Bit-exact
            resume is guaranteed on the CPU.
        deterministic: ask torch for deterministic kernels.
        checkpoint_every: steps between resumable checkpoints (0 = none).
        keep_checkpoints: how many of the newest checkpoints to keep.
        log_every: steps between `log.jsonl` lines.
        progress: show a progress bar when stderr is a terminal.
        backbone_lr_scale: multiplies the lr of pretrained backbone parameters (names containing
            ``.backbone.``), which want gentler updates than freshly initialized heads.
    """

    steps: int = 100
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, ...] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 10
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 0
    device: str = "cpu"
    deterministic: bool = True
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 1
    progress: bool = True
    backbone_lr_scale: float = 1.0


@dataclass(frozen=True)
class LossSection:
    """The contrastive objective.

    Attributes:
        kind: ``infonce`` (symmetric cross-entropy, the model's learned temperature) or ``siglip`` (a
            sigmoid per pair with the model's scale and a logit bias, added to the model if it has none).
        hard_negatives: extra negative captions per sample (NegCLIP); 0 turns them off.
        negative_kinds: which kinds of hard negatives the data should generate (empty = all it knows).
        negative_images: share of synthetic training scenes whose caption states a spatial relation that
            also get a hard-negative *image*: the same scene, style and objects with the two related
            objects in each other's places, so the caption is false for it
            (`synthetic.text.counterfactual_scene`). It is an extra column of the caption's row on the
            text->image side. 0 turns them off.
        siglip_init_scale: the model's initial log logit scale for SigLIP (ln 10).
        siglip_init_bias: the model's initial logit bias for SigLIP.
    """

    kind: str = "infonce"
    hard_negatives: int = 0
    negative_kinds: tuple[str, ...] = ()
    negative_images: float = 0.0
    siglip_init_scale: float = math.log(10.0)
    siglip_init_bias: float = -10.0


@dataclass(frozen=True)
class EvalSection:
    """Periodic evaluation: every `every` steps (and after the last one); 0 = only at the end.

    Attributes:
        every: steps between evaluations.
        batch_size: evaluation batch size.
        select_best: `final/` is the model of the best evaluation (the task's score: for contrastive
            models the mean of the two R@1s), not the model of the last step.
        patience: stop after this many evaluations without improvement (0 = never stop early).
    """

    every: int = 0
    batch_size: int = 128
    select_best: bool = False
    patience: int = 0


@dataclass(frozen=True)
class TrainRunConfig:
    """Everything a training run needs.

    Attributes:
        task: what kind of model is trained, and so which loss, batches and evaluation the engine uses:
            ``contrastive`` (CLIP, SigLIP, LiT), ``dvae`` (DALL-E's discrete VAE) or ``prior`` (the
            DALL-E-style transformer over caption and dVAE image tokens).
        dvae: the dVAE objective and its schedules (task ``dvae``).
        prior: the transformer's objective and its dVAE (task ``prior``).
    """

    task: str = "contrastive"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    loss: LossSection = field(default_factory=LossSection)
    eval: EvalSection = field(default_factory=EvalSection)
    dvae: DVAEObjective = field(default_factory=DVAEObjective)
    prior: PriorObjective = field(default_factory=PriorObjective)

    @classmethod
    def from_dict(cls, data: Any, where: str = "train config") -> TrainRunConfig:
        """Parses and validates nested config data (unknown keys and wrong types are errors)."""
        config = parse_dataclass(cls, data, where)
        validate(config, where)
        return config

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form that `from_dict` reads back to an equal config."""
        return to_dict(self)


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


def validate(config: TrainRunConfig, where: str) -> None:
    """Rejects values that parse but make no sense (negative steps, unknown loss, ...)."""
    t, loss = config.train, config.loss
    _check(config.task in TASKS, where, f"task must be one of {TASKS}, got '{config.task}'")
    _check(t.steps >= 1, where, f"train.steps must be >= 1, got {t.steps}")
    _check(t.batch_size >= 1, where, f"train.batch_size must be >= 1, got {t.batch_size}")
    _check(t.accum_steps >= 1, where, f"train.accum_steps must be >= 1, got {t.accum_steps}")
    _check(t.batch_size % t.accum_steps == 0, where,
           f"train.batch_size ({t.batch_size}) must be divisible by train.accum_steps ({t.accum_steps})")
    _check(t.lr > 0, where, f"train.lr must be > 0, got {t.lr}")
    _check(t.warmup_steps >= 0, where, f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    _check(t.schedule in SCHEDULES, where, f"train.schedule must be one of {SCHEDULES}, got '{t.schedule}'")
    _check(len(t.betas) == 2, where, f"train.betas must hold two numbers, got {list(t.betas)}")
    _check(t.grad_clip >= 0, where, f"train.grad_clip must be >= 0, got {t.grad_clip}")
    _check(t.checkpoint_every >= 0, where, f"train.checkpoint_every must be >= 0, got {t.checkpoint_every}")
    _check(t.keep_checkpoints >= 1, where, f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}")
    _check(t.log_every >= 1, where, f"train.log_every must be >= 1, got {t.log_every}")
    _check(t.threads >= 0, where, f"train.threads must be >= 0, got {t.threads}")
    _check(t.device.partition(":")[0] in DEVICES, where,
           f"train.device must be one of {', '.join(DEVICES)}, got '{t.device}'")
    _check(loss.kind in LOSSES, where, f"loss.kind must be one of {LOSSES}, got '{loss.kind}'")
    _check(loss.hard_negatives >= 0, where, f"loss.hard_negatives must be >= 0, got {loss.hard_negatives}")
    _check(0.0 <= loss.negative_images <= 1.0, where,
           f"loss.negative_images must be in [0, 1], got {loss.negative_images}")
    plain_synthetic = config.data.source == "synthetic" and not config.data.dvae
    _check(not loss.negative_images or (loss.kind == "infonce" and plain_synthetic), where,
           "loss.negative_images works with loss.kind = 'infonce' and data.source = 'synthetic' "
           "(no data.dvae)")
    least = 1 if config.data.source in RENDERED else 0  # a real-data spec may take all its images
    _check(config.data.n_train >= least, where, f"data.n_train must be >= {least}, got {config.data.n_train}")
    _check(config.eval.every >= 0, where, f"eval.every must be >= 0, got {config.eval.every}")
    _check(config.eval.patience >= 0, where, f"eval.patience must be >= 0, got {config.eval.patience}")
    scale = t.backbone_lr_scale
    _check(scale >= 0, where, f"train.backbone_lr_scale must be >= 0, got {scale}")
    _validate_model(config, where)
    _check(not config.data.dvae or (config.task == "contrastive" and config.data.source in RENDERED), where,
           "data.dvae works with task = 'contrastive' and data.source = 'synthetic' or 'skill-scenes'")


def _validate_model(config: TrainRunConfig, where: str) -> None:
    m = config.model
    _check(m.unlocked_image_blocks >= 0 and m.unlocked_text_blocks >= 0, where,
           "model.unlocked_image_blocks and model.unlocked_text_blocks must be >= 0")
    if m.feature_cache:
        _check(m.lock_image and m.unlocked_image_blocks == 0, where,
               "model.feature_cache needs model.lock_image = true and model.unlocked_image_blocks = 0")
        _check(config.data.source != "synthetic", where,
               "model.feature_cache works with real data, not data.source = 'synthetic'")
    _check(config.task != "spatial" or bool(m.feature_cache), where,
           "task = 'spatial' trains from cached features: set model.feature_cache")


def parse_override(item: str) -> tuple[list[str], Any]:
    """Splits ``section.key=value`` and reads the value with TOML syntax (``1e-3``, ``"x"``, ``[1, 2]``).

    A bare word that is not valid TOML (``data.source=synthetic``) is taken as a string.
    """
    key, eq, raw = item.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"override '{item}' must look like section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Returns a copy of nested `data` with each dotted override set (validated later by the parser)."""
    merged = json.loads(json.dumps(data))
    for item in overrides:
        path, value = parse_override(item)
        node = merged
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return merged


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainRunConfig:
    """Reads a TOML (or a run's `config.json`) and applies `--set` overrides.

    Args:
        path: the config file; None starts from the defaults.
        overrides: ``section.key=value`` strings.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_config_file(Path(path))
    where = str(path) if path is not None else "train config"
    return config_with_overrides(data, overrides, where)


def config_with_overrides(data: dict[str, Any], overrides: Sequence[str], where: str) -> TrainRunConfig:
    """Parses `data` with `overrides` applied; an error an override causes is reported against that flag.

    Raises:
        ConfigError: naming the ``--set`` whose key the error is about, else `where` (the file).
    """
    if not overrides:
        return TrainRunConfig.from_dict(data, where=where)
    try:
        return TrainRunConfig.from_dict(apply_overrides(data, overrides), where="config")
    except ConfigError as err:
        message = str(err).removeprefix("config").lstrip(".:").strip()
        culprit = next((item for item in reversed(overrides) if _is_about(item, message)), None)
        if culprit is not None:
            raise ConfigError(f"--set {culprit}: {message}") from err
        TrainRunConfig.from_dict(data, where=where)  # the file's own mistake is reported against the file
        raise ConfigError(f"{where} with {' '.join(f'--set {o}' for o in overrides)}: {message}") from err


def _is_about(override: str, message: str) -> bool:
    """Whether a config error names the key of `override` (``train.lr`` or ``train: 'lr'``)."""
    key = override.partition("=")[0].strip()
    section, _, leaf = key.rpartition(".")
    return key in message or (f"'{leaf}'" in message and f"{section.rpartition('.')[2]}:" in message)


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw nested dict of a `.toml` or `.json` config file (a regular file of at most 16 MiB)."""
    raw = read_regular_file(path, MAX_JSON_BYTES, ConfigError, "config file")
    try:
        text = raw.decode("utf-8-sig")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ConfigError(f"{path}: not a valid config file ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of sections, found a {type(data).__name__}")
    return data
