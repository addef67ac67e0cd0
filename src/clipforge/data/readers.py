"""Readers that list image-caption records from the on-disk formats behind a `--data` spec.

A reader only lists records and hands out the encoded image bytes; decoding happens later, in the
loader's workers. Listing is lazy, so a large folder or shard set is never held in memory at once.
Problems found while listing (an empty or undecodable caption, a caption file without its image, a
malformed CSV row or COCO entry, a cut-off shard member) are recorded in the reader's `bad` counter and
only that record or caption is left out: nothing good is dropped with it, and nothing is dropped silently.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipforge.data.transforms import MAX_IMAGE_BYTES
from clipforge.errors import DataError, UnreadableFileError
from clipforge.fileio import read_json, read_regular_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
BAD_REASONS = (
    "corrupt_image",
    "zero_bytes",
    "truncated",
    "too_large",
    "empty_caption",
    "undecodable_caption",
    "missing_file",
    "corrupt_shard",
    "malformed_row",
)
MAX_TEXT_BYTES = 2**30  # caption files: COCO's largest annotation file is ~90 MB
# Text files are read with surrogateescape so one bad byte spoils one caption, not the whole file.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Record:
    """One image and its captions.

    Attributes:
        key: a stable name for the image, unique within the dataset (e.g. the file name).
        source: where the bytes live: a file path, or ``shard.tar:member`` for tar shards.
        captions: the image's usable captions, in file order (at least one).
    """

    key: str
    source: str
    captions: tuple[str, ...]


@dataclass(frozen=True)
class BadSample:
    """A sample or caption that was skipped, and why (one of `BAD_REASONS`)."""

    key: str
    reason: str
    detail: str


@dataclass
class BadSampleCounter:
    """Counts skipped samples by reason, each (key, reason) once however often it is met.

    Workers do not share it: they send their `BadSample`s back with each batch and the main process
    adds them here, so no locking is needed.
    """

    examples: dict[str, BadSample] = field(default_factory=dict)
    _seen: set[tuple[str, str]] = field(default_factory=set)
    _counts: dict[str, int] = field(default_factory=dict)

    def add(self, bad: BadSample) -> None:
        """Records one skipped sample; repeats (a corrupt file met again next epoch) are ignored."""
        if (bad.key, bad.reason) in self._seen:
            return
        self._seen.add((bad.key, bad.reason))
        self._counts[bad.reason] = self._counts.get(bad.reason, 0) + 1
        self.examples.setdefault(bad.reason, bad)

    def update(self, bads: Iterable[BadSample]) -> None:
        """Records several skipped samples."""
        for bad in bads:
            self.add(bad)

    @property
    def total(self) -> int:
        """Number of distinct skipped samples."""
        return sum(self._counts.values())

    def report(self) -> dict[str, int]:
        """Counts by reason, every reason present (zero when none)."""
        return {reason: self._counts.get(reason, 0) for reason in BAD_REASONS}

    def summary(self) -> str:
        """One line for the end of a run, e.g. ``skipped 2 bad samples: zero_bytes=1, too_large=1 (...)``."""
        if not self.total:
            return "skipped 0 bad samples"
        counts = ", ".join(f"{r}={n}" for r, n in self.report().items() if n)
        first = next(iter(self.examples.values()))
        return f"skipped {self.total} bad samples: {counts} (first: {first.key}: {first.detail})"


def clean_caption(raw: str, key: str) -> str | BadSample:
    """Strips a caption; an empty or undecodable one becomes a `BadSample` naming `key`."""
    if _UNDECODABLE.search(raw):
        return BadSample(key, "undecodable_caption", "caption is not valid UTF-8")
    text = " ".join(raw.split())
    return text if text else BadSample(key, "empty_caption", "caption is empty")


def read_text(path: Path) -> str:
    """Reads a text file as UTF-8 (a leading BOM dropped), keeping undecodable bytes as surrogates for
    `clean_caption`; only regular files are read, up to MAX_TEXT_BYTES."""
    raw = read_regular_file(path, MAX_TEXT_BYTES, DataError, "file")
    return raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


class ImageTextData:
    """Base class of the readers: lists `Record`s and reads their encoded image bytes.

    Attributes:
        name: the spec the data was opened from.
        bad: skipped samples, filled while listing and by the loader while decoding.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.bad = BadSampleCounter()
        self._length: int | None = None

    def records(self) -> Iterator[Record]:
        """Yields the usable records in a fixed order, recording the unusable ones in `bad`."""
        count = 0
        for entry in self._entries():
            if isinstance(entry, BadSample):
                self.bad.add(entry)
            else:
                count += 1
                yield entry
        self._length = count

    def read_bytes(self, record: Record) -> bytes:
        """The encoded image of `record` (regular files only: a FIFO or a device is refused, not read).

        Raises:
            UnreadableFileError: the file is missing, unreadable or not a regular file (an OSError: the
                loader counts it as ``missing_file``).
        """
        return read_regular_file(record.source, MAX_IMAGE_BYTES, UnreadableFileError, "image file")

    def __len__(self) -> int:
        """Number of usable records (lists the data once when not yet known)."""
        if self._length is None:
            for _ in self.records():
                pass
        assert self._length is not None
        return self._length

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _entries(self) -> Iterator[Record | BadSample]:
        raise NotImplementedError


