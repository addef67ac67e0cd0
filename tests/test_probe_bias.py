"""The bias: suite on a caption fixture with known labels: counts, skews, MAD, its control, zero-shot, CLI."""

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipforge.cli.main import main
from clipforge.errors import ConfigError, DataError
from clipforge.probe.bias import BiasSuite, gender_label, open_bias, random_retrieval_mad, read_queries
from clipforge.probe.suites import open_suite

# name -> (captions, label the rule must give)
PHOTOS = {
    "m1": (["A man runs", "a man", "a guy jumps"], "male"),
    "m2": (["Two men talk", "men", "a person"], "male"),
    "m3": (["A boy plays", "a boy", "a child"], "male"),
    "f1": (["A woman sits", "a lady", "a woman"], "female"),
    "f2": (["A girl swims", "girls", "a child"], "female"),
    "u1": (["A person walks", "someone", "a dog"], "unknown"),  # no gendered word
    "u2": (["A man and a woman", "a man", "a couple"], "unknown"),  # names women too
    "u3": (["A man", "a person", "someone"], "unknown"),  # only one caption names men
    "u4": (["A dog with his ball", "he runs", "a dog"], "unknown"),  # pronouns do not count
    "u5": (["A snowman", "a hotdog", "a manhole"], "unknown"),  # whole words only
}
NAMES = list(PHOTOS)
# The two fixture queries' image scores, and the zero-shot prompts'.
TEXT_SCORES = {
    "q1": {"m1": 0.9, "m2": 0.8, "f1": 0.7, "u1": 0.1},  # top 3: m1 m2 f1 -> p_male 2/3
    "q2": {"f1": 0.9, "f2": 0.8, "u1": 0.7},  # top 3: f1 f2 u1 -> p_male 0
    "a photo of a man": {"m1": 1.0, "m2": 1.0, "f1": 1.0},
    "a photo of a woman": {"f2": 1.0, "m3": 1.0},
}


def test_gender_labels_follow_the_rule() -> None:
    assert {name: gender_label(captions) for name, (captions, _) in PHOTOS.items()} == {
        name: label for name, (_, label) in PHOTOS.items()}


