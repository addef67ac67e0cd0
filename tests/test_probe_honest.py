"""Pair-balanced accuracy and the blind baseline: hand-computed numbers; a fixed preference scores 0.5."""

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from clipforge.probe import ProbeItem, run_probe, summarize
from clipforge.probe.run import ProbeResult
from clipforge.probe.stats import honest_scores, pair_directions, resampled_means, split_results

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
            "near": "far from"}


def _item(index: int, relation: str, image: Image.Image | None = None) -> ProbeItem:
    """An item 'thing{index} <relation> box' whose false sentence says the opposite."""
    other = OPPOSITE[relation]
    image = image if image is not None else Image.new("RGB", (4, 4), (index, 0, 0))
    return ProbeItem(f"i{index}", image, f"thing{index} {relation} box", (f"thing{index} {other} box",),
                     relation, relation, (relation, other))


def _result(relations: Sequence[str], correct: Sequence[bool], blind: Sequence[bool] | None = None
            ) -> ProbeResult:
    items = [_item(i, r) for i, r in enumerate(relations)]
    scores = [np.array([1.0, 0.0] if ok else [0.0, 1.0]) for ok in correct]
    blind_scores = [np.array([1.0, 0.0] if ok else [0.0, 1.0]) for ok in blind or []]
    return ProbeResult(items, scores, [], "cosine", blind_scores)


def test_pair_balanced_matches_a_hand_computed_example() -> None:
    # left of: 2/3 right; right of: 0/1; above: 1/2; below: 2/2; near (no reverse direction): unpaired.
    relations = ["left of"] * 3 + ["right of"] + ["above"] * 2 + ["below"] * 2 + ["near"]
    correct = [True, True, False, False, True, False, True, True, True]
    blind = [True, False, False, True, False, False, True, False, True]
    result = _result(relations, correct, blind)
    pairs, unpaired = pair_directions(result)
    assert unpaired == 1 and set(pairs) == {("left of", "right of"), ("above", "below")}
    honest = honest_scores(result, n_resamples=200)
    balanced = honest["pair_balanced"]
    # ((2/3 + 0) / 2 + (1/2 + 1) / 2) / 2
    assert balanced["accuracy"] == pytest.approx((1 / 3 + 3 / 4) / 2)
    assert (balanced["n"], balanced["n_pairs"], balanced["unpaired"]) == (8, 2, 1)
    assert balanced["pairs"]["left of / right of"]["accuracy"] == pytest.approx(1 / 3)
    assert balanced["pairs"]["above / below"]["directions"] == {"above": {"accuracy": 0.5, "n": 2},
                                                                "below": {"accuracy": 1.0, "n": 2}}
    low, high = balanced["ci95"]
    assert low <= balanced["accuracy"] <= high
    blind_block = honest["blind"]
    assert blind_block["accuracy"] == pytest.approx(4 / 9)
    assert blind_block["gain"]["accuracy"] == pytest.approx(6 / 9 - 4 / 9)
    # Blind: left of 1/3, right of 1/1, above 0/2, below 1/2.
    assert blind_block["pair_balanced"]["accuracy"] == pytest.approx(((1 / 3 + 1) / 2 + (0 + 0.5) / 2) / 2)
    assert blind_block["gain_pair_balanced"]["accuracy"] == pytest.approx(
        balanced["accuracy"] - blind_block["pair_balanced"]["accuracy"])


class PhrasePreference:
    """Scores a sentence 1 when it says 'left of' or 'above', whatever the image: a pure text prior."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.ones((len(images), 1))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([[1.0 if ("left of" in t or "above" in t) else 0.0] for t in texts])


def test_a_model_that_always_prefers_one_phrase_scores_exactly_one_half() -> None:
    counts = {"left of": 7, "right of": 2, "above": 5, "below": 11}
    items = [_item(i, r) for i, r in enumerate(r for r, n in counts.items() for _ in range(n))]
    summary = summarize(run_probe(items, PhrasePreference()))
    assert summary["accuracy"] == pytest.approx(12 / 25)  # the raw accuracy follows the tag mix
    assert summary["pair_balanced"]["accuracy"] == 0.5
    assert summary["pair_balanced"]["ci95"] == [0.5, 0.5]
    assert summary["blind"]["accuracy"] == summary["accuracy"]  # the image never mattered
    assert summary["blind"]["gain"]["accuracy"] == 0.0


class TwoImages:
    """Red 0 pixels embed as [1, 0], the others as [0, 1]; four fixed text vectors."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.array([[1.0, 0.0] if im.getpixel((0, 0))[0] == 0 else [0.0, 1.0] for im in images])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        table = {"t0": [1.0, -2.0], "f0": [0.0, 0.0], "t1": [0.0, 0.3], "f1": [0.1, 0.1]}
        return np.array([table[t] for t in texts])


