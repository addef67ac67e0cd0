"""Zero-shot classification with prompt ensembles (CLIP paper, section 3.1.4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from clipforge.checkpoint import load_with
from clipforge.data.readers import image_files
from clipforge.data.transforms import load_image
from clipforge.device import DEFAULT_RUNTIME, Runtime
from clipforge.errors import ConfigError, ImageError
from clipforge.models.base import ContrastiveModel
from clipforge.models.inputs import encode_by_length


@torch.no_grad()
def ensemble(embeddings: torch.Tensor, chosen: Sequence[int] | None = None) -> torch.Tensor:
    """The class head [C, E] of templates `chosen` (all by default) of embeddings [T, C, E]."""
    picked = embeddings if chosen is None else embeddings[list(chosen)]
    return F.normalize(picked.mean(dim=0), dim=-1)


def zero_shot_classifier(
    model: ContrastiveModel,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """Builds the class-embedding matrix [E, C] from an ensemble of prompts.

    Each template embedding is normalized, the templates of a class are averaged, and the mean is
    renormalized, so every template counts equally whatever its length.

    Args:
        model: a model with `encode_text`.
        tokenizer: turns a list of strings into token ids.
        classnames: the labels, e.g. ["cat", "dog"].
        templates: format strings with one "{}", e.g. ["a photo of a {}."].
        batch_size: prompts encoded per forward pass (grouped by length).

    Raises:
        ConfigError: no labels, an empty label, or no template.
    """
    names = [str(c).strip() for c in classnames]
    if not names:
        raise ConfigError("zero-shot classification needs at least one label; the label list is empty")
    if any(not n for n in names):
        raise ConfigError(f"empty label in the label list: {list(classnames)!r}")
    if not templates:
        raise ConfigError("zero-shot classification needs at least one prompt template")
    prompts = [t.format(name) for name in names for t in templates]
    features = encode_by_length(model, tokenizer(prompts), batch_size)  # [C*T, E]
    features = features.reshape(len(names), len(templates), -1).mean(dim=1)  # [C, E]
    return F.normalize(features, dim=-1).t().contiguous()  # [E, C]


@torch.no_grad()
def classify(model: ContrastiveModel, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Class probabilities [B, C] for preprocessed images [B, 3, S, S]."""
    features = model.encode_image(images, normalize=True)
    return (model.similarity_scale() * features @ classifier).softmax(dim=-1)


@dataclass(frozen=True)
class Prediction:
    """Top labels of one image, or the reason it could not be read."""

    image: str
    labels: tuple[tuple[str, float], ...] = ()
    error: str | None = None


def classify_files(
    spec: str,
    images: Sequence[str],
    labels: Sequence[str],
    templates: Sequence[str],
    top_k: int = 3,
    batch_size: int = 32,
    runtime: Runtime = DEFAULT_RUNTIME,
) -> list[Prediction]:
    """Zero-shot classifies image files with a model loaded from `spec`; unreadable files get an error entry
    and the others keep their results.

    Args:
        spec: anything `clipforge.load` accepts.
        images: image files, or folders searched recursively for image files.
        labels: class names.
        templates: prompt templates (ensembled).
        top_k: how many labels to keep per image.
        batch_size: images per forward pass.
        runtime: where and how the model runs (device, backend, precision).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    paths = image_files(images)
    model, preprocess, tokenizer = load_with(spec, runtime)
    classifier = zero_shot_classifier(model, tokenizer, labels, templates)
    return classify_images(model, preprocess, paths, labels, classifier, top_k, batch_size)


def classify_images(
    model: ContrastiveModel,
    preprocess: Callable[[Any], torch.Tensor],
    paths: Sequence[str],
    labels: Sequence[str],
    classifier: torch.Tensor,
    top_k: int = 3,
    batch_size: int = 32,
) -> list[Prediction]:
    """Top labels of each image file under a class-embedding matrix [E, C] (a prompt ensemble or learned
    prompts); unreadable files get their error entry.

    Args:
        model: the model whose image side the classifier matches.
        preprocess: PIL image -> [3, S, S].
        paths: image files.
        labels: class names, in the classifier's column order.
        classifier: normalized class embeddings [E, C].
        top_k: how many labels to keep per image.
        batch_size: images per forward pass.
    """
    results: list[Prediction] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        results += _classify_batch(model, preprocess, classifier, chunk, labels, top_k)
    return results


def _classify_batch(
    model: ContrastiveModel,
    preprocess: Callable[[Any], torch.Tensor],
    classifier: torch.Tensor,
    paths: Sequence[str],
    labels: Sequence[str],
    top_k: int,
) -> list[Prediction]:
    """Predictions for one batch of files, in order; a file that cannot be read gets its error."""
    pixels: dict[str, torch.Tensor] = {}
    errors: dict[str, str] = {}
    for path in paths:
        try:
            pixels[path] = preprocess(load_image(path))  # [3, S, S]
        except (ImageError, OSError, ValueError) as err:  # PIL may still fail converting exotic modes
            errors[path] = str(err) if isinstance(err, ImageError) else f"cannot convert {path} ({err})"
    probs = classify(model, torch.stack(list(pixels.values())), classifier) if pixels else torch.empty(0)
    ranked = dict(zip(pixels, (_top(p, labels, top_k) for p in probs), strict=True))
    return [Prediction(path, ranked.get(path, ()), errors.get(path)) for path in paths]


def _top(probs: torch.Tensor, labels: Sequence[str], top_k: int) -> tuple[tuple[str, float], ...]:
    top = probs.topk(min(top_k, len(labels)))
    pairs = zip(top.values.tolist(), top.indices.tolist(), strict=True)
    return tuple((labels[i], float(p)) for p, i in pairs)
