"""How good are a generator's pictures of real captions? CLIP-feature FD and KID against real photos, and
R-precision, with the controls that say what the numbers mean.

The usable images of the data spec (e.g. ``flickr8k:ROOT:test``) are shuffled with `seed` and cut into
two disjoint halves of `n`: half A's photos (one seeded caption each) are what is drawn, reconstructed
and captioned; half B's photos are the reference every set is compared with, so every FD/KID compares
two sets of `n` images. Conditions:

- ``generated``: one sample per half-A caption.
- ``generated, shuffled captions``: the same images scored against another image's caption (a seeded
  permutation): R-precision chance is 1 / (distractors + 1).
- ``dVAE reconstruction``: half A's photos through the generator's dVAE, the ceiling of this pipeline.
- ``real at the dVAE's size``: half A downsized (what the dVAE is asked to reproduce).
- ``real``: half A itself, the floor of FD and KID (real vs real) and the CLIP's own R-precision.

Features are the CLIP's normalized image and text embeddings; small images are upsized by the CLIP's
own preprocessing. The metrics are the skill evaluator's (`skills.quality`: Fréchet distance, KID as the
unbiased cubic-kernel MMD over subsets; `skills.alignment.r_precision`: the caption must beat
`distractors` random captions of other drawn photos, one draw per image so each image is one Bernoulli
trial for the 95% CI).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipforge.checkpoint import load
from clipforge.dalle.batches import to_pil
from clipforge.dalle.photos import CaptionedPhotos, read_photos
from clipforge.dalle.sampling import SamplingConfig
from clipforge.errors import ConfigError, DataError
from clipforge.generate.job import draw_candidates, load_generator
from clipforge.generate.prompts import Prompt
from clipforge.probe.stats import accuracy_block
from clipforge.skills.alignment import R_DISTRACTORS, r_precision
from clipforge.skills.quality import frechet_distance, kid
from clipforge.version import __version__


@dataclass(frozen=True)
class PhotoQualityConfig:
    """One evaluation of a generator on captioned photos.

    Attributes:
        generator: a generator folder (or registry name).
        clip: the CLIP spec whose features every metric uses.
        data: the captioned photos (a data spec); tune sampling on dev, report on test.
        n: images per half (captions drawn; reference photos).
        seed: the split, the captions, the samples, the distractors, the KID subsets.
        sampling: how image tokens are drawn.
        distractors: other captions each image's caption must beat in R-precision.
        kid_subsets, kid_subset_size: KID's random subsets.
    """

    generator: str
    clip: str
    data: str
    n: int = 500
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    distractors: int = R_DISTRACTORS
    kid_subsets: int = 100
    kid_subset_size: int = 250

    def __post_init__(self) -> None:
        if self.n <= self.distractors or self.kid_subsets < 1 or self.kid_subset_size < 2:
            raise ConfigError("photo quality: need n > distractors, kid_subsets >= 1, kid_subset_size >= 2")


class ClipFeatures:
    """Normalized CLIP embeddings of PIL images and texts, as float64 numpy arrays."""

    def __init__(self, spec: str, batch_size: int = 64) -> None:
        self.model, self.preprocess, self.tokenizer = load(spec)
        self.batch_size = batch_size

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> np.ndarray:
        step = self.batch_size
        chunks = [self.model.encode_image(torch.stack([self.preprocess(im) for im in images[i:i + step]]),
                                          normalize=True) for i in range(0, len(images), step)]
        return torch.cat(chunks).double().numpy()  # [N, E]

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> np.ndarray:
        chunks = [self.model.encode_text(self.tokenizer(list(texts[i:i + self.batch_size])), normalize=True)
                  for i in range(0, len(texts), self.batch_size)]
        return torch.cat(chunks).double().numpy()  # [N, E]


@dataclass
class Halves:
    """Half A (drawn) and half B (reference) of the shuffled photos, A's captions."""

    drawn: np.ndarray
    reference: np.ndarray
    captions: list[str]


def split_halves(photos: CaptionedPhotos, n: int, seed: int) -> Halves:
    """Two disjoint seeded halves of `n` photos, and one seeded caption of each drawn photo.

    Raises:
        DataError: fewer than 2n usable photos.
    """
    if len(photos) < 2 * n:
        raise DataError(f"photo quality needs 2 x {n} usable images, the data has {len(photos)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(photos))
    captions = [photos.captions[i][rng.integers(len(photos.captions[i]))] for i in order[:n]]
    return Halves(order[:n], order[n:2 * n], captions)


def r_precision_block(images: np.ndarray, texts: np.ndarray, config: PhotoQualityConfig) -> dict[str, Any]:
    """R-precision of images [N, E] whose caption is the same row of texts [N, E], with its 95% CI."""
    rows = np.arange(len(texts))
    result = r_precision(images, rows, texts, config.distractors, repeats=1, seed=config.seed)
    return accuracy_block(result.hits[0], seed=config.seed)


def set_metrics(features: np.ndarray, reference: np.ndarray, text: np.ndarray, config: PhotoQualityConfig
                ) -> dict[str, Any]:
    """FD, KID (mean and std over subsets) against the reference and R-precision with its 95% CI."""
    distance = kid(features, reference, config.kid_subsets, config.kid_subset_size, config.seed)
    return {"fd": frechet_distance(features, reference), "kid": distance.mean, "kid_std": distance.std,
            "kid_subsets": distance.subsets, "r_precision": r_precision_block(features, text, config)}


def photo_quality(config: PhotoQualityConfig) -> tuple[dict[str, Any], dict[str, list[Image.Image]]]:
    """Runs the evaluation (see the module docstring).

    Returns:
        The report (JSON-ready: per condition FD, KID, KID std, R-precision with CI) and the images of
        each condition, in half A's order.
    """
    generator = load_generator(config.generator)
    clip = ClipFeatures(config.clip)
    small = read_photos(config.data, generator.config.dvae.image_size)
    full = read_photos(config.data, clip.preprocess.config.image_size)
    if small.keys != full.keys:
        raise DataError(f"'{config.data}' changed while it was read")
    halves = split_halves(full, config.n, config.seed)
    start = time.perf_counter()
    prompts = [Prompt(text) for text in halves.captions]
    generated = [group[0] for group in draw_candidates(generator, prompts, 1, config.seed, config.sampling)]
    seconds = time.perf_counter() - start
    with torch.no_grad():
        tokens = generator.dvae.encode(small.floats(torch.from_numpy(halves.drawn)))
        recon = to_pil(generator.dvae.decode(tokens).clamp(0, 1))
    images = {"generated": generated, "dVAE reconstruction": recon,
              "real at the dVAE's size": to_pil(small.floats(torch.from_numpy(halves.drawn))),
              "real": [Image.fromarray(full.pixels[i].numpy()) for i in halves.drawn]}
    reference = clip.images([Image.fromarray(full.pixels[i].numpy()) for i in halves.reference])
    text = clip.texts(halves.captions)
    features = {name: clip.images(ims) for name, ims in images.items()}
    conditions = {name: set_metrics(f, reference, text, config) for name, f in features.items()}
    shuffle = np.random.default_rng([config.seed, 1]).permutation(config.n)
    conditions["generated, shuffled captions"] = {"r_precision": r_precision_block(
        features["generated"][shuffle], text, config)}
    report = {"version": __version__, "config": {**asdict(config), "sampling": asdict(config.sampling)},
              "n_usable": len(full), "skipped": full.bad.report(),
              "chance_r_precision": 1 / (config.distractors + 1),
              "images_per_s": config.n / max(seconds, 1e-9), "conditions": conditions}
    return report, images
