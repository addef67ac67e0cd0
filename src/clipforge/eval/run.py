"""Evaluation over `--data` specs: retrieval recall@K and zero-shot attribute accuracy, with provenance.

`embed_dataset` and `evaluate_zeroshot` take an already-loaded model, so the quickstart calls them in
memory; the `*_report` functions load a model spec and a data spec and add what produced the numbers
(model, data, version, sample counts), which is what `clipforge eval` writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from clipforge.checkpoint import load_with
from clipforge.data.loader import ImageTextLoader, LoaderConfig
from clipforge.data.specs import ImageTextData, open_data, parse_spec
from clipforge.device import Runtime
from clipforge.errors import DataError
from clipforge.eval.retrieval import recall_at_k
from clipforge.eval.zeroshot import classify, zero_shot_classifier
from clipforge.models.base import ContrastiveModel
from clipforge.models.inputs import encode_by_length
from clipforge.synthetic.zeroshot import ATTRIBUTES, attribute_prompts, load_labelled_scenes
from clipforge.version import __version__

Tokenizer = Callable[[list[str]], torch.Tensor]
Transform = Callable[[Image.Image], torch.Tensor]
RETRIEVAL_KS = (1, 5, 10)


@dataclass(frozen=True)
class EvalConfig:
    """How to batch an evaluation.

    Attributes:
        batch_size: images encoded per forward pass (their captions go in the same pass).
        num_workers: DataLoader workers decoding images (0: in this process).
        runtime: where and how a model loaded from a spec runs (device, backend, precision).
    """

    batch_size: int = 64
    num_workers: int = 0
    runtime: Runtime = Runtime()


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
    model: ContrastiveModel,
    preprocess: Transform,
    tokenizer: Tokenizer,
    data: ImageTextData,
    config: EvalConfig,
) -> RetrievalFeatures:
    """Encodes every usable image of `data` and all of its captions (in batches of similar length); bad
    samples are counted in `data.bad`.

    Raises:
        DataError: the dataset has no usable sample.
    """
    loader = ImageTextLoader(data, preprocess, LoaderConfig("images", config.batch_size, config.num_workers))
    images: list[torch.Tensor] = []
    owners: list[torch.Tensor] = []
    keys: list[str] = []
    captions: list[str] = []
    for batch in loader.epoch():
        owners.append(batch.text_to_image + len(keys))
        images.append(model.encode_image(batch.images, normalize=True))  # [B, E]
        keys += batch.keys
        captions += batch.texts
    if not keys:
        raise DataError(f"no usable images in '{data.name}' ({data.bad.summary()})")
    texts = encode_by_length(model, tokenizer(captions), config.batch_size)  # [T, E]
    return RetrievalFeatures(torch.cat(images), texts, torch.cat(owners), keys, captions)


def retrieval_report(model_spec: str, data_spec: str, config: EvalConfig = EvalConfig()) -> dict[str, Any]:
    """Loads `model_spec` and evaluates retrieval on `data_spec`.

    Returns:
        ``t2i_r1 .. i2t_r10`` plus provenance: model, data, version, images, captions, bad samples.
    """
    model, preprocess, tokenizer = load_with(model_spec, config.runtime)
    data = open_data(data_spec)
    features = embed_dataset(model, preprocess, tokenizer, data, config)
    metrics = recall_at_k(features.images, features.texts, features.text_to_image, RETRIEVAL_KS)
    counts = {"images": len(features.keys), "captions": len(features.captions)}
    return {**metrics, **provenance(model_spec, data_spec), **counts, "bad_samples": data.bad.report()}


def provenance(model_spec: str, data_spec: str) -> dict[str, str]:
    """What produced a set of numbers: the model and data specs and the clipforge version."""
    return {"model": model_spec, "data": data_spec, "version": __version__}


@torch.no_grad()
def evaluate_zeroshot(
    model: ContrastiveModel,
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


def zeroshot_report(model_spec: str, data_spec: str, config: EvalConfig = EvalConfig()) -> dict[str, Any]:
    """Loads `model_spec` and measures zero-shot shape and colour accuracy on ``synthetic:DIR[:split]``.

    Unreadable images are skipped and counted under ``bad_images``.

    Raises:
        DataError: the spec is not a synthetic one, or it has no readable single-object scene.
    """
    spec = parse_spec(data_spec)
    if spec.kind != "synthetic":
        raise DataError(f"zero-shot evaluation needs synthetic:DIR[:split] or a classification spec "
                        f"(imagefolder:, synth:, flickr8k-tags:, corrupt:), got '{data_spec}'")
    images, labels, bad = load_labelled_scenes(Path(spec.location), spec.split)
    if not images:
        raise DataError(f"no readable single-object scenes in '{data_spec}' to classify")
    model, preprocess, tokenizer = load_with(model_spec, config.runtime)
    accuracy = evaluate_zeroshot(model, preprocess, tokenizer, images, labels, config)
    return {**accuracy, **provenance(model_spec, data_spec), "images": len(images), "bad_images": bad}
