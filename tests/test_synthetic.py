"""Synthetic spatial scenes: determinism, geometry-true relations, hold-out, probes, on-disk layout, CLI."""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clipforge.errors import ConfigError, DataError
from clipforge.synthetic.dataset import (
    SyntheticScenes,
    load_probe_items,
    load_scenes,
    probes_naming_heldout,
    single_object_scenes,
    synthetic_probe_items,
    write_synthetic,
)
from clipforge.synthetic.scene import (
    PALETTE,
    Scene,
    SceneConfig,
    SceneObject,
    compute_relations,
    fits_split,
    generate_scene,
    heldout_combinations,
    object_mask,
    render_scene,
    scene_style,
)
from clipforge.synthetic.style import StyleConfig
from clipforge.synthetic.text import (
    NEGATIVE_KINDS,
    Caption,
    Phrase,
    count_caption,
    counterfactual_scene,
    hard_negative,
    is_false,
    is_true,
    same_color_pair,
    scene_caption,
)

CONFIG = SceneConfig()


def _scenes(split: str, n: int, config: SceneConfig = CONFIG, seed: int = 0) -> list[Scene]:
    return [generate_scene(config, seed, split, i) for i in range(n)]


# A reference reading of the geometry, written independently of the library's formulas.
def _label(a: SceneObject, b: SceneObject, margin: float) -> str | None:
    (ax, ay), (bx, by) = a.centre, b.centre
    dx, dy = ax - bx, ay - by
    if abs(dx) > abs(dy) + margin:
        return "right of" if dx > 0 else "left of"
    if abs(dy) > abs(dx) + margin:
        return "below" if dy > 0 else "above"
    return None


_AXIS = {"left of": "h", "right of": "h", "above": "v", "below": "v"}
_SIGN = {"left of": -1, "right of": 1, "above": -1, "below": 1}


def _surely_not(a: SceneObject, b: SceneObject, relation: str, margin: float) -> bool:
    """a is offset the other way on the relation's axis, or the other axis is labelled."""
    offset = (a.centre[0] - b.centre[0]) if _AXIS[relation] == "h" else (a.centre[1] - b.centre[1])
    label = _label(a, b, margin)
    return offset * _SIGN[relation] <= 0 or (label is not None and _AXIS[label] != _AXIS[relation])


_NP = r"an? (?:(small|large) )?(\w+) (\w+)"
_REL = r"(to the left of|to the right of|above|below|in front of|behind)"
_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}


def _singular(noun: str) -> str:
    return noun[:-2] if noun.endswith("sses") else noun[:-1] if noun.endswith("s") else noun


def _reference_truth(scene: Scene, sentence: str) -> bool | None:
    """True / False / None (neither) for a template-0 probe sentence, parsed from its words."""
    objs = scene.objects
    rel = re.fullmatch(f"{_NP} {_REL} {_NP}", sentence)
    if rel:
        sa, ca, ha, word, sb, cb, hb = rel.groups()
        relation = word.replace("to the ", "")
        pairs = [(a, b) for a in objs for b in objs if a is not b
                 and (a.color, a.shape) == (ca, ha) and sa in (None, a.size)
                 and (b.color, b.shape) == (cb, hb) and sb in (None, b.size)]
        if any(_label(a, b, scene.margin) == relation for a, b in pairs):
            return True
        return False if all(_surely_not(a, b, relation, scene.margin) for a, b in pairs) else None
    parts = re.split(r", | and ", sentence)
    counted = [re.fullmatch(r"(one|two|three|four) (\w+) (\w+)", p) for p in parts]
    if all(counted):
        have = Counter((o.color, o.shape) for o in objs)
        nouns = [(m[2], m[3] if m[1] == "one" else _singular(m[3])) for m in counted if m]
        return all(have[noun] == _NUMBERS[m[1]] for noun, m in zip(nouns, counted, strict=True) if m)
    named = [re.fullmatch(_NP, p) for p in parts]
    assert all(named), sentence
    return all(any((o.color, o.shape) == (m[2], m[3]) and m[1] in (None, o.size) for o in objs)
               for m in named if m)


def _canonical(caption: str) -> str:
    """Rewrites any training template into its template-0 form, for `_reference_truth`."""
    caption = re.sub(r"^(a photo of|there is|an image with|a picture of|an image showing) ", "", caption)
    definite = re.fullmatch(rf"the (.+) is {_REL} the (.+)", caption)
    if definite:
        a, rel, b = definite.groups()
        caption = f"{_article(a)} {a} {rel} {_article(b)} {b}"
    return caption


