"""Probe scoring and statistics: exact numbers with a fake encoder, references with a tiny real model."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clipforge.checkpoint import load
from clipforge.cli.main import main
from clipforge.probe import (
    ClipEncoder,
    ProbeItem,
    bootstrap_ci,
    items_from_synthetic,
    load_suite,
    relation_clauses,
    run_probe,
    summarize,
    wilson_ci,
)
from clipforge.probe.stats import accuracy_block, interval_direction

N_IMAGES = 8


def _solid(index: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (index * 30, 0, 0))


class FakeEncoder:
    """Image i embeds to one-hot e_i, a text to its row of scores: s(text, image i) = table[text][i]."""

    def __init__(self, table: dict[str, dict[int, float]]) -> None:
        self.table = table

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.eye(N_IMAGES)[[round(im.getpixel((0, 0))[0] / 30) for im in images]]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), N_IMAGES))
        for row, text in zip(rows, texts, strict=True):
            for image, score in self.table.get(text, {}).items():
                row[image] = score
        return rows


def _scenario() -> tuple[list[ProbeItem], FakeEncoder]:
    images = [_solid(i) for i in range(4)]
    items = [
        ProbeItem("a", images[0], "a cat left of a dog", ("a cat right of a dog",), "relation_swap"),
        ProbeItem("b", images[1], "a cup above a box", ("a cup below a box",), "relation_swap"),
        ProbeItem(
            "c", images[2], "a red ball on a mat", ("a blue ball on a mat", "a red ball under a mat"), "attr"
        ),
        ProbeItem("d", images[3], "two cats", ("three cats",), "count"),
    ]
    table = {
        "a cat left of a dog": {0: 0.9},
        "a cat right of a dog": {0: 0.1},
        "a cup above a box": {1: 0.2},
        "a cup below a box": {1: 0.5},
        "a red ball on a mat": {2: 0.4},
        "a blue ball on a mat": {2: 0.6},
        "a red ball under a mat": {2: 0.3},
        "two cats": {3: 0.5},
        "three cats": {3: 0.5},  # a tie fails
    }
    return items, FakeEncoder(table)


def test_fake_model_accuracy_margins_and_confusion_are_exact() -> None:
    items, encoder = _scenario()
    result = run_probe(items, encoder)
    assert result.correct.tolist() == [True, False, False, False]
    np.testing.assert_allclose(result.margins, [0.8, -0.3, -0.2, 0.0], atol=1e-12)
    assert result.winners.tolist() == [0, 1, 1, 1]
    summary = summarize(result)
    assert (summary["accuracy"], summary["n"]) == (0.25, 4)
    assert summary["per_tag"]["relation_swap"]["accuracy"] == 0.5
    assert summary["per_tag"]["attr"]["accuracy"] == 0.0
    assert summary["macro_accuracy"] == pytest.approx(0.5 / 3)
    assert summary["confusion"] == {
        "above": {"below": 1},
        "count": {"count (false)": 1},
        "left of": {"left of": 1},
        "on": {"attr": 1},  # the attribute foil (same relation) won, named by the item's tag
    }
    assert summary["margin"]["median"] == pytest.approx(-0.1)


def test_missing_image_is_counted_not_raised(tmp_path: Path) -> None:
    items, encoder = _scenario()
    missing = ProbeItem("gone", tmp_path / "nope.png", "a cat left of a dog", ("a cat right of a dog",))
    result = run_probe([missing, *items], encoder)
    assert [b.id for b in result.bad] == ["gone"] and "not found" in result.bad[0].reason
    assert [i.id for i in result.items] == ["a", "b", "c", "d"]


def test_winoground_text_image_group_scores_are_exact(tmp_path: Path) -> None:
    rows, table = [], {}
    # (s(c0,i0), s(c1,i0), s(c1,i1), s(c0,i1)) per example: all right; nothing right; image only.
    for ex, (a, b, c, d) in enumerate([(0.9, 0.2, 0.8, 0.3), (0.6, 0.5, 0.4, 0.7), (0.5, 0.6, 0.7, 0.1)]):
        i0, i1 = 2 * ex, 2 * ex + 1
        _solid(i0).save(tmp_path / f"ex_{ex}_img_0.png")
        _solid(i1).save(tmp_path / f"ex_{ex}_img_1.png")
        table[f"c0 {ex}"], table[f"c1 {ex}"] = {i0: a, i1: d}, {i0: b, i1: c}
        rows.append(
            {
                "id": ex,
                "caption_0": f"c0 {ex}",
                "caption_1": f"c1 {ex}",
                "image_0": f"ex_{ex}_img_0",
                "image_1": f"ex_{ex}_img_1",
                "tag": "Object",
            }
        )
    (tmp_path / "examples.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    suite = load_suite(f"winoground:{tmp_path / 'examples.jsonl'}")
    scores = summarize(run_probe(suite.items, FakeEncoder(table)), suite.group_metric)["winoground"]
    assert [scores[k]["accuracy"] for k in ("text", "image", "group")] == pytest.approx([1 / 3, 2 / 3, 1 / 3])
    assert scores["text"]["n"] == 3


def test_whatsup_pair_and_set_accuracy_are_exact() -> None:
    relations = ["left of", "right of", "on", "under", "left of", "right of"]
    groups = ["mug|plate"] * 4 + ["cup|box"] * 2
    passed = [True, True, True, False, True, True]
    items = [
        ProbeItem(str(i), _solid(i), f"t{i}", (f"f{i}",), r, r, group=g)
        for i, (r, g) in enumerate(zip(relations, groups, strict=True))
    ]
    table = {
        **{f"t{i}": {i: 1.0} for i in range(6)},
        **{f"f{i}": {i: 0.0 if ok else 2.0} for i, ok in enumerate(passed)},
    }
    scores = summarize(run_probe(items, FakeEncoder(table)), "whatsup")["whatsup"]
    assert scores["individual"]["accuracy"] == pytest.approx(5 / 6)
    assert (scores["pair"]["accuracy"], scores["pair"]["n"]) == (pytest.approx(2 / 3), 3)
    assert (scores["set"]["accuracy"], scores["set"]["n"]) == (0.5, 2)


def test_bootstrap_is_seeded_and_matches_a_naive_loop() -> None:
    flags = np.random.default_rng(1).random(200) < 0.7
    first, again = bootstrap_ci(flags, 1000, seed=3), bootstrap_ci(flags, 1000, seed=3)
    assert first == again and bootstrap_ci(flags, 1000, seed=4) != first
    rng = np.random.default_rng(3)
    means = [flags[rng.integers(0, len(flags), size=len(flags))].mean() for _ in range(1000)]
    assert first == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    # Against the normal approximation p +- 1.96 sqrt(p(1-p)/n).
    p, half = flags.mean(), 1.96 * np.sqrt(flags.mean() * (1 - flags.mean()) / len(flags))
    assert first == pytest.approx((p - half, p + half), abs=0.015)


def test_wilson_interval_and_small_n_fallback() -> None:
    assert wilson_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_ci(3, 3)[1] == 1.0 and wilson_ci(3, 3)[0] == pytest.approx(0.4385, abs=1e-4)
    assert accuracy_block([True, True, False])["ci95"] == list(wilson_ci(2, 3))
    assert accuracy_block([]) == {"accuracy": None, "n": 0, "ci95": [None, None]}


def _naive_score(model: Any, preprocess: Any, tokenizer: Any, image: Image.Image, text: str) -> float:
    """One image and one text through the model, unbatched and uncached."""
    with torch.no_grad():
        img = model.encode_image(preprocess(image)[None], normalize=True)
        txt = model.encode_text(tokenizer([text]), normalize=True)
    return float(img[0] @ txt[0])


@pytest.mark.parametrize("scorer", ["cosine", "compositional"])
def test_batched_cached_scores_match_naive_per_item_scores(scorer: str) -> None:
    model, preprocess, tokenizer = load("tiny-vit")
    shared = Image.new("RGB", (40, 30), (200, 30, 30))
    items = [
        ProbeItem(
            "x",
            shared,
            "a red cube left of a ball and a cone above the cube",
            ("a red cube right of a ball and a cone above the cube",),
        ),
        ProbeItem("y", shared, "a dog", ("a cat", "a bird")),
        ProbeItem(
            "z", Image.new("RGB", (30, 30), (0, 90, 200)), "a ball under a box", ("a ball above a box",)
        ),
    ]
    result = run_probe(items, ClipEncoder(model, preprocess, tokenizer, batch_size=2), scorer)
    for item, scores in zip(result.items, result.scores, strict=True):
        expected = []
        for sentence in item.sentences:
            parts = [sentence] if scorer == "cosine" else relation_clauses(sentence)
            expected.append(sum(_naive_score(model, preprocess, tokenizer, item.image, p) for p in parts))
        np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_cli_writes_json_and_self_contained_html(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("RGB", (24, 24), (80 * i, 40, 40)).save(tmp_path / f"{i}.png")
    lines = [
        {
            "image": f"{i}.png",
            "true": f"a cube left of ball {i}",
            "false": f"a cube right of ball {i}",
            "tag": "lr",
        }
        for i in range(3)
    ]
    lines.append({"image": "missing.png", "true": "a", "false": "b", "tag": "lr"})
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n{broken\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "probe",
            "--suite",
            f"pairs:{tmp_path / 'pairs.jsonl'}",
            "--model",
            "vit=tiny-vit",
            "--model",
            "rn=tiny-rn",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "probe.json").read_text())
    assert set(report["models"]) == {"vit", "rn"}
    assert report["bad"]["count"] == 2 and {b["id"] for b in report["bad"]["items"]} == {
        "pairs.jsonl:4",
        "pairs.jsonl:5",
    }
    for summary in report["models"].values():
        assert summary["n"] == 3 and set(summary["per_tag"]) == {"lr"} and len(summary["ci95"]) == 2
    page = (out / "probe.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 3
    assert page.count("http") == page.count("http://www.w3.org/2000/svg")  # no external assets


def test_cli_rejects_a_bad_suite_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["probe", "--suite", "nope:x", "--model", "tiny-vit", "--out", str(tmp_path)]
    )
    assert result.exit_code != 0 and "unknown suite kind 'nope'" in result.output
    assert "Traceback" not in result.output


def test_in_memory_synthetic_probe_equals_the_suite_on_disk(tmp_path: Path) -> None:
    from clipforge.synthetic.dataset import SceneConfig, synthetic_probe_items, write_synthetic

    write_synthetic(tmp_path / "syn", 6, seed=0, split="test")
    encoder = ClipEncoder.load("tiny-vit")
    disk = summarize(run_probe(load_suite(f"synthetic:{tmp_path / 'syn'}").items, encoder))
    items, bad = items_from_synthetic(synthetic_probe_items(SceneConfig(), "test", 6, seed=0))
    memory = summarize(run_probe(items, encoder))
    assert not bad and memory["n"] == disk["n"] > 0
    assert (memory["accuracy"], memory["ci95"], memory["per_tag"]) == (
        disk["accuracy"],
        disk["ci95"],
        disk["per_tag"],
    )


def test_interval_direction_says_disjoint_above_below_or_overlapping() -> None:
    assert interval_direction((0.40, 0.50), (0.51, 0.60)) == 1
    assert interval_direction((0.40, 0.50), (0.30, 0.39)) == -1
    assert interval_direction((0.40, 0.50), (0.50, 0.60)) == 0  # touching ends overlap
    assert interval_direction((0.40, 0.50), (0.20, 0.90)) == 0
