"""`clipforge embed`: embed a collection of images into an index folder, incrementally.

A run lists the collection, compares each image's size, mtime and captions with the stored row,
embeds only new or changed images (decoded in DataLoader workers), drops rows whose files are gone,
and brings the vector index up to date. Undecodable images are skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clipforge.data.readers import IMAGE_EXTENSIONS, BadSample, BadSampleCounter
from clipforge.data.transforms import load_image
from clipforge.errors import ConfigError, DataError, ImageError
from clipforge.index.ann import (
    ANN_NAME,
    FaissIndex,
    VectorIndex,
    build_index,
    choose_kind,
    import_faiss,
    save_index,
)
from clipforge.index.store import EmbeddingStore, Item, Signature
from clipforge.models.config import ModelConfig

NO_MTIME = -1  # sources that are not plain files (tar members) are re-embedded on every run


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the model's config and its safetensors-serialized state dict.

    Two loads of the same weights give the same fingerprint whatever the spec (registry name plus
    seed, folder, converted checkpoint), and any change to a single weight changes it.
    """
    from safetensors.torch import save

    config: ModelConfig = model.config  # type: ignore[assignment]
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    digest.update(save(tensors))
    return digest.hexdigest()


def model_dim(model: nn.Module) -> int:
    """Size of the joint embedding space."""
    config: ModelConfig = model.config  # type: ignore[assignment]
    return config.embed_dim


@dataclass(frozen=True)
class EmbedConfig:
    """What `clipforge embed` does.

    Attributes:
        model: anything `clipforge.checkpoint.load` accepts.
        out: the index folder (created, or updated when it exists).
        data: a `--data` spec (images with captions), or None.
        images: a folder searched recursively for images (no captions), or None.
        batch_size: images per forward pass.
        workers: decoding processes (0 decodes in the main process).
        index: `auto`, `exact`, `ivf` or `hnsw`.
        progress: show a progress bar.
    """

    model: str
    out: Path
    data: str | None = None
    images: Path | None = None
    batch_size: int = 64
    workers: int = 2
    index: str = "auto"
    progress: bool = True


@dataclass
class EmbedReport:
    """What a run changed."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    total: int = 0
    index_kind: str = ""
    bad: BadSampleCounter = field(default_factory=BadSampleCounter)

    def summary(self) -> str:
        """One line for the end of a run."""
        return (
            f"{self.total} images indexed ({self.index_kind}): {self.added} added, {self.updated} updated, "
            f"{self.removed} removed, {self.unchanged} unchanged; {self.bad.summary()}"
        )


@dataclass(frozen=True)
class Source:
    """A listed image: where it is, how to read it, and its change signature."""

    path: str
    captions: tuple[str, ...]
    size: int
    mtime_ns: int


def list_images(root: Path) -> Iterator[Source]:
    """Image files under `root`, recursively, in sorted order, without captions."""
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    for path in sorted(root.resolve().rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            stat = path.stat()
            yield Source(str(path), (), stat.st_size, stat.st_mtime_ns)


def list_records(spec: str) -> tuple[list[Source], Callable[[str], bytes], BadSampleCounter]:
    """Sources of a `--data` spec, a reader of their bytes, and the reader's bad-sample counter."""
    from clipforge.data.specs import open_data

    data = open_data(spec)
    records = {record.source: record for record in data.records()}
    sources = [_record_source(r.source, r.captions) for r in records.values()]
    return sources, _RecordReader(data, records), data.bad


def _record_source(source: str, captions: tuple[str, ...]) -> Source:
    try:
        stat = os.stat(source)
    except OSError:
        return Source(source, captions, 0, NO_MTIME)
    return Source(str(Path(source).resolve()), captions, stat.st_size, stat.st_mtime_ns)


class _RecordReader:
    """Picklable `path -> bytes` over a data reader, for DataLoader workers."""

    def __init__(self, data: Any, records: dict[str, Any]) -> None:
        self.data = data
        self.records = {_record_source(k, ()).path: r for k, r in records.items()}

    def __call__(self, path: str) -> bytes:
        return bytes(self.data.read_bytes(self.records[path]))


