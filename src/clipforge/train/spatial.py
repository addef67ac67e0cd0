"""Spatial training data: mirrored train photos and two-photo collages of train photos, as cached features.

A LiT model that reads the image grid (`effnetlite0-minilm-spatial`) only learns where things
are if some captions depend on it. Flickr8k has few (100 train captions say "left" or "right" as a
side), so the `spatial` task adds exact-truth examples built from the *train* photos with
`data.spatial_aug`:

- **flips**: every train photo with a left/right caption, mirrored, with left/right swapped in that
  caption; the photo's own caption is the mirror's hard negative and vice versa. Its other captions stay
  true for the mirror.
- **collages**: train photos of different categories paired (seeded), each pair in all four collages of
  the probe's design (side by side and stacked, both orders: `paired_collages`), so every sentence is as
  often true as false and only the layout tells them apart; each collage's two true sentences ("a dog to
  the left of a man", "a man to the right of a dog") come with their relation-swapped sentences as hard
  negatives. (6820 collages of the 6000 Flickr8k train photos: ~280 CPU-s to render and encode once.)

Every mirror and collage is rendered and encoded by the frozen tower for real (PNG bytes through the same
loader and feature cache as the photos), never composed from the photos' grids: a mirrored grid is not
the grid of the mirrored image.

Starting from a pooled LiT model (`model.start_from`: its heads are the frozen mean heads, the branches
start at zero), the batches hold the flips and collages only, and each step adds an *anchor*: a batch of
train photos with one caption each, whose embeddings the branches are kept from moving (`TowerCLIP.drift`).
Measured on Flickr8k dev (RESULTS "spatial-lit"): trained on photos and collages together, the branches
learned collages (0.87) but memorized the train photos (mean dev R@1 0.243 -> 0.194 in 500 steps); with the
anchor, dev retrieval stayed within 0.3 points of the pooled model's while dev collages rose past 0.8.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from clipforge.data.readers import BadSample, ImageTextData, Record
from clipforge.data.spatial_aug import (
    Collage,
    CollageStatement,
    Mirrored,
    Photo,
    collage_variants,
    pair_photos,
    photo_category,
    swap_left_right,
)
from clipforge.data.specs import open_data
from clipforge.data.transforms import Preprocess
from clipforge.models.base import ContrastiveModel, TowerModel
from clipforge.models.towers import TowerCLIP
from clipforge.progress import Say
from clipforge.tokenizer import get_tokenizer
from clipforge.train.batches import PairBatch, PairCollate, PairEncoder, caption_negatives
from clipforge.train.config import TrainRunConfig
from clipforge.train.contrastive import ContrastiveTask
from clipforge.train.evaluation import encode_texts, selection_score
from clipforge.train.features import (
    CachedFeatureBatches,
    FeatureCollate,
    caches_text,
    feature_encoder,
    feature_pairs,
    image_feature_table,
    text_feature_table,
    tower_model,
)
from clipforge.train.task import EvalHook

Pair = tuple[str, str]  # (image key, caption)
# Flips and collages are repeated until they are about this share of an epoch's pairs: at their natural
# share (~12% of 1500 Flickr8k photos' pairs) a mixed run did not fit even its training collages in 100
# steps, while heads trained on collages alone did within ~200 steps of 64 collage pairs.
SPATIAL_SHARE = 0.3
# Model selection trades at most this much mean dev R@1 (one point) for better dev collages.
RETRIEVAL_SLACK = 0.01
# The anchor's weight against the contrastive loss (`SpatialTask.loss`): 1 - cos is quadratic in the angle,
# so a drift of 0.01 (8 degrees, enough to reorder dev retrieval: weight 1 lost 4 points in 50 steps)
# costs 1, as much as the contrastive loss.
ANCHOR_WEIGHT = 100.0
TextSource = Callable[[list[str]], torch.Tensor]  # sentences -> embeddings [T, E]
Negatives = dict[Pair, list[str]]  # the hard negatives of pairs that come with their own


class Recipe(Protocol):
    """An image made from photos (`spatial_aug.Mirrored`, `spatial_aug.Collage`)."""

    @property
    def key(self) -> str: ...

    def render(self) -> Image.Image: ...


class RenderedImages(ImageTextData):
    """Images rendered from recipes, served as PNG bytes so the loader and the feature cache treat them as
    files (the cache keys them by the SHA-1 of those bytes)."""

    def __init__(self, name: str, recipes: Sequence[Recipe], captions: dict[str, tuple[str, ...]]) -> None:
        super().__init__(name)
        self.recipes = {recipe.key: recipe for recipe in recipes}
        self.captions = captions

    def _entries(self) -> Iterator[Record | BadSample]:
        for key in self.recipes:
            yield Record(key, key, self.captions[key])

    def read_bytes(self, record: Record) -> bytes:
        buffer = io.BytesIO()
        self.recipes[record.key].render().save(buffer, format="PNG")
        return buffer.getvalue()


@dataclass
class SpatialExamples:
    """Rendered images with their (image key, caption) pairs and the pairs' given hard negatives."""

    images: RenderedImages
    pairs: list[Pair]
    negatives: Negatives


