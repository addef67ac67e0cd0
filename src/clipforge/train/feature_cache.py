"""On-disk cache of frozen image-tower features for locked-image training (LiT).

A cache folder is keyed by the tower's weights hash and the preprocessing, so any change to either
starts a new folder; inside it, features are keyed by the SHA-1 of each image file's bytes, so a
renamed file is still a hit and an edited one is a miss. A second run over the same data extracts
nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from clipforge.data.loader import ImageTextLoader, LoaderConfig, Transform
from clipforge.data.readers import BadSample, ImageTextData, Record
from clipforge.models.config import PreprocessConfig
from clipforge.progress import Progress, Say, quiet
from clipforge.typed import to_dict


def module_hash(module: nn.Module) -> str:
    """SHA-256 over a module's parameter and buffer names and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def preprocess_hash(config: PreprocessConfig) -> str:
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()


class _Subset(ImageTextData):
    """Some records of another dataset, read through it (so tar members and paths still resolve)."""

    def __init__(self, parent: ImageTextData, records: list[Record]) -> None:
        super().__init__(parent.name)
        self.parent, self._records = parent, records
        self.bad = parent.bad  # bad images met while extracting count against the whole dataset

    def _entries(self) -> Iterator[Record | BadSample]:
        yield from self._records

    def read_bytes(self, record: Record) -> bytes:
        return self.parent.read_bytes(record)


@dataclass
class CacheStats:
    """What one `cached_features` call did."""

    images: int
    hits: int
    extracted: int
    bad: int
    seconds: float


class FeatureCache:
    """Shards of `features` [N, ...] with their content hashes, under `root/<tower>-<preprocess>[-<kind>]/`.

    Args:
        root: the cache root.
        tower: hash of the tower's weights.
        preprocess: hash of the preprocessing.
        kind: what the tower outputs when that is not its pooled vector (e.g. "grid"); part of the key.
        dtype: how features are stored (float16 for grids: 49 x 1280 x 2 bytes = 125 KB an image).
    """

    def __init__(
        self,
        root: str | Path,
        tower: str,
        preprocess: str,
        kind: str = "",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.dir = Path(root) / f"{tower[:16]}-{preprocess[:12]}{f'-{kind}' if kind else ''}"
        self.dtype = dtype

    def load(self) -> dict[str, torch.Tensor]:
        """Every cached feature, by content SHA-1."""
        table: dict[str, torch.Tensor] = {}
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            tensors = load_file(str(shard))
            hashes = json.loads(shard.with_suffix(".json").read_text())
            table.update(zip(hashes, tensors["features"], strict=True))
        return table

    def add(self, sha1s: list[str], features: torch.Tensor) -> None:
        """Writes one more shard; the hash list is written last so a half-written shard is never read."""
        self.dir.mkdir(parents=True, exist_ok=True)
        stem = self.dir / f"shard-{time.time_ns()}-{os.getpid()}"
        save_file({"features": features.contiguous()}, f"{stem}.safetensors")
        tmp = stem.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(sha1s))
        tmp.rename(stem.with_suffix(".json"))


def content_hashes(data: ImageTextData, records: list[Record]) -> dict[str, str]:
    """SHA-1 of each record's bytes by key; unreadable files are left out (the loader counts them later)."""
    hashes = {}
    for record in records:
        try:
            hashes[record.key] = hashlib.sha1(data.read_bytes(record)).hexdigest()
        except OSError:
            continue
    return hashes


@torch.no_grad()
def cached_features(
    data: ImageTextData,
    extract: Callable[[torch.Tensor], torch.Tensor],
    transform: Transform,
    cache: FeatureCache,
    batch_size: int = 64,
    num_workers: int = 0,
    say: Say = quiet,
) -> tuple[dict[str, torch.Tensor], CacheStats]:
    """Features of every usable image of `data` by record key, extracting only what the cache lacks.

    Args:
        data: the dataset.
        extract: preprocessed images [B, 3, S, S] -> features [B, D] (the frozen tower).
        transform: the tower's preprocessing.
        cache: where features persist between runs.
        batch_size: images per extraction batch.
        num_workers: decoding workers.
        say: receives a progress line every tenth of the extraction.
    """
    start = time.time()
    records = list(data.records())
    hashes = content_hashes(data, records)
    table = cache.load()
    missing = [r for r in records if hashes.get(r.key) not in table]
    # The extraction's DataLoader draws a seed from torch's RNG: forked, so that a run trains with the
    # same random numbers (dropout masks) whether its cache was cold or warm.
    with torch.random.fork_rng(devices=[]):
        extracted = _extract(data, missing, extract, transform, cache, batch_size, num_workers, say)
    table.update(extracted)
    features = {r.key: table[hashes[r.key]] for r in records if hashes.get(r.key) in table}
    stats = CacheStats(
        len(records), len(records) - len(missing), len(extracted), data.bad.total, time.time() - start
    )
    return features, stats


def _extract(
    data: ImageTextData,
    records: list[Record],
    extract: Callable[[torch.Tensor], torch.Tensor],
    transform: Transform,
    cache: FeatureCache,
    batch_size: int,
    num_workers: int,
    say: Say,
) -> dict[str, torch.Tensor]:
    if not records:
        return {}
    subset = _Subset(data, records)
    loader = ImageTextLoader(subset, transform, LoaderConfig("images", batch_size, num_workers))
    found: dict[str, torch.Tensor] = {}
    with Progress(f"image features of '{data.name}'", len(records), say) as progress:
        for batch in loader.epoch():
            features = extract(batch.images).to(cache.dtype)
            cache.add(batch.sha1s, features)
            found.update(zip(batch.sha1s, features, strict=True))
            progress.advance_to(loader.position)
    return found
