"""Loader tests: each public format as a small fixture written in its documented layout."""

import json
from pathlib import Path

import pytest
from PIL import Image

from clipforge.errors import DataError
from clipforge.probe.items import load_item_image
from clipforge.probe.scorers import relation_clauses
from clipforge.probe.spatial import canonical_relation, relation_label
from clipforge.probe.suites import load_suite


def _image(path: Path, size: tuple[int, int] = (40, 30), value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_relation_label_and_canonical_form() -> None:
    assert relation_label("A mug to the left of a plate") == "to the left of"
    assert canonical_relation("to the left of") == "left of"
    assert canonical_relation("in-front_of") == "in front of"
    assert relation_label("two dogs play") is None
    assert relation_label("a man climbs up the hill") == "up"
    assert relation_label("a man looks up") is None  # "up" without a noun phrase is a particle


def test_relation_clauses_split_on_relations_only() -> None:
    assert relation_clauses("a black and white dog left of a cat") == ["a black and white dog left of a cat"]
    assert relation_clauses("a red cube left of a ball and a cone above the cube") == [
        "a red cube left of a ball",
        "a cone above the cube",
    ]
    # A clause that starts with its relation borrows the previous subject.
    assert relation_clauses("a dog left of a cat and above a box") == [
        "a dog left of a cat",
        "a dog above a box",
    ]
    assert relation_clauses("two dogs play") == ["two dogs play"]


def test_pairs_reads_items_and_counts_bad_lines(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "a.png")
    path = _jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"image": "a.png", "true": "a cat left of a dog", "false": "a cat right of a dog", "tag": "lr"},
            {"image": "a.png", "true": "one cat", "false": ["two cats", "three cats"], "tag": "count"},
            "{not json",
            {"image": "a.png", "false": "x"},
        ],
    )
    suite = load_suite(f"pairs:{path}", images=tmp_path / "img")
    assert [i.false for i in suite.items] == [("a cat right of a dog",), ("two cats", "three cats")]
    assert suite.items[0].image == tmp_path / "img" / "a.png"
    assert [i.tag for i in suite.items] == ["lr", "count"]
    assert [b.id for b in suite.bad] == ["pairs.jsonl:3", "pairs.jsonl:4"]
    assert "missing key 'true'" in suite.bad[1].reason


def test_unknown_suite_kind_and_missing_file_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown suite kind 'nope'"):
        load_suite("nope:x")
    with pytest.raises(DataError, match="suite file not found"):
        load_suite(f"pairs:{tmp_path / 'missing.jsonl'}")


def test_whatsup_controlled_images_groups_and_relations(tmp_path: Path) -> None:
    rows = []
    for prep, caption in [
        ("left_of", "to the left of"),
        ("right_of", "to the right of"),
        ("on", "on"),
        ("under", "under"),
    ]:
        _image(tmp_path / "controlled_images" / f"mug_{prep}_plate.jpeg")
        others = [c for c in ("to the left of", "to the right of", "on", "under") if c != caption]
        rows.append(
            {
                "image_path": f"data/controlled_images/mug_{prep}_plate.jpeg",
                "caption_options": [f"A mug {caption} a plate"] + [f"A mug {c} a plate" for c in others],
            }
        )
    path = tmp_path / "controlled_images_dataset.json"
    path.write_text(json.dumps(rows))
    suite = load_suite(f"whatsup:{path}", images=tmp_path / "controlled_images")
    assert suite.group_metric == "whatsup" and not suite.bad
    assert [i.relation for i in suite.items] == ["left of", "right of", "on", "under"]
    assert {i.group for i in suite.items} == {"mug|plate"}
    assert all(len(i.false) == 3 for i in suite.items)
    assert suite.items[0].labels == ("left of", "right of", "on", "under")
    assert Path(suite.items[0].image).is_file()  # "data/controlled_images/..." resolved by its base name


