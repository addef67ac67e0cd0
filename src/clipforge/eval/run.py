"""Evaluation over `--data` specs: retrieval recall@K and zero-shot attribute accuracy, with provenance.

The `evaluate_*` functions take an already-loaded model, so training and the quickstart call them in
memory; the `*_report` functions load a model spec and a data spec and add what produced the numbers
(model, data, version, sample counts), which is what `clipforge eval` writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from clipforge.data.datasets import ImageTextData, open_data
from clipforge.data.loader import ImageTextLoader, LoaderConfig
from clipforge.errors import ClipforgeError, DataError
from clipforge.eval.retrieval import recall_at_k
from clipforge.eval.zeroshot import classify, zero_shot_classifier

Tokenizer = Callable[[list[str]], torch.Tensor]
Transform = Callable[[Image.Image], torch.Tensor]
RETRIEVAL_KS = (1, 5, 10)


@dataclass(frozen=True)
class EvalConfig:
    """How to batch an evaluation.

    Attributes:
        batch_size: images encoded per forward pass (their captions go in the same pass).
        num_workers: DataLoader workers decoding images (0: in this process).
    """

    batch_size: int = 64
    num_workers: int = 0


@dataclass
class RetrievalFeatures:
    """Normalized embeddings of a dataset in ``images`` mode.

    Attributes:
        images: [N, E] one row per image.
        texts: [M, E] one row per caption.
        text_to_image: [M] index of each caption's image.
        keys: the N image keys.
        captions: the M captions.
    """

    images: torch.Tensor
    texts: torch.Tensor
    text_to_image: torch.Tensor
    keys: list[str]
    captions: list[str]


@torch.no_grad()
def embed_dataset(
    model: nn.Module, preprocess: Transform, tokenizer: Tokenizer, data: ImageTextData, config: EvalConfig
) -> RetrievalFeatures:
    """Encodes every usable image of `data` and all of its captions; bad samples are counted in `data.bad`.

    Raises:
        DataError: the dataset has no usable sample.
    """
    loader = ImageTextLoader(data, preprocess, LoaderConfig("images", config.batch_size, config.num_workers))
    images: list[torch.Tensor] = []
    texts: list[torch.Tensor] = []
    owners: list[torch.Tensor] = []
    keys: list[str] = []
    captions: list[str] = []
    for batch in loader.epoch():
        owners.append(batch.text_to_image + len(keys))
        images.append(model.encode_image(batch.images, normalize=True))  # type: ignore[operator]  # [B, E]
        texts.append(model.encode_text(tokenizer(batch.texts), normalize=True))  # type: ignore[operator]  # [T, E]
        keys += batch.keys
        captions += batch.texts
    if not keys:
        raise DataError(f"no usable images in '{data.name}' ({data.bad.summary()})")
    return RetrievalFeatures(torch.cat(images), torch.cat(texts), torch.cat(owners), keys, captions)


def evaluate_retrieval(
    model: nn.Module,
    preprocess: Transform,
    tokenizer: Tokenizer,
    data: ImageTextData,
    config: EvalConfig = EvalConfig(),
    ks: Sequence[int] = RETRIEVAL_KS,
) -> dict[str, float]:
    """Text->image and image->text recall@K (fractions) over the whole dataset, CLIP-paper convention."""
    features = embed_dataset(model, preprocess, tokenizer, data, config)
    return recall_at_k(features.images, features.texts, features.text_to_image, ks)


def retrieval_report(model_spec: str, data_spec: str, config: EvalConfig = EvalConfig()) -> dict[str, Any]:
    """Loads `model_spec` and evaluates retrieval on `data_spec`.

    Returns:
        ``t2i_r1 .. i2t_r10`` plus provenance: model, data, version, images, captions, bad samples.
    """
    from clipforge.checkpoint import load

    model, preprocess, tokenizer = load(model_spec)
    data = open_data(data_spec)
    features = embed_dataset(model, preprocess, tokenizer, data, config)
    metrics = recall_at_k(features.images, features.texts, features.text_to_image, RETRIEVAL_KS)
    counts = {"images": len(features.keys), "captions": len(features.captions)}
    return {**metrics, **provenance(model_spec, data_spec), **counts, "bad_samples": data.bad.report()}


def provenance(model_spec: str, data_spec: str) -> dict[str, str]:
    """What produced a set of numbers: the model and data specs and the clipforge version."""
    from clipforge import __version__

    return {"model": model_spec, "data": data_spec, "version": __version__}


def check_writable(path: str | Path) -> Path:
    """Fails early, before a long evaluation, when `path` cannot be written (its folder is created).

    Raises:
        ClipforgeError: the file or its folder cannot be written.
    """
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a"):
            pass
    except OSError as err:
        raise ClipforgeError(f"cannot write {out}: {err.strerror or err}") from err
    return out


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Writes `report` as indented JSON, creating the parent folder.

    Raises:
        ClipforgeError: the file or its folder cannot be written.
    """
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as err:
        raise ClipforgeError(f"cannot write {out}: {err.strerror or err}") from err
    return out


