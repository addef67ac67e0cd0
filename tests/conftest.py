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
