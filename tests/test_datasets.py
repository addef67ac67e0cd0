"""Data specs, format readers and the batching loader, on tiny fixtures written here."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.data.loader import ImageTextLoader, LoaderConfig
from clipforge.data.specs import open_data, parse_spec
from clipforge.data.transforms import Preprocess
from clipforge.errors import ConfigError, DataError
from clipforge.models.config import PreprocessConfig

# ---------------------------------------------------------------- fixtures


def image_bytes(color: tuple[int, int, int], fmt: str = "JPEG", size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A valid 1x1 PNG whose header claims 20000x20000 pixels."""
    data = bytearray(image_bytes((1, 2, 3), "PNG", (1, 1)))
    ihdr = bytearray(data[12:29])  # chunk type + 13 bytes of IHDR body
    ihdr[4:12] = struct.pack(">II", 20000, 20000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def damaged_png() -> bytes:
    """A complete PNG whose pixel data was overwritten."""
    data = bytearray(image_bytes((1, 2, 3), "PNG", (32, 32)))
    start = data.find(b"IDAT") + 8
    data[start : start + 10] = bytes(10)
    return bytes(data)


def mean_color(image: Image.Image) -> torch.Tensor:
    """A tiny transform: the mean RGB of the image, [3]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).mean(dim=(0, 1))


COLORS = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)]


@pytest.fixture
def flickr_root(tmp_path: Path) -> Path:
    root = tmp_path / "flickr"
    (root / "images").mkdir(parents=True)
    lines = ["image,caption"]
    for i, color in enumerate(COLORS):
        (root / "images" / f"im{i}.jpg").write_bytes(image_bytes(color))
        lines += [f"im{i}.jpg,A photo number {i} .", f'im{i}.jpg,"Second, with a comma {i}"']
    lines.append("im3.jpg,   ")  # an empty caption: counted, the image keeps its other two
    lines.append("im1.jpg,Commas, left unquoted")
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    (root / "train_images.txt").write_text("im0.jpg\nim1.jpg\n")
    (root / "test_images.txt").write_text("im3.jpg\nim2.jpg\n")
    return root


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    """Two good images, a 1x1 one (valid) and one of each kind of bad file."""
    root = tmp_path / "folder"
    (root / "sub").mkdir(parents=True)
    good = image_bytes((10, 20, 30))
    files = {
        "good.jpg": good,
        "sub/good.png": image_bytes((90, 80, 70), "PNG"),
        "tiny.png": image_bytes((255, 0, 0), "PNG", (1, 1)),
        "corrupt.jpg": b"this is not an image at all" * 4,
        "damaged.png": damaged_png(),
        "zero.jpg": b"",
        "truncated.jpg": image_bytes((5, 5, 5), size=(64, 64))[:300],
        "bomb.png": bomb_png(),
        "badtext.jpg": good,
        "emptytext.jpg": good,
        "notext.jpg": good,
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
        if name != "notext.jpg":
            (root / name).with_suffix(".txt").write_bytes(f"caption of {name}\n".encode())
    (root / "badtext.txt").write_bytes(b"caf\xe9 latin-1 caption\n")
    (root / "emptytext.txt").write_bytes(b"  \n\n")
    return root


def write_shard(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- specs


def test_parse_spec_splits_kind_first_and_split_last() -> None:
    spec = parse_spec("flickr8k:/data/f8k:test")
    assert (spec.kind, spec.location, spec.split) == ("flickr8k", "/data/f8k", "test")
    spec = parse_spec("csv:/a:b/file.csv")  # a ':' inside the location, no split
    assert (spec.kind, spec.location, spec.split) == ("csv", "/a:b/file.csv", None)
    spec = parse_spec("coco:/x/captions.json:/x/images")
    assert (spec.location, spec.split) == ("/x/captions.json:/x/images", None)
    assert parse_spec("synthetic:out:test_heldout").split == "test_heldout"


@pytest.mark.parametrize(
    ("spec", "culprit"),
    [
        ("imagenet:/x", "imagenet"),
        ("flickr8k", "KIND:LOCATION"),
        ("folder:", "KIND:LOCATION"),
        ("folder:/x:test", "test"),
    ],
)
def test_bad_specs_name_the_culprit(spec: str, culprit: str) -> None:
    with pytest.raises(DataError, match=culprit):
        parse_spec(spec)


def test_missing_paths_raise_one_clear_error(tmp_path: Path, flickr_root: Path) -> None:
    cases = {
        f"flickr8k:{tmp_path / 'nope'}": "captions.txt",
        f"flickr8k:{flickr_root}:dev": "dev_images.txt",
        f"csv:{tmp_path / 'x.csv'}": "x.csv",
        f"folder:{tmp_path / 'nodir'}": "nodir",
        f"webdataset:{tmp_path}/shard-{{0..1}}.tar": "shard-0.tar",
        f"coco:{tmp_path / 'c.json'}:{tmp_path}": "c.json",
        f"synthetic:{tmp_path}": "captions.csv",
    }
    for spec, culprit in cases.items():
        with pytest.raises(DataError, match=culprit):
            open_data(spec)


# ---------------------------------------------------------------- formats


def test_flickr8k_split_groups_captions_in_split_order(flickr_root: Path) -> None:
    data = open_data(f"flickr8k:{flickr_root}:test")
    records = list(data.records())
    assert [r.key for r in records] == ["im3.jpg", "im2.jpg"]
    assert records[1].captions == ("A photo number 2 .", "Second, with a comma 2")
    assert records[0].source == str(flickr_root / "images" / "im3.jpg")
    assert len(records[0].captions) == 2 and len(data) == 2
    assert data.bad.report()["empty_caption"] == 1
    assert len(open_data(f"flickr8k:{flickr_root}")) == 4


def test_coco_groups_annotations_by_image(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    coco = {
        "images": [{"id": 7, "file_name": "b.jpg"}, {"id": 3, "file_name": "a.jpg"}],
        "annotations": [
            {"image_id": 3, "id": 1, "caption": "first of a"},
            {"image_id": 7, "id": 2, "caption": "only b\n"},
            {"image_id": 3, "id": 3, "caption": "second of a"},
        ],
    }
    (tmp_path / "cap.json").write_text(json.dumps(coco))
    records = list(open_data(f"coco:{tmp_path / 'cap.json'}:{tmp_path / 'img'}").records())
    assert [(r.key, r.captions) for r in records] == [
        ("b.jpg", ("only b",)),
        ("a.jpg", ("first of a", "second of a")),
    ]
    assert records[0].source == str(tmp_path / "img" / "b.jpg")


@pytest.mark.parametrize("sep", [",", "\t"])
def test_csv_comma_and_tab(tmp_path: Path, sep: str) -> None:
    rows = [
        ["filepath", "title"],
        ["x/1.jpg", "one"],
        ["/abs/2.jpg", "two"],
        [],
        ["3.jpg"],
        ["x/1.jpg", "uno"],
    ]
    (tmp_path / "d.csv").write_text("\n".join(sep.join(r) for r in rows) + "\n")
    data = open_data(f"csv:{tmp_path / 'd.csv'}")
    records = list(data.records())
    assert (
        data.bad.summary()
        == "skipped 1 bad samples: empty_caption=1 (first: d.csv:row4: only 1 of 2 columns)"
    )
    assert [(r.key, r.source, r.captions) for r in records] == [
        ("x/1.jpg", str(tmp_path / "x/1.jpg"), ("one", "uno")),
        ("/abs/2.jpg", "/abs/2.jpg", ("two",)),
    ]


def test_csv_columns_are_configurable_and_checked(tmp_path: Path) -> None:
    (tmp_path / "d.tsv").write_text("path\ttext\nimg.png\thello world\n")
    records = list(open_data(f"csv:{tmp_path / 'd.tsv'}", image_key="path", caption_key="text").records())
    assert records[0].captions == ("hello world",)
    with pytest.raises(DataError, match="no column 'filepath'"):
        list(open_data(f"csv:{tmp_path / 'd.tsv'}").records())


def test_synthetic_reads_its_split(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "captions.csv").write_text(
        "filepath,caption,split\nimages/0.png,a red circle,train\nimages/1.png,a blue square,test\n"
        "images/2.png,a green star,test_heldout\n"
    )
    test = list(open_data(f"synthetic:{tmp_path}:test").records())
    assert [(r.source, r.captions) for r in test] == [(str(tmp_path / "images/1.png"), ("a blue square",))]
    assert len(open_data(f"synthetic:{tmp_path}")) == 3
    assert len(open_data(f"synthetic:{tmp_path}:test_heldout")) == 1


def test_folder_reads_nested_images_and_counts_caption_problems(bad_folder: Path) -> None:
    data = open_data(f"folder:{bad_folder}")
    records = {r.key: r for r in data.records()}
    assert "sub/good.png" in records and records["good.jpg"].captions == ("caption of good.jpg",)
    assert {"badtext.jpg", "emptytext.jpg", "notext.jpg"}.isdisjoint(records)
    assert len(records) == 8
    report = data.bad.report()
    assert (report["undecodable_caption"], report["empty_caption"], report["missing_file"]) == (1, 1, 1)


def test_webdataset_shards(tmp_path: Path) -> None:
    images = {f"{s}{i}": image_bytes(COLORS[i], "PNG" if i else "JPEG") for s in "ab" for i in range(2)}
    for shard in "ab":
        members: dict[str, bytes] = {}
        for i in range(2):
            ext = "png" if i else "jpg"
            members[f"{shard}{i}.{ext}"] = images[f"{shard}{i}"]
            members[f"{shard}{i}.txt"] = f"caption {shard}{i}".encode()
        members[f"{shard}9.txt"] = b"\xff\xfe not utf-8"
        members[f"sub.d/{shard}8.seg.jpg"] = images["a0"]
        members[f"sub.d/{shard}8.seg.txt"] = b"nested caption"
        members[f"{shard}9.jpg"] = images["a0"]
        write_shard(tmp_path / f"shard-{shard}.tar", members)
    data = open_data(f"webdataset:{tmp_path}/shard-{{a,b}}.tar")
    records = list(data.records())
    keys = [r.key.rpartition(":")[2] for r in records]
    assert keys == ["a0", "a1", "sub.d/a8", "b0", "b1", "sub.d/b8"]
    assert [r.captions[0] for r in records[:3]] == ["caption a0", "caption a1", "nested caption"]
    assert records[4].source == f"{tmp_path}/shard-b.tar:b1.png"
    assert all(
        data.read_bytes(r) == images[r.captions[0][-2:]] for r in records if "nested" not in r.captions[0]
    )
    assert open_data(f"webdataset:{tmp_path}/shard-*.tar").read_bytes(records[3]) == images["b0"]
    assert data.bad.report()["undecodable_caption"] == 2


def test_corrupt_shard_is_counted_not_fatal(tmp_path: Path) -> None:
    write_shard(tmp_path / "s0.tar", {"k.jpg": image_bytes(COLORS[0]), "k.txt": b"fine"})
    (tmp_path / "s1.tar").write_bytes(b"\x00garbage" * 100)
    data = open_data(f"webdataset:{tmp_path}/s{{0..1}}.tar")
    assert len(data) == 1 and data.bad.report()["corrupt_shard"] == 1


# ---------------------------------------------------------------- loader


def test_bad_images_are_skipped_counted_and_reported(bad_folder: Path) -> None:
    data = open_data(f"folder:{bad_folder}")
    loader = ImageTextLoader(data, mean_color, LoaderConfig(mode="images", batch_size=3))
    threads = torch.get_num_threads()
    batches = list(loader.epoch())
    assert torch.get_num_threads() == threads
    keys = [k for b in batches for k in b.keys]
    assert keys == ["good.jpg", "sub/good.png", "tiny.png"]
    tiny = batches[-1]
    assert tiny.sizes[-1] == (1, 1) and torch.equal(tiny.images[-1], torch.tensor([255.0, 0.0, 0.0]))
    assert data.bad.report() == {
        "corrupt_image": 2,
        "zero_bytes": 1,
        "truncated": 1,
        "too_large": 1,
        "empty_caption": 1,
        "undecodable_caption": 1,
        "missing_file": 1,
        "corrupt_shard": 0,
        "malformed_row": 0,
    }
    assert data.bad.summary().startswith("skipped 8 bad samples: corrupt_image=2, zero_bytes=1")
    assert loader.position == 8
    list(loader.epoch(epoch=1))  # meeting them again next epoch does not count them twice
    assert data.bad.total == 8


def test_one_by_one_image_survives_clip_preprocessing(bad_folder: Path) -> None:
    data = open_data(f"folder:{bad_folder}")
    loader = ImageTextLoader(data, Preprocess(PreprocessConfig(image_size=32)), LoaderConfig(mode="images"))
    (batch,) = loader.epoch()
    assert batch.images.shape == (3, 3, 32, 32) and batch.keys[2] == "tiny.png"


def test_samples_carry_content_hash_and_captions(flickr_root: Path) -> None:
    data = open_data(f"flickr8k:{flickr_root}")
    (batch,) = ImageTextLoader(data, mean_color, LoaderConfig(mode="images", batch_size=8)).epoch()
    assert batch.sha1s[0] == hashlib.sha1((flickr_root / "images/im0.jpg").read_bytes()).hexdigest()
    assert batch.sizes[0] == (24, 16) and len(batch.texts) == 9
    assert batch.text_to_image.tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert batch.images[2].argmax().item() == 2  # im2 is blue


def _pairs(loader: ImageTextLoader, epoch: int = 0, start: int = 0) -> list[tuple[str, str]]:
    return [(k, c[0]) for b in loader.epoch(epoch, start) for k, c in zip(b.keys, b.captions, strict=True)]


def test_pairs_order_is_seeded_worker_independent_and_resumable(flickr_root: Path) -> None:
    data = open_data(f"flickr8k:{flickr_root}")
    config = LoaderConfig(mode="pairs", batch_size=3, shuffle=True, seed=5)
    loader = ImageTextLoader(data, mean_color, config)
    first = _pairs(loader)
    assert len(loader) == 9 and len(list(loader.epoch())) == 3 and len(first) == 9
    assert ("im1.jpg", "Commas, left unquoted") in first
    assert sorted(first) == sorted((r.key, c) for r in loader.records for c in r.captions)
    assert first == _pairs(ImageTextLoader(data, mean_color, config))
    assert first != _pairs(loader, epoch=1)
    assert first[5:] == _pairs(loader, start=5) and loader.position == 9
    workers = ImageTextLoader(data, mean_color, LoaderConfig("pairs", 3, num_workers=2, shuffle=True, seed=5))
    assert _pairs(workers) == first
    unshuffled = _pairs(ImageTextLoader(data, mean_color, LoaderConfig(mode="pairs", batch_size=3)))
    assert unshuffled[:2] == [("im0.jpg", "A photo number 0 ."), ("im0.jpg", "Second, with a comma 0")]


def test_workers_count_bad_samples_in_the_main_process(bad_folder: Path) -> None:
    data = open_data(f"folder:{bad_folder}")
    loader = ImageTextLoader(data, mean_color, LoaderConfig(mode="images", batch_size=2, num_workers=2))
    keys = [k for b in loader.epoch() for k in b.keys]
    assert keys == ["good.jpg", "sub/good.png", "tiny.png"] and data.bad.total == 8


def test_loader_config_and_empty_data_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode 'triples'"):
        LoaderConfig(mode="triples")
    (tmp_path / "d.csv").write_text("filepath,title\na.jpg,\n")
    with pytest.raises(DataError, match="no usable samples.*empty_caption=1"):
        ImageTextLoader(open_data(f"csv:{tmp_path / 'd.csv'}"), mean_color, LoaderConfig())


# ---------------------------------------------------------------- real data


@pytest.mark.flickr8k
def test_real_flickr8k_test_split(flickr8k_root: Path) -> None:
    data = open_data(f"flickr8k:{flickr8k_root}:test")
    records = list(data.records())
    assert len(records) == 1000 and sum(len(r.captions) for r in records) == 5000
    assert data.bad.total == 0
    loader = ImageTextLoader(data, mean_color, LoaderConfig(mode="images", batch_size=16, num_workers=2))
    batch = next(iter(loader.epoch()))
    assert batch.sizes[0] == (224, 224) and len(batch.texts) == 80 and not batch.bad
