"""`clipforge embed`: embed a collection of images into an index folder, incrementally.

A run lists the collection, compares each image's size, mtime and captions with the stored row,
embeds only new or changed images, drops rows whose files are gone, and brings the vector index in
line with the store. Images are read, decoded and cropped (uint8) in DataLoader workers while the
main process normalizes and encodes the previous batch. Undecodable images are skipped and counted,
and remembered by size and mtime so that an unchanged bad file is counted again next time without
being read again.

One run at a time per index folder (`clipforge.index.lock`). Every step is safe to kill: rows are
committed every few seconds (a kill loses at most those, which the next run embeds again), and the
vector index is a derived file that the next run (or a search) checks against the rows and patches
or rebuilds (`clipforge.index.sync`).
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clipforge.checkpoint import load_with, weights_fingerprint
from clipforge.data.loader import Transform, decode_image, single_threaded, torch_threads
from clipforge.data.readers import IMAGE_EXTENSIONS, BadSample, BadSampleCounter
from clipforge.data.specs import open_data
from clipforge.data.transforms import MAX_IMAGE_BYTES, Preprocess
from clipforge.device import DEFAULT_RUNTIME, Runtime, resolve_device
from clipforge.errors import ConfigError, DataError, UnreadableFileError
from clipforge.fileio import read_regular_file, remove_stale_temps
from clipforge.index.ann import TARGET_RECALL, choose_kind, faiss_threads
from clipforge.index.annfile import ANN_NAME
from clipforge.index.lock import index_lock
from clipforge.index.store import EmbeddingStore, Item, KnownBad, Signature
from clipforge.index.sync import synced_index
from clipforge.models.base import ContrastiveModel
from clipforge.progress import Progress

COMMIT_SECONDS = 2.0  # how often embedded rows are committed (see _Pending)
NO_MTIME = -1  # sources that are not plain files (tar members) are re-embedded on every run
CRASH_ENV = "CLIPFORGE_CRASH_AT"
# Decode failures are properties of the bytes; a file that could not be read may be readable later.
_REMEMBERED = ("zero_bytes", "truncated", "too_large", "corrupt_image")


def crash_point(stage: str) -> None:
    """Test hook: a process started with CLIPFORGE_CRASH_AT=STAGE dies here by SIGKILL, like a power cut."""
    if os.environ.get(CRASH_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class ImageEncoder:
    """What embedding needs from a model; another backend (e.g. ONNX) can supply its own.

    Attributes:
        encode: pixels [B, 3, S, S] -> L2-normalized embeddings [B, E] as float16.
        preprocess: a PIL image -> pixels [3, S, S]; embedding uses its two halves (`crop_uint8` in
            the decoding workers, `normalize_uint8` per batch).
        fingerprint: identifies the weights; an index refuses vectors of another fingerprint.
        dim: E, the size of the embedding space.
    """

    encode: Callable[[torch.Tensor], np.ndarray]
    preprocess: Preprocess
    fingerprint: str
    dim: int


def load_encoder(spec: str, runtime: Runtime = DEFAULT_RUNTIME) -> ImageEncoder:
    """The image encoder of a model spec (anything `clipforge.checkpoint.load` accepts)."""
    model, preprocess, _ = load_with(spec, runtime)
    return image_encoder(model, preprocess, resolve_device(runtime.device))


def image_encoder(model: ContrastiveModel, preprocess: Preprocess, target: torch.device) -> ImageEncoder:
    """Wraps a loaded model (moved to `target`, in eval mode) as an image encoder."""
    model = model.to(target).eval()

    @torch.inference_mode()
    def encode(pixels: torch.Tensor) -> np.ndarray:
        vectors = model.encode_image(pixels.to(target), normalize=True)
        return vectors.float().cpu().numpy().astype(np.float16)  # [B, E]

    return ImageEncoder(encode, preprocess, weights_fingerprint(model), model.config.embed_dim)


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
        index: `auto`, `exact`, `ivf`, `ivf-sq8`, `ivf-pq` or `hnsw`.
        target_recall: recall@10 against exact search that approximate indexes are tuned to reach.
        threads: torch (and FAISS) threads for encoding; None keeps the current setting.
        runtime: where and how the model runs (device, backend, precision).
        progress: show a progress bar.
    """

    model: str
    out: Path
    data: str | None = None
    images: Path | None = None
    batch_size: int = 32
    workers: int = 1  # one decoding process outpaces a CPU encoder; two competed with its threads
    index: str = "auto"
    target_recall: float = TARGET_RECALL
    threads: int | None = None
    runtime: Runtime = Runtime()
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.data is None) == (self.images is None):
            raise ConfigError("embed needs exactly one of --data SPEC or --images DIR")
        if self.batch_size < 1 or self.workers < 0 or (self.threads is not None and self.threads < 1):
            raise ConfigError(f"need batch size >= 1, workers >= 0, threads >= 1; got {self.batch_size}, "
                              f"{self.workers}, {self.threads}")
        if not 0 < self.target_recall <= 1:
            raise ConfigError(f"target recall must be in (0, 1], got {self.target_recall}")
        choose_kind(0, self.index)  # fail on a bad kind before any work
        resolve_device(self.runtime.device)