def _article(words: str) -> str:
    return "an" if words[0] in "aeiou" else "a"


def test_same_seed_same_scene_and_pixels() -> None:
    config = SceneConfig(textured_background=True, occlusion=0.3)
    for index in range(20):
        a, b = generate_scene(config, 7, "train", index), generate_scene(config, 7, "train", index)
        assert a == b
        assert np.array_equal(np.asarray(render_scene(a)), np.asarray(render_scene(b)))
    assert _scenes("train", 20, config, seed=7) != _scenes("train", 20, config, seed=8)
    assert _scenes("train", 20, config) != _scenes("test", 20, config)


def test_relations_match_geometry_and_reference() -> None:
    for scene in _scenes("train", 300) + _scenes("test_heldout", 50):
        for i, a in enumerate(scene.objects):
            for j, b in enumerate(scene.objects):
                if i == j:
                    continue
                labelled = {r.relation for r in scene.relations if (r.subject, r.object) == (i, j)}
                expected = _label(a, b, scene.margin)
                assert labelled == ({expected} if expected else set()), (scene, i, j)
        # every two-object scene is placed so that it has a relation caption
        if len(scene.objects) == 2:
            assert len(scene.relations) == 2


def test_margin_leaves_near_diagonal_pairs_unlabelled() -> None:
    box = (10, 10, 20, 20)
    near_diagonal = (SceneObject("circle", "red", "small", box, 0),
                     SceneObject("square", "blue", "small", (30, 25, 40, 35), 1))  # dx=20, dy=15
    assert compute_relations(near_diagonal, 64, margin=6.4) == ()
    labelled = compute_relations(near_diagonal, 64, margin=4.0)
    assert {(r.subject, r.relation, r.object) for r in labelled} == {(0, "left of", 1), (1, "right of", 0)}
    scene = Scene(0, "test", 0, 64, 6.4, near_diagonal, ())
    statement = Caption("relation", (Phrase("red", "circle"), Phrase("blue", "square")), "left of")
    assert not is_true(scene, statement) and not is_false(scene, statement)
    assert is_false(scene, Caption("relation", statement.phrases, "right of"))


def test_heldout_combinations_never_in_train_val_test() -> None:
    pairs, relations = set(CONFIG.heldout_pairs), set(CONFIG.heldout_relations)
    for split in ("train", "val", "test"):
        for scene in _scenes(split, 250):
            assert not {(o.color, o.shape) for o in scene.objects} & pairs
            for i, a in enumerate(scene.objects):
                for j, b in enumerate(scene.objects):
                    for shape, relation in relations:
                        if i != j and a.shape == shape:
                            assert _surely_not(a, b, relation, scene.margin), (scene, i, j, relation)
    held = _scenes("test_heldout", 100)
    for scene in held:
        shown = {(o.color, o.shape) for o in scene.objects} & pairs
        shown |= {(scene.objects[r.subject].shape, r.relation) for r in scene.relations} & relations
        assert shown, scene
    # both kinds of hold-out actually occur
    assert any({(o.color, o.shape) for o in s.objects} & pairs for s in held)
    assert any({(s.objects[r.subject].shape, r.relation) for r in s.relations} & relations for s in held)


def test_probe_items_true_true_and_false_false_by_reference() -> None:
    tags: Counter[str] = Counter()
    for split in ("test", "test_heldout"):
        for item, image in synthetic_probe_items(CONFIG, split, 150):
            scene = generate_scene(CONFIG, 0, split, item.scene)
            assert image.size == (64, 64)
            assert _reference_truth(scene, item.true) is True, item
            for false in item.false:
                assert false != item.true
                assert _reference_truth(scene, false) is False, (item, scene)
            if item.tag in ("relation_swap", "argument_swap"):
                assert item.relation in ("left of", "right of", "above", "below")
            tags[item.tag] += 1
    # every kind is produced, nearly once per scene
    kinds = ("relation_swap", "argument_swap", "attribute_swap", "object_swap", "count")
    assert min(tags[kind] for kind in kinds) > 200, tags


def test_relation_swap_probe_is_the_opposite_preposition() -> None:
    items = [item for item, _ in synthetic_probe_items(CONFIG, "test", 40) if item.tag == "relation_swap"]
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    words = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
    for item in items:
        rel = str(item.relation)
        assert item.false[0] == item.true.replace(words[rel], words[opposite[rel]])