# Zero-shot attribute classification on synthetic scenes -------------------------------------------------

ATTRIBUTES = ("shape", "color")


def attribute_prompts(attribute: str) -> tuple[list[str], list[str]]:
    """Class names and prompt templates for one synthetic attribute.

    The prompts name both attributes, as the training captions do, and the ensemble runs over the
    other attribute: shape "circle" is the mean of "a red circle", "a green circle", ...
    """
    from clipforge.data.synthetic_scene import COLORS, SHAPES

    if attribute == "shape":
        return list(SHAPES), [f"a {color} {{}}" for color in COLORS]
    if attribute == "color":
        return list(COLORS), [f"a {{}} {shape}" for shape in SHAPES]
    raise DataError(f"unknown zero-shot attribute '{attribute}' (known: {', '.join(ATTRIBUTES)})")


@torch.no_grad()
def evaluate_zeroshot(
    model: nn.Module,
    preprocess: Transform,
    tokenizer: Tokenizer,
    images: Sequence[Image.Image],
    labels: Sequence[dict[str, str]],
    config: EvalConfig = EvalConfig(),
) -> dict[str, float]:
    """Zero-shot accuracy per attribute (fractions) over labelled single-object images.

    Args:
        images: the scenes, as PIL images.
        labels: for each image, its ``{"shape": ..., "color": ...}``.
    """
    if not images:
        raise DataError("zero-shot evaluation needs at least one labelled image")
    classifiers = {a: zero_shot_classifier(model, tokenizer, *attribute_prompts(a)) for a in ATTRIBUTES}
    hits = dict.fromkeys(ATTRIBUTES, 0)
    for start in range(0, len(images), config.batch_size):
        chunk = images[start : start + config.batch_size]
        pixels = torch.stack([preprocess(image) for image in chunk])  # [B, 3, S, S]
        for attribute, classifier in classifiers.items():
            names = attribute_prompts(attribute)[0]
            predicted = classify(model, pixels, classifier).argmax(dim=-1).tolist()
            truth = [lab[attribute] for lab in labels[start : start + config.batch_size]]
            hits[attribute] += sum(names[p] == t for p, t in zip(predicted, truth, strict=True))
    return {attribute: hits[attribute] / len(images) for attribute in ATTRIBUTES}


@dataclass(frozen=True)
class LabelledScene:
    """A single-object synthetic scene on disk and its attribute labels."""

    image: Path
    labels: dict[str, str]


def read_single_object_scenes(root: Path, split: str | None = None) -> list[LabelledScene]:
    """The single-object scenes listed in ``root/scenes.jsonl`` (of `split`, when given).

    Raises:
        DataError: ``scenes.jsonl`` is missing or a line is not a JSON object.
    """
    from clipforge.data.synthetic_text import image_name

    path = root / "scenes.jsonl"
    if not path.is_file():
        raise DataError(f"synthetic scenes file not found: {path}")
    scenes = []
    for line_no, line in enumerate(path.read_text().splitlines()):
        try:
            scene = json.loads(line)
            objects = scene["objects"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path}:{line_no + 1}: not a scene record ({err})") from err
        if len(objects) == 1 and split in (None, scene.get("split")):
            labels = {a: str(objects[0][a]) for a in ATTRIBUTES}
            scenes.append(LabelledScene(root / str(scene.get("image", image_name(line_no))), labels))
    return scenes


def zeroshot_report(model_spec: str, data_spec: str, config: EvalConfig = EvalConfig()) -> dict[str, Any]:
    """Loads `model_spec` and measures zero-shot shape and colour accuracy on ``synthetic:DIR[:split]``.

    Unreadable images are skipped and counted under ``bad_images``.

    Raises:
        DataError: the spec is not a synthetic one, or it has no readable single-object scene.
    """
    from clipforge.checkpoint import load
    from clipforge.data.datasets import parse_spec

    spec = parse_spec(data_spec)
    if spec.kind != "synthetic":
        raise DataError(f"zero-shot evaluation needs a synthetic:DIR[:split] spec, got '{data_spec}'")
    images, labels, bad = load_labelled_scenes(Path(spec.location), spec.split)
    if not images:
        raise DataError(f"no readable single-object scenes in '{data_spec}' to classify")
    model, preprocess, tokenizer = load(model_spec)
    accuracy = evaluate_zeroshot(model, preprocess, tokenizer, images, labels, config)
    return {**accuracy, **provenance(model_spec, data_spec), "images": len(images), "bad_images": bad}


def load_labelled_scenes(root: Path, split: str | None = None
                         ) -> tuple[list[Image.Image], list[dict[str, str]], int]:
    """Images and labels of the single-object scenes under `root`, and how many images were unreadable."""
    from clipforge.data.transforms import load_image
    from clipforge.errors import ImageError

    images, labels, bad = [], [], 0
    for scene in read_single_object_scenes(root, split):
        try:
            images.append(load_image(scene.image))
            labels.append(scene.labels)
        except ImageError:
            bad += 1
    return images, labels, bad