@dataclass
class EmbedReport:
    """What a run changed."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    total: int = 0
    index_kind: str = ""
    index_note: str = ""
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


def list_images(root: Path) -> list[Source]:
    """Image files under `root`, recursively, in sorted order, without captions.

    Raises:
        DataError: `root` is not a folder, or holds no image files.
    """
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    sources = []
    for path in sorted(root.resolve().rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            stat = path.stat()
            sources.append(Source(str(path), (), stat.st_size, stat.st_mtime_ns))
    if not sources:
        raise DataError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)")
    return sources


def list_records(spec: str) -> tuple[list[Source], Callable[[str], bytes], BadSampleCounter]:
    """Sources of a `--data` spec, a reader of their bytes, and the reader's bad-sample counter.

    Raises:
        DataError: the spec lists no usable records.
    """
    data = open_data(spec)
    records = {record.source: record for record in data.records()}
    if not records:
        raise DataError(f"no usable images in '{spec}' ({data.bad.summary()})")
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
    """Reads a regular file (the reader of `--images` sources); a FIFO or device is refused, not waited on.

    Raises:
        UnreadableFileError: an OSError too, so the decoder counts the file as `missing_file`.
    """
    return read_regular_file(path, MAX_IMAGE_BYTES, UnreadableFileError, "image file")


@dataclass(frozen=True)
class _Decoded:
    """A worker's answer for one source: the item and its uint8 pixels [S, S, 3], or why it was skipped."""

    source: Source
    item: Item | None
    pixels: torch.Tensor | None
    bad: BadSample | None = None


@dataclass(frozen=True)
class _DecodedBatch:
    """A worker's batch: its answers without pixels, and the good ones' pixels as one uint8 tensor.

    One tensor per batch crosses the process boundary (one shared-memory block), in uint8: a quarter of
    the bytes of normalized floats.
    """

    decoded: list[_Decoded]
    pixels: torch.Tensor  # [B_good, S, S, 3] uint8


def _collate(batch: list[_Decoded]) -> _DecodedBatch:
    good = [d.pixels for d in batch if d.pixels is not None]
    with single_threaded():  # with workers=0 this runs in the main process, whose pool only waits here
        pixels = torch.stack(good) if good else torch.zeros(0, 0, 0, 3, dtype=torch.uint8)  # [B, S, S, 3]
    return _DecodedBatch([replace(d, pixels=None) for d in batch], pixels)