def test_same_color_pair_matches_the_scene_objects() -> None:
    """The caption-level check against the metadata of two-object scenes (whose caption names both)."""
    seen: Counter[bool] = Counter()
    for item, _ in synthetic_probe_items(CONFIG, "val", 300):
        scene = generate_scene(CONFIG, 0, "val", item.scene)
        if item.tag != "relation_swap" or len(scene.objects) != 2:
            continue
        first, second = scene.objects
        assert same_color_pair(item.true) == (first.color == second.color), item
        seen[same_color_pair(item.true)] += 1
    assert seen[True] >= 10 and seen[False] >= 50, seen  # both kinds occur
    assert not same_color_pair("a photo of a red circle")
    assert not same_color_pair("a red circle above a blue star")


def test_count_captions() -> None:
    objects = (SceneObject("triangle", "green", "small", (2, 2, 16, 16), 0),
               SceneObject("circle", "red", "large", (30, 2, 52, 24), 1),
               SceneObject("triangle", "green", "large", (2, 30, 24, 52), 2))
    scene = Scene(0, "test", 0, 64, 6.4, objects, compute_relations(objects, 64, 6.4))
    caption = count_caption(scene, random.Random(0), template=0)
    assert caption.text in ("two green triangles and one red circle",
                            "one red circle and two green triangles")
    assert is_true(scene, caption)
    wrong = hard_negative(scene, caption, "count", random.Random(1))
    assert wrong is not None and is_false(scene, wrong)
    assert _reference_truth(scene, wrong.text) is False
    crosses = Caption("count", (Phrase("blue", "cross", None, 3),))
    assert crosses.text == "three blue crosses"
    repeated = SceneConfig(count_weights=(0.0, 1.0), repeat=1.0, caption_weights=(0.0, 0.0, 1.0))
    texts = [SyntheticScenes(repeated, "train", 20)[i]["caption"] for i in range(20)]
    assert all(re.fullmatch(r"(an image showing |a picture of )?two \w+ \w+s", t) for t in texts), texts


def test_dataset_item_contract_and_loader() -> None:
    data = SyntheticScenes(SceneConfig(image_size=48), "train", 16, seed=3,
                           negative_kinds=("relation_swap", "attribute_swap", "count"))
    item = data[5]
    assert set(item) == {"image", "caption", "negatives", "index"}
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.uint8
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), np.asarray(render_scene(data.scene(5))))
    for i in range(16):
        negatives = data[i]["negatives"]
        assert len(negatives) == 3 and data[i]["caption"] not in negatives
    batches = list(torch.utils.data.DataLoader(data, batch_size=8, num_workers=2))
    assert torch.equal(batches[0]["image"][5], item["image"])
    assert batches[1]["caption"][0] == data[8]["caption"]
    assert len(batches[0]["negatives"]) == 3 and len(batches[0]["negatives"][0]) == 8
    with pytest.raises(IndexError):
        data.scene(16)


def test_training_captions_are_mostly_relational_and_negatives_false() -> None:
    data = SyntheticScenes(CONFIG, "train", 200)
    relational = 0
    for i in range(200):
        scene, item = data.scene(i), data[i]
        relational += bool(re.search(_REL, item["caption"]))
        assert _reference_truth(scene, _canonical(item["caption"])) is True, item
        for negative in item["negatives"]:
            assert negative != item["caption"]
            assert _reference_truth(scene, _canonical(negative)) is False, (item, scene)
    assert 0.6 < relational / 200 < 0.9


_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
             "in front of": "behind", "behind": "in front of"}


def _claims_heldout(sentence: str, config: SceneConfig) -> bool:
    """Reference reading: the sentence names a held-out (colour, shape), or a held-out (shape, relation)
    read from either object ("a circle below a star" claims "star above")."""
    sentence = _canonical(sentence)
    words = re.findall(r"\w+", sentence)
    nouns = {noun: shape for shape in config.shapes for noun in (shape, shape + "s", shape + "es")}
    pairs = zip(words, words[1:], strict=False)
    named = {(color, nouns.get(noun)) for color, noun in pairs if color in PALETTE}
    claims = set()
    rel = re.fullmatch(f"{_NP} {_REL} {_NP}", sentence)
    if rel:
        shape_a, word, shape_b = rel.group(3), rel.group(4).replace("to the ", ""), rel.group(7)
        claims = {(shape_a, word), (shape_b, _OPPOSITE[word])}
    return bool(named & set(config.heldout_pairs) or claims & set(config.heldout_relations))