def read_file(path: str) -> bytes:
    """Reads a plain file (the reader of `--images` sources)."""
    return Path(path).read_bytes()


@dataclass(frozen=True)
class _Decoded:
    """A worker's answer for one source: the item and its pixels, or why it was skipped."""

    item: Item | None
    pixels: torch.Tensor | None
    bad: BadSample | None = None


class _DecodeDataset(Dataset[_Decoded]):
    """Reads, hashes, decodes and preprocesses one source per index; failures become BadSamples."""

    def __init__(self, sources: Sequence[Source], read: Callable[[str], bytes], preprocess: Any) -> None:
        self.sources = sources
        self.read = read
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> _Decoded:
        source = self.sources[index]
        try:
            data = self.read(source.path)
        except (OSError, KeyError) as err:
            return _Decoded(None, None, BadSample(source.path, "missing_file", str(err)))
        try:
            pixels = self.preprocess(load_image(data, name=source.path))  # [3, S, S]
        except ImageError as err:
            reason = "zero_bytes" if not data else "too_large" if "too large" in str(err) else "corrupt_image"
            return _Decoded(None, None, BadSample(source.path, reason, str(err)))
        digest = hashlib.sha256(data).hexdigest()
        return _Decoded(Item(source.path, source.captions, len(data), source.mtime_ns, digest), pixels)


def _as_list(batch: list[_Decoded]) -> list[_Decoded]:
    return batch


@torch.inference_mode()
def encode_images(model: nn.Module, pixels: torch.Tensor) -> np.ndarray:
    """L2-normalized image embeddings [B, E] as float16."""
    return model.encode_image(pixels, normalize=True).float().numpy().astype(np.float16)  # type: ignore[operator]


def _embed_sources(
    model: nn.Module,
    preprocess: Any,
    sources: Sequence[Source],
    read: Callable[[str], bytes],
    config: EmbedConfig,
) -> Iterator[tuple[list[Item], np.ndarray, list[BadSample]]]:
    """Yields (items, embeddings [B, E], skipped) per batch of decoded sources."""
    loader = DataLoader(
        _DecodeDataset(sources, read, preprocess),
        batch_size=config.batch_size,
        num_workers=config.workers,
        collate_fn=_as_list,
    )
    with tqdm(total=len(sources), unit="img", desc="embed", disable=not config.progress) as bar:
        for batch in loader:
            good = [d for d in batch if d.item is not None]
            bad = [d.bad for d in batch if d.bad is not None]
            items = [d.item for d in good if d.item is not None]
            pixels = [d.pixels for d in good if d.pixels is not None]
            vectors = encode_images(model, torch.stack(pixels)) if pixels else np.zeros((0, 0), np.float16)
            bar.update(len(batch))
            yield items, vectors, bad


def _plan(sources: Sequence[Source], stored: dict[str, Signature]) -> tuple[list[Source], list[int], int]:
    """Sources to embed, ids of stored rows to drop (gone or changed), and the unchanged count."""
    listed = {s.path for s in sources}
    todo = []
    for source in sources:
        old = stored.get(source.path)
        same = old is not None and source.mtime_ns != NO_MTIME and (old.size, old.mtime_ns, old.captions) == (
            source.size, source.mtime_ns, source.captions
        )
        if not same:
            todo.append(source)
    gone = [sig.id for path, sig in stored.items() if path not in listed]
    return todo, gone, len(sources) - len(todo)


def _list_sources(config: EmbedConfig) -> tuple[list[Source], Callable[[str], bytes], BadSampleCounter]:
    if (config.data is None) == (config.images is None):
        raise ConfigError("embed needs exactly one of --data SPEC or --images DIR")
    if config.images is not None:
        return list(list_images(Path(config.images))), read_file, BadSampleCounter()
    assert config.data is not None
    return list_records(config.data)


