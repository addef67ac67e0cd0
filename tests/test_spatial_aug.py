"""Exact-truth spatial pieces (left/right swap, categories, collages) and the flip:/collage: probe suites."""

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipforge.cli.main import main
from clipforge.data.spatial_aug import (
    Collage,
    Mirrored,
    Photo,
    compose,
    first_side,
    pair_photos,
    photo_category,
    swap_left_right,
)
from clipforge.errors import ConfigError
from clipforge.probe import ClipEncoder, load_suite, run_probe, summarize

COLORS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0), "white": (255, 255, 255)}


@pytest.mark.parametrize(
    ("caption", "swapped"),
    [
        ("The woman on the right is wearing a red scarf .", "The woman on the left is wearing a red scarf ."),
        ("Dog to the left of a tree, cat on her right", "Dog to the right of a tree, cat on her left"),
        ("A man with a stick in his left hand", "A man with a stick in his right hand"),
        ("with left arm in the air", "with right arm in the air"),
        ("A man does a high right kick", "A man does a high left kick"),
        ("A person looks left .", "A person looks right ."),
        ("Left hand raised", "Right hand raised"),
        ("A skier has left a trail behind him", None),  # the verb
        ("A dog looking right at the camera", None),  # "right" = straight
        ("You are right about that", None),
        ("A dog runs", None),
    ],
)
def test_swap_left_right(caption: str, swapped: str | None) -> None:
    assert swap_left_right(caption) == swapped
    assert (first_side(caption) is None) == (swapped is None)


def test_first_side_names_the_first_side_word() -> None:
    assert first_side("the one on the right and the one on the left") == "right of"


def test_photo_category_needs_a_majority_and_no_other_category() -> None:
    assert photo_category(["A dog runs", "a puppy", "Two dogs play", "an animal", "grass"]) == "dog"
    assert photo_category(["A dog runs", "a puppy", "an animal", "grass", "green"]) is None  # 2 of 5
    assert photo_category(["A dog and a man", "a dog", "a dog", "dog", "dog"]) is None  # a man too
    assert photo_category(["A snowman", "a hotdog", "x"]) is None  # whole words only
    assert photo_category(["a boy", "a girl", "a child"]) == "child"


def test_pair_photos_pairs_different_categories_once_and_is_seeded() -> None:
    photos = [(i, c) for i, c in enumerate("ddddddmmwcccbd")]
    pairs = pair_photos(photos, seed=3)
    assert pairs == pair_photos(photos, seed=3) and pairs != pair_photos(photos, seed=4)
    used = [p for pair in pairs for p, _ in pair]
    assert len(used) == len(set(used)) and all(x[1] != y[1] for x, y in pairs)
    # Greedy: the photos left unpaired are all of one category (else two of them would have paired).
    left = {c for i, c in photos if i not in used}
    assert len(left) == 1 and len(pairs) == (len(photos) - sum(1 for i, _ in photos if i not in used)) // 2


def _solid(path: Path, color: str, size: tuple[int, int] = (40, 40)) -> Path:
    Image.new("RGB", size, COLORS[color]).save(path)
    return path


def test_compose_puts_each_photo_in_its_half(tmp_path: Path) -> None:
    red = Photo("r", _solid(tmp_path / "r.png", "red"))
    blue = Photo("b", _solid(tmp_path / "b.png", "blue", (60, 30)))
    side = Collage(red, blue, "horizontal", 64).render()
    assert side.size == (64, 64)
    assert side.getpixel((16, 32)) == COLORS["red"] and side.getpixel((48, 32)) == COLORS["blue"]
    assert side.getpixel((16, 2)) == side.getpixel((48, 62)) == (124, 124, 124)  # grey above and below
    stacked = compose(red.render(), blue.render(), "vertical", 64)
    assert stacked.getpixel((32, 16)) == COLORS["red"] and stacked.getpixel((32, 48)) == COLORS["blue"]
    halves = Image.new("RGB", (40, 40), COLORS["red"])
    halves.paste(COLORS["blue"], (20, 0, 40, 40))
    halves.save(tmp_path / "m.png")
    mirrored = Mirrored(Photo("m", tmp_path / "m.png")).render()
    assert mirrored.getpixel((5, 5)) == COLORS["blue"] and mirrored.getpixel((35, 5)) == COLORS["red"]


def _caption_folder(root: Path, photos: dict[str, tuple[str, list[str]]]) -> Path:
    """A ``folder:`` dataset: NAME.png of one colour, NAME.txt with its captions."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (color, captions) in photos.items():
        _solid(root / f"{name}.png", color)
        (root / f"{name}.txt").write_text("\n".join(captions) + "\n")
    return root


class LayoutBlind:
    """Embeds an image by its mean colour (mirror- and layout-invariant); texts by a fixed random vector."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.array([np.asarray(im, dtype=np.float64).mean(axis=(0, 1)) for im in images])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=3) for t in texts])