def flip_examples(records: Sequence[Record]) -> tuple[list[Mirrored], list[Pair], Negatives]:
    """Mirrors of the photos with a left/right caption, their pairs, and the swapped captions as negatives."""
    mirrors: list[Mirrored] = []
    pairs: list[Pair] = []
    negatives: Negatives = {}
    for record in records:
        swaps = {caption: swap_left_right(caption) for caption in record.captions}
        if not any(swaps.values()):
            continue
        mirror = Mirrored(Photo(record.key, Path(record.source)))
        mirrors.append(mirror)
        for caption, swapped in swaps.items():
            pairs.append((mirror.key, swapped or caption))
            if swapped:
                negatives[(mirror.key, swapped)] = [caption]
                negatives[(record.key, caption)] = [swapped]
    return mirrors, pairs, negatives


def collage_examples(records: Sequence[Record], seed: int) -> tuple[list[Collage], list[Pair], Negatives]:
    """Each seeded pair of photos of different categories in all four collages (`collage_variants`: both
    layouts, both orders), their true sentences and the relation-swapped ones as hard negatives."""
    collages: dict[str, Collage] = {}
    pairs: list[Pair] = []
    negatives: Negatives = {}
    for statement in paired_collages(records, seed):
        key = statement.collage.key
        collages[key] = statement.collage
        pairs.append((key, statement.true))
        negatives[(key, statement.true)] = [statement.false]
    return list(collages.values()), pairs, negatives


def spatial_examples(data: ImageTextData, seed: int) -> SpatialExamples:
    """The flips and collages of `data`'s photos (file-backed data only: recipes read photos by path)."""
    records = list(data.records())
    mirrors, flip_pairs, flip_negatives = flip_examples(records)
    collages, collage_pairs, collage_negatives = collage_examples(records, seed)
    captions: dict[str, list[str]] = {}
    for key, caption in flip_pairs + collage_pairs:
        captions.setdefault(key, []).append(caption)
    images = RenderedImages(
        f"{data.name}+spatial", [*mirrors, *collages], {k: tuple(v) for k, v in captions.items()}
    )
    return SpatialExamples(images, flip_pairs + collage_pairs, {**flip_negatives, **collage_negatives})


def repeated(spatial: list[Pair], photo_pairs: int) -> list[Pair]:
    """`spatial` repeated (a whole number of times, at least once) to about `SPATIAL_SHARE` of all pairs."""
    wanted = SPATIAL_SHARE / (1 - SPATIAL_SHARE) * photo_pairs
    return spatial * max(1, round(wanted / max(1, len(spatial))))


@dataclass
class SpatialBatches:
    """The run's batches and their encoder, and with `model.start_from` the photo batches of the anchor."""

    batches: CachedFeatureBatches
    encoder: PairEncoder
    anchor: CachedFeatureBatches | None


