"""Text-to-image on real captioned photos: decoding once with bad images counted, both DALL-E stages
trained on a data spec, the photo token cache, and the FD/KID/R-precision evaluation end to end."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.dalle.photos import PhotoBatches, encode_photos, read_photos
from clipforge.dalle.tokens import photo_pairs
from clipforge.errors import ConfigError
from clipforge.generate.photo_quality import PhotoQualityConfig, photo_quality
from clipforge.models.generator import Generator
from clipforge.models.registry import create_any_model
from clipforge.tokenizer import get_tokenizer
from clipforge.train import load_config, train
from clipforge.train.dalle_tasks import training_photos

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::clipforge.errors.RandomWeightsWarning")]
REPO = Path(__file__).resolve().parents[1]
COLORS = ["red", "green", "blue", "yellow"]


def _photo_folder(root: Path, n: int, bad: int = 1) -> Path:
    """`n` 40-px photos with captions (`folder:` layout), plus `bad` corrupt images with captions."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        color = COLORS[i % len(COLORS)]
        array = np.zeros((40, 40, 3), np.uint8) + rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
        array[8:32, 8:32, COLORS.index(color) % 3] = 220
        Image.fromarray(array).save(root / f"p{i:02d}.png")
        (root / f"p{i:02d}.txt").write_text(f"a {color} square\na photo of a {color} thing\n")
    for i in range(bad):
        (root / f"zz{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        (root / f"zz{i}.txt").write_text("a broken picture\n")
    return root


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _photo_folder(tmp_path_factory.mktemp("photos") / "data", 24)


def test_photos_are_decoded_once_with_bad_ones_counted(photos_dir: Path) -> None:
    photos = read_photos(f"folder:{photos_dir}", 32)
    assert photos.pixels.shape == (24, 32, 32, 3) and photos.pixels.dtype == torch.uint8
    assert photos.bad.total == 1 and photos.bad.report()["truncated"] == 1
    assert photos.captions[0] == ("a red square", "a photo of a red thing")
    assert len(read_photos(f"folder:{photos_dir}", 32, limit=5)) == 5
    batches = PhotoBatches(photos, seed=0, batch_size=4)
    first = [batches.next_batch().images for _ in range(3)]
    again = PhotoBatches(photos, seed=0, batch_size=4)
    again.load_state_dict({"position": 2})
    assert torch.equal(again.next_batch().images, first[2])  # resumes where it stopped


def test_photo_token_cache_is_keyed_by_pixels_and_captions(photos_dir: Path, tmp_path: Path) -> None:
    photos = read_photos(f"folder:{photos_dir}", 32)
    dvae = create_any_model("tiny-dvae").eval()
    tokenizer = get_tokenizer(create_any_model("tiny-generator").config.tokenizer)
    pairs = photo_pairs(dvae, tokenizer, photos, tmp_path)
    assert len(pairs) == 48 and torch.equal(pairs.image[0], pairs.image[1])  # two captions, one photo
    assert torch.equal(photo_pairs(dvae, tokenizer, photos, tmp_path).image, pairs.image)
    photos.captions[0] = ("another caption",)
    changed = photo_pairs(dvae, tokenizer, photos, tmp_path)
    assert len(changed) == 47 and len(list(tmp_path.iterdir())) == 2
    assert torch.equal(encode_photos(dvae, tokenizer, photos).text, changed.text)


@pytest.fixture(scope="module")
def photo_generator(photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both stages trained by the engine on the photo folder with the shipped Flickr8k configs' recipe."""
    work = tmp_path_factory.mktemp("photo-runs")
    data = [f"data.source=folder:{photos_dir}", f"data.eval_source=folder:{photos_dir}", "data.n_val=8",
            "data.n_train=20", "train.batch_size=8", "train.warmup_steps=1", "train.log_every=1",
            "train.checkpoint_every=0"]
    train(load_config(REPO / "configs" / "dvae-flickr8k.toml",
                      ["model.name=tiny-dvae", "train.steps=3", "eval.every=3", *data]), work / "dvae")
    train(load_config(REPO / "configs" / "generator-flickr8k.toml",
                      ["model.name=tiny-generator", f"prior.dvae={work / 'dvae' / 'final'}",
                       f"prior.token_cache={work / 'cache'}", "train.steps=3", "eval.every=3", *data]),
          work / "generator")
    return work / "generator" / "final"


def test_both_stages_train_on_photos(photo_generator: Path) -> None:
    model = clipforge.load_folder(photo_generator)
    cache = photo_generator.parent.parent / "cache"
    assert isinstance(model, Generator) and len(list(cache.iterdir())) == 2  # train and dev pairs


def test_photo_quality_reports_every_condition_with_its_controls(photos_dir: Path, photo_generator: Path
                                                                 ) -> None:
    config = PhotoQualityConfig(str(photo_generator), "tiny-convnet", f"folder:{photos_dir}", n=12,
                                distractors=5, kid_subsets=4, kid_subset_size=6)
    report, images = photo_quality(config)
    conditions = report["conditions"]
    assert set(conditions) == {"generated", "generated, shuffled captions", "dVAE reconstruction",
                               "real at the dVAE's size", "real"}
    assert report["skipped"]["truncated"] == 1 and report["chance_r_precision"] == pytest.approx(1 / 6)
    assert conditions["real"]["fd"] >= 0 and conditions["generated"]["kid_std"] > 0
    assert conditions["generated"]["r_precision"]["n"] == 12
    assert [len(v) for v in images.values()] == [12] * 4 and images["generated"][0].size == (32, 32)


@pytest.mark.flickr8k
def test_flickr8k_configs_read_the_real_split(flickr8k_root: Path) -> None:
    config = load_config(REPO / "configs" / "generator-flickr8k.toml", [f"data.root={flickr8k_root}"])
    model = create_any_model(config.model.name)
    assert isinstance(model, Generator)
    dvae = load_config(REPO / "configs" / "dvae-flickr8k.toml", [f"data.root={flickr8k_root}"])
    assert create_any_model(dvae.model.name).config == model.config.dvae  # the generator fits the dVAE
    photos = read_photos(config.data.spec(config.data.source), model.config.dvae.image_size, limit=16)
    assert photos.pixels.shape == (16, 32, 32, 3) and all(len(c) == 5 for c in photos.captions)


def test_readme_flickr8k_training_commands_name_valid_configs() -> None:
    import shlex

    readme = (REPO / "README.md").read_text().replace("\\\n    ", "")
    prefixes = ("clipforge train configs/dvae-flickr8k", "clipforge train configs/generator-flickr8k")
    lines = [row for row in readme.splitlines() if row.startswith(prefixes)]
    assert len(lines) == 2
    for line in lines:
        words = shlex.split(line)
        overrides = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        config = load_config(REPO / words[2], overrides)
        spec = config.data.spec(config.data.source)
        assert config.task in ("dvae", "prior") and spec == "flickr8k:../shared/data/flickr8k:train"


def test_a_real_data_cap_is_said_and_zero_takes_every_photo(photos_dir: Path) -> None:
    said: list[str] = []
    base = load_config(REPO / "configs" / "dvae-flickr8k.toml", [f"data.source=folder:{photos_dir}"])
    capped = load_config(REPO / "configs" / "dvae-flickr8k.toml",
                         [f"data.source=folder:{photos_dir}", "data.n_train=10"])
    everything = load_config(REPO / "configs" / "dvae-flickr8k.toml",
                             [f"data.source=folder:{photos_dir}", "data.n_train=0"])
    assert base.data.n_train == 6000
    assert len(training_photos(capped, 32, said.append) or ()) == 10 and "data.n_train = 10" in said[-1]
    assert len(training_photos(everything, 32, said.append) or ()) == 24 and "n_train" not in said[-1]
    with pytest.raises(ConfigError, match="data.n_train must be >= 1"):
        load_config(REPO / "configs" / "generator-skills.toml", ["data.n_train=0"])
