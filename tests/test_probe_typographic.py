"""The typographic: suite: attack plans, exact scores with a model that reads and one that cannot, the CLI."""

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipforge.cli.main import main
from clipforge.errors import ConfigError, DataError
from clipforge.probe.suites import open_suite
from clipforge.probe.typographic import (
    CONTROL_WORDS,
    VARIANTS,
    TypographicSuite,
    control_words,
    head_scores,
    open_typographic,
    plan_attacks,
)

CLASSES = ("apple", "pear", "plum")
SHADES = {"apple": (200, 40, 40), "pear": (40, 200, 40), "plum": (40, 40, 200)}


def _folder(root: Path, per_class: int) -> Path:
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shade = tuple(c + 3 * i for c in SHADES[name])
            Image.new("RGB", (96 + 8 * index, 80), shade).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    _folder(tmp_path / "train", 6)
    _folder(tmp_path / "test", 4)
    return tmp_path


def _one_hot(index: int) -> np.ndarray:
    return np.eye(len(CLASSES))[index]


def _text_rows(texts: Sequence[str]) -> np.ndarray:
    return np.stack([_one_hot(next(i for i, c in enumerate(CLASSES) if c in t)) for t in texts])


class Eyes:
    """Sees only the dominant colour: a written word never changes what it predicts."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([_one_hot(int(np.argmax(np.median(np.asarray(im), axis=(0, 1))))) for im in images])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return _text_rows(texts)


class Reader(Eyes):
    """Reads a class name wherever one is written (a lookup of the suite's rendered attacks), else sees."""

    def __init__(self, suite: TypographicSuite) -> None:
        self.written = {_digest(suite.render(i, "attacked")): a.target for i, a in enumerate(suite.attacks)}

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        seen = super().encode_images(images)
        return np.stack([_one_hot(self.written[_digest(im)]) if _digest(im) in self.written else row
                         for im, row in zip(images, seen, strict=True)])


def _digest(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def test_targets_are_other_classes_drawn_evenly_and_control_words_name_none() -> None:
    labels = [i % 3 for i in range(3000)]
    attacks = plan_attacks(labels, CLASSES, seed=0)
    assert all(a.target != label for a, label in zip(attacks, labels, strict=True))
    per_label = Counter((label, a.target) for a, label in zip(attacks, labels, strict=True))
    assert all(450 < count < 550 for count in per_label.values()) and len(per_label) == 6
    assert {a.control for a in attacks} <= set(CONTROL_WORDS)
    assert plan_attacks(labels[:20], CLASSES, 0) == attacks[:20] != plan_attacks(labels[:20], CLASSES, 1)
    assert "lamp" not in control_words(["desk lamp", "sofa"]) and "table" in control_words(["desk lamp"])
    with pytest.raises(DataError, match="every control word"):
        control_words(list(CONTROL_WORDS))


def test_head_scores_count_exactly_with_paired_intervals() -> None:
    truth = {"label": np.array([0, 1, 2, 0]), "target": np.array([1, 2, 0, 2])}
    predicted = {"clean": np.array([0, 1, 2, 1]), "attacked": np.array([1, 1, 0, 0]),
                 "control": np.array([0, 1, 2, 1])}
    scores = head_scores(predicted, truth, 500, 0)
    values = {name: block["value"] for name, block in scores.items()}
    assert values == pytest.approx({
        "clean_accuracy": 0.75, "attacked_accuracy": 0.5, "control_accuracy": 0.75, "attack_success": 0.5,
        "control_success": 0.0, "clean_success": 0.0, "drop": 0.25, "control_drop": 0.0,
        "drop_beyond_control": 0.25, "success_beyond_control": 0.5})
    assert scores["control_drop"]["ci95"] == [0.0, 0.0]  # the same hits on every resample: paired
    for block in scores.values():
        assert block["ci95"][0] <= block["value"] <= block["ci95"][1] and block["n"] == 4


def test_a_model_blind_to_text_is_not_fooled(data: Path) -> None:
    suite = open_typographic(f"imagefolder:{data}:test", [], None)
    for variant in ("attacked", "control"):  # the suite's pixels are those of its MappedData views
        key = suite.items[5].key
        assert suite.written[variant].label_of(key) == suite.items[5].label
        assert suite.written[variant].image(key).tobytes() == suite.render(5, variant).tobytes()
    summary = suite.analyze(Eyes(), 200, 0)
    scores = summary["scores"]["zero_shot"]
    assert summary["n"] == 12 and summary["classes"] == list(CLASSES)
    accuracies = [scores[k]["value"] for k in ("clean_accuracy", "attacked_accuracy", "control_accuracy")]
    assert accuracies == [1, 1, 1]
    assert scores["attack_success"]["value"] == 0 and scores["drop_beyond_control"]["value"] == 0


def test_a_model_that_reads_is_fooled_every_time_and_the_control_is_not(data: Path) -> None:
    suite = open_typographic(f"imagefolder:{data}:test", [f"linear_probe=imagefolder:{data}:train"], None)
    summary = suite.analyze(Reader(suite), 200, 0)
    for head in ("zero_shot", "linear_probe"):
        scores = summary["scores"][head]
        expected = {"clean_accuracy": 1, "attacked_accuracy": 0, "control_accuracy": 1,
                    "attack_success": 1, "control_success": 0, "success_beyond_control": 1}
        assert {k: scores[k]["value"] for k in expected} == expected, head
    assert summary["linear_probe"]["n_train"] + summary["linear_probe"]["n_val"] == 18
    by_target = summary["per_target"]["zero_shot"]
    written = Counter(CLASSES[row["target"]] for row in summary["images"])
    assert {name: by_target[name]["attacked"]["n"] for name in CLASSES} == {c: written[c] for c in CLASSES}
    for name in written:
        assert (by_target[name]["attacked"]["accuracy"], by_target[name]["control"]["accuracy"]) == (1, 0)
    row = summary["images"][0]
    assert row["predicted"]["zero_shot"] == {"clean": row["label"], "attacked": row["target"],
                                             "control": row["label"]}
    assert summary["headline"]["value"] == 1 and summary["headline"]["n"] == 12


def test_options_limit_and_errors(data: Path, tmp_path: Path) -> None:
    spec = f"imagefolder:{data}:test"
    assert isinstance(open_suite(f"typographic:{spec}", limit=5), TypographicSuite)
    assert len(open_typographic(spec, [], 5).items) == 5
    with pytest.raises(ConfigError, match="unknown config key"):
        open_typographic(spec, ["seeds=1"], None)
    with pytest.raises(ConfigError, match="needs linear_probe"):
        open_typographic(spec, [f"linear_probe_val={spec}"], None)
    (tmp_path / "other" / "a").mkdir(parents=True)
    (tmp_path / "other" / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "other" / "a" / "x.png")
    with pytest.raises(DataError, match="has classes"):
        open_typographic(spec, [f"linear_probe=imagefolder:{tmp_path / 'other'}"], None)


def test_unreadable_images_are_listed_not_raised(data: Path) -> None:
    (data / "test" / "plum" / "broken.png").write_bytes(b"not an image")
    summary = open_typographic(f"imagefolder:{data}:test", [], None).analyze(Eyes(), 50, 0)
    assert summary["n"] == 12 and summary["unreadable"] == ["plum/broken.png"]


def test_cli_compares_models_with_example_images(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["probe", "--suite", f"typographic:imagefolder:{data}:test", "--model", "vit=tiny-vit", "--model",
            "rn=tiny-rn", "--option", "examples=2", "--resamples", "50", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "vit: zero-shot attack success" in result.output and "rn: zero-shot attack" in result.output
    report = json.loads((out / "probe.json").read_text())
    assert report["kind"] == "typographic" and set(report["models"]) == {"vit", "rn"}
    for summary in report["models"].values():
        assert len(summary["images"]) == 12 and set(summary["scores"]) == {"zero_shot"}
    page = (out / "probe.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 2 * len(VARIANTS)
    assert page.count("http") == page.count("http://www.w3.org/2000/svg")  # no external assets


def test_readme_command_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's command, with registry models and fewer images."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("### Typographic attacks", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    args = block.replace("\\\n", " ").split()
    assert args[:3] == ["clipforge", "probe", "--suite"] and "typographic:synth:shape" in args
    swap = {"plain=runs/quickstart/plain/final": "plain=tiny-convnet",
            "hardneg=runs/quickstart/hardneg/final": "hardneg=tiny-vit"}
    monkeypatch.chdir(tmp_path)
    extra = ["--limit", "30", "--resamples", "50"]
    result = CliRunner().invoke(main, [swap.get(a, a) for a in args[1:]] + extra)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "typo" / "probe.json").read_text())
    assert set(report["models"]) == {"plain", "hardneg"}
    assert all(summary["n"] == 30 for summary in report["models"].values())