@pytest.mark.parametrize("kinds", [NEGATIVE_KINDS, ("relation_swap", "attribute_swap")])
def test_training_negatives_never_name_heldout_combinations_but_probes_do(kinds: tuple[str, ...]) -> None:
    """Issues 17/12: no training scene shows a held-out combination, so a training negative naming one
    would teach that its wording is false whatever the image. Probe items keep such negatives."""
    data = SyntheticScenes(CONFIG, "train", 200, negative_kinds=kinds)
    negatives = [n for i in range(200) for n in data[i]["negatives"]]
    assert len(negatives) == 200 * len(kinds)
    assert [n for n in negatives if _claims_heldout(n, CONFIG)] == []
    for split in ("test", "test_heldout"):
        probes = [false for item, _ in synthetic_probe_items(CONFIG, split, 100) for false in item.false]
        assert sum(_claims_heldout(false, CONFIG) for false in probes) > 0.05 * len(probes), split


def test_unfit_relation_slot_takes_another_kind_before_a_copy() -> None:
    """When the relation swap does not fit (no relation, or its one edit names a held-out combination)
    but the attribute swap does, the first slot holds a negative of a kind outside the quickstart's two
    whenever one applies, not a copy of the attribute swap."""
    kinds = ("relation_swap", "attribute_swap")
    data = SyntheticScenes(CONFIG, "train", 200, negative_kinds=kinds)
    unfit = 0
    for i in range(200):
        scene = data.scene(i)
        caption = scene_caption(scene, CONFIG)
        fits = [hard_negative(scene, caption, k, random.Random(0), CONFIG) is not None for k in kinds]
        if fits != [False, True]:
            continue
        unfit += 1
        others = [hard_negative(scene, caption, k, random.Random(0), CONFIG)
                  for k in NEGATIVE_KINDS if k not in kinds]
        first, second = data[i]["negatives"]
        assert first != second or not any(others), (caption.text, first, others)
    assert unfit > 20


def test_benchmark_reads_heldout_claims_like_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/heldout_negatives.py groups probe items by the held-out combinations their captions name."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import heldout_negatives

    items = [item for item, _ in synthetic_probe_items(CONFIG, "test_heldout", 60)]
    sentences = [sentence for item in items for sentence in (item.true, *item.false)]
    claims = [any(heldout_negatives.heldout_claims(s, CONFIG)) for s in sentences]
    assert claims == [_claims_heldout(s, CONFIG) for s in sentences]
    assert 0 < sum(claims) < len(claims)


def test_probes_naming_heldout_agrees_with_the_reference_reading(tmp_path: Path) -> None:
    """The quickstart's "true caption names a held-out combination" items are the ones whose true sentence
    the reference reads as naming one: many on `test_heldout`, none on `test`."""
    write_synthetic(tmp_path, 40, seed=3, split=("test", "test_heldout"), config=SceneConfig(image_size=32))
    items = load_probe_items(tmp_path)
    expected = {(item.scene, item.tag) for item in items if _claims_heldout(item.true, CONFIG)}
    assert probes_naming_heldout(tmp_path, CONFIG) == expected
    splits = Counter(item.split for item in items if (item.scene, item.tag) in expected)
    assert splits["test"] == 0 and splits["test_heldout"] > len(items) / 4


def test_relation_captions_do_not_tell_the_layout_by_phrase_order() -> None:
    """Issue 17: `plain` learns relations under styles. Not through the captions: the first-named object is
    left of (above) the second about as often as not, the four spatial words are about equally frequent and
    no colour leans to one side, so only the relation word says where each object is."""
    first_left = first_above = horizontal = vertical = 0
    words: Counter[str] = Counter()
    x_by_colour: dict[str, list[float]] = {}
    for scene in _scenes("train", 2000):
        for obj in scene.objects:
            x_by_colour.setdefault(obj.color, []).append(obj.centre[0] / scene.image_size)
        caption = scene_caption(scene, CONFIG)
        if caption.kind != "relation" or caption.relation in ("in front of", "behind"):
            continue
        a, b = (next(o for o in scene.objects if p.matches(o)) for p in caption.phrases)
        words[str(caption.relation)] += 1
        if caption.relation in ("left of", "right of"):
            horizontal += 1
            first_left += a.centre[0] < b.centre[0]
        else:
            vertical += 1
            first_above += a.centre[1] < b.centre[1]
    assert 0.42 < first_left / horizontal < 0.58 and 0.42 < first_above / vertical < 0.58
    assert max(words.values()) < 1.25 * min(words.values()), words
    assert all(0.45 < float(np.mean(xs)) < 0.55 for xs in x_by_colour.values()), x_by_colour


