import torch
from PIL import Image

from clipforge.data.specs import open_data
from clipforge.data.transforms import Preprocess
from clipforge.models.config import PreprocessConfig
from clipforge.train.feature_cache import FeatureCache, cached_features, module_hash, preprocess_hash


def _folder(tmp_path, n=5):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(n):
        Image.new("RGB", (20, 16), (40 * i, 10, 200 - 30 * i)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"caption {i}")
    (root / "bad.png").write_bytes(b"not an image")
    (root / "bad.txt").write_text("broken")
    return root


def test_second_run_extracts_nothing_and_matches(tmp_path) -> None:
    root = _folder(tmp_path)
    calls = []

    def extract(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return images.mean(dim=(2, 3))  # [B, 3]: a stand-in frozen tower

    preprocess = Preprocess(PreprocessConfig(image_size=8))
    cache = FeatureCache(tmp_path / "cache", "tower", preprocess_hash(preprocess.config))
    data = open_data(f"folder:{root}")
    first, stats = cached_features(data, extract, preprocess, cache, batch_size=2)
    assert stats.extracted == 5 and stats.hits == 0 and data.bad.total == 1
    assert len(first) == 5
    calls.clear()
    again, stats = cached_features(open_data(f"folder:{root}"), extract, preprocess, cache, batch_size=2)
    assert calls == [] and stats.hits == 5 and stats.extracted == 0
    for key, value in first.items():
        assert torch.equal(value, again[key])
    # An edited file is a miss; the others stay hits.
    Image.new("RGB", (20, 16), (1, 2, 3)).save(root / "0.png")
    _, stats = cached_features(open_data(f"folder:{root}"), extract, preprocess, cache, batch_size=2)
    assert stats.extracted == 1 and stats.hits == 4


def test_cache_key_changes_with_weights_and_preprocessing() -> None:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert module_hash(a) != module_hash(b)
    assert module_hash(a) == module_hash(a)
    assert preprocess_hash(PreprocessConfig(image_size=8)) != preprocess_hash(PreprocessConfig(image_size=9))
