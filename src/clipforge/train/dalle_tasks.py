"""The two DALL-E stages as training tasks: `DVAETask` (task ``dvae``) and `PriorTask` (task ``prior``).

With ``data.source = "synthetic"`` both train on the generator's skill scenes (`dalle.scenes`, plain
style): the training stream is seeded with ``data.seed``, the held-out scenes (``data.n_val`` of them)
are the first scenes of the stream seeded with ``data.seed + 1``. The dVAE draws fresh scenes for every
batch; the transformer learns a fixed pool of ``data.n_train`` scenes whose images its dVAE tokenized
once (cached on disk when ``prior.token_cache`` is set). With a data spec (``flickr8k:{root}:train``)
they train on its first ``data.n_train`` usable photos (`dalle.photos`, decoded once; the transformer
sees every caption of each) and evaluate on the first ``data.n_val`` of ``data.eval_source``. The engine
does the rest: optimizer, checkpoints, bit-exact resume, DDP, `log.jsonl`, model selection and `final/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch

from clipforge.checkpoint import load_folder
from clipforge.dalle.batches import ImageBatch, SceneBatches, TokenBatch, TokenBatches, TokenPairs, pixels
from clipforge.dalle.photos import CaptionedPhotos, PhotoBatches, read_photos
from clipforge.dalle.scenes import SkillSceneConfig, skill_scene
from clipforge.dalle.tokens import photo_pairs, scene_pairs
from clipforge.errors import ConfigError
from clipforge.models.base import Model
from clipforge.models.dvae import DVAE
from clipforge.models.generator import Generator
from clipforge.models.registry import create_any_model
from clipforge.progress import Say, quiet
from clipforge.synthetic.scene import SceneConfig
from clipforge.tokenizer import get_tokenizer
from clipforge.train.config import TrainRunConfig
from clipforge.train.dalle_objectives import dvae_loss, dvae_metrics, prior_loss, prior_metrics
from clipforge.train.task import EvalHook

HELD_OUT_SEED_OFFSET = 1
M = TypeVar("M", bound=Model)


def _build(name: str, kind: type[M], task: str) -> M:
    """A registry architecture (random init) or a model folder (to continue training), of `kind`."""
    model = load_folder(name) if Path(name).is_dir() else create_any_model(name)
    if not isinstance(model, kind):
        raise ConfigError(f"task '{task}' trains a {kind.__name__}; model.name '{name}' is a "
                          f"{type(model).__name__}")
    return model.train()


def skill_scenes(image_size: int, align_px: int = 0) -> SkillSceneConfig:
    """The skill scenes at the model's image size (objects on a grid of `align_px` when positive)."""
    return SkillSceneConfig(scene=SceneConfig(image_size=image_size), align_px=align_px)


def held_out_images(config: TrainRunConfig, scenes: SkillSceneConfig) -> torch.Tensor:
    """Pixels [n_val, 3, S, S] of the held-out scenes."""
    seed = config.data.seed + HELD_OUT_SEED_OFFSET
    return pixels([skill_scene(scenes, seed, i) for i in range(config.data.n_val)])


class DVAETask:
    """`Task` of the dVAE: pixels in, reconstruction + beta * KL out; held-out hard-path error and usage.

    Args:
        config: the run config (`model.name` a dVAE; the `[dvae]` section the objective).
        say: unused (the dVAE needs no preparation worth reporting).
    """

    def __init__(self, config: TrainRunConfig, say: Say) -> None:
        self.config = config
        self.model = _build(config.model.name, DVAE, "dvae")
        self.scenes = skill_scenes(self.model.config.image_size)
        self.photos = training_photos(config, self.model.config.image_size, say)
        self.batches: SceneBatches | PhotoBatches = (
            SceneBatches(self.scenes, config.data.seed, config.train.batch_size) if self.photos is None
            else PhotoBatches(self.photos, config.data.seed, config.train.batch_size))
        self.last: dict[str, float] = {}

    def loss(self, batch: ImageBatch) -> torch.Tensor:
        loss, self.last = dvae_loss(self.model, batch, self.config.dvae)
        return loss

    def log_fields(self) -> dict[str, float]:
        """The last micro-batch's reconstruction error, KL, schedules and code usage."""
        return dict(self.last)

    def evaluator(self) -> EvalHook[DVAE] | None:
        if self.photos is None:
            if self.config.data.n_val == 0:
                return None
            images = held_out_images(self.config, self.scenes)
        else:
            held_out = held_out_photos(self.config, self.model.config.image_size)
            if held_out is None:
                return None
            images = held_out.floats()
        return lambda model, step: dvae_metrics(model, images)

    def selection_score(self, metrics: dict[str, Any]) -> float:
        return -_metric(metrics, "recon_mse")