def test_render_shapes_fill_their_boxes_in_their_colour() -> None:
    for scene in _scenes("train", 40):
        pixels = np.asarray(render_scene(scene))
        for obj in scene.objects:
            mask = object_mask(obj, scene.image_size)
            x0, y0, x1, y1 = obj.bbox
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1), obj
            assert (pixels[mask] == PALETTE[obj.color]).all()


def test_occlusion_depth_relations_match_pixels() -> None:
    config = SceneConfig(occlusion=1.0, count_weights=(0.0, 1.0))
    for scene in _scenes("train", 30, config):
        back, front = scene.objects
        relations = {(r.subject, r.relation, r.object) for r in scene.relations}
        assert {(1, "in front of", 0), (0, "behind", 1)} <= relations
        overlap = object_mask(back, 64) & object_mask(front, 64)
        pixels = np.asarray(render_scene(scene))
        assert overlap.sum() > 0 and (pixels[overlap] == PALETTE[front.color]).all()
        phrases = (Phrase(front.color, front.shape), Phrase(back.color, back.shape))
        swap = Caption("relation", phrases, "behind")
        assert is_false(scene, swap) and not is_false(scene, Caption("relation", swap.phrases, "in front of"))


def test_textured_background_is_grey() -> None:
    scene = generate_scene(SceneConfig(textured_background=True), 0, "train", 1)
    pixels = np.asarray(render_scene(scene)).astype(int)
    covered = np.zeros((64, 64), dtype=bool)
    for obj in scene.objects:
        covered |= object_mask(obj, 64)
    ground = pixels[~covered]
    assert (ground[:, 0] == ground[:, 1]).all() and (ground[:, 1] == ground[:, 2]).all()
    assert ground[:, 0].std() > 5  # a texture, not a flat colour


def test_single_object_scenes_for_zero_shot() -> None:
    scenes = single_object_scenes(CONFIG, "test", 60)
    assert all(len(s.objects) == 1 for s in scenes)
    labels = Counter(s.objects[0].shape for s in scenes)
    assert len(labels) == 6
    assert not {(s.objects[0].color, s.objects[0].shape) for s in scenes} & set(CONFIG.heldout_pairs)


def test_write_synthetic_layout_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    summary = write_synthetic(out, 60, seed=4)
    assert summary.scenes == {"train": 48, "val": 3, "test": 6, "test_heldout": 3}
    with (out / "captions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["split"] for r in rows] == ["train"] * 48 + ["val"] * 3 + ["test"] * 6 + ["test_heldout"] * 3
    scenes = load_scenes(out)
    assert len(scenes) == 60 and scenes[51] == generate_scene(CONFIG, 4, "test", 0)
    records = [json.loads(line) for line in (out / "scenes.jsonl").open()]
    assert records[51]["id"] == 51 and records[51]["caption"] == rows[51]["caption"]
    assert all(records[k]["heldout"] for k in range(57, 60))
    first = Image.open(out / rows[0]["filepath"])
    assert first.size == (64, 64) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(render_scene(scenes[0])))
    probes = load_probe_items(out)
    assert len(probes) == summary.probes > 0
    in_memory = [item for item, _ in synthetic_probe_items(CONFIG, "test", 6, seed=4, first_id=51)]
    assert [p for p in probes if p.scene < 57] == in_memory
    line = json.loads((out / "probes.jsonl").open().readline())
    assert set(line) == {"image", "true", "false", "tag", "relation", "scene", "split"}
    assert SyntheticScenes(CONFIG, "train", 48, seed=4)[7]["caption"] == rows[7]["caption"]
    with pytest.raises(DataError, match="already holds"):
        write_synthetic(out, 5)


def test_bad_config_and_inputs_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hexagon"):
        SceneConfig(shapes=("circle", "square", "hexagon"))
    with pytest.raises(ConfigError, match="image_size"):
        SceneConfig(image_size=500)
    with pytest.raises(ConfigError, match="positive"):
        write_synthetic(tmp_path / "x", 0)
    with pytest.raises(ConfigError, match="split"):
        generate_scene(CONFIG, 0, "training", 0)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="cannot create"):
        write_synthetic(tmp_path / "file" / "sub", 3)