class FirstTile:
    """Sees layout: an image is the colour of its first tile; 'X left of / above Y' is X's colour."""

    def __init__(self, colors: dict[str, str]) -> None:
        self.colors = colors  # category -> colour name

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = []
        for im in images:
            s = im.width
            # Horizontal collages are grey in the top band, vertical ones in the left band.
            pixel = im.getpixel((s // 4, s // 2)) if im.getpixel((s // 2, 2)) == (124, 124, 124) else \
                im.getpixel((s // 2, s // 4))
            out.append(np.array(pixel, dtype=np.float64) / 255)
        return np.array(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for text in texts:
            words = text.split()
            first = words[1] if ("to the left of" in text or " above " in text) else words[-1]
            out.append(np.array(COLORS[self.colors[first]], dtype=np.float64) / 255)
        return np.array(out)


@pytest.fixture
def categories(tmp_path: Path) -> Path:
    return _caption_folder(tmp_path / "data", {
        "d1": ("red", ["A dog runs", "a dog", "a dog jumps"]),
        "d2": ("red", ["A dog swims", "dogs", "a puppy"]),
        "m1": ("blue", ["A man sits", "a man", "a guy"]),
        "w1": ("green", ["A woman walks", "a lady", "a woman"]),
        "x1": ("white", ["A dog and a man", "a dog", "a dog"]),  # two categories: left out
    })


def test_collage_suite_is_balanced_and_exact(categories: Path) -> None:
    suite = load_suite(f"collage:folder:{categories}")
    assert len(suite.items) == 8 * 2  # 4 photos -> 2 pairs, 8 items each
    # Every (sentence, sentence) pair appears once each way round.
    pairs = Counter((item.true, item.false[0]) for item in suite.items)
    assert all(pairs[(b, a)] == 1 for a, b in pairs)
    assert Counter(item.tag for item in suite.items) == {"left of": 4, "right of": 4, "above": 4, "below": 4}
    blind = summarize(run_probe(suite.items, LayoutBlind()))
    assert blind["accuracy"] == 0.5 and blind["pair_balanced"]["accuracy"] == 0.5
    assert blind["blind"]["accuracy"] == 0.5
    sees = summarize(run_probe(suite.items, FirstTile({"dog": "red", "man": "blue", "woman": "green"})))
    assert sees["accuracy"] == sees["pair_balanced"]["accuracy"] == 1.0 and sees["blind"]["accuracy"] == 0.5


def test_collage_seed_option_and_limit_keep_whole_groups(categories: Path) -> None:
    first = load_suite(f"collage:folder:{categories}", limit=3)
    assert len(first.items) == 8 and len({item.group for item in first.items}) == 1
    seeded = [load_suite(f"collage:folder:{categories}", options=(f"seed={s}",)).items for s in range(6)]
    assert len({tuple(item.id for item in items) for items in seeded}) > 1
    with pytest.raises(ConfigError, match="unknown config key 'colour'"):
        load_suite(f"collage:folder:{categories}", options=("colour=1",))
    with pytest.raises(ConfigError, match="takes no --option"):
        load_suite(f"flip:folder:{categories}", options=("seed=1",))


def test_flip_suite_pairs_each_photo_with_its_mirror(tmp_path: Path) -> None:
    root = _caption_folder(tmp_path / "data", {"a": ("red", ["A dog on the left of a tree", "a dog"]),
                                              "b": ("blue", ["a cat"])})
    split = Image.new("RGB", (40, 40), COLORS["red"])
    split.paste(COLORS["blue"], (20, 0, 40, 40))
    split.save(root / "a.png")
    suite = load_suite(f"flip:folder:{root}")
    original, mirror = suite.items
    assert (original.true, original.false, original.tag) == (
        "A dog on the left of a tree", ("A dog on the right of a tree",), "left of")
    assert (mirror.true, mirror.false, mirror.tag) == (
        "A dog on the right of a tree", ("A dog on the left of a tree",), "right of")
    assert isinstance(mirror.image, Mirrored) and mirror.image.render().getpixel((5, 5)) == COLORS["blue"]
    blind = summarize(run_probe(suite.items, LayoutBlind()))  # mean colour is mirror-invariant
    assert blind["accuracy"] == 0.5 and blind["pair_balanced"]["accuracy"] == 0.5


def test_written_suite_scores_like_the_suite_in_memory(categories: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["probe", "--suite", f"collage:folder:{categories}", "--model", "vit=tiny-vit", "--out", str(out),
            "--write-suite", "--resamples", "50"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "pair-balanced" in result.output and "blind" in result.output
    assert len(list((out / "suite" / "images").glob("*.png"))) == 8  # 2 pairs x 2 layouts x 2 orders
    page = (out / "probe.html").read_text()
    assert "Pair-balanced accuracy and the blind baseline" in page and "left of / right of" in page
    encoder = ClipEncoder.load("tiny-vit")  # random weights: one model for both runs
    memory = run_probe(load_suite(f"collage:folder:{categories}").items, encoder)
    disk = run_probe(load_suite(f"pairs:{out / 'suite' / 'pairs.jsonl'}").items, encoder)
    np.testing.assert_allclose(np.array(memory.scores), np.array(disk.scores), atol=1e-6)
    np.testing.assert_allclose(np.array(memory.blind_scores), np.array(disk.blind_scores), atol=1e-6)
    assert [i.labels for i in memory.items] == [i.labels for i in disk.items]
    assert [i.group for i in memory.items] == [i.group for i in disk.items]


@pytest.mark.flickr8k
def test_real_suites_on_flickr8k_test(flickr8k_root: Path) -> None:
    flip = load_suite(f"flip:flickr8k:{flickr8k_root}:test")
    assert len(flip.items) == 34 and Counter(i.tag for i in flip.items) == {"left of": 17, "right of": 17}
    collage = load_suite(f"collage:flickr8k:{flickr8k_root}:test")
    per_group = Counter(item.group for item in collage.items)
    assert set(per_group.values()) == {8} and len(per_group) > 200
    photos = [key for group in per_group for key in str(group).split("+")]
    assert len(photos) == len(set(photos))  # every photo in one pair at most