def training_photos(config: TrainRunConfig, image_size: int, say: Say) -> CaptionedPhotos | None:
    """The training photos of a real-data run (None for synthetic scenes), skipped samples reported."""
    data = config.data
    if data.source == "synthetic":
        return None
    photos = read_photos(data.spec(data.source), image_size, data.n_train)
    # A cap the user never set (the default 1024) must not pass silently for a full run.
    capped = f" (the first data.n_train = {data.n_train}; 0 takes all)" if len(photos) == data.n_train else ""
    say(f"decoded {len(photos)} training photos at {image_size} px{capped}; {photos.bad.summary()}")
    return photos


def held_out_photos(config: TrainRunConfig, image_size: int) -> CaptionedPhotos | None:
    """The evaluation photos of a real-data run (None without ``data.eval_source`` or with n_val = 0)."""
    data = config.data
    if not data.eval_source or data.n_val == 0:
        return None
    return read_photos(data.spec(data.eval_source), image_size, data.n_val)


def _metric(metrics: dict[str, Any], key: str) -> float:
    if key not in metrics:
        raise ConfigError(f"model selection needs '{key}' from the evaluation, got {sorted(metrics)}")
    return float(metrics[key])


def _attach_dvae(model: Generator, folder: str) -> None:
    """Loads a trained dVAE's weights into the generator (architectures must match)."""
    dvae = load_folder(folder)
    if not isinstance(dvae, DVAE) or dvae.config != model.config.dvae:
        raise ConfigError(f"prior.dvae '{folder}' is not a dVAE with the generator's dvae architecture")
    model.dvae.load_state_dict(dvae.state_dict())


class PriorTask:
    """`Task` of the transformer: (caption, image tokens) in, (text + 7 image) / 8 cross-entropy out.

    Args:
        config: the run config (`model.name` a generator; the `[prior]` section its dVAE and loss).
        say: where tokenizing the training pool is reported.
    """

    def __init__(self, config: TrainRunConfig, say: Say) -> None:
        self.config = config
        self.model = _build(config.model.name, Generator, "prior")
        if config.prior.dvae:
            _attach_dvae(self.model, config.prior.dvae)
        self.scenes = skill_scenes(self.model.config.dvae.image_size, config.prior.align_px)
        self.tokenizer = get_tokenizer(self.model.config.tokenizer)
        self.last: dict[str, float] = {}
        photos = training_photos(config, self.model.config.dvae.image_size, say)
        pairs = self._pairs(config.data.seed, config.data.n_train, photos, say)
        empty = self.tokenizer([""])[0]
        self.batches = TokenBatches(pairs, empty, config.train.batch_size, config.train.seed,
                                    config.prior.caption_dropout)

    def _pairs(self, seed: int, n: int, photos: CaptionedPhotos | None, say: Say = quiet) -> TokenPairs:
        cache = Path(self.config.prior.token_cache) if self.config.prior.token_cache else None
        if photos is None:
            pairs = scene_pairs(self.model.dvae, self.tokenizer, self.scenes, seed, n, cache, say)
        else:
            pairs = photo_pairs(self.model.dvae, self.tokenizer, photos, cache, say)
        self.model.dvae.train()  # encoding put it in eval mode; the engine expects the whole model training
        return pairs

    def loss(self, batch: TokenBatch) -> torch.Tensor:
        loss, self.last = prior_loss(self.model, batch, self.config.prior)
        return loss

    def log_fields(self) -> dict[str, float]:
        """The last micro-batch's text and image cross-entropy."""
        return dict(self.last)

    def evaluator(self) -> EvalHook[Generator] | None:
        data = self.config.data
        if data.source == "synthetic":
            if data.n_val == 0:
                return None
            pairs = self._pairs(data.seed + HELD_OUT_SEED_OFFSET, data.n_val, None)
        else:
            photos = held_out_photos(self.config, self.model.config.dvae.image_size)
            if photos is None:
                return None
            pairs = self._pairs(0, 0, photos)
        return lambda model, step: prior_metrics(model, pairs)

    def selection_score(self, metrics: dict[str, Any]) -> float:
        return -_metric(metrics, "image_loss")