def test_cli_synth(tmp_path: Path) -> None:
    from clipforge.cli.main import main

    runner = CliRunner()
    result = runner.invoke(main, ["synth", "--out", str(tmp_path / "d"), "--n", "12", "--seed", "1",
                                  "--image-size", "96", "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "12 scenes" in result.output
    assert Image.open(tmp_path / "d" / "images" / "000011.png").size == (96, 96)
    assert len(load_probe_items(tmp_path / "d")) >= 12 * 4
    bad = runner.invoke(main, ["synth", "--out", str(tmp_path / "e"), "--n", "0"])
    assert bad.exit_code != 0 and bad.output.strip().count("\n") == 0 and "positive" in bad.output


def _counterfactuals(config: SceneConfig, n: int) -> list[tuple[Scene, Caption, Scene]]:
    found = []
    for i in range(n):
        scene = generate_scene(config, 0, "train", i)
        caption = scene_caption(scene, config)
        swapped = counterfactual_scene(scene, caption, config)
        if swapped is not None:
            found.append((scene, caption, swapped))
    return found


def test_counterfactual_scene_moves_only_the_two_named_objects_and_falsifies_the_caption() -> None:
    """A hard-negative image: the same objects, one pair in each other's places, the caption false by an
    independent reading of the geometry, and no held-out relation shown."""
    config = SceneConfig(image_size=48)
    found = _counterfactuals(config, 300)
    assert len(found) > 150  # relation captions are 80% of the scenes; most swaps fit
    for scene, caption, swapped in found:
        assert _reference_truth(scene, _canonical(caption.text)) is True
        assert _reference_truth(swapped, _canonical(caption.text)) is False, (caption.text, swapped)
        kept = [(o.shape, o.color, o.size, o.depth) for o in scene.objects]
        assert [(o.shape, o.color, o.size, o.depth) for o in swapped.objects] == kept
        pairs = zip(scene.objects, swapped.objects, strict=True)
        moved = [k for k, (a, b) in enumerate(pairs) if a.bbox != b.bbox]
        assert len(moved) == 2
        assert not heldout_combinations(swapped, config) and fits_split(swapped, config)
        assert swapped.relations == compute_relations(swapped.objects, 48, swapped.margin)


def test_counterfactual_scene_needs_a_spatial_relation_caption() -> None:
    config = SceneConfig(image_size=48)
    scene = next(s for s in _scenes("train", 50, config) if len(s.objects) == 2)
    attribute = Caption("attribute", tuple(Phrase(o.color, o.shape) for o in scene.objects))
    assert counterfactual_scene(scene, attribute, config) is None


def test_negative_images_are_the_scene_redrawn_with_the_pair_swapped() -> None:
    plain = SceneConfig(image_size=48)
    data = SyntheticScenes(plain, "train", 200, negative_kinds=(), negative_images=1.0)
    with_image = [i for i in range(200) if data[i]["negative_image_mask"]]
    assert len(with_image) > 100
    for i in with_image[:20]:
        scene, item = data.scene(i), data[i]
        swapped = counterfactual_scene(scene, scene_caption(scene, plain), plain)
        assert swapped is not None
        expected = np.asarray(render_scene(swapped))
        assert np.array_equal(item["negative_image"].permute(1, 2, 0).numpy(), expected)
        assert not torch.equal(item["negative_image"], item["image"])
    styled = SceneConfig(image_size=48, style=StyleConfig())
    scene = generate_scene(styled, 0, "train", with_image[0])
    swapped = counterfactual_scene(scene, scene_caption(scene, styled), styled)
    assert swapped is not None and scene_style(swapped, StyleConfig()) == scene_style(scene, StyleConfig())


def test_negative_image_share_is_seeded_and_off_by_default() -> None:
    config = SceneConfig(image_size=48)
    assert "negative_image" not in SyntheticScenes(config, "train", 10)[0]
    every = [bool(SyntheticScenes(config, "train", 300, negative_images=1.0)[i]["negative_image_mask"])
             for i in range(300)]
    half = SyntheticScenes(config, "train", 300, negative_images=0.5)
    some = [bool(half[i]["negative_image_mask"]) for i in range(300)]
    assert all(a for a, b in zip(every, some, strict=True) if b)  # the same draw, a lower threshold
    assert 0.35 * sum(every) < sum(some) < 0.65 * sum(every)
    assert some == [bool(half[i]["negative_image_mask"]) for i in range(300)]
    assert not half[some.index(False)]["negative_image"].any()  # no image: zeros
