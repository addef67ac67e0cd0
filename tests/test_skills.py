"""Image-skill evaluation: skill sets, the parser against exact truth, DALL-Eval's rules, controls, jobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipforge.cli.main import main
from clipforge.errors import ConfigError, DataError
from clipforge.skills.degrade import DEGRADATIONS, degrade
from clipforge.skills.lookalike import agreement
from clipforge.skills.make import SkillSetConfig, make_skill_set, record_scene, skill_record
from clipforge.skills.parser import DetectedObject, Reading, parse_image
from clipforge.skills.records import SKILLS, SkillObject, SkillRecord, load_skill_set, read_records
from clipforge.skills.rules import centre_relation, judge, truth_reading
from clipforge.skills.score import ImageSet, ScoreConfig, chance, derangement, evaluate, false_for
from clipforge.synthetic.render import PALETTE
from clipforge.synthetic.scene import SceneConfig, heldout_combinations, render_scene

SEED = 314  # a seed nothing was tuned on (the parser's thresholds were set on seeds 1000 and 2000)


def _records(skill: str, n: int, size: int = 64, split: str = "val", seed: int = SEED) -> list:
    config = SkillSetConfig(n, seed, size)
    return [skill_record(config, skill, split, i) for i in range(n)]


# --- skill sets ---------------------------------------------------------------------------------------


def test_skill_records_are_deterministic_and_texts_follow_the_scenes() -> None:
    for skill in SKILLS:
        first, again = _records(skill, 6), _records(skill, 6)
        assert [r.to_json() for r, _ in first] == [r.to_json() for r, _ in again]
    (obj, _), = _records("object", 1)
    assert obj.text == f"a {obj.objects[0].shape}"
    (color, _), = _records("color", 1)
    assert color.text == f"a {color.objects[0].color} {color.objects[0].shape}"
    for record, _ in _records("count", 12):
        assert len({o.shape for o in record.objects}) == 1 and 1 <= len(record.objects) <= 4
        word = ("one", "two", "three", "four")[len(record.objects) - 1]
        assert record.text.startswith(word + " ")


def test_spatial_relation_is_on_object_one_and_holds_by_the_centre_rule_with_margin() -> None:
    words = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
    for record, scene in _records("spatial", 40):
        reference, subject = record.objects
        relation, index = subject.relation.rsplit("_", 1)
        assert index == "0" and reference.relation is None and reference.shape != subject.shape
        assert record.text == f"a {subject.shape} {words[relation]} a {reference.shape}"
        (ax, ay), (bx, by) = scene.objects[1].centre, scene.objects[0].centre
        dx, dy = ax - bx, ay - by
        assert centre_relation((ax, ay), (bx, by)) == relation
        assert abs(abs(dx) - abs(dy)) > SceneConfig(image_size=64).margin_px  # never a near tie


def test_train_never_shows_heldout_combinations_and_val_names_them_every_other_prompt() -> None:
    config = SceneConfig(image_size=64)
    for skill in SKILLS:
        for record, scene in _records(skill, 20, split="train"):
            assert not heldout_combinations(scene, config) and not record.heldout
    for skill in ("color", "spatial"):
        records = _records(skill, 20)
        assert all(bool(r.heldout) == (i % 2 == 0) for i, (r, _) in enumerate(records))
    color = [r for r, _ in _records("color", 20) if r.heldout]
    assert all(r.heldout == (f"{r.objects[0].color} {r.objects[0].shape}",) for r in color)


def test_objects_keep_apart_and_inside_the_border_at_32_px() -> None:
    config = SkillSetConfig(10, SEED, 32)
    for record, _ in _records("count", 30, size=32):
        boxes = [o.bbox for o in record.objects]
        for x0, y0, x1, y1 in boxes:
            assert min(x0, y0) >= config.border_px and max(x1, y1) <= 32 - config.border_px
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert (a[0] >= b[2] + config.gap_px or b[0] >= a[2] + config.gap_px
                        or a[1] >= b[3] + config.gap_px or b[1] >= a[3] + config.gap_px)


def test_make_writes_the_paintskills_layout_and_renders_match_the_records(tmp_path: Path) -> None:
    written = make_skill_set(tmp_path / "set", SkillSetConfig(3, SEED, 48))
    assert written == {skill: {"train": 3, "val": 3} for skill in SKILLS}
    records = load_skill_set(tmp_path / "set", "val")
    assert list(records) == list(SKILLS)
    for skill, skill_records in records.items():
        for record in skill_records:
            on_disk = np.asarray(Image.open(tmp_path / "set" / skill / "images" / record.image_name))
            assert np.array_equal(on_disk, np.asarray(render_scene(record_scene(record))))
    metadata = json.loads((tmp_path / "set" / "metadata.json").read_text())
    assert metadata["image_size"] == 48 and metadata["Shape"][0] == "circle"
    with pytest.raises(DataError, match="already holds"):
        make_skill_set(tmp_path / "set", SkillSetConfig(3, SEED, 48))
    with pytest.raises(ConfigError, match="image_size"):
        SkillSetConfig(3, SEED, 16)


def test_real_paintskills_records_read_without_boxes(tmp_path: Path) -> None:
    path = tmp_path / "spatial_val.json"
    path.write_text(json.dumps({"data": [
        {"id": 7, "scene": "forest", "text": "a dog is left of a car", "skill": "spatial", "split": "val",
         "objects": [{"id": 0, "shape": "car", "color": "plain", "relation": None, "scale": 1.2},
                     {"id": 1, "shape": "dog", "color": "plain", "relation": "left_0", "texture": "x"}]}]}))
    (record,) = read_records(path, "spatial", "val")
    assert record.id == "7" and record.objects[1].relation == "left_0" and record.objects[0].bbox is None
    assert chance([record, record]) is None
    path.write_text(json.dumps({"data": [{"id": 1}]}))
    with pytest.raises(DataError, match="malformed skill record"):
        read_records(path, "object", "val")
    with pytest.raises(DataError, match="no skill files"):
        load_skill_set(tmp_path / "empty", "val")


# --- the parser ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 48, 64, 96])
def test_parser_reads_ground_truth_renders_exactly(size: int) -> None:
    for skill in SKILLS:
        for record, scene in _records(skill, 8, size=size):
            reading = parse_image(render_scene(scene))
            assert judge(record, reading).passed, (size, record.text, reading)
            assert len(reading.objects) == len(scene.objects)
            assert sorted((o.shape, o.color) for o in reading.objects) == \
                sorted((o.shape, o.color) for o in scene.objects)
            got = sorted(o.centre for o in reading.objects)
            want = sorted(o.centre for o in scene.objects)
            assert np.allclose(got, want, atol=0.5)


@pytest.mark.parametrize("kind", [d for d in DEGRADATIONS if d != "all"])
def test_parser_reads_degraded_renders(kind: str) -> None:
    passed = []
    for skill in SKILLS:
        for i, (record, scene) in enumerate(_records(skill, 10)):
            image = degrade(render_scene(scene), kind, np.random.default_rng([SEED, i]))
            passed.append(judge(record, parse_image(image)).passed)
    assert np.mean(passed) >= 0.95


def test_parser_says_unparseable_and_unknown_rather_than_guess() -> None:
    blank = Image.new("RGB", (64, 64), (20, 20, 20))
    assert not parse_image(blank).parseable
    noisy = degrade(blank, "noise", np.random.default_rng(0))
    assert not parse_image(noisy).parseable  # pixel noise is not an object
    canvas = np.full((64, 64, 3), 20, dtype=np.uint8)
    canvas[10:20, 8:50] = PALETTE["red"]  # a bar: no renderer shape is this long
    canvas[40:56, 40:56] = (160, 160, 160)  # a grey square: no palette colour
    reading = parse_image(canvas)
    by_x = sorted(reading.objects, key=lambda o: o.bbox[1])
    assert [o.shape for o in by_x] == [None, "square"]
    assert [o.color for o in by_x] == ["red", None]
    record = SkillRecord("x", "object", "val", "a square", (SkillObject(0, "square", "red"),))
    assert judge(record, Reading()).reason == "unparseable"


def test_parser_accepts_arrays_and_other_modes() -> None:
    record, scene = _records("color", 1)[0]
    image = render_scene(scene)
    as_float = np.asarray(image, dtype=np.float64) / 255.0
    assert parse_image(as_float) == parse_image(image) == parse_image(image.convert("RGBA"))


# --- rules, controls ----------------------------------------------------------------------------------


def _obj(shape: str | None, color: str | None, centre: tuple[int, int], fit: float = 1.0) -> DetectedObject:
    x, y = centre
    return DetectedObject(shape, color, (x - 4, y - 4, x + 4, y + 4), 64, fit)


def test_rules_follow_dall_eval() -> None:
    obj = SkillRecord("1", "object", "val", "a star", (SkillObject(0, "star", "red"),))
    assert judge(obj, Reading((_obj("star", "blue", (10, 10)), _obj("circle", "red", (40, 40), 0.9)))).passed
    assert not judge(obj, Reading((_obj("circle", "red", (40, 40)), _obj("star", "red", (9, 9), 0.9)))).passed
    count = SkillRecord("2", "count", "val", "two stars", (SkillObject(0, "star"), SkillObject(1, "star")))
    two = (_obj("star", "red", (10, 10)), _obj("star", "blue", (40, 40)))
    assert judge(count, Reading(two)).passed
    assert not judge(count, Reading((*two, _obj(None, "red", (50, 10), 0.5)))).passed  # a third object
    assert not judge(count, Reading((two[0], _obj("cross", "blue", (40, 40))))).passed
    color = SkillRecord("3", "color", "val", "a red star", (SkillObject(0, "star", "red"),))
    assert judge(color, Reading((_obj("circle", "blue", (1, 1)), _obj("star", "red", (30, 30), 0.9)))).passed
    assert not judge(color, Reading((_obj("star", "blue", (30, 30)),))).passed
    left = SkillRecord("4", "spatial", "val", "a star to the left of a circle",
                       (SkillObject(0, "circle"), SkillObject(1, "star", relation="left_0")))
    assert judge(left, Reading((_obj("circle", "red", (40, 20)), _obj("star", "red", (10, 25))))).passed
    assert not judge(left, Reading((_obj("circle", "red", (10, 20)), _obj("star", "red", (40, 25))))).passed
    # The two most confident objects decide: a confident cross displaces the circle.
    crowded = (_obj("circle", "red", (40, 20), 0.95), _obj("star", "red", (10, 25)),
               _obj("cross", "red", (5, 5)))
    assert not judge(left, Reading(crowded)).passed


def test_centre_rule_ties_go_to_above_below() -> None:
    assert centre_relation((10.0, 10.0), (20.0, 20.0)) == "above"
    assert centre_relation((10.0, 30.0), (20.0, 20.0)) == "below"
    assert centre_relation((9.0, 20.0), (20.0, 20.0)) == "left"


def test_chance_is_the_exact_pairwise_rate() -> None:
    # k records per shape: another record shows the asked shape with probability (k - 1) / (6k - 1).
    shapes = ("circle", "square", "triangle", "diamond", "star", "cross")
    records = [SkillRecord(f"{s}{j}", "object", "val", f"a {s}",
                           (SkillObject(0, s, "red", bbox=(1, 1, 9, 9)),)) for s in shapes for j in range(3)]
    assert chance(records) == pytest.approx(2 / 17)


def test_r_precision_distractors_are_false_for_the_prompts_scene() -> None:
    box = (30, 10, 40, 20)
    star = SkillRecord("0", "object", "val", "a star",
                       (SkillObject(0, "star", "red", bbox=(9, 9, 19, 19)),))
    square = SkillRecord("7", "object", "val", "a square", (SkillObject(0, "square", "red", bbox=box),))
    candidates = [
        SkillRecord("1", "count", "val", "one star", (SkillObject(0, "star", "blue", bbox=box),)),
        SkillRecord("2", "color", "val", "a red star", (SkillObject(0, "star", "red", bbox=box),)),
        SkillRecord("3", "color", "val", "a blue star", (SkillObject(0, "star", "blue", bbox=box),)),
        SkillRecord("4", "count", "val", "two stars", (SkillObject(0, "star", bbox=box),
                                                        SkillObject(1, "star", bbox=(1, 1, 5, 5)))),
    ]
    assert false_for(star, candidates) == [False, False, True, True]
    above = SkillRecord("5", "spatial", "val", "a circle above a star",
                        (SkillObject(0, "star", "red", bbox=(10, 30, 20, 40)),
                         SkillObject(1, "circle", "red", "above_0", bbox=(10, 5, 20, 15))))
    converse = SkillRecord("6", "spatial", "val", "a star below a circle",
                           (SkillObject(0, "circle", bbox=(0, 0, 9, 9)),
                            SkillObject(1, "star", relation="below_0", bbox=(0, 20, 9, 29))))
    assert false_for(above, [converse, square]) == [False, True]


def test_derangement_has_no_fixed_point() -> None:
    for n in (2, 3, 10, 101):
        perm = derangement(n, seed=n)
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))


# --- the scoring job ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skill_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("skills") / "set"
    make_skill_set(root, SkillSetConfig(12, SEED, 48))
    return root


def _generated(skill_set: Path, out: Path) -> Path:
    """Per skill: prompt 0 gets two images (its render and a blank), prompt 1 gets prompt 2's render,
    prompt 2 an unreadable file, prompt 3 nothing; the others their own render."""
    records = load_skill_set(skill_set, "val")
    for skill, skill_records in records.items():
        folder = out / skill
        folder.mkdir(parents=True)
        renders = skill_set / skill / "images"
        for i, record in enumerate(skill_records):
            if i == 0:
                (folder / f"image_{record.id}_0.png").write_bytes((renders / record.image_name).read_bytes())
                Image.new("RGB", (48, 48), (20, 20, 20)).save(folder / f"image_{record.id}_1.png")
            elif i == 1:
                source = renders / skill_records[2].image_name
                (folder / f"image_{record.id}.png").write_bytes(source.read_bytes())
            elif i == 2:
                (folder / f"image_{record.id}.png").write_bytes(b"not a png")
            elif i > 3:
                (folder / f"image_{record.id}.png").write_bytes((renders / record.image_name).read_bytes())
    return out


def test_score_counts_best_of_k_missing_and_unreadable(skill_set: Path, tmp_path: Path) -> None:
    images = _generated(skill_set, tmp_path / "gen")
    result = CliRunner().invoke(main, ["skills", "score", "--skills", str(skill_set), "--images", str(images),
                                       "--out", str(tmp_path / "out"), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "skills.json").read_text())
    for skill in SKILLS:
        block = report["skills"][skill]
        assert (block["missing"], block["unreadable"], block["unparseable"]) == (1, 1, 1)
        assert block["n_prompts"] == 10 and block["n"] == 11
        # Prompt 0 passes one of two images, prompt 1 shows another prompt's render, 8 pass outright.
        wrong = judge(load_skill_set(skill_set)[skill][1], truth_reading(load_skill_set(skill_set)[skill][2]))
        assert block["accuracy"] == pytest.approx((0.5 + float(wrong.passed) + 8) / 10)
        assert block["best_of_k"]["k"] == 2
        assert block["best_of_k"]["accuracy"] == pytest.approx((1 + float(wrong.passed) + 8) / 10)
        assert report["upper_bound"][skill]["accuracy"] == 1.0
        assert report["chance"][skill] is not None and set(block["per_case"])
    assert report["r_precision"] is None and report["quality"] is None
    rows = [row for row in report["items"] if row["skill"] == "count"]
    blanks = {row["reason"] for row in rows if row["image"].endswith("_1.png")}
    assert len(rows) == 11 and blanks == {"unparseable"}
    page = (tmp_path / "out" / "skills.html").read_text()
    assert "<svg" in page and "data:image/png;base64," in page and "unparseable" in page


def test_score_with_a_clip_reports_alignment_and_named_quality(skill_set: Path, tmp_path: Path) -> None:
    args = ["skills", "score", "--skills", str(skill_set), "--images", str(skill_set),
            "--clip", "tiny-convnet", "--out", str(tmp_path), "--resamples", "100"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "skills.json").read_text())
    texts = {r.text for rs in load_skill_set(skill_set).values() for r in rs}
    # Texts also true of an image's scene ("one star" for "a star") are never its distractors.
    assert len(texts) // 2 < report["r_precision"]["candidates"] < min(100, len(texts))
    assert 0.0 <= report["r_precision"]["mean"] <= 1.0 and report["clipscore"]["n"] == 48
    quality = report["quality"]
    assert "tiny-convnet" in quality["feature_space"] and quality["frechet"] == pytest.approx(0.0, abs=1e-6)
    assert set(report["alignment"]) == {"generated", "upper_bound", "shuffle"}


def test_evaluate_in_memory_matches_and_foreign_vocabularies_skip_the_parser() -> None:
    records = {"color": [r for r, _ in _records("color", 12)]}
    scenes = {r.id: s for r, s in _records("color", 12)}
    truth = ImageSet()
    for record in records["color"]:
        truth.add("color", record.id, render_scene(scenes[record.id]), record.image_name)
    report = evaluate(records, truth, truth, ScoreConfig(n_resamples=50)).report
    assert report["skills"]["color"]["accuracy"] == 1.0
    foreign = {"object": [SkillRecord("0", "object", "val", "a dog", (SkillObject(0, "dog"),))]}
    report = evaluate(foreign, ImageSet(), ImageSet(), ScoreConfig(n_resamples=50)).report
    assert report["skills"] == {} and "vocabulary" in report["note"]


def test_score_rejects_a_missing_images_folder(skill_set: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["skills", "score", "--skills", str(skill_set), "--images",
                                       str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "images folder not found" in result.output
    assert "Traceback" not in result.output


# --- the second, independent check --------------------------------------------------------------------


@pytest.mark.slow
def test_parser_agrees_with_the_construction_truth_on_200_generated_looking_images() -> None:
    """Every disagreement at 64 px is a partly drawn object the parser still names: its template fits
    above `min_fit` (a 60 % diamond still looks like a diamond), while the construction calls it
    shapeless. Everything else (noise patches, smudges, missing, extra, reshaped, recoloured objects)
    agrees."""
    agree, disagreements = agreement(SkillSetConfig(50, SEED, 64), 50)
    assert agree + len(disagreements) == 200 and agree >= 190
    for case in disagreements:
        assert case.look.edit == "half_drawn" and case.notes, case
        assert all("shapeless object as" in n for n in case.notes), case.notes


def test_readme_skills_commands_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's two commands, with fewer prompts and a registry CLIP instead of a trained one."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Image-skill evaluation", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split() for line in block.strip().splitlines()]
    assert [line[:3] for line in lines] == [["clipforge", "skills", "make"], ["clipforge", "skills", "score"]]
    monkeypatch.chdir(tmp_path)
    for line in lines:
        args = [{"200": "3", "runs/quickstart/hardneg/final": "tiny-convnet"}.get(a, a) for a in line[1:]]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "skills-report" / "skills.json").read_text())["clipscore"]["n"] == 12