def _two_items(split: str | None = None) -> list[ProbeItem]:
    return [ProbeItem("a", Image.new("RGB", (2, 2), (0, 0, 0)), "t0", ("f0",), split=split),
            ProbeItem("b", Image.new("RGB", (2, 2), (9, 0, 0)), "t1", ("f1",), split=split)]


def test_blind_scores_use_the_normalized_mean_image() -> None:
    result = run_probe(_two_items(), TwoImages())
    blind = np.array([1.0, 1.0]) / np.sqrt(2)
    expected = [[blind @ [1.0, -2.0], 0.0], [blind @ [0.0, 0.3], blind @ [0.1, 0.1]]]
    np.testing.assert_allclose(np.array(result.blind_scores), expected)
    assert result.correct.tolist() == [True, True] and result.blind_correct.tolist() == [False, True]


def test_each_split_has_its_own_blind_image() -> None:
    other = ProbeItem("c", Image.new("RGB", (2, 2), (9, 0, 0)), "t0", ("f0",), split="style")
    alone = run_probe(_two_items("test"), TwoImages())
    mixed = run_probe([*_two_items("test"), other], TwoImages())
    np.testing.assert_allclose(np.array(mixed.blind_scores[:2]), np.array(alone.blind_scores))
    np.testing.assert_allclose(mixed.blind_scores[2], [-2.0, 0.0])  # its split's only image is [0, 1]


def test_stratified_draws_match_a_naive_loop() -> None:
    flags = np.random.default_rng(2).random((30, 2)) < 0.6
    got = resampled_means(flags, 50, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    expected = [flags[rng.integers(0, 30, size=30)].mean(axis=0) for _ in range(50)]
    np.testing.assert_allclose(got, expected)


def test_results_without_pairs_or_blind_scores_report_none() -> None:
    result = _result(["near", "near"], [True, False])
    honest = honest_scores(result)
    assert honest["blind"] is None
    assert honest["pair_balanced"]["accuracy"] is None and honest["pair_balanced"]["unpaired"] == 2


def test_grouped_items_resample_whole_groups() -> None:
    # Ten flip-like groups: a 'left of' item and its mirrored 'right of' item; blind gets exactly one right.
    correct = [True, True, True, False, False, True, True, True, False, False] * 2
    relations = [r for _ in range(10) for r in ("left of", "right of")]
    blind = [i % 2 == 0 for i in range(20)]
    result = _result(relations, correct, blind)
    result.items[:] = [ProbeItem(it.id, it.image, it.true, it.false, it.tag, it.relation, it.labels,
                                 group=f"g{i // 2}") for i, it in enumerate(result.items)]
    honest = honest_scores(result, n_resamples=300, seed=7)
    assert honest["blind"]["pair_balanced"] == {"accuracy": 0.5, "ci95": [0.5, 0.5]}
    # Naive: draw groups with the same generator, rebuild each resampled suite, recompute the statistic.
    weights = np.random.default_rng(7).multinomial(10, np.full(10, 0.1), size=300)
    flags = np.array(correct)
    samples = []
    for draw in weights:
        chosen = [g for g, count in enumerate(draw) for _ in range(count)]
        left = [flags[2 * g] for g in chosen]
        right = [flags[2 * g + 1] for g in chosen]
        samples.append((np.mean(left) + np.mean(right)) / 2)
    assert honest["pair_balanced"]["ci95"] == pytest.approx(list(np.quantile(samples, [0.025, 0.975])))


def test_each_split_keeps_its_items_blind_scores() -> None:
    """The quickstart reports in-style and held-out-style numbers from `split_results`: each split must
    keep its own items' blind scores, or its blind baseline silently disappears."""
    result = _result(["left of", "right of", "left of", "right of"], [True, True, False, True],
                     blind=[False, True, True, False])
    for i, split in enumerate(["test", "test", "test_style", "test_style"]):
        result.items[i] = dataclasses.replace(result.items[i], split=split)
    parts = split_results(result)
    assert sorted(parts) == ["test", "test_style"]
    assert [s.tolist() for s in parts["test_style"].blind_scores] == [[1.0, 0.0], [0.0, 1.0]]
    assert honest_scores(parts["test"])["blind"]["accuracy"] == pytest.approx(0.5)
    assert honest_scores(parts["test_style"])["blind"]["accuracy"] == pytest.approx(0.5)
    assert summarize(result)["per_split"]["test"]["blind"] is not None
