"""Crafted hostile inputs (issue 9): checkpoints and configs, images and special files, reader inputs.

Every case is built here, in a temporary folder, and run through the entry point a user would hit
(`clipforge.load`, `register_model`, the training config reader, `load_image` + preprocessing, the
data readers). What counts:

- checkpoints/configs: a clean refusal (a one-line ClipforgeError) or a load, never a raw traceback,
  never code execution (payloads `touch` a marker file), peak RSS under a stated bound;
- images and special files: decoded or refused with an ImageError (a counted skip), never an abort or a
  hang; a folder of all of them goes through the loader in one run;
- readers: every good sample listed, every bad one counted (silent losses = samples neither listed nor
  counted, and good samples lost).

Run: python benchmarks/fuzz_inputs.py [--write]   (each case runs in a forked child: its peak RSS is
measured with wait4, and a child that runs past 120 s counts as a hang). `tests/test_hostile_inputs.py`
runs the same corpus in-process.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch
from PIL import Image
from safetensors.torch import save_file

from clipforge.checkpoint import load_model, save
from clipforge.data.loader import ImageTextLoader, LoaderConfig
from clipforge.data.specs import open_data
from clipforge.data.transforms import Preprocess, load_image
from clipforge.errors import ClipforgeError
from clipforge.models import create_model, register_model
from clipforge.models.config import PreprocessConfig
from clipforge.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
RSS_BOUND_MB = 1536
HANG_SECONDS = 120


@dataclass(frozen=True)
class Case:
    """One crafted input and the call that takes it.

    Attributes:
        group: ``checkpoint``, ``image`` or ``reader``.
        name: what is crafted.
        run: the call under test; for readers it returns (listed, counted bad).
        expect: ``refuse`` or ``accept`` for checkpoints and images; for readers, the number of good samples.
        total: readers only: how many samples the input holds (good + bad).
    """

    group: str
    name: str
    run: Callable[[], Any]
    expect: str | int
    total: int = 0


@dataclass(frozen=True)
class Outcome:
    """What a case did: ``accepted``, ``refused`` (a ClipforgeError) or ``traceback`` (anything else)."""

    case: Case
    result: str
    detail: str
    listed: int = 0
    counted: int = 0

    @property
    def ok(self) -> bool:
        if self.case.group == "reader":
            return self.result == "accepted" and self.listed == self.case.expect and self.silent_losses == 0
        if self.result == "traceback" or "\n" in self.detail:
            return False
        if self.case.group == "image":
            return self.result == ("accepted" if self.case.expect == "accept" else "refused")
        return self.result == ("accepted" if self.case.expect == "accept" else "refused")

    @property
    def silent_losses(self) -> int:
        """Samples neither listed nor counted, plus good samples not listed (readers)."""
        if self.case.group != "reader":
            return 0
        assert isinstance(self.case.expect, int)
        return max(self.case.total - self.listed - self.counted, 0) + max(self.case.expect - self.listed, 0)


def run_case(case: Case) -> Outcome:
    """Runs one case in this process and classifies what happened."""
    try:
        value = case.run()
    except ClipforgeError as err:
        return Outcome(case, "refused", str(err))
    except Exception as err:  # noqa: BLE001 - a raw exception is exactly what this corpus looks for
        return Outcome(case, "traceback", f"{type(err).__name__}: {err}"[:300])
    if case.group == "reader":
        listed, counted = value
        return Outcome(case, "accepted", "", listed, counted)
    return Outcome(case, "accepted", "")


# ------------------------------------------------------------------------------------------- pickles


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(value: int) -> bytes:
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0) -> bytes:
    """A `_rebuild_tensor_v2` call on persistent storage `key` (float32), as TorchScript pickles them."""
    storage = _tuple(_s("storage"), _global("torch", "FloatStorage"), _s(key), _s("cpu"), _i(numel)) + b"Q"
    hooks = _global("collections", "OrderedDict") + b")R"
    args = _tuple(storage, _i(offset), _tuple(*map(_i, size)), _tuple(*map(_i, stride)), b"\x89", hooks)
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _module(attributes: dict[str, bytes], memo: int | None = None) -> bytes:
    """A `__torch__` module object whose state is `attributes` (memoized at `memo` when given)."""
    put = b"" if memo is None else b"q" + bytes([memo])
    items = b"".join(_s(k) + v for k, v in attributes.items())
    return _global("__torch__.model", "Model") + b")\x81" + put + b"}(" + items + b"ub"


def _pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _torchscript(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("model/data.pkl", data_pkl)
        archive.writestr("model/constants.pkl", _pickle(b")"))
        archive.writestr("model/byteorder", b"little")
        for key, raw in (storages or {}).items():
            archive.writestr(f"model/data/{key}", raw)
    return path


def _system(marker: Path) -> bytes:
    """A pickle that runs `touch marker` when unpickled by an unrestricted unpickler."""
    return _pickle(
        _global("posix" if os.name == "posix" else "nt", "system") + _tuple(_s(f"touch {marker}")) + b"R"
    )


# --------------------------------------------------------------------------------------- checkpoints


def _folder(root: Path, name: str, mutate: Callable[[dict[str, Any]], Any]) -> Path:
    """A copy of the base clipforge folder whose config.json `mutate` changed (or replaced, if it returns)."""
    base = root / "base"
    folder = root / name
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(base / "model.safetensors")
    meta = json.loads((base / "config.json").read_text())
    changed = mutate(meta)
    (folder / "config.json").write_text(json.dumps(meta if changed is None else changed))
    return folder


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting `model.<path>` (dotted) to `value`."""

    def mutate(meta: dict[str, Any]) -> None:
        node = meta["model"]
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value

    return mutate