def test_whatsup_coco_spatial_triples(tmp_path: Path) -> None:
    _image(tmp_path / "val2017" / "000000000139.jpg")
    path = tmp_path / "coco_qa_two_obj.json"
    path.write_text(json.dumps([[139, "A chair to the left of a tv", "A chair to the right of a tv"]]))
    (item,) = load_suite(f"whatsup:{path}", images=tmp_path / "val2017").items
    assert item.image == tmp_path / "val2017" / "000000000139.jpg"
    assert (item.tag, item.false) == ("left of", ("A chair to the right of a tv",))


def test_aro_relation_and_attribution_crop_to_union_box(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "2.jpg", size=(100, 80))
    entries = [
        {
            "image_id": "2",
            "image_path": "2.jpg",
            "bbox_x": 10,
            "bbox_y": 5,
            "bbox_w": 50,
            "bbox_h": 40,
            "true_caption": "the horse is eating the grass",
            "false_caption": "the grass is eating the horse",
            "relation_name": "eating",
        },
        {
            "image_id": "2",
            "image_path": "2.jpg",
            "bbox_x": 0,
            "bbox_y": 0,
            "bbox_w": 30,
            "bbox_h": 20,
            "true_caption": "the white horse and the green grass",
            "false_caption": "the green horse and the white grass",
            "attributes": ["white", "green"],
        },
        {"image_path": "2.jpg"},
    ]
    path = tmp_path / "visual_genome_relation.json"
    path.write_text(json.dumps(entries))
    suite = load_suite(f"aro:{path}", images=tmp_path / "images")
    relation, attribution = suite.items
    assert (relation.tag, relation.relation, relation.crop) == ("eating", "eating", (10.0, 5.0, 50.0, 40.0))
    assert (attribution.tag, attribution.relation) == ("white_green", None)
    assert load_item_image(relation).size == (50, 40)
    assert len(suite.bad) == 1 and suite.bad[0].id == "visual_genome_relation.json:2"


def test_sugarcrepe_folder_tags_by_category(tmp_path: Path) -> None:
    _image(tmp_path / "val2017" / "000000397133.jpg")
    folder = tmp_path / "sugarcrepe"
    folder.mkdir()
    record = {
        "filename": "000000397133.jpg",
        "caption": "A man is in a kitchen making pizzas.",
        "negative_caption": "A man is in a kitchen cleaning up after making pizzas.",
    }
    (folder / "replace_rel.json").write_text(json.dumps({"0": record}))
    (folder / "swap_att.json").write_text(json.dumps({"0": record, "1": {**record, "caption": ""}}))
    suite = load_suite(f"sugarcrepe:{folder}", images=tmp_path / "val2017")
    assert [(i.id, i.tag) for i in suite.items] == [
        ("replace_rel/0", "replace_rel"),
        ("swap_att/0", "swap_att"),
    ]
    assert suite.items[0].false == ("A man is in a kitchen cleaning up after making pizzas.",)
    assert [b.id for b in suite.bad] == ["swap_att/1"]


def test_winoground_two_items_per_example(tmp_path: Path) -> None:
    for name in ("ex_0_img_0", "ex_0_img_1"):
        _image(tmp_path / "images" / f"{name}.png")
    path = _jsonl(
        tmp_path / "examples.jsonl",
        [
            {
                "id": 0,
                "caption_0": "an old person kisses a young person",
                "caption_1": "a young person kisses an old person",
                "image_0": "ex_0_img_0",
                "image_1": "ex_0_img_1",
                "tag": "Object",
                "secondary_tag": "",
                "num_main_preds": 1,
                "collapsed_tag": "Object",
            },
        ],
    )
    suite = load_suite(f"winoground:{path}", images=tmp_path / "images")
    first, second = suite.items
    assert suite.group_metric == "winoground" and first.group == second.group == "0"
    assert (first.true, first.false) == (
        "an old person kisses a young person",
        ("a young person kisses an old person",),
    )
    assert (second.true, second.false) == (first.false[0], (first.true,))
    assert second.image == tmp_path / "images" / "ex_0_img_1.png"  # suffix found on disk