def spatial_feature_batches(config: TrainRunConfig, model: TowerModel, say: Say) -> SpatialBatches:
    """Cached-feature batches of the train photos plus their flips and collages (see the module docstring).

    With `model.start_from` (mean heads frozen) the batches hold the flips and collages only (and the
    photos of the flips), and the photos' pairs go to the anchor (`SpatialTask.loss`) instead: with the
    mean heads frozen, all the photos' pairs could teach the branches is to memorize the train photos.
    """
    section, k = config.model, config.loss.hard_negatives
    data = open_data(config.data.spec(config.data.source))
    extract = (section.feature_cache, config.eval.batch_size, config.data.num_workers, say)
    images = image_feature_table(model, data, *extract)
    examples = spatial_examples(data, config.train.seed)
    images.update(image_feature_table(model, examples.images, *extract))
    photos = feature_pairs(data, images, config.train.batch_size)
    spatial = [pair for pair in examples.pairs if pair[0] in images]
    anchored = bool(section.start_from)
    if anchored:
        pairs = [pair for pair in photos if pair in examples.negatives] + spatial
    else:
        pairs = photos + repeated(spatial, len(photos))
    say(f"spatial examples: {len(examples.images)} rendered images, {len(examples.pairs)} pairs")
    texts = {c for key, c in pairs for c in (c, *caption_negatives(key, c, k))}
    texts |= {t for negatives in examples.negatives.values() for t in negatives}
    texts |= {c for _, c in photos} if anchored else set()
    collate = text_collate(config, model, sorted(texts), say)
    seed, size = config.train.seed, config.train.batch_size
    batches = CachedFeatureBatches(images, pairs, collate(k), size, seed, examples.negatives)
    anchor = CachedFeatureBatches(images, photos, collate(0), size, seed + 1) if anchored else None
    return SpatialBatches(batches, feature_encoder(model, caches_text(section)), anchor)


def text_collate(
    config: TrainRunConfig, model: TowerModel, texts: list[str], say: Say
) -> Callable[[int], PairCollate | FeatureCollate]:
    """Collates with k hard negatives: from cached text features of `texts` when the text tower is frozen."""
    if caches_text(config.model):
        table = text_feature_table(model, texts, config.model.feature_cache, config.eval.batch_size, say)
        return partial(FeatureCollate, table)
    preprocess, tokenizer = Preprocess(model.config.preprocess), get_tokenizer(model.config.tokenizer)
    return partial(PairCollate, preprocess, tokenizer)


def paired_collages(records: Iterable[Record], seed: int) -> list[CollageStatement]:
    """The statements of the ``collage:`` probe design about the photos of `records` (file-backed data)."""
    entries = [(Photo(r.key, Path(r.source)), photo_category(r.captions)) for r in records]
    photos = [(photo, category) for photo, category in entries if category]
    return [s for (a, x), (b, y) in pair_photos(photos, seed) for s in collage_variants(a, x, b, y)]


@torch.no_grad()
def collage_accuracy(
    encoder: PairEncoder,
    images: dict[str, torch.Tensor],
    statements: list[CollageStatement],
    texts: TextSource,
) -> float:
    """Share of `statements` whose true sentence is closer to their collage than the false one.

    The statements come in balanced sets (every relation as often as its opposite, each sentence true of
    one collage and false of another), so this equals the probe's pair-balanced accuracy.
    """
    keys = sorted({s.collage.key for s in statements})
    sentences = sorted({t for s in statements for t in (s.true, s.false)})
    row, column = {k: i for i, k in enumerate(keys)}, {t: i for i, t in enumerate(sentences)}
    similarity = encoder.images(torch.stack([images[k] for k in keys])) @ texts(sentences).t()  # [N, T]
    rows = torch.tensor([row[s.collage.key] for s in statements])
    true = similarity[rows, torch.tensor([column[s.true] for s in statements])]
    false = similarity[rows, torch.tensor([column[s.false] for s in statements])]
    return float((true > false).float().mean())


