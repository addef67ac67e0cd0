"""Classification data specs: imagefolder, synthetic scene tasks, flickr8k-tags and corruptions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.data.classification import open_classification
from clipforge.data.corrupt import corrupt_image
from clipforge.data.flickr8k_tags import CLASSES, tag
from clipforge.data.readers import Record
from clipforge.errors import DataError
from clipforge.synthetic.scene import spatial_relation
from clipforge.synthetic.tasks import SPATIAL, SceneTask


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """ImageFolder tree: three colour classes of two images each, with a nested image and a stray file."""
    for name, rgb in (("red_thing", (220, 20, 20)), ("green", (20, 200, 20)), ("blue", (20, 20, 220))):
        (tmp_path / name / "sub").mkdir(parents=True)
        Image.new("RGB", (16, 16), rgb).save(tmp_path / name / "a.png")
        Image.new("RGB", (16, 16), rgb).save(tmp_path / name / "sub" / "b.JPG")
        (tmp_path / name / "notes.txt").write_text("not an image")
    return tmp_path


def test_imagefolder_sorts_classes_and_reads_names_and_templates(folder: Path) -> None:
    data = open_classification(f"imagefolder:{folder}")
    assert data.classnames == ("blue", "green", "red thing") and data.templates == ()
    assert [(i.key, i.label) for i in data.items[:2]] == [("blue/a.png", 0), ("blue/sub/b.JPG", 0)]
    assert data.class_counts() == {"blue": 2, "green": 2, "red thing": 2}
    (folder / "classnames.txt").write_text("navy\nlime\ncrimson\n")
    (folder / "templates.txt").write_text("a photo of {}.\n\n{} again\n")
    named = open_classification(f"imagefolder:{folder}")
    assert named.classnames == ("navy", "lime", "crimson")
    assert named.templates == ("a photo of {}.", "{} again")
    assert named.image("blue/a.png").getpixel((0, 0)) == (20, 20, 220)


def test_imagefolder_split_and_errors(tmp_path: Path) -> None:
    split = tmp_path / "tree"
    (split / "test").mkdir(parents=True)
    for name in ("cat", "dog"):
        (split / "test" / name).mkdir()
        Image.new("RGB", (8, 8)).save(split / "test" / name / "0.png")
    assert open_classification(f"imagefolder:{split}:test").classnames == ("cat", "dog")
    (split / "test" / "classnames.txt").write_text("one name\n")
    with pytest.raises(DataError, match="1 names for 2 class folders"):
        open_classification(f"imagefolder:{split}:test")
    (split / "test" / "classnames.txt").unlink()
    (split / "templates.txt").write_text("no placeholder\n")
    with pytest.raises(DataError, match="exactly one"):
        open_classification(f"imagefolder:{split}:test")
    with pytest.raises(DataError, match="image folder not found"):
        open_classification(f"imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="unknown classification data kind"):
        open_classification("folder:x")


def test_relation_and_count_labels_match_the_scene_geometry() -> None:
    relation = SceneTask("r", "relation", 48, "val")
    assert relation.class_counts() and min(relation.class_counts().values()) > 90  # 500 scenes, 4 classes
    for item in relation.items[:50]:
        triangle, star = relation.scenes[item.key].objects
        assert (triangle.shape, star.shape) == ("triangle", "star")
        assert SPATIAL[item.label] == spatial_relation(triangle, star, relation.scenes[item.key].margin)
        assert relation.classnames[item.label].startswith("a red triangle")
    count = SceneTask("c", "count", 48, "val")
    assert all(len(count.scenes[i.key].objects) == i.label + 1 for i in count.items)
    assert count.classnames[1] == "two green crosses"


def test_synth_spec_is_deterministic_and_checked() -> None:
    a, b = open_classification("synth:shape:32:val"), open_classification("synth:shape:32:val")
    record = Record(a.items[3].key, a.items[3].source, ())
    assert a.read_bytes(record) == b.read_bytes(record) and a.items == b.items
    assert a.image(a.items[3].key).size == (32, 32) and len(a.templates) == 18
    assert open_classification("synth:colour:val").classnames[0] == "red"
    with pytest.raises(DataError, match="unknown synthetic task"):
        open_classification("synth:texture")
    with pytest.raises(DataError, match="not a size or split"):
        open_classification("synth:shape:big")


def test_corruptions_are_seeded_graded_and_keep_labels(folder: Path) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert corrupt_image(image, "gaussian_noise", 2, "k") == corrupt_image(image, "gaussian_noise", 2, "k")
    assert corrupt_image(image, "gaussian_noise", 2, "k") != corrupt_image(image, "gaussian_noise", 2, "j")
    pixels = np.asarray(image, dtype=float)
    for kind in ("gaussian_noise", "blur", "jpeg"):
        corrupted = [np.asarray(corrupt_image(image, kind, s, "k"), float) for s in (1, 5)]
        change = [np.abs(c - pixels).mean() for c in corrupted]
        assert 0 < change[0] < change[1], kind
    grey = np.asarray(corrupt_image(image, "greyscale", 5), dtype=int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    data = open_classification(f"corrupt:greyscale:5:imagefolder:{folder}")
    assert data.items == open_classification(f"imagefolder:{folder}").items
    assert len(set(data.image("blue/a.png").getpixel((0, 0)))) == 1
    with pytest.raises(DataError, match="unknown corruption"):
        open_classification(f"corrupt:fog:2:imagefolder:{folder}")
    with pytest.raises(DataError, match="severity must be 1-5"):
        open_classification(f"corrupt:blur:9:imagefolder:{folder}")


def test_flickr8k_tag_rule() -> None:
    dog = ["A dog runs .", "a brown dog", "The dog jumps", "Dogs play", "A puppy on grass"]
    assert tag(dog) == "dog"
    assert tag(dog[:4] + ["a dog on the beach"]) == "dog"  # another topic in one caption is fine
    assert tag(dog[:3] + ["a dog at the beach", "the beach"]) is None  # ... in two is not
    assert tag(dog[:3] + ["a cat", "a cat"]) is None  # only three mentions
    man = ["A man sits", "a man in red", "the man smiles", "two men talk", "someone waits"]
    assert tag(man) == "man"
    assert tag(man[:4] + ["a woman"]) == "man"
    assert tag(man[:3] + ["a man with a dog", "a dog"]) is None  # a topic in two captions blocks people
    assert tag(["a man rides a bike"] * 5) == "bicycle"  # topics come first


@pytest.mark.flickr8k
def test_flickr8k_tags_has_ten_classes_with_twenty_test_images(flickr8k_root: Path) -> None:
    test = open_classification(f"flickr8k-tags:{flickr8k_root}:test")
    assert test.classnames == CLASSES and len(test.items) == 548
    assert min(test.class_counts().values()) >= 20
    assert len(open_classification(f"flickr8k-tags:{flickr8k_root}:val").items) == 540