CONFIG_MUTATIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "config is a JSON list": lambda meta: [meta],
    "config is a JSON string": lambda meta: "clipforge",
    "preprocess is a list": _set("preprocess", [1, 2, 3]),
    "negative width": _set("vision.width", -32),
    "heads = 0": _set("vision.heads", 0),
    "heads do not divide width": _set("text.heads", 3),
    "std = [0, 0, 0]": _set("preprocess.std", [0, 0, 0]),
    "mean of length 1": _set("preprocess.mean", [0.5]),
    "unknown tokenizer type": _set("tokenizer.type", "sentencepiece"),
    "width 1e7": _set("vision.width", 10_000_000),
    "vocab 1e9": _set("text.vocab_size", 1_000_000_000),
    "embed 1e8": _set("embed_dim", 100_000_000),
    "image_size 1e5": _set("vision.image_size", 100_000),
    "layers 1e6": _set("text.layers", 1_000_000),
    "mlp_ratio NaN": _set("vision.mlp_ratio", float("nan")),
    "eps = 0": _set("text.eps", 0.0),
    "embed_dim is a string": _set("embed_dim", "16"),
    "embed_dim is a bool": _set("embed_dim", True),
    "unknown key": _set("vision.dropout", 0.5),
    "unknown tower type": _set("vision.type", "swin"),
    "context_length 1": _set("text.context_length", 1),
    "tokenizer longer than the text tower": _set("tokenizer.context_length", 64),
    "activation unknown": _set("text.act", "relu6"),
    "preprocess size differs from the tower": _set("preprocess.image_size", 64),
    "model is null": lambda meta: {**meta, "model": None},
}


def checkpoint_cases(root: Path, marker: Path) -> list[Case]:
    """≥ 40 crafted checkpoints and configs; `marker` is created only if some payload runs."""
    base = root / "base"
    save(create_model("tiny-vit"), base)
    cases = [
        Case("checkpoint", f"config: {name}", _loader(_folder(root, f"cfg{i}", mutate)), "refuse")
        for i, (name, mutate) in enumerate(CONFIG_MUTATIONS.items())
    ]
    return cases + _file_cases(root, marker) + _archive_cases(root, marker) + _other_format_cases(root)


def _loader(path: Path) -> Callable[[], Any]:
    return lambda: load_model(path)