def collage_evaluator(
    config: TrainRunConfig, model: TowerModel, say: Say
) -> EvalHook[ContrastiveModel] | None:
    """Dev ``collage`` accuracy (`collage_accuracy`) from cached features; None without held-out collages."""
    data = open_data(config.data.spec(config.data.eval_source))
    statements = paired_collages(data.records(), config.train.seed)
    if not statements:
        return None
    trues: dict[str, list[str]] = {}
    for statement in statements:
        trues.setdefault(statement.collage.key, []).append(statement.true)
    rendered = RenderedImages(
        f"{data.name}+collages", [s.collage for s in statements], {k: tuple(v) for k, v in trues.items()}
    )
    section, size = config.model, config.eval.batch_size
    images = image_feature_table(model, rendered, section.feature_cache, size, config.data.num_workers, say)
    kept = [s for s in statements if s.collage.key in images]
    sentences = sorted({t for s in kept for t in (s.true, s.false)})
    table = None
    if caches_text(section):
        table = text_feature_table(model, sentences, section.feature_cache, size, say)
    encoder, tokenizer = feature_encoder(model, table is not None), get_tokenizer(model.config.tokenizer)
    texts = partial(encode_texts, encoder, text_table=table, tokenizer=tokenizer, batch_size=size)
    return lambda m, step: {"collage": collage_accuracy(encoder, images, kept, texts)}


class SpatialTask(ContrastiveTask):
    """Contrastive LiT training from cached features, with flips and collages of the train photos.

    Evaluation adds dev collage accuracy to dev retrieval, and `selection_score` keeps the model that reads
    layout best among those that retrieve about as well as the best one (`RETRIEVAL_SLACK`). With
    `model.start_from`, each step's loss adds the anchor: how far the branches move a batch of train
    photos and their captions off the frozen pooled embeddings (`TowerCLIP.drift`, `ANCHOR_WEIGHT`).
    """

    def __init__(self, config: TrainRunConfig, say: Say) -> None:
        super().__init__(config, say)
        self.best_retrieval = -math.inf

    def make_batches(self, config: TrainRunConfig, say: Say) -> tuple[CachedFeatureBatches, PairEncoder]:
        made = spatial_feature_batches(config, tower_model(self.model), say)
        self.main, self.anchor = made.batches, made.anchor
        return made.batches, made.encoder

    def loss(self, batch: PairBatch) -> torch.Tensor:
        loss = super().loss(batch)
        if self.anchor is None or not isinstance(self.model, TowerCLIP):
            return loss
        self.anchor.position = self.main.position  # anchor batch i goes with batch i: resumes exactly
        photos = self.anchor.next_batch()
        texts = photos.tokens
        if texts.dtype == torch.long:  # token ids: the text tower is not cached
            texts = self.model.text_backbone_features(texts)
        return loss + ANCHOR_WEIGHT * self.model.drift(photos.images, texts)

    def evaluator(self) -> EvalHook[ContrastiveModel] | None:
        retrieval = super().evaluator()
        collages = collage_evaluator(self.config, tower_model(self.model), self.say)
        if retrieval is None or collages is None:
            return retrieval
        return lambda m, step: {**retrieval(m, step), **collages(m, step)}

    def selection_score(self, metrics: dict[str, Any]) -> float:
        """Dev collage accuracy when the mean dev R@1 is within `RETRIEVAL_SLACK` of the best mean R@1 so far
        (that evaluation included), else -inf; the mean R@1 alone when there are no dev collages.

        Online, as the selector needs: a model kept earlier stays kept if a later one retrieves better by
        more than the slack but reads collages worse (the log shows every evaluation to check).
        """
        retrieval = selection_score(metrics)
        self.best_retrieval = max(self.best_retrieval, retrieval)
        if "collage" not in metrics:
            return retrieval
        return float(metrics["collage"]) if retrieval >= self.best_retrieval - RETRIEVAL_SLACK else -math.inf

