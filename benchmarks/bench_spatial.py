"""Pooled LiT vs spatial LiT on Flickr8k test: retrieval, preposition swaps, `flip:` and `collage:`.

Run (from the repository root, after training the spatial models with `configs/flickr8k-spatial.toml`):

    python benchmarks/bench_spatial.py --data ../shared/data/flickr8k \\
        --model pooled=runs/flickr8k-lit/final --model pooled-hardneg=runs/flickr8k-lit-hardneg/final \\
        --model spatial=runs/flickr8k-spatial/final \\
        --model spatial-hardneg=runs/flickr8k-spatial-hardneg/final --out runs/bench-spatial --write

All four models share the frozen EfficientNet-Lite0 (checked: same weights hash, same preprocessing), so
every test image, mirror and collage goes through the convolutions once: its last 7x7 grid, each cell with
its 2x2 patch of the stride-16 map (`towers.grid_cells`), is kept in float32 and each model's head reads
what it needs (a grid model the 1280 grid channels, a pooled model their mean, which is exactly its pooled
feature, a `fine` model all of it). Images are rendered by the suites themselves (real mirrors, real
collages) and scored with `clipforge.probe.run_probe` and `write_probe_report`, the code `clipforge probe`
runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from _results import write_section
from bench_probe_real import honest_table, pair_table, tag_table
from PIL import Image

from clipforge.checkpoint import load_model
from clipforge.data.specs import open_data
from clipforge.data.transforms import Preprocess, load_image, to_rgb
from clipforge.eval.retrieval import recall_at_k
from clipforge.models.base import TowerModel
from clipforge.models.efficientnet import EfficientNetLite0
from clipforge.models.towers import grid_cells
from clipforge.probe import parse_model_option, run_probe
from clipforge.probe.report import write_probe_report
from clipforge.probe.suites import Suite, open_suite
from clipforge.progress import quiet
from clipforge.train.feature_cache import FeatureCache, module_hash, preprocess_hash
from clipforge.train.features import stack_texts, text_feature_table

SUITES = ("preposition-swap", "flip", "collage")


class GridMemo:
    """The frozen tower's grid cells [HW, 1280 + 448] of each image (`towers.grid_cells`), computed once by
    pixel content and kept (float32, so the pooled models see exactly their pooled feature) in a feature
    cache under `folder`."""

    def __init__(self, model: TowerModel, folder: Path, batch_size: int = 32) -> None:
        self.backbone, self.preprocess = model.visual.backbone.eval(), Preprocess(model.config.preprocess)
        tower, preprocessing = module_hash(self.backbone), preprocess_hash(model.config.preprocess)
        self.cache = FeatureCache(folder, tower, preprocessing, "grid+fine", torch.float32)
        self.batch_size, self.grids = batch_size, self.cache.load()

    @staticmethod
    def key(image: Image.Image) -> str:
        return hashlib.sha1(image.tobytes() + f"{image.size}{image.mode}".encode()).hexdigest()

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        keys = [self.key(image) for image in images]
        todo = sorted({key: i for i, key in enumerate(keys) if key not in self.grids}.values())
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            pixels = torch.stack([self.preprocess(images[i]) for i in chunk])
            grids = grid_cells(*self.backbone.maps(pixels))  # [B, HW, 1280 + 448]
            self.cache.add([keys[i] for i in chunk], grids)
            self.grids.update(zip([keys[i] for i in chunk], grids, strict=True))
        return torch.stack([self.grids[key] for key in keys])  # [N, HW, 1280 + 448]


class TextMemo:
    """The frozen MiniLM's pooled features of each text, computed once (`train.features.text_feature_table`,
    on disk under `folder`)."""

    def __init__(self, model: TowerModel, folder: Path) -> None:
        self.model, self.folder, self.features = model.eval(), folder, {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = sorted(set(texts) - set(self.features))
        if missing:
            self.features.update(text_feature_table(self.model, missing, self.folder, 256, quiet))
        return stack_texts([self.features[t] for t in texts])  # [N, 384] or [N, L, 384]


class MemoEncoder:
    """A model's heads over memoized grids and text features: the probe `Encoder` protocol."""

    def __init__(self, model: TowerModel, memo: GridMemo, texts: TextMemo) -> None:
        self.model, self.memo, self.texts = model.eval(), memo, texts

    @torch.inference_mode()
    def image_features(self, grids: torch.Tensor) -> torch.Tensor:
        kind, grid = self.model.image_feature_kind, grids[..., : EfficientNetLite0.output_dim]  # [N, HW, C]
        features = grids if kind == "grid+fine" else grid if kind == "grid" else grid.mean(dim=1)
        return self.model.project_image_features(features, normalize=True)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.image_features(self.memo(images)).numpy()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.project_text_features(self.texts(texts), normalize=True).numpy()