class _DecodeDataset(Dataset[_Decoded]):
    """Reads, hashes, decodes and crops one source per index; failures become BadSamples."""

    def __init__(
        self, sources: Sequence[Source], read: Callable[[str], bytes], crop: Transform
    ) -> None:
        self.sources = sources
        self.read = read
        self.crop = crop

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> _Decoded:
        source = self.sources[index]
        try:
            data = self.read(source.path)
        except (OSError, KeyError) as err:
            return _Decoded(source, None, None, BadSample(source.path, "missing_file", str(err)))
        with single_threaded():
            decoded = decode_image(data, source.path, source.path, self.crop)
        if isinstance(decoded, BadSample):
            return _Decoded(source, None, None, decoded)
        digest = hashlib.sha256(data).hexdigest()
        item = Item(source.path, source.captions, len(data), source.mtime_ns, digest)
        return _Decoded(source, item, decoded[0])


@dataclass
class _Batch:
    """One encoded batch: the good items with their embeddings [B, E], and the skipped sources."""

    items: list[Item]
    vectors: np.ndarray
    bad: list[_Decoded]


def _embed_sources(
    encoder: ImageEncoder, sources: Sequence[Source], read: Callable[[str], bytes], config: EmbedConfig
) -> Iterator[_Batch]:
    """Yields each batch of sources encoded; workers decode the next batches meanwhile."""
    loader = DataLoader(
        _DecodeDataset(sources, read, encoder.preprocess.crop_uint8),
        batch_size=config.batch_size,
        num_workers=config.workers,
        collate_fn=_collate,
        prefetch_factor=4 if config.workers else None,
    )
    with Progress("embed", len(sources), bar=config.progress, unit="img", tenths=False) as bar:
        for batch in loader:
            items = [d.item for d in batch.decoded if d.item is not None]
            vectors = np.zeros((0, encoder.dim), np.float16)
            if items:
                with single_threaded():  # a few passes over memory: a second thread would only wait
                    pixels = encoder.preprocess.normalize_uint8(batch.pixels)  # [B, 3, S, S]
                vectors = encoder.encode(pixels)  # [B, E]
            bar.update(len(batch.decoded))
            yield _Batch(items, vectors, [d for d in batch.decoded if d.bad])


@dataclass
class _Plan:
    """What a run must do: sources to embed, stored rows to drop, known-bad files to count again."""

    todo: list[Source]
    gone: list[int]
    unchanged: int
    known_bad: list[KnownBad]
    forget: list[str]


def _plan(sources: Sequence[Source], stored: dict[str, Signature], bad: dict[str, KnownBad]) -> _Plan:
    """Splits the listed sources into unchanged, known bad and to embed; finds what is gone."""
    plan = _Plan([], [], 0, [], [])
    for source in sources:
        old, failed = stored.get(source.path), bad.get(source.path)
        now, plain = (source.size, source.mtime_ns), source.mtime_ns != NO_MTIME
        if plain and old is not None and (old.size, old.mtime_ns, old.captions) == (*now, source.captions):
            plan.unchanged += 1
        elif plain and failed is not None and (failed.size, failed.mtime_ns) == now:
            plan.known_bad.append(failed)
        else:
            plan.todo.append(source)
    listed = {s.path for s in sources}
    plan.gone = [sig.id for path, sig in stored.items() if path not in listed]
    plan.forget = [path for path in bad if path not in listed] + [s.path for s in plan.todo if s.path in bad]
    return plan


def _list_sources(config: EmbedConfig) -> tuple[list[Source], Callable[[str], bytes], BadSampleCounter]:
    if config.images is not None:
        return list_images(Path(config.images)), read_file, BadSampleCounter()
    assert config.data is not None
    return list_records(config.data)


def embed_collection(config: EmbedConfig, encoder: ImageEncoder | None = None) -> EmbedReport:
    """Embeds new and changed images into `config.out`, drops deleted ones, updates the vector index.

    Args:
        config: what to embed and where.
        encoder: the image encoder to use; by default `config.model` loaded as `config.runtime` says.

    Raises:
        ConfigError: the index was made by another model, or the options are inconsistent.
        DataError: the collection cannot be listed, or holds no usable image.
        IndexBusyError: another run is updating the same index folder.
    """
    with torch_threads(config.threads), faiss_threads(config.threads):
        encoder = encoder or load_encoder(config.model, config.runtime)
        sources, read, bad = _list_sources(config)
        with index_lock(Path(config.out)):
            return _embed_locked(config, encoder, sources, read, EmbedReport(bad=bad))