def _raw_config(root: Path, name: str, data: bytes | None = None, special: str = "") -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(root / "base" / "model.safetensors")
    config = folder / "config.json"
    if special == "dir":
        config.mkdir()
    elif special == "loop":
        (folder / "loop2").symlink_to(config)
        config.symlink_to(folder / "loop2")
    elif special == "fifo":
        os.mkfifo(config)
    elif special == "devzero":
        config.symlink_to("/dev/zero")
    else:
        config.write_bytes(data or b"")
    return folder


def _file_cases(root: Path, marker: Path) -> list[Case]:
    deep = b"[" * 100_000 + b"]" * 100_000
    specs = {
        "config.json nested 100k deep": (deep, ""),
        "config.json is a directory": (None, "dir"),
        "config.json is a symlink loop": (None, "loop"),
        "config.json is /dev/zero": (None, "devzero"),
        "config.json is empty": (b"", ""),
        "config.json is not UTF-8": (b'{"format": "\xff\xfe"}', ""),
        "config.json over 16 MiB": (b"{" + b" " * (17 * 2**20) + b"}", ""),
    }
    if hasattr(os, "mkfifo"):
        specs["config.json is a FIFO"] = (None, "fifo")
    cases = [
        Case("checkpoint", name, _loader(_raw_config(root, f"raw{i}", data, special)), "refuse")
        for i, (name, (data, special)) in enumerate(specs.items())
    ]
    weights = root / "weights"
    weights.mkdir()
    good = (root / "base" / "model.safetensors").read_bytes()
    variants = {
        "safetensors truncated": good[: len(good) // 2],
        "safetensors header claims 10^10 floats": _safetensors_header(
            {"w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40_000_000_000]}}
        ),
        "safetensors header length 2^60": struct.pack("<Q", 2**60) + b"{}",
        "safetensors of another architecture": _other_weights(root),
    }
    for i, (name, data) in enumerate(variants.items()):
        folder = root / f"w{i}"
        folder.mkdir()
        (folder / "config.json").symlink_to(root / "base" / "config.json")
        (folder / "model.safetensors").write_bytes(data)
        cases.append(Case("checkpoint", name, _loader(folder), "refuse"))
    cases.append(Case("checkpoint", "train TOML is a directory", lambda: load_config(weights), "refuse"))
    bad_toml = root / "bad.toml"
    bad_toml.write_text("[train]\nsteps = -5\n")
    cases.append(
        Case("checkpoint", "train TOML with negative steps", lambda: load_config(bad_toml), "refuse")
    )
    heads = root / "heads0.json"
    heads.write_text(
        json.dumps({"embed_dim": 8, "vision": {"type": "vit", "heads": 0}, "text": {"type": "transformer"}})
    )
    cases.append(
        Case("checkpoint", "registered config with heads 0", lambda: register_model("x", heads), "refuse")
    )
    return cases


def _safetensors_header(header: dict[str, Any]) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * 64


def _other_weights(root: Path) -> bytes:
    path = root / "other.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("tiny-convnet").state_dict().items()}, path)
    return path.read_bytes()


def _archive_cases(root: Path, marker: Path) -> list[Case]:
    files = root / "pt"
    files.mkdir()
    cases = []

    def add(name: str, path: Path) -> None:
        cases.append(Case("checkpoint", name, _loader(path), "refuse"))

    add("TorchScript zip bomb (1.5 MB deflating to 1 GiB)", _zip_bomb(files / "bomb.pt"))
    floats = struct.pack("<4f", 1, 2, 3, 4)
    add(
        "TorchScript tensor past its storage",
        _torchscript(files / "oob.pt", _pickle(_module({"w": _tensor("0", 4, (10,), (1,))})), {"0": floats}),
    )
    add(
        "TorchScript negative stride",
        _torchscript(files / "neg.pt", _pickle(_module({"w": _tensor("0", 4, (2,), (-1,))})), {"0": floats}),
    )
    add(
        "TorchScript calls a storage type",
        _torchscript(
            files / "call.pt", _pickle(_module({"w": _global("torch", "FloatStorage") + b")R"})), {}
        ),
    )
    add(
        "TorchScript missing storage entry",
        _torchscript(
            files / "missing.pt", _pickle(_module({"w": _tensor("7", 4, (4,), (1,))})), {"0": floats}
        ),
    )
    add(
        "TorchScript storage of 3 bytes",
        _torchscript(files / "odd.pt", _pickle(_module({"w": _tensor("0", 1, (1,), (1,))})), {"0": b"abc"}),
    )
    cyclic = _module({"self": b"h\x01"}, memo=1)
    add("TorchScript cyclic module tree", _torchscript(files / "cycle.pt", _pickle(cyclic)))
    deep = b"".join(_global("__torch__.model", "M") + b")\x81}(" + _s("child") for _ in range(200))
    deep += _module({}) + b"ub" * 200
    add("TorchScript modules nested 200 deep", _torchscript(files / "deep.pt", _pickle(deep)))
    add("TorchScript payload runs os.system", _torchscript(files / "evil_ts.pt", _system(marker)))
    with zipfile.ZipFile(files / "evil_zip.pt", "w") as archive:
        archive.writestr("archive/data.pkl", _system(marker))
        archive.writestr("archive/version", b"3\n")
    add("torch.save zip payload runs os.system", files / "evil_zip.pt")
    (files / "evil_legacy.pt").write_bytes(_system(marker))
    add("legacy pickle payload runs os.system", files / "evil_legacy.pt")
    (files / "garbage.pt").write_bytes(os.urandom(4096))
    add("random bytes as .pt", files / "garbage.pt")
    (files / "empty.pt").write_bytes(b"")
    add("empty .pt", files / "empty.pt")
    torch.save([1, 2, 3], files / "list.pt")
    add("torch.save of a list", files / "list.pt")
    zero_d = {key: torch.tensor(1.0) for key in ("visual.conv1.weight", "visual.proj", "ln_final.weight")}
    torch.save(zero_d, files / "shapes.pt")
    add("state dict with 0-d tensors where shapes are read", files / "shapes.pt")
    if hasattr(os, "mkfifo"):
        os.mkfifo(files / "fifo.pt")
        add(".pt that is a FIFO", files / "fifo.pt")
    return cases


def _zip_bomb(path: Path) -> Path:
    """A TorchScript-looking archive whose one storage entry deflates from ~1.5 MB to 1 GiB of zeros."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", _pickle(_module({"w": _tensor("0", 2**28, (2**28,), (1,))})))
        archive.writestr("model/constants.pkl", _pickle(b")"))
        info = zipfile.ZipInfo("model/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as entry:
            chunk = bytes(2**24)
            for _ in range(64):
                entry.write(chunk)
    return path


def _other_format_cases(root: Path) -> list[Case]:
    cases = []
    for name, config in {
        "HF text_config is a list": {"text_config": [1], "vision_config": {}},
        "HF hidden_act gelu_new": {"text_config": {"hidden_act": "gelu_new"}, "vision_config": {}},
        "HF intermediate_size is a string": {
            "text_config": {"intermediate_size": "2048"},
            "vision_config": {},
        },
        "HF resample is a list": {"text_config": {}, "vision_config": {}, "_processor": {"resample": [3]}},
    }.items():
        folder = root / f"hf-{len(cases)}"
        folder.mkdir()
        processor = config.pop("_processor", None)
        (folder / "config.json").write_text(json.dumps(config))
        if processor is not None:
            (folder / "preprocessor_config.json").write_text(json.dumps(processor))
        cases.append(Case("checkpoint", name, _loader(folder), "refuse"))
    for name, meta in {
        "open_clip model_cfg is a list": {"model_cfg": [1]},
        "open_clip timm tower": {
            "model_cfg": {"embed_dim": 8, "vision_cfg": {"timm_model_name": "vit"}, "text_cfg": {}}
        },
    }.items():
        folder = root / f"oc-{len(cases)}"
        folder.mkdir()
        (folder / "open_clip_config.json").write_text(json.dumps(meta))
        cases.append(Case("checkpoint", name, _loader(folder), "refuse"))
    cases.append(
        Case("checkpoint", "control: the untouched base folder loads", _loader(root / "base"), "accept")
    )
    return cases


# -------------------------------------------------------------------------------------------- images


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims width x height (checksum fixed)."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_text_bomb() -> bytes:
    """A PNG with a zTXt chunk that inflates to 64 MiB."""
    png = _encode(Image.new("RGB", (8, 8)), "PNG")
    body = b"Comment\0\0" + zlib.compress(bytes(64 * 2**20), 9)
    return png[:33] + _png_chunk(b"zTXt", body) + png[33:]


def _gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encode(Image.new("RGB", (8, 8)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def image_payloads() -> dict[str, tuple[bytes, str]]:
    """Crafted image files: name -> (bytes, expected outcome: accept or refuse)."""
    rgb = Image.new("RGB", (40, 30), (200, 30, 30))
    frames = [Image.new("P", (16, 16), i) for i in range(300)]
    animated = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    cmyk = _encode(Image.new("CMYK", (16, 16), (10, 20, 30, 40)), "JPEG")
    truncated_jpeg = _encode(Image.new("RGB", (64, 64), (5, 5, 5)), "JPEG")[:300]
    png = _encode(rgb, "PNG")
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF
    return {
        "jpeg": (_encode(rgb, "JPEG"), "accept"),
        "progressive jpeg": (_encode(rgb, "JPEG", progressive=True), "accept"),
        "png": (png, "accept"),
        "gif": (_encode(rgb.convert("P"), "GIF"), "accept"),
        "bmp": (_encode(rgb, "BMP"), "accept"),
        "webp": (_encode(rgb, "WEBP"), "accept"),
        "tiff": (_encode(rgb, "TIFF"), "accept"),
        "cmyk jpeg": (cmyk, "accept"),
        "16-bit grayscale png": (_encode(Image.new("I;16", (16, 16), 40000), "PNG"), "accept"),
        "32-bit float tiff": (_encode(Image.new("F", (16, 16), 3.5), "TIFF"), "accept"),
        "1-bit png": (_encode(Image.new("1", (16, 16), 1), "PNG"), "accept"),
        "palette with transparency": (_encode(Image.new("P", (16, 16)), "PNG", transparency=0), "accept"),
        "LA png": (_encode(Image.new("LA", (16, 16)), "PNG"), "accept"),
        "1x1 png": (_encode(Image.new("RGB", (1, 1)), "PNG"), "accept"),
        "100x1 strip (the ratio limit)": (_encode(Image.new("L", (100, 1)), "PNG"), "accept"),
        "300-frame gif": (animated, "accept"),
        "ico": (_encode(Image.new("RGBA", (32, 32)), "ICO"), "accept"),
        "2,000,000 x 1 png": (_encode(Image.new("L", (2_000_000, 1)), "PNG"), "refuse"),
        "1 x 100,000 png": (_encode(Image.new("L", (1, 100_000)), "PNG"), "refuse"),
        "101 x 1 png": (_encode(Image.new("L", (101, 1)), "PNG"), "refuse"),
        "png header claims 20000 x 20000": (_png_with_size(20000, 20000), "refuse"),
        "png header claims 0 x 0": (_png_with_size(0, 0), "refuse"),
        "png header claims 2^31 x 1": (_png_with_size(2**31 - 1, 1), "refuse"),
        "gif header claims 65535 x 65535": (_gif_claiming(65535, 65535), "refuse"),
        "jpeg header claims 65500 x 65500": (_jpeg_claiming(65500, 65500), "refuse"),
        "png zTXt chunk inflating to 64 MiB": (_png_text_bomb(), "refuse"),
        "png with a bad checksum": (bytes(bad_crc), "refuse"),
        "truncated jpeg": (truncated_jpeg, "refuse"),
        "truncated png": (png[: len(png) // 2], "refuse"),
        "truncated webp": (_encode(rgb, "WEBP")[:40], "refuse"),
        "zero bytes": (b"", "refuse"),
        "random bytes": (os.urandom(2048), "refuse"),
        "html named .jpg": (b"<html><body>not an image</body></html>", "refuse"),
        "svg": (b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", "refuse"),
        "zip named .png": (_encode(rgb, "PNG")[:8] + b"PK\x03\x04" + os.urandom(64), "refuse"),
    }


def _special_files(folder: Path) -> dict[str, Path]:
    """FIFOs, devices, directories, symlink loops and sockets named like images."""
    specials = {
        "directory named x.jpg": folder / "dir.jpg",
        "symlink loop": folder / "loop.jpg",
        "dangling symlink": folder / "dangling.jpg",
        "/dev/zero": folder / "zero-dev.jpg",
        "/dev/null": folder / "null-dev.jpg",
        "unix socket": folder / "sock.jpg",
    }
    specials["directory named x.jpg"].mkdir()
    (folder / "loop2.jpg").symlink_to(specials["symlink loop"])
    specials["symlink loop"].symlink_to(folder / "loop2.jpg")
    specials["dangling symlink"].symlink_to(folder / "nowhere.jpg")
    specials["/dev/zero"].symlink_to("/dev/zero")
    specials["/dev/null"].symlink_to("/dev/null")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(specials["unix socket"]))
    server.close()
    if hasattr(os, "mkfifo"):
        specials["FIFO"] = folder / "fifo.jpg"
        os.mkfifo(specials["FIFO"])
    return specials


def image_cases(root: Path) -> list[Case]:
    """≥ 35 crafted images plus special files, each through load_image and 224-px preprocessing, and all
    of them at once through the loader (a run that must not abort)."""
    folder = root / "images"
    folder.mkdir()
    preprocess = Preprocess(PreprocessConfig(image_size=224))
    cases = []
    payloads = image_payloads()
    for i, (name, (data, expect)) in enumerate(payloads.items()):
        path = folder / f"img{i:02d}.png"  # decoders go by content, not by extension
        path.write_bytes(data)
        cases.append(Case("image", name, _decoder(path, preprocess), expect))
    for name, path in _special_files(folder).items():
        cases.append(Case("image", f"special file: {name}", _decoder(path, preprocess), "refuse"))
    for path in list(folder.iterdir()):
        path.with_suffix(".txt").write_text("a caption")
    good = sum(expect == "accept" for _, expect in payloads.values())
    cases.append(
        Case("image", "the whole folder through the loader", lambda: _load_folder(folder, good), "accept")
    )
    return cases


def _decoder(path: Path, preprocess: Preprocess) -> Callable[[], Any]:
    return lambda: preprocess(load_image(path))


def _load_folder(folder: Path, good: int) -> int:
    """One epoch over every crafted image and special file: the run must not abort, and exactly the good
    images must come out (the rest are counted)."""
    data = open_data(f"folder:{folder}")
    loader = ImageTextLoader(data, Preprocess(PreprocessConfig(image_size=64)), LoaderConfig(mode="images"))
    decoded = sum(len(batch) for batch in loader.epoch())
    if decoded != good:
        raise AssertionError(f"{decoded} images decoded, expected {good} ({data.bad.summary()})")
    return decoded


# ------------------------------------------------------------------------------------------- readers


def _shard(path: Path, n: int) -> tuple[bytes, int]:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            for name, data in (
                (f"k{i}.txt", f"caption {i}".encode()),
                (f"k{i}.png", _encode(Image.new("RGB", (8, 8), (i * 40, 0, 0)), "PNG")),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1].offset_data
    return path.read_bytes(), last


def _count(spec: str) -> tuple[int, int]:
    data = open_data(spec)
    return len(list(data.records())), data.bad.total


def reader_cases(root: Path) -> list[Case]:
    """Crafted reader inputs with known numbers of good and bad samples."""
    folder = root / "readers"
    folder.mkdir()
    for i in range(4):
        (folder / f"im{i}.jpg").write_bytes(_encode(Image.new("RGB", (8, 8)), "JPEG"))
    cases = []

    def shard_case(name: str, data: bytes, good: int, total: int) -> None:
        path = folder / f"shard{len(cases)}.tar"
        path.write_bytes(data)
        cases.append(Case("reader", name, lambda: _count(f"webdataset:{path}"), good, total))

    raw, last = _shard(folder / "full.tar", 4)
    shard_case("webdataset: intact shard (control)", raw, 4, 4)
    shard_case("webdataset: cut in the last image's data", raw[: last + 30], 3, 4)
    shard_case("webdataset: cut inside the last header", raw[: last - 512 + 100], 3, 4)
    shard_case("webdataset: cut inside a caption member", raw[: raw.find(b"caption 3") + 4], 3, 4)
    shard_case("webdataset: garbage appended", raw.rstrip(b"\0") + os.urandom(700), 4, 5)

    def csv_case(name: str, text: str, good: int, total: int, encoding: str = "utf-8") -> None:
        path = folder / f"data{len(cases)}.csv"
        path.write_text(text, encoding=encoding)
        cases.append(Case("reader", name, lambda: _count(f"csv:{path}"), good, total))

    head = "filepath,title\n"
    csv_case("csv: control", head + "im0.jpg,a\nim1.jpg,b\nim2.jpg,c\n", 3, 3)
    csv_case("csv: unterminated quote mid-file", head + 'im0.jpg,"a\nim1.jpg,b\nim2.jpg,c\n', 2, 3)
    csv_case("csv: unterminated quote on the last row", head + 'im0.jpg,a\nim1.jpg,b\nim2.jpg,"c\n', 2, 3)
    csv_case("csv: BOM", head + "im0.jpg,a\nim1.jpg,b\n", 2, 2, "utf-8-sig")
    csv_case("csv: 200 KB field", head + "im0.jpg,a\nim1.jpg," + "x" * 200_000 + "\nim2.jpg,c\n", 2, 3)
    csv_case("csv: CRLF line ends", head.replace("\n", "\r\n") + "im0.jpg,a\r\nim1.jpg,b\r\n", 2, 2)
    csv_case("csv: short row", head + "im0.jpg,a\nim1.jpg\nim2.jpg,c\n", 2, 3)
    csv_case("csv: NUL byte in a caption", head + "im0.jpg,a\0b\nim1.jpg,b\n", 2, 2)

    def coco_case(name: str, data: Any, good: int, total: int) -> None:
        path = folder / f"coco{len(cases)}.json"
        path.write_text(json.dumps(data))
        cases.append(Case("reader", name, lambda: _count(f"coco:{path}:{folder}"), good, total))

    images = [{"id": i, "file_name": f"im{i}.jpg"} for i in range(3)]
    coco_case(
        "coco: control",
        {"images": images, "annotations": [{"image_id": i, "caption": "x"} for i in range(3)]},
        3,
        3,
    )
    annotations = [
        {"image_id": 0, "caption": "ok"},
        {"image_id": 1, "caption": None},
        {"image_id": 1, "caption": 7},
        {"image_id": 2, "caption": "ok"},
        {"image_id": 99, "caption": "dangling"},
        {"image_id": [1], "caption": "list id"},
        "junk",
    ]
    coco_case(
        "coco: null/int captions, dangling and list ids, junk",
        {"images": images, "annotations": annotations},
        2,
        7,
    )
    coco_case(
        "coco: null file name",
        {
            "images": [*images[:2], {"id": 2, "file_name": None}],
            "annotations": [{"image_id": i, "caption": "x"} for i in range(3)],
        },
        2,
        4,
    )
    return cases


# --------------------------------------------------------------------------------------------- runner


def build_corpus(root: Path) -> tuple[list[Case], Path]:
    """Every case, built under `root`; returns them and the code-execution marker path."""
    marker = root / "CODE-EXECUTED"
    for sub in ("ckpt", "img", "rd"):
        (root / sub).mkdir()
    cases = checkpoint_cases(root / "ckpt", marker) + image_cases(root / "img") + reader_cases(root / "rd")
    return cases, marker


def _run_forked(case: Case) -> tuple[Outcome, float]:
    """Runs `case` in a forked child; returns its outcome and peak RSS in MiB (a hang is an outcome too)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        torch.set_num_threads(1)
        outcome = run_case(case)
        with os.fdopen(write, "w") as pipe:
            json.dump([outcome.result, outcome.detail, outcome.listed, outcome.counted], pipe)
        os._exit(0)
    os.close(write)
    deadline = time.monotonic() + HANG_SECONDS
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            _, status, usage = os.wait4(pid, 0)
            os.close(read)
            return Outcome(case, "hang", f"killed after {HANG_SECONDS} s"), usage.ru_maxrss / 1024
        time.sleep(0.02)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    if not text:
        return Outcome(case, "crash", f"child died with status {status}"), usage.ru_maxrss / 1024
    result, detail, listed, counted = json.loads(text)
    return Outcome(case, result, detail, listed, counted), usage.ru_maxrss / 1024


def report(rows: list[tuple[Outcome, float]], marker: Path, baseline_mb: float) -> str:
    """The RESULTS.md section: per group, cases, raw tracebacks, failures, peak RSS; then failing cases."""
    lines = [
        "## Hostile inputs (issue 9)",
        "",
        "Command: `python benchmarks/fuzz_inputs.py --write` (each case in a forked child of a process that "
        "imported torch and clipforge and built the corpus; peak RSS of each child by wait4; the parent's "
        f"peak while building the corpus was {baseline_mb:.0f} MiB). Expected outcome: a one-line refusal "
        "(or a load, for controls and valid images); for readers, every good sample listed and every bad "
        "one counted.",
        "",
        "| group | cases | expected outcome | raw tracebacks | aborts / hangs | code executions "
        "| silent losses "
        "| peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group in ("checkpoint", "image", "reader"):
        mine = [(o, rss) for o, rss in rows if o.case.group == group]
        good = sum(o.ok for o, _ in mine)
        tracebacks = sum(o.result == "traceback" for o, _ in mine)
        aborts = sum(o.result in ("hang", "crash") for o, _ in mine)
        silent = sum(o.silent_losses for o, _ in mine)
        executions = int(marker.exists()) if group == "checkpoint" else 0
        peak = max(rss for _, rss in mine)
        lines.append(
            f"| {group} | {len(mine)} | {good}/{len(mine)} | {tracebacks} | {aborts} | {executions} "
            f"| {silent} | {peak:.0f} |"
        )
    lines += [
        "",
        f"Bound stated and checked: every case stays under {RSS_BOUND_MB} MiB peak RSS "
        f"({'met' if max(rss for _, rss in rows) < RSS_BOUND_MB else 'NOT met'}).",
        "",
    ]
    failing = [o for o, _ in rows if not o.ok]
    lines += [f"- FAILING: {o.case.group}: {o.case.name}: {o.result}: {o.detail}" for o in failing] or [
        "No case failed; the script prints each case's one-line refusal."
    ]
    return "\n".join(lines)


@click.command()
@click.option("--write", is_flag=True, help="Write the table into benchmarks/RESULTS.md.")
def main(write: bool) -> None:
    """Builds the corpus and runs every case in a forked child."""
    import resource
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import write_section

    with tempfile.TemporaryDirectory() as tmp:
        cases, marker = build_corpus(Path(tmp))
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows = []
        for case in cases:
            outcome, rss = _run_forked(case)
            rows.append((outcome, rss))
            flag = "ok  " if outcome.ok else "FAIL"
            click.echo(
                f"{flag} {rss:7.0f} MiB  {case.group:<10} {case.name}: {outcome.result} {outcome.detail[:99]}"
            )
        text = report(rows, marker, baseline)
    click.echo(text)
    if write:
        write_section("fuzz-inputs", text)


def iter_cases(root: Path) -> Iterator[Case]:
    """The corpus, for the test module."""
    cases, _ = build_corpus(root)
    yield from cases


if __name__ == "__main__":
    main()