def group_captions(rows: Iterable[tuple[str, str]]) -> dict[str, list[str | BadSample]]:
    """Groups (image, raw caption) rows by image in first-seen order, cleaning each caption."""
    groups: dict[str, list[str | BadSample]] = {}
    for image, raw in rows:
        captions = groups.setdefault(image, [])
        captions.append(clean_caption(raw, f"{image}#{len(captions)}"))
    return groups


def grouped_entries(groups: dict[str, list[str | BadSample]], root: Path) -> Iterator[Record | BadSample]:
    """Turns grouped captions into records whose files lie under `root`; bad captions pass through."""
    for image, captions in groups.items():
        good = tuple(c for c in captions if isinstance(c, str))
        yield from (c for c in captions if isinstance(c, BadSample))
        if good:
            yield Record(image, str(root / image), good)


def read_csv_rows(path: Path, sep: str | None = None) -> tuple[list[str], Iterator[list[str] | BadSample]]:
    """Header and rows of a CSV/TSV file; the separator is a tab when the header has one.

    Rows are read line by line (see `csv_rows`): a malformed row becomes a `BadSample`, never a raw
    `csv.Error`, and an unbalanced quote cannot swallow the rows after it.
    """
    lines = io.StringIO(read_text(path), newline="").readlines()
    header_line = lines[0] if lines else ""
    delimiter = sep or ("\t" if "\t" in header_line else ",")
    header = next(csv.reader([header_line], delimiter=delimiter), [])
    return [h.strip() for h in header], csv_rows(lines[1:], delimiter, path, first_line=2)


def csv_rows(
    lines: list[str], delimiter: str, path: Path, first_line: int = 1
) -> Iterator[list[str] | BadSample]:
    """Parses physical `lines` into rows; malformed rows become `malformed_row` BadSamples.

    A row that spans several lines is what an unterminated quote makes of the lines after it (captions
    hold no line breaks), so its lines are parsed again one by one: the line with the stray quote is
    counted as malformed and the lines it had swallowed come back as rows of their own.
    """
    reader = csv.reader(iter(lines), delimiter=delimiter)
    start = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # e.g. a field over csv.field_size_limit() (128 KiB)
            yield _bad_row(path, first_line + start, str(err))
            start = reader.line_num
            continue
        end = reader.line_num
        if end - start > 1 or any("\n" in value or "\r" in value for value in row):  # a quote left open
            yield from (_line_row(line, delimiter, path, first_line + start + i)
                        for i, line in enumerate(lines[start:end]))
        else:
            yield row
        start = end


def _line_row(line: str, delimiter: str, path: Path, number: int) -> list[str] | BadSample:
    """One physical line as a row on its own; a quote left open at its end makes it malformed."""
    try:
        return next(csv.reader([line], delimiter=delimiter, strict=True), [])
    except csv.Error as err:
        return _bad_row(path, number, f"{err} (unterminated quote?)")


def _bad_row(path: Path, number: int, why: str) -> BadSample:
    return BadSample(f"{path.name}:line{number}", "malformed_row", f"malformed CSV row: {why}")


def complete_rows(
    rows: Iterator[list[str] | BadSample], width: int, path: Path
) -> Iterator[list[str] | BadSample]:
    """Rows with at least `width` fields; blank lines are skipped and short rows become `BadSample`s."""
    for number, row in enumerate(rows, start=1):
        if isinstance(row, BadSample) or len(row) >= width:
            yield row
        elif any(value.strip() for value in row):
            yield BadSample(
                f"{path.name}:row{number}", "empty_caption", f"only {len(row)} of {width} columns"
            )