def load_models(specs: Sequence[tuple[str, str]]) -> dict[str, TowerModel]:
    """The models, checked to share one frozen image backbone and one preprocessing."""
    models = {}
    for name, spec in specs:
        model = load_model(spec)
        assert isinstance(model, TowerModel), f"{name} is not a tower model"
        models[name] = model.eval()
    towers = {module_hash(m.image_backbone) for m in models.values()}
    texts = {module_hash(m.text_backbone) for m in models.values()}
    preprocessing = {preprocess_hash(m.config.preprocess) for m in models.values()}
    assert len(towers) == len(texts) == len(preprocessing) == 1, "the models do not share frozen towers"
    return models


def test_photos(data_spec: str, limit: int) -> tuple[list[Image.Image], list[str], torch.Tensor]:
    """The first `limit` photos of the split, all their captions, and each caption's photo index."""
    records = list(open_data(data_spec).records())[:limit]
    images = [to_rgb(load_image(Path(r.source))) for r in records]
    captions = [c for r in records for c in r.captions]
    return images, captions, torch.tensor([i for i, r in enumerate(records) for _ in r.captions])


def retrieval(encoders: dict[str, MemoEncoder], data_spec: str, limit: int) -> dict[str, dict[str, float]]:
    """Recall@{1,5,10} over the test photos and all their captions, per model."""
    images, captions, owner = test_photos(data_spec, limit)
    out = {}
    for name, encoder in encoders.items():
        image_emb = torch.from_numpy(encoder.encode_images(images))
        text_emb = torch.from_numpy(encoder.encode_texts(captions))
        out[name] = recall_at_k(image_emb, text_emb, owner)
    return out


def retrieval_table(results: dict[str, dict[str, float]]) -> str:
    keys = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for name, r in results.items()]
    return "\n".join(lines)


def probe_suite(
    kind: str, data_spec: str, encoders: dict[str, MemoEncoder], out: Path, limit: int | None
) -> dict[str, Any]:
    suite = open_suite(f"{kind}:{data_spec}", limit=limit)
    assert isinstance(suite, Suite)
    results = {name: run_probe(suite.items, encoder) for name, encoder in encoders.items()}
    return write_probe_report(suite, "cosine", results, out / kind, 1000, 0)


TABLES = {
    "preposition-swap": lambda r: honest_table(r) + "\n\n" + pair_table(r),
    "flip": lambda r: honest_table(r) + "\n\n" + tag_table(r),
    "collage": lambda r: honest_table(r) + "\n\n" + tag_table(r),
}


@click.command()
@click.option("--data", "root", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--model", "model_options", multiple=True, required=True, help="NAME=MODEL_FOLDER")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--suites", default="retrieval," + ",".join(SUITES), show_default=True)
@click.option("--photos", default=1000, show_default=True, help="Test photos retrieval ranks (the first N).")
@click.option("--limit", type=int, default=None, help="Probe items per suite (whole groups; default all).")
@click.option("--threads", default=2, show_default=True)
@click.option("--write", is_flag=True, help="Write the tables into benchmarks/RESULTS.md.")
def main(root: Path, model_options: tuple[str, ...], out: Path, suites: str, photos: int, limit: int | None,
         threads: int, write: bool) -> None:
    """Scores every model on every suite and prints (or writes) the tables."""
    torch.set_num_threads(threads)
    models = load_models([parse_model_option(m) for m in model_options])
    first = next(iter(models.values()))
    memo = GridMemo(first, out / "grids")
    # one text memo per text-feature kind: pooled MiniLM features, or token states for a token head
    texts = {m.text_feature_kind: TextMemo(m, out / "texts") for m in models.values()}
    encoders = {name: MemoEncoder(m, memo, texts[m.text_feature_kind]) for name, m in models.items()}
    data, blocks = f"flickr8k:{root}:test", []
    for kind in suites.split(","):
        start = time.perf_counter()
        if kind == "retrieval":
            text = f"{photos} test photos, all their captions.\n\n" + retrieval_table(
                retrieval(encoders, data, photos))
        else:
            text = TABLES[kind](probe_suite(kind, data, encoders, out, limit))
        seconds = time.perf_counter() - start
        header = f"**{kind} on Flickr8k test** ({seconds:.0f} s; {len(memo.grids)} images in the grid memo)"
        blocks.append(f"{header}\n\n{text}")
        click.echo(blocks[-1] + "\n")
    if write:
        write_section("spatial-lit-tables", "\n\n".join(blocks), container="spatial-lit")


if __name__ == "__main__":
    main()