class OneHot:
    """Image i embeds to e_i (read from its red channel); a text to its row of `TEXT_SCORES`."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.eye(len(NAMES))[[im.getpixel((0, 0))[0] // 20 for im in images]]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), len(NAMES)))
        for row, text in zip(rows, texts, strict=True):
            for name, score in TEXT_SCORES[text].items():
                row[NAMES.index(name)] = score
        return rows


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    for index, (name, (captions, _)) in enumerate(PHOTOS.items()):
        Image.new("RGB", (16, 16), (index * 20, 0, 0)).save(root / f"{name}.png")
        (root / f"{name}.txt").write_text("\n".join(captions) + "\n")
    (tmp_path / "queries.txt").write_text("# neutral queries\nq1\n\nq2\nq1\n")
    return root


def _suite(root: Path, top_k: int = 3) -> BiasSuite:
    return open_bias(f"folder:{root}", [f"queries={root.parent / 'queries.txt'}", f"top_k={top_k}"], None)


def test_counts_skews_and_mad_are_exact(collection: Path) -> None:
    summary = _suite(collection).analyze(OneHot(), 200, 0)
    assert summary["labels"]["counts"] == {"male": 3, "female": 2, "unknown": 5}
    base = summary["labels"]["base_rate_male"]
    assert base == pytest.approx(0.6)
    q1, q2 = summary["queries"]
    assert (q1["query"], q1["male"], q1["female"], q1["unknown"]) == ("q1", 2, 1, 0)
    assert q1["top"] == ["m1.png", "m2.png", "f1.png"]
    assert (q2["male"], q2["female"], q2["unknown"]) == (0, 2, 1)
    assert q1["skew"] == pytest.approx(2 / 3 - 0.6) and q2["skew"] == pytest.approx(-0.6)
    assert summary["mad"]["value"] == pytest.approx((2 / 3 - 0.6 + 0.6) / 2)
    assert summary["mad_uniform"]["value"] == pytest.approx((2 / 3 - 0.5 + 0.5) / 2)
    assert summary["mean_skew"]["value"] == pytest.approx((2 / 3 - 0.6 - 0.6) / 2)
    assert summary["headline"]["value"] == summary["mad"]["value"] and summary["headline"]["n"] == 2
    low, high = q2["ci95"]
    assert low == pytest.approx(-0.6) and -0.6 < high < 0.5  # Wilson interval of 0/2, shifted
    zero_shot = summary["zero_shot"]
    assert zero_shot["male"]["accuracy"] == pytest.approx(2 / 3) and zero_shot["female"]["accuracy"] == 0.5
    assert zero_shot["balanced"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert zero_shot["predicted_male_share"] == pytest.approx(3 / 5)


def _exact_expected_deviation(male: int, female: int, unknown: int, k: int) -> float:
    """E|p_male - base| over K images drawn without replacement, given at least one is labelled."""
    total, base = male + female + unknown, male / (male + female)
    expected, mass = 0.0, 0.0
    for m in range(k + 1):
        for f in range(k + 1 - m):
            u = k - m - f
            if m + f == 0 or m > male or f > female or u > unknown:
                continue
            p = math.comb(male, m) * math.comb(female, f) * math.comb(unknown, u) / math.comb(total, k)
            expected += p * abs(m / (m + f) - base)
            mass += p
    return expected / mass


def test_random_retrieval_control_matches_the_hypergeometric_expectation() -> None:
    counts = {"male": 30, "female": 12, "unknown": 40}
    control = random_retrieval_mad(counts, k=8, n_queries=1, n_draws=20000, seed=0)
    assert control["mad_mean"] == pytest.approx(_exact_expected_deviation(30, 12, 40, 8), abs=0.004)
    low, high = control["mad_95"]
    assert low <= control["mad_mean"] <= high
    assert random_retrieval_mad(counts, 8, 5, 100, 1) == random_retrieval_mad(counts, 8, 5, 100, 1)


def test_queries_file_options_and_errors(collection: Path, tmp_path: Path) -> None:
    assert read_queries(tmp_path / "queries.txt") == ["q1", "q2"]
    shipped = read_queries()
    assert len(shipped) >= 30 and "a doctor" in shipped
    assert isinstance(open_suite(f"bias:folder:{collection}", limit=4), BiasSuite)
    assert len(open_bias(f"folder:{collection}", [], 4).photos) == 4
    with pytest.raises(ConfigError, match="unknown config key 'k'"):
        open_bias(f"folder:{collection}", ["k=3"], None)
    with pytest.raises(ConfigError, match="top_k must be >= 1"):
        open_bias(f"folder:{collection}", ["top_k=0"], None)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="no queries"):
        open_bias(f"folder:{collection}", [f"queries={tmp_path / 'empty.txt'}"], None)


def test_cli_compares_models_and_writes_a_self_contained_page(collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["probe", "--suite", f"bias:folder:{collection}", "--model", "vit=tiny-vit", "--model",
            "rn=tiny-rn", "--option", "top_k=4", "--resamples", "50", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "vit: MAD of gender skew" in result.output and "rn: MAD" in result.output
    report = json.loads((out / "probe.json").read_text())
    assert report["kind"] == "bias" and set(report["models"]) == {"vit", "rn"}
    for summary in report["models"].values():
        assert summary["top_k"] == 4 and len(summary["queries"]) == len(read_queries())
        assert summary["labels"]["counts"] == {"male": 3, "female": 2, "unknown": 5}
    page = (out / "probe.html").read_text()
    assert "Skew per neutral query" in page and "data:image/jpeg;base64," in page
    assert page.count("http") == page.count("http://www.w3.org/2000/svg")  # no external assets
    refused = CliRunner().invoke(main, [*args[:-2], "--out", str(tmp_path / "x"), "--write-suite"])
    assert refused.exit_code != 0 and "is an analysis" in refused.output and "Traceback" not in refused.output


@pytest.mark.flickr8k
def test_flickr8k_test_labels(flickr8k_root: Path) -> None:
    suite = open_bias(f"flickr8k:{flickr8k_root}:test", [], None)
    assert len(suite.photos) == 1000
    assert Counter(suite.labels) == {"male": 347, "female": 170, "unknown": 483}