def embed_collection(config: EmbedConfig) -> EmbedReport:
    """Embeds new and changed images into `config.out`, drops deleted ones, updates the vector index.

    Raises:
        ConfigError: the index was made by another model, or the options are inconsistent.
        DataError: the collection cannot be listed.
    """
    from clipforge.checkpoint import load

    if config.batch_size < 1 or config.workers < 0:
        raise ConfigError(f"need batch size >= 1, workers >= 0; got {config.batch_size}, {config.workers}")
    choose_kind(0, config.index)  # fail on a bad kind before any work
    model, preprocess, _ = load(config.model)
    fingerprint = model_fingerprint(model)
    store = EmbeddingStore(config.out, create=True)
    try:
        store.check_model(fingerprint, config.model)
        sources, read, bad = _list_sources(config)
        report = EmbedReport(bad=bad)
        _store_meta(store, config, fingerprint, model_dim(model))
        removed, added = _update_store(store, model, preprocess, sources, read, config, report)
        report.index_kind = update_index(store, config.index, removed, added)
        report.total = len(store)
    finally:
        store.close()
    return report


def _store_meta(store: EmbeddingStore, config: EmbedConfig, fingerprint: str, dim: int) -> None:
    spec = Path(config.model)
    store.set_meta("model_hash", fingerprint)
    store.set_meta("model_spec", str(spec.resolve()) if spec.exists() else config.model)
    store.set_meta("embed_dim", str(dim))


def _update_store(
    store: EmbeddingStore,
    model: nn.Module,
    preprocess: Any,
    sources: Sequence[Source],
    read: Callable[[str], bytes],
    config: EmbedConfig,
    report: EmbedReport,
) -> tuple[list[int], list[int]]:
    """Embeds what changed and deletes what is gone; returns (removed ids, added ids)."""
    stored = store.signatures()
    todo, gone, report.unchanged = _plan(sources, stored)
    # A changed file's old row goes first, so an image that became unreadable leaves no stale vector.
    removed = gone + [stored[s.path].id for s in todo if s.path in stored]
    store.remove(removed)
    report.removed = len(gone)
    added: list[int] = []
    for items, vectors, bad in _embed_sources(model, preprocess, todo, read, config):
        report.bad.update(bad)
        added += store.add(items, vectors)
        report.updated += sum(item.path in stored for item in items)
        report.added += sum(item.path not in stored for item in items)
    return removed, added


def update_index(store: EmbeddingStore, requested: str, removed: Sequence[int], added: Sequence[int]) -> str:
    """Brings the vector index in line with the store, incrementally where possible; returns its kind."""
    ids, vectors = store.embeddings()
    kind = choose_kind(len(ids), requested) if len(ids) else "exact"
    index = None if kind == "exact" else _patch_saved(store, kind, removed, added, ids, vectors)
    if index is None:
        index = build_index(kind, ids, vectors)
        store.set_meta("trained_on", str(len(ids)))
    save_index(index, store.folder)
    store.set_meta("index_kind", kind)
    return kind


def _patch_saved(
    store: EmbeddingStore,
    kind: str,
    removed: Sequence[int],
    added: Sequence[int],
    ids: np.ndarray,
    vectors: np.ndarray,
) -> VectorIndex | None:
    """The saved FAISS index with `removed` dropped and `added` inserted, or None when it must be rebuilt.

    HNSW cannot delete, and IVF lists trained on a quarter of the data or less are too coarse, so
    both cases rebuild.
    """
    path = store.folder / ANN_NAME
    trained_on = int(store.get_meta("trained_on") or 0)
    if store.get_meta("index_kind") != kind or not path.is_file() or len(ids) > 4 * trained_on:
        return None
    if kind == "hnsw" and removed:
        return None
    index = FaissIndex(kind, import_faiss().read_index(str(path)))
    if removed:
        index.remove(np.asarray(removed, dtype=np.int64))
    rows = np.searchsorted(ids, np.asarray(added, dtype=np.int64))  # ids are sorted ascending
    index.add(ids[rows], vectors[rows])
    return index if len(index) == len(ids) else None