def column(header: list[str], name: str, path: Path) -> int:
    """Index of column `name`, or a DataError listing the columns there are."""
    if name not in header:
        raise DataError(f"{path}: no column '{name}' (columns: {', '.join(header) or 'none'})")
    return header.index(name)


class Flickr8kData(ImageTextData):
    """Flickr8k layout: ``captions.txt`` (CSV ``image,caption``), ``images/``, ``{split}_images.txt``."""

    def __init__(self, name: str, root: Path, split: str | None) -> None:
        super().__init__(name)
        self.root = root
        self.captions_file = root / "captions.txt"
        if not self.captions_file.is_file():
            raise DataError(f"flickr8k captions file not found: {self.captions_file}")
        self.split_file = None if split is None else root / f"{'dev' if split == 'val' else split}_images.txt"
        if self.split_file is not None and not self.split_file.is_file():
            raise DataError(f"flickr8k split file not found: {self.split_file}")

    def _entries(self) -> Iterator[Record | BadSample]:
        header, rows = read_csv_rows(self.captions_file, ",")
        image_col = column(header, "image", self.captions_file)
        caption_col = column(header, "caption", self.captions_file)
        checked = list(complete_rows(rows, 2, self.captions_file))
        yield from (row for row in checked if isinstance(row, BadSample))
        # Some copies leave commas in captions unquoted: the caption is everything after the image.
        groups = group_captions(
            (row[image_col], ",".join(row[caption_col:])) for row in checked if isinstance(row, list)
        )
        if self.split_file is not None:
            names = [line.strip() for line in read_text(self.split_file).splitlines() if line.strip()]
            lost = [n for n in names if n not in groups]
            yield from (BadSample(n, "empty_caption", "no caption in captions.txt") for n in lost)
            groups = {n: groups[n] for n in names if n in groups}
        yield from grouped_entries(groups, self.root / "images")


_COCO_LISTS = ("images", "annotations")


class CocoData(ImageTextData):
    """COCO captions: a JSON with ``images`` (id, file_name) and ``annotations`` (image_id, caption)."""

    def __init__(self, name: str, captions_json: Path, image_dir: Path) -> None:
        super().__init__(name)
        if not captions_json.is_file():
            raise DataError(f"coco captions file not found: {captions_json}")
        if not image_dir.is_dir():
            raise DataError(f"coco image directory not found: {image_dir}")
        self.captions_json = captions_json
        self.image_dir = image_dir

    def _entries(self) -> Iterator[Record | BadSample]:
        path = self.captions_json
        data = read_json(path, DataError, limit=MAX_TEXT_BYTES)
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in _COCO_LISTS):
            raise DataError(f"{path}: not a COCO captions file (it needs 'images' and 'annotations' lists)")
        files: dict[int | str, str] = {}
        for index, image in enumerate(data["images"]):
            entry = _coco_image(image, index)
            if isinstance(entry, BadSample):
                yield entry
            else:
                files.setdefault(*entry)
        rows = []
        for index, annotation in enumerate(data["annotations"]):
            row = _coco_caption(annotation, index, files)
            if isinstance(row, BadSample):
                yield row
            else:
                rows.append(row)
        # Records follow the order of the "images" list, not of the annotations.
        order = {name: i for i, name in enumerate(files.values())}
        groups = group_captions(sorted(rows, key=lambda row: order[row[0]]))
        yield from grouped_entries(groups, self.image_dir)


def _coco_image(image: Any, index: int) -> tuple[int | str, str] | BadSample:
    """(id, file name) of one entry of COCO's "images" list, or why it is unusable."""
    key = f"images[{index}]"
    if not isinstance(image, dict) or not isinstance(image.get("id"), int | str):
        return BadSample(key, "malformed_row", "image entry without an integer or string 'id'")
    name = image.get("file_name")
    if not isinstance(name, str) or not name.strip():
        return BadSample(key, "malformed_row", f"image {image['id']!r} has no file_name ({name!r})")
    return image["id"], name


