"""Batches of decoded images and captions from any `ImageTextData`, decoded in DataLoader workers.

Two modes:
    ``pairs``   one item per (image, caption), for training; shuffled per epoch from (seed, epoch).
    ``images``  one item per image with all its captions, for retrieval eval and embedding.

A bad image is not dropped inside a worker: the worker yields a `BadSample` in its place, the
collate keeps it aside in `Batch.bad`, and the main process counts it in `data.bad`. Keeping it in
place also keeps every batch aligned with `batch_size` slots of the epoch order, which makes the
order independent of the number of workers and lets a run resume at an exact position.
"""

from __future__ import annotations

import hashlib
import math
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from clipforge.data.readers import BadSample, ImageTextData, Record
from clipforge.data.transforms import load_image
from clipforge.errors import ConfigError, DataError, ImageError

Transform = Callable[[Image.Image], torch.Tensor]
MODES = ("pairs", "images")


def ignore_interrupts(_worker_id: int) -> None:
    """DataLoader `worker_init_fn`: workers ignore Ctrl-C, which reaches the whole process group.

    The main process stops the run at a step boundary and then shuts its workers down; a worker that
    died of the same Ctrl-C would fail the batch that step still needs.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass(frozen=True)
class LoaderConfig:
    """How to batch a dataset.

    Attributes:
        mode: ``pairs`` (one item per caption) or ``images`` (one item per image, all captions).
        batch_size: items per batch, bad ones included (so a batch may hold fewer good samples).
        num_workers: DataLoader worker processes that read and decode images (0: in this process).
        shuffle: shuffle the items each epoch, from (seed, epoch).
        seed: shuffling seed.
    """

    mode: str = "pairs"
    batch_size: int = 64
    num_workers: int = 0
    shuffle: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown loader mode '{self.mode}' (modes: {', '.join(MODES)})")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")


@dataclass
class Sample:
    """One decoded item.

    Attributes:
        key: the record's key.
        source: where the image came from (path or ``shard.tar:member``).
        image: the transformed image, e.g. [3, S, S].
        captions: one caption in ``pairs`` mode, all of the image's captions in ``images`` mode.
        size: the original (width, height).
        sha1: hex SHA-1 of the encoded bytes, to key feature caches by content.
    """

    key: str
    source: str
    image: torch.Tensor
    captions: tuple[str, ...]
    size: tuple[int, int]
    sha1: str


@dataclass
class Batch:
    """Collated good samples of one batch, plus the bad ones met while making it.

    Attributes:
        images: [B, 3, S, S] (B good samples; [0] when all were bad).
        consumed: items of the epoch order this batch used up, bad ones included.
    """

    keys: list[str]
    sources: list[str]
    images: torch.Tensor
    captions: list[tuple[str, ...]]
    sizes: list[tuple[int, int]]
    sha1s: list[str]
    bad: list[BadSample]
    consumed: int

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def texts(self) -> list[str]:
        """All captions, flattened in image order (one per image in ``pairs`` mode)."""
        return [text for captions in self.captions for text in captions]

    @property
    def text_to_image(self) -> torch.Tensor:
        """[T] index into `images` of the image each of `texts` describes."""
        owners = [i for i, captions in enumerate(self.captions) for _ in captions]
        return torch.tensor(owners, dtype=torch.long)


def image_bad_reason(err: ImageError, raw: bytes) -> str:
    """Which `BAD_REASONS` entry a failure to decode `raw` falls under."""
    cause = err.__cause__
    bomb = Image.DecompressionBombError | Image.DecompressionBombWarning
    if isinstance(cause, bomb) or "too large" in str(err):
        return "too_large"
    return "truncated" if looks_truncated(raw, cause) else "corrupt_image"


def looks_truncated(raw: bytes, cause: BaseException | None) -> bool:
    """Whether undecodable bytes are a cut-off file rather than damaged data.

    PIL says "truncated" for damaged data too, so JPEG and PNG are judged by their end markers.
    """
    if raw.startswith(b"\xff\xd8"):
        return not raw.rstrip(b"\0").endswith(b"\xff\xd9")
    if raw.startswith(b"\x89PNG"):
        return b"IEND" not in raw[-12:]
    return isinstance(cause, OSError) and "truncat" in str(cause).lower()


def decode_sample(
    data: ImageTextData, record: Record, captions: tuple[str, ...], transform: Transform
) -> Sample | BadSample:
    """Reads, decodes and transforms one image, or says why it cannot be used."""
    try:
        raw = data.read_bytes(record)
    except OSError as err:
        return BadSample(record.key, "missing_file", f"cannot read {record.source} ({err})")
    decoded = decode_image(raw, record.key, record.source, transform)
    if isinstance(decoded, BadSample):
        return decoded
    tensor, size = decoded
    return Sample(record.key, record.source, tensor, captions, size, hashlib.sha1(raw).hexdigest())


def decode_image(
    raw: bytes, key: str, source: str, transform: Transform
) -> tuple[torch.Tensor, tuple[int, int]] | BadSample:
    """Decodes and transforms encoded image bytes into (tensor, original size), or says why it cannot.

    The one decoding path of the package: the loader and `clipforge embed` both go through it, so a
    bad file gets the same reason (`zero_bytes`, `truncated`, `too_large`, `corrupt_image`) everywhere.
    """
    if not raw:
        return BadSample(key, "zero_bytes", f"empty file: {source}")
    try:
        image = load_image(raw, name=source)
        return transform(image), image.size
    except ImageError as err:
        return BadSample(key, image_bad_reason(err, raw), str(err))
    except (OSError, ValueError) as err:  # PIL may still fail on exotic modes during conversion
        return BadSample(key, "corrupt_image", f"cannot convert {source} ({err})")


def epoch_order(records: list[Record], mode: str, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """[N, 2] items of one epoch as (record index, caption index); caption index -1 means all captions."""
    if mode == "pairs":
        counts = np.array([len(r.captions) for r in records])
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        items = np.stack([np.repeat(np.arange(len(records)), counts), np.arange(counts.sum()) - starts], 1)
    else:
        items = np.stack([np.arange(len(records)), np.full(len(records), -1)], 1)
    if shuffle:
        items = items[np.random.default_rng([seed, epoch]).permutation(len(items))]
    return items


class ImageTextStream(IterableDataset):
    """Iterable dataset over one epoch's items from `start` on, yielding `Sample` or `BadSample`.

    Workers take whole batch-sized chunks in turn (chunk k goes to worker k mod W), which is the order
    in which the DataLoader collects their batches, so the output order does not depend on W.
    """

    def __init__(
        self,
        data: ImageTextData,
        records: list[Record],
        items: np.ndarray,
        transform: Transform,
        batch_size: int,
    ) -> None:
        self.data, self.records, self.items = data, records, items
        self.transform, self.batch_size = transform, batch_size

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Sample | BadSample]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        size = self.batch_size
        for chunk in range(worker, math.ceil(len(self.items) / size), workers):
            for record_index, caption_index in self.items[chunk * size : (chunk + 1) * size]:
                yield self._item(int(record_index), int(caption_index))

    def _item(self, record_index: int, caption_index: int) -> Sample | BadSample:
        record = self.records[record_index]
        captions = record.captions if caption_index < 0 else (record.captions[caption_index],)
        with single_threaded():
            return decode_sample(self.data, record, captions, self.transform)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Runs torch on one thread for a moment (DataLoader workers already do).

    One image's tensor ops are too small to split: with num_workers=0 on a busy 2-core machine the
    thread pool made preprocessing ~10x slower. The count is restored so the model keeps its threads.
    """
    with torch_threads(1):
        yield


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Runs torch on `count` intra-op threads for the block (None: leave as is), then restores the count."""
    threads = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def collate(items: list[Sample | BadSample]) -> Batch:
    """Stacks the good samples and sets the bad ones aside."""
    good = [item for item in items if isinstance(item, Sample)]
    return Batch(
        keys=[s.key for s in good],
        sources=[s.source for s in good],
        images=torch.stack([s.image for s in good]) if good else torch.empty(0),
        captions=[s.captions for s in good],
        sizes=[s.size for s in good],
        sha1s=[s.sha1 for s in good],
        bad=[item for item in items if isinstance(item, BadSample)],
        consumed=len(items),
    )


class ImageTextLoader:
    """Epochs of `Batch`es over a dataset; lists its records once, up front.

    Attributes:
        records: the dataset's usable records, in listing order.
        position: items of the current epoch consumed so far (bad ones included): pass it back as
            `start` to resume an interrupted epoch exactly.
    """

    def __init__(self, data: ImageTextData, transform: Transform, config: LoaderConfig) -> None:
        self.data, self.transform, self.config = data, transform, config
        self.records = list(data.records())
        if not self.records:
            raise DataError(f"no usable samples in '{data.name}' ({data.bad.summary()})")
        self.position = 0

    def __len__(self) -> int:
        """Items per epoch: captions in ``pairs`` mode, images in ``images`` mode."""
        if self.config.mode == "pairs":
            return sum(len(r.captions) for r in self.records)
        return len(self.records)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Yields the batches of one epoch from item `start` on, counting bad samples in `data.bad`.

        Batches whose samples were all bad are counted but not yielded.
        """
        cfg = self.config
        items = epoch_order(self.records, cfg.mode, cfg.shuffle, cfg.seed, epoch)[start:]
        stream = ImageTextStream(self.data, self.records, items, self.transform, cfg.batch_size)
        loader = DataLoader(
            stream, batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=collate,
            worker_init_fn=ignore_interrupts,
        )
        self.position = start
        for batch in loader:
            self.data.bad.update(batch.bad)
            self.position += batch.consumed
            if len(batch):
                yield batch
