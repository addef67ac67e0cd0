"""Readers never lose good samples silently (issue 9, item 3); each test fails on main (stated per test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clipforge.data.loader import ImageTextLoader, LoaderConfig
from clipforge.data.specs import open_data
from clipforge.errors import DataError
from test_datasets import COLORS, image_bytes, mean_color, write_shard


def shard_with(tmp_path: Path, n: int) -> tuple[Path, int]:
    """A shard of `n` samples; returns its path and the offset where the last member's data starts."""
    members: dict[str, bytes] = {}
    for i in range(n):
        members[f"k{i}.txt"] = f"caption {i}".encode()
        members[f"k{i}.png"] = image_bytes(COLORS[i % 4], "PNG")
    path = tmp_path / "s.tar"
    write_shard(path, members)
    import tarfile

    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    return path, last.offset_data


@pytest.mark.parametrize("cut", ["mid-data", "mid-header"])
def test_truncated_shard_keeps_its_complete_samples(tmp_path: Path, cut: str) -> None:
    """Main: a cut caption member raised inside the shard loop, so all 4 samples were lost as one
    corrupt_shard; a cut header was dropped without a count."""
    path, data_start = shard_with(tmp_path, 4)
    raw = path.read_bytes()
    # mid-data: the last image's bytes stop half-way; mid-header: the file ends inside the last header.
    end = data_start + 40 if cut == "mid-data" else data_start - 512 + 100
    path.write_bytes(raw[:end])
    data = open_data(f"webdataset:{path}")
    keys = [r.key.rpartition(":")[2] for r in data.records()]
    assert keys == ["k0", "k1", "k2"]
    assert data.bad.total == 2  # the broken member (or tail) and the sample left without its image
    report = data.bad.report()
    assert report["truncated" if cut == "mid-data" else "corrupt_shard"] == 1


def test_truncated_caption_member_loses_only_its_sample(tmp_path: Path) -> None:
    members = {"a.png": image_bytes(COLORS[0], "PNG"), "a.txt": b"first",
               "b.png": image_bytes(COLORS[1], "PNG"), "b.txt": b"second caption " * 40}
    write_shard(tmp_path / "s.tar", members)
    raw = (tmp_path / "s.tar").read_bytes()
    (tmp_path / "s.tar").write_bytes(raw[: raw.find(b"second caption") + 20])
    data = open_data(f"webdataset:{tmp_path}/s.tar")
    assert [r.captions for r in data.records()] == [("first",)]
    assert data.bad.report()["truncated"] == 1


def write_csv(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    for i in range(4):
        (tmp_path / f"im{i}.jpg").write_bytes(image_bytes(COLORS[i]))
    path = tmp_path / "data.csv"
    path.write_text(text, encoding=encoding)
    return path


def test_unterminated_quote_does_not_merge_rows(tmp_path: Path) -> None:
    """Main: the row with the stray quote swallowed the 2 rows after it into its caption, silently."""
    path = write_csv(tmp_path, 'filepath,title\nim0.jpg,"a red square\nim1.jpg,a green one\nim2.jpg,blue\n')
    data = open_data(f"csv:{path}")
    records = {r.key: r.captions for r in data.records()}
    assert records == {"im1.jpg": ("a green one",), "im2.jpg": ("blue",)}
    assert data.bad.report()["malformed_row"] == 1
    assert "line2" in data.bad.examples["malformed_row"].key


def test_bom_and_huge_field(tmp_path: Path) -> None:
    """Main: the BOM made the header 'ufefffilepath' (no column 'filepath'); a 200 KB field was a raw
    _csv.Error that aborted the listing."""
    text = "filepath,title\nim0.jpg,first\nim1.jpg," + "x" * 200_000 + "\nim2.jpg,third\n"
    data = open_data(f"csv:{write_csv(tmp_path, text, 'utf-8-sig')}")
    assert [r.key for r in data.records()] == ["im0.jpg", "im2.jpg"]
    assert data.bad.report()["malformed_row"] == 1


def test_coco_bad_entries_are_skipped_and_counted(tmp_path: Path) -> None:
    """Main: a null or integer caption and a null file_name were raw TypeErrors; one dangling image_id
    rejected the whole file."""
    (tmp_path / "img").mkdir()
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": None}, {"id": 3, "file_name": "c.jpg"}]
    annotations = [
        {"image_id": 1, "caption": "a cat"},
        {"image_id": 1, "caption": None},
        {"image_id": 3, "caption": 42},
        {"image_id": 3, "caption": "a dog"},
        {"image_id": 99, "caption": "dangling"},
        {"image_id": 2, "caption": "no file"},
    ]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    data = open_data(f"coco:{path}:{tmp_path / 'img'}")
    assert {r.key: r.captions for r in data.records()} == {"a.jpg": ("a cat",), "c.jpg": ("a dog",)}
    report = data.bad.report()
    assert (report["empty_caption"], report["malformed_row"]) == (1, 4)


def test_coco_that_is_not_coco_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "c.json").write_text("[1, 2, 3]")
    with pytest.raises(DataError, match="not a COCO captions file"):
        list(open_data(f"coco:{tmp_path / 'c.json'}:{tmp_path / 'img'}").records())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_among_images_is_counted_not_hung(tmp_path: Path) -> None:
    """Main: reading the FIFO blocked forever (no writer ever comes)."""
    (tmp_path / "good.jpg").write_bytes(image_bytes(COLORS[0]))
    os.mkfifo(tmp_path / "pipe.jpg")
    for name in ("good", "pipe"):
        (tmp_path / f"{name}.txt").write_text(f"caption of {name}")
    data = open_data(f"folder:{tmp_path}")
    batches = list(ImageTextLoader(data, mean_color, LoaderConfig(mode="images")).epoch())
    assert [k for b in batches for k in b.keys] == ["good.jpg"]
    assert data.bad.report()["missing_file"] == 1
    assert "FIFO" in data.bad.examples["missing_file"].detail


def test_flickr8k_unknown_split_names_the_allowed_ones(tmp_path: Path) -> None:
    """Main: 'flickr8k:ROOT:testing' blamed the path ('captions file not found: ROOT:testing/...')."""
    (tmp_path / "captions.txt").write_text("image,caption\n")
    with pytest.raises(DataError, match=r"unknown split 'testing'.*\(splits: train, dev, val, test"):
        open_data(f"flickr8k:{tmp_path}:testing")