def _coco_caption(annotation: Any, index: int, files: dict[int | str, str]) -> tuple[str, str] | BadSample:
    """(file name, caption) of one entry of COCO's "annotations" list, or why it is unusable."""
    key = f"annotations[{index}]"
    image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
    if not isinstance(image_id, int | str) or image_id not in files:
        return BadSample(key, "malformed_row", f"image_id {image_id!r} is not in the 'images' list")
    caption = annotation.get("caption")
    if caption is None:
        return BadSample(f"{files[image_id]}#{key}", "empty_caption", "caption is null")
    if not isinstance(caption, str):
        kind = type(caption).__name__
        return BadSample(f"{files[image_id]}#{key}", "malformed_row", f"caption is a {kind}, not text")
    return files[image_id], caption


class CsvData(ImageTextData):
    """A CSV or TSV with an image path column and a caption column (open_clip's ``filepath``/``title``).

    Relative image paths are taken relative to `image_root` (the CSV's folder by default). Rows of the
    same image are grouped into one record; with `split_key`, only rows whose split is `split` are kept.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        image_key: str = "filepath",
        caption_key: str = "title",
        sep: str | None = None,
        split: str | None = None,
        split_key: str = "split",
        image_root: Path | None = None,
    ) -> None:
        super().__init__(name)
        if not path.is_file():
            raise DataError(f"csv file not found: {path}")
        self.path = path
        self.image_key, self.caption_key, self.sep = image_key, caption_key, sep
        self.split, self.split_key = split, split_key
        self.image_root = image_root or path.parent

    def _entries(self) -> Iterator[Record | BadSample]:
        header, rows = read_csv_rows(self.path, self.sep)
        image_col = column(header, self.image_key, self.path)
        caption_col = column(header, self.caption_key, self.path)
        split_col = column(header, self.split_key, self.path) if self.split else -1
        checked = list(complete_rows(rows, max(image_col, caption_col, split_col) + 1, self.path))
        yield from (row for row in checked if isinstance(row, BadSample))
        kept = (r for r in checked if isinstance(r, list) and (split_col < 0 or r[split_col] == self.split))
        groups = group_captions((r[image_col], r[caption_col]) for r in kept)
        yield from grouped_entries(groups, self.image_root)


class FolderData(ImageTextData):
    """A folder tree of images, each with a same-name ``.txt`` holding one caption per non-empty line."""

    def __init__(self, name: str, root: Path) -> None:
        super().__init__(name)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        self.root = root

    def _entries(self) -> Iterator[Record | BadSample]:
        for path in sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            key = path.relative_to(self.root).as_posix()
            text_file = path.with_suffix(".txt")
            if not text_file.is_file():
                yield BadSample(key, "missing_file", f"caption file not found: {text_file}")
                continue
            yield from _record_from_text(key, str(path), read_text(text_file))


def image_files(paths: Iterable[str]) -> list[str]:
    """The files `paths` name: a folder gives its image files (by extension, recursively, sorted), a file
    itself (whatever its extension: the decoder judges it).

    Raises:
        DataError: a folder holds no image file.
    """
    files: list[str] = []
    for path in paths:
        if not Path(path).is_dir():
            files.append(path)
            continue
        found = sorted(str(p) for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder: {path}")
        files += found
    return files


def _record_from_text(key: str, source: str, text: str) -> Iterator[Record | BadSample]:
    """One record from a caption text (one caption per line), or the reason it has none."""
    lines = [line for line in text.splitlines() if line.strip()] or [""]
    captions = [clean_caption(line, key if len(lines) == 1 else f"{key}#{i}") for i, line in enumerate(lines)]
    yield from (c for c in captions if isinstance(c, BadSample))
    good = tuple(c for c in captions if isinstance(c, str))
    if good:
        yield Record(key, source, good)


def expand_braces(pattern: str) -> list[str]:
    """Expands webdataset-style ``{000..009}`` ranges (zero-padded) and ``{a,b}`` lists."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        width = len(span.group(1))
        parts = [str(i).zfill(width) for i in range(int(span.group(1)), int(span.group(2)) + 1)]
    else:
        parts = body.split(",")
    return [name for part in parts for name in expand_braces(head + part + tail)]


@dataclass
class _Member:
    """Where a shard member's bytes lie, so workers can read one image with a single seek."""

    offset: int
    size: int