def _embed_locked(
    config: EmbedConfig,
    encoder: ImageEncoder,
    sources: list[Source],
    read: Callable[[str], bytes],
    report: EmbedReport,
) -> EmbedReport:
    store = EmbeddingStore(config.out, create=True)
    remove_stale_temps(store.folder / ANN_NAME)  # a killed run's half-written index
    try:
        store.check_model(encoder.fingerprint, config.model)
        _store_meta(store, config, encoder)
        _update_store(store, encoder, sources, read, config, report)
        synced = synced_index(store, config.index, True, config.target_recall, crash_point)
        crash_point("ann-saved")
        store.set_meta(index_kind=synced.index.kind)
        report.index_kind, report.index_note, report.total = synced.index.kind, synced.how, len(store)
    finally:
        store.close()
    if not report.total:
        raise DataError(f"no usable images in {config.images or config.data}: {report.bad.summary()}")
    return report


def _store_meta(store: EmbeddingStore, config: EmbedConfig, encoder: ImageEncoder) -> None:
    spec = Path(config.model)
    store.set_meta(model_hash=encoder.fingerprint, embed_dim=str(encoder.dim),
                   model_spec=str(spec.resolve()) if spec.exists() else config.model)


def _update_store(
    store: EmbeddingStore,
    encoder: ImageEncoder,
    sources: Sequence[Source],
    read: Callable[[str], bytes],
    config: EmbedConfig,
    report: EmbedReport,
) -> None:
    """Embeds what changed, deletes what is gone, remembers what failed to decode."""
    stored = store.signatures()
    plan = _plan(sources, stored, store.known_bad())
    report.unchanged, report.removed = plan.unchanged, len(plan.gone)
    report.bad.update(BadSample(b.path, b.reason, b.detail) for b in plan.known_bad)
    # A changed file's old row goes first, so an image that became unreadable leaves no stale vector.
    store.remove(plan.gone + [stored[s.path].id for s in plan.todo if s.path in stored])
    store.forget_bad(plan.forget)
    crash_point("rows-removed")
    pending = _Pending()
    for batch in _embed_sources(encoder, plan.todo, read, config):
        report.bad.update(d.bad for d in batch.bad if d.bad is not None)
        pending.add(batch)
        if pending.due():
            pending.commit(store)
            crash_point("batch-added")
        report.updated += sum(item.path in stored for item in batch.items)
        report.added += sum(item.path not in stored for item in batch.items)
    pending.commit(store)
    crash_point("rows-added")


@dataclass
class _Pending:
    """Encoded rows not yet committed.

    The first batch commits at once, later ones every COMMIT_SECONDS: each commit waits for the disk
    (~30 ms on the 2-core VM, an eighth of encoding a batch of 32 with EfficientNet-Lite0), and a
    killed run loses at most those seconds of work, which the next run embeds again.
    """

    items: list[Item] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    bad: list[KnownBad] = field(default_factory=list)
    committed_at: float = -math.inf

    def add(self, batch: _Batch) -> None:
        self.items += batch.items
        self.vectors.append(batch.vectors)
        self.bad += [_known_bad(d) for d in batch.bad if d.bad is not None and d.bad.reason in _REMEMBERED]

    def due(self) -> bool:
        return time.monotonic() - self.committed_at >= COMMIT_SECONDS

    def commit(self, store: EmbeddingStore) -> None:
        store.set_bad(self.bad)
        if self.items:
            store.add(self.items, np.concatenate(self.vectors))  # [N, E]
        self.items, self.vectors, self.bad = [], [], []
        self.committed_at = time.monotonic()


def _known_bad(decoded: _Decoded) -> KnownBad:
    source, bad = decoded.source, decoded.bad
    assert bad is not None
    return KnownBad(source.path, source.size, source.mtime_ns, bad.reason, bad.detail)

