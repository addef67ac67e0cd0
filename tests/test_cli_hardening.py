"""One bad file never costs the good ones, names stay on one line, random weights are announced, and every
papercut of issue 9 (items 2, 16, 17) is a one-line message. Each test states how main fails it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import clipforge
from clipforge.cli.main import main
from clipforge.cli.output import one_line, quote_path
from clipforge.device import resolve_device
from clipforge.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved tiny model: a trained-model stand-in, so no random-weights warning mixes into the output."""
    folder = tmp_path_factory.mktemp("model") / "tiny"
    clipforge.save(clipforge.create_model("tiny-vit"), folder)
    return str(folder)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_classify_keeps_good_results_next_to_a_hostile_image(tmp_path: Path, model_dir: str) -> None:
    """Main: the 2,000,000 x 1 PNG asked resize_shortest for ~1e11 pixels (MemoryError, every result lost)."""
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "good.png")
    Image.new("L", (2_000_000, 1)).save(tmp_path / "strip.png")
    code, out, err = run("classify", "--model", model_dir, "--labels", "cat,dog", str(tmp_path))
    assert code == 1
    assert out.startswith(str(tmp_path / "good.png")) and out.count("\n") == 1
    assert "too large for its shape (2000000x1" in err and err.count("\n") == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_classify_refuses_a_fifo_instead_of_hanging(tmp_path: Path, model_dir: str) -> None:
    """Main: read_bytes() on the FIFO blocked forever."""
    os.mkfifo(tmp_path / "pipe.jpg")
    code, _, err = run("classify", "--model", model_dir, "--labels", "cat", str(tmp_path / "pipe.jpg"))
    assert code == 1 and "image file is a FIFO, not a regular file" in err


def test_classify_folders_json_batch_size_and_newline_names(tmp_path: Path, model_dir: str) -> None:
    """Main: no folders, no --json, no --batch-size; a newline in a name split its output line in two."""
    (tmp_path / "sub").mkdir()
    for i, name in enumerate(["a.png", "sub/b.png", "new\nline.png", "c.png"]):
        Image.new("RGB", (32, 32), (60 * i, 20, 20)).save(tmp_path / name)
    code, out, _ = run("classify", "--model", model_dir, "--labels", "cat,dog", "--batch-size", "3",
                       "--top", "1", "--threads", "1", "--device", "cpu", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4 and repr(str(tmp_path / "new\nline.png")) in out
    code, out, _ = run("classify", "--model", model_dir, "--labels", "cat,dog", "--json", str(tmp_path))
    results = json.loads(out)["results"]
    assert code == 0 and len(results) == 4 and all(abs(sum(r["probability"] for r in x["labels"]) - 1) < 1e-5
                                                   for x in results)
    batched = clipforge.eval.zeroshot.classify_files(model_dir, [str(tmp_path)], ["cat", "dog"], ["{}"], 2, 1)
    whole = clipforge.eval.zeroshot.classify_files(model_dir, [str(tmp_path)], ["cat", "dog"], ["{}"], 2, 8)
    for one, other in zip(batched, whole, strict=True):  # batching changes nothing but speed
        assert one.image == other.image
        assert all(abs(p - q) < 1e-5 for (_, p), (_, q) in zip(one.labels, other.labels, strict=True))


def test_quoting_keeps_names_on_one_line() -> None:
    assert quote_path("plain name.jpg") == "plain name.jpg"
    assert quote_path("a\nb.jpg") == "'a\\nb.jpg'" and quote_path("x\udcff.jpg") == "'x\\udcff.jpg'"
    assert quote_path("'quoted'") != "'quoted'"
    assert one_line("bad\nfile\x1b[31m.jpg") == "bad\\nfile\\x1b[31m.jpg"


def test_random_weights_warn_loudly(tmp_path: Path) -> None:
    """Main: `classify --model ViT-B-32` printed confident probabilities from random weights, silently."""
    Image.new("RGB", (40, 30)).save(tmp_path / "x.png")
    code, out, err = run("classify", "--model", "tiny-vit", "--labels", "cat,dog", str(tmp_path / "x.png"))
    assert code == 0 and out.count("\n") == 1
    assert err.startswith("warning: 'tiny-vit' is a registry architecture with RANDOM weights")
    with pytest.warns(clipforge.errors.RandomWeightsWarning):
        clipforge.load("tiny-vit")
    code, out, err = run("models")
    assert "untrained weights" in err and all("weights=" in line for line in out.splitlines())


def test_device_choices(tmp_path: Path) -> None:
    """Main had no --device: CPU is the default; auto falls back to it; cuda without CUDA is one line."""
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch has no CUDA here"):
            resolve_device("cuda")
        Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
        code, _, err = run("classify", "--model", "tiny-vit", "--labels", "a", "--device", "cuda",
                           str(tmp_path / "x.png"))
        assert code == 1 and err.strip().splitlines()[-1].startswith("Error: device 'cuda' requested")


def test_config_papercuts_are_one_line(tmp_path: Path) -> None:
    """Main: a directory as CONFIG.toml was a 38-line traceback; a bad --set was blamed on FILE.toml.train."""
    (tmp_path / "dir.toml").mkdir()
    code, _, err = run("train", str(tmp_path / "dir.toml"), "--out", str(tmp_path / "run"))
    assert code == 1
    assert err.strip() == f"Error: config file is a directory, not a regular file: {tmp_path}/dir.toml"
    toml = str(REPO / "configs" / "synthetic-tiny.toml")
    code, _, err = run("train", toml, "--out", str(tmp_path / "run"), "--set", "train.lr=abc")
    assert code == 1 and err.strip() == "Error: --set train.lr=abc: train: 'lr' must be float, got 'abc'"
    code, _, err = run("train", toml, "--out", str(tmp_path / "run"), "--set", "train.steps=0")
    assert code == 1 and err.startswith("Error: --set train.steps=0: train.steps must be >= 1")