class WebDatasetData(ImageTextData):
    """Uncompressed tar shards (webdataset): members ``KEY.jpg``/``KEY.png`` with ``KEY.txt`` captions."""

    def __init__(self, name: str, pattern: str) -> None:
        super().__init__(name)
        names = [hit for part in expand_braces(pattern) for hit in (sorted(glob.glob(part)) or [part])]
        missing = [n for n in names if not Path(n).is_file()]
        if missing:
            raise DataError(f"webdataset shard not found: {missing[0]}")
        self.shards = names
        self._members: dict[str, _Member] = {}

    def _entries(self) -> Iterator[Record | BadSample]:
        for shard in self.shards:
            yield from self._shard_entries(shard)

    def _shard_entries(self, shard: str) -> Iterator[Record | BadSample]:
        """Every complete sample of one shard; a cut-off member or a broken tail is counted, not fatal."""
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        texts: dict[str, str | BadSample] = {}
        size = os.path.getsize(shard)
        try:
            with tarfile.open(shard, "r:") as tar:
                broken = _list_members(tar, shard, size, samples)
                # Captions are tiny: read them now, while the shard is open.
                texts = {
                    k: _read_caption(tar, m["txt"], f"{shard}:{k}") for k, m in samples.items() if "txt" in m
                }
        except (tarfile.TarError, OSError) as err:
            yield BadSample(shard, "corrupt_shard", f"unreadable tar shard ({err})")
            return
        if broken is not None:
            yield broken
        for key, members in samples.items():
            yield from self._sample_entry(shard, key, members, texts.get(key))

    def _sample_entry(
        self, shard: str, key: str, members: dict[str, tarfile.TarInfo], text: str | BadSample | None
    ) -> Iterator[Record | BadSample]:
        image = next((members[e] for e in ("jpg", "jpeg", "png", "webp") if e in members), None)
        if isinstance(text, BadSample):
            yield text
            return
        if image is None or text is None:
            missing = "image" if image is None else "caption (.txt)"
            yield BadSample(f"{shard}:{key}", "missing_file", f"sample has no {missing}")
            return
        source = f"{shard}:{image.name}"
        self._members[source] = _Member(image.offset_data, image.size)
        yield from _record_from_text(f"{shard}:{key}", source, text)

    def read_bytes(self, record: Record) -> bytes:
        """Reads the image member with one seek (falls back to a tar lookup for unlisted records)."""
        shard, _, member_name = record.source.rpartition(":")
        member = self._members.get(record.source)
        if member is None:
            with tarfile.open(shard, "r:") as tar:
                return _member_bytes(tar, member_name)
        with open(shard, "rb") as f:
            f.seek(member.offset)
            return f.read(member.size)


def _list_members(
    tar: tarfile.TarFile, shard: str, size: int, samples: dict[str, dict[str, tarfile.TarInfo]]
) -> BadSample | None:
    """Groups the shard's complete file members by sample key into `samples`; says where it breaks off.

    tarfile stops quietly at a cut-off header and lists a member whose data the file does not hold, so
    both are checked here: a member reaching past the end of the file is left out (its sample then lacks
    it and is counted), and bytes after the last readable header that are not end-of-archive zeros mean
    the shard broke off there.
    """
    try:
        for info in tar:
            if info.isfile() and info.offset_data + info.size <= size:
                # webdataset keys end at the first dot of the base name: "d/k.seg.jpg" -> "d/k"
                folder, slash, base = info.name.rpartition("/")
                stem, _, ext = base.partition(".")
                samples.setdefault(folder + slash + stem, {})[ext.rpartition(".")[2].lower()] = info
            elif info.isfile():
                return BadSample(f"{shard}:{info.name}", "truncated", "member cut off at the shard's end")
    except (tarfile.TarError, OSError) as err:
        return BadSample(shard, "corrupt_shard", f"shard breaks off after byte {tar.offset} ({err})")
    if _has_data_after(shard, tar.offset):
        return BadSample(shard, "corrupt_shard", f"unreadable data after byte {tar.offset} (cut-off member?)")
    return None


def _has_data_after(path: str, offset: int) -> bool:
    """Whether anything but zero padding follows `offset` in the file."""
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(2**20):
            if chunk.strip(b"\0"):
                return True
    return False


def _read_caption(tar: tarfile.TarFile, info: tarfile.TarInfo, key: str) -> str | BadSample:
    try:
        handle = tar.extractfile(info)
        data = b"" if handle is None else handle.read()
    except (tarfile.TarError, OSError) as err:
        return BadSample(key, "truncated", f"caption member unreadable ({err})")
    return data.decode("utf-8", errors="surrogateescape")


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        handle = tar.extractfile(name)
    except KeyError as err:
        raise FileNotFoundError(f"no member {name} in shard") from err
    if handle is None:
        raise FileNotFoundError(f"member {name} is not a file")
    return handle.read()