def test_spatialvoc2k_french_labels_antonym_outside_all(tmp_path: Path) -> None:
    _image(tmp_path / "JPEGImages" / "2008_000001.jpg", size=(120, 90))
    person = {"name": "la_personne_1", "xmin": 10, "ymin": 20, "xmax": 40, "ymax": 80}
    dog = {"name": "le_chien_2", "xmin": 50, "ymin": 30, "xmax": 90, "ymax": 70}
    data = {
        "2008_000001": {
            "width": 120,
            "height": 90,
            "objects": {"0": person, "1": dog},
            "relations": [
                {"object_0": "la_personne_1", "object_1": "le_chien_2", "all": ["a_cote_de", "devant"]},
                {"object_0": "le_chien_2", "object_1": "la_personne_1", "all": ["pres_de", "loin_de"]},
                {"object_0": "le_chien_2", "object_1": "la_personne_1", "all": ["derriere"]},
                {"object_0": "le_chat_9", "object_1": "le_chien_2", "all": ["sur"]},
            ],
        }
    }
    path = tmp_path / "SpatialVOC2K.json"
    path.write_text(json.dumps(data))
    suite = load_suite(f"spatialvoc2k:{path}", images=tmp_path / "JPEGImages")
    assert [(i.true, i.false) for i in suite.items] == [
        (
            "the person is next to the dog",
            ("the person is far from the dog",),
        ),  # near/far both allowed: skipped
        ("the dog is behind the person", ("the dog is in front of the person",)),
    ]
    assert suite.items[0].crop == (10.0, 20.0, 80.0, 60.0)  # union of both boxes
    assert suite.items[1].tag == "behind"
    assert len(suite.bad) == 1 and "le_chat_9" in suite.bad[0].reason  # unknown object name


def test_synthetic_suite_reads_probes_jsonl(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "000003.png")
    _jsonl(
        tmp_path / "probes.jsonl",
        [
            {
                "image": "images/000003.png",
                "true": "a red circle to the left of a blue square",
                "false": ["a red circle to the right of a blue square"],
                "tag": "relation_swap",
                "relation": "left of",
                "scene": 3,
            },
        ],
    )
    (item,) = load_suite(f"synthetic:{tmp_path}").items
    assert (item.id, item.tag, item.relation) == ("scene3/relation_swap", "relation_swap", "left of")
    assert item.image == tmp_path / "images" / "000003.png"


def test_preposition_swap_on_a_caption_folder(tmp_path: Path) -> None:
    _image(tmp_path / "data" / "a.png")
    (tmp_path / "data" / "a.txt").write_text("A dog runs in front of a car\nA dog runs\n")
    _image(tmp_path / "data" / "b.png")
    (tmp_path / "data" / "b.txt").write_text("two dogs play\n")
    suite = load_suite(f"preposition-swap:folder:{tmp_path / 'data'}")
    (item,) = suite.items
    assert (item.true, item.false, item.tag) == (
        "A dog runs in front of a car",
        ("A dog runs behind a car",),
        "in front of",
    )
    assert item.labels == ("in front of", "behind")


def test_limit_keeps_whole_groups(tmp_path: Path) -> None:
    rows = [
        {"id": i, "caption_0": f"a{i}", "caption_1": f"b{i}", "image_0": "x", "image_1": "y"}
        for i in range(3)
    ]
    suite = load_suite(f"winoground:{_jsonl(tmp_path / 'w.jsonl', rows)}", limit=3)
    assert [i.id for i in suite.items] == ["0/0", "0/1", "1/0", "1/1"]


@pytest.mark.flickr8k
def test_preposition_swap_on_flickr8k(flickr8k_root: Path) -> None:
    suite = load_suite(f"preposition-swap:flickr8k:{flickr8k_root}:test", limit=25)
    assert len(suite.items) == 25
    for item in suite.items:
        assert Path(item.image).is_file() and item.true != item.false[0] and item.tag
