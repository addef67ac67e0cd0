"""Accuracy with confidence intervals, per tag and per relation, the confusion table and group scores.

Intervals are percentile bootstraps from a seeded numpy Generator, so the same scores always give the
same interval; below `MIN_BOOTSTRAP_N` items a bootstrap is too coarse and the Wilson score interval
is used instead.

Pair-balanced accuracy: items with one false sentence whose two sentences name different labels (their
relations, see `sentence_labels`) have a *direction* ``true label -> false label``. Two labels seen in
both directions form a pair ("left of / right of"); the pair's accuracy is the mean of its two
directions' accuracies, and pair-balanced accuracy is the macro mean over pairs. A model that prefers one
label of a pair whatever the image is right on one direction and wrong on the other: exactly 0.5. Items in
no pair (one direction only, several false sentences) are counted as ``unpaired``.

Blind baseline: the same items scored against the blind image (`clipforge.probe.run`); ``gain`` is
accuracy minus blind accuracy.

Intervals of these (`honest_scores`): when every item belongs to a group (the two images of a ``flip:``
caption, the eight items of a ``collage:`` photo pair, What'sUp, Winoground), whole groups are resampled,
since items that share photos are not independent; otherwise items are resampled within each direction
(stratified), so every direction keeps its size. The model's and the blind pick are always resampled
together (paired), and so are the two directions of a pair when groups are resampled.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipforge.probe.items import ProbeItem
from clipforge.probe.run import ProbeResult
from clipforge.probe.spatial import canonical_relation, relation_label

N_RESAMPLES = 1000
MIN_BOOTSTRAP_N = 10
LEVEL = 0.95
# Resampled values held at once; keeps memory flat for large suites.
_CHUNK_VALUES = 2_000_000
# What'sUp pairs a relation with its opposite: both must be right for the pair to count.
PAIR_OPPOSITES = {"left of": "right of", "right of": "left of", "on": "under", "under": "on",
                  "in front of": "behind", "behind": "in front of"}


def resampled_means(columns: Any, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of each column of `columns` [n, k], every column resampled with the same rows.

    Returns:
        [n_resamples, k] means.
    """
    data = np.asarray(columns, dtype=np.float64)
    n, k = data.shape
    means = np.empty((n_resamples, k))
    rows = max(1, _CHUNK_VALUES // max(n * k, 1))
    for start in range(0, n_resamples, rows):
        count = min(rows, n_resamples - start)
        means[start : start + count] = data[rng.integers(0, n, size=(count, n))].mean(axis=1)  # [count, k]
    return means


def percentile_interval(samples: Any, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` interval of bootstrap samples (NaN samples, undefined draws, are ignored)."""
    tail = (1.0 - level) / 2.0
    low, high = np.nanquantile(np.asarray(samples, dtype=np.float64), [tail, 1.0 - tail])
    return float(low), float(high)


def interval_direction(base: Any, other: Any) -> int:
    """Whether `other`'s confidence interval lies wholly above (1) or below (-1) `base`'s, or overlaps it (0).

    Args:
        base: ``(low, high)`` of the reference.
        other: ``(low, high)`` of the compared result.
    """
    (base_low, base_high), (low, high) = base, other
    if low > base_high:
        return 1
    if high < base_low:
        return -1
    return 0


def bootstrap_ci(values: Any, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`."""
    data = np.asarray(values, dtype=np.float64)[:, None]  # [n, 1]
    means = resampled_means(data, n_resamples, np.random.default_rng(seed))[:, 0]
    return percentile_interval(means, level)


def wilson_ci(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion (sound for small `n` and for 0 % or 100 %)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def accuracy_block(correct: Any, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """``{"accuracy", "n", "ci95": [lo, hi]}`` of a boolean array (None values when it is empty)."""
    flags = np.asarray(correct, dtype=bool)
    n = len(flags)
    if n == 0:
        return {"accuracy": None, "n": 0, "ci95": [None, None]}
    if n < MIN_BOOTSTRAP_N:
        low, high = wilson_ci(int(flags.sum()), n)
    else:
        low, high = bootstrap_ci(flags, n_resamples, seed)
    return {"accuracy": float(flags.mean()), "n": n, "ci95": [low, high]}


def sentence_labels(item: ProbeItem) -> tuple[str, ...]:
    """What each sentence stands for in the confusion table: its relation, else the item's tag.

    A false sentence with the same relation as the true one (an attribute or argument swap) is named
    by the item's tag, so the table shows which kind of foil won.
    """
    if item.labels:
        return item.labels
    found = relation_label(item.true)
    true = item.relation or (canonical_relation(found) if found else item.tag)
    labels = [true]
    for sentence in item.false:
        phrase = relation_label(sentence)
        label = canonical_relation(phrase) if phrase else item.tag
        if label == true:
            label = item.tag if item.tag != true else f"{true} (false)"
        labels.append(label)
    return tuple(labels)


def confusion(result: ProbeResult) -> dict[str, dict[str, int]]:
    """``{true label: {winning label: count}}``; the diagonal counts the items that passed."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for item, winner in zip(result.items, result.winners, strict=True):
        labels = sentence_labels(item)
        table[labels[0]][labels[winner]] += 1
    return {row: dict(sorted(cols.items())) for row, cols in sorted(table.items())}


def margin_summary(margins: np.ndarray) -> dict[str, float | None]:
    """Mean, spread and quantiles of the true-minus-best-false score margins."""
    if len(margins) == 0:
        return {key: None for key in ("mean", "std", "q05", "q25", "median", "q75", "q95")}
    q05, q25, q50, q75, q95 = np.quantile(margins, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"mean": float(margins.mean()), "std": float(margins.std()), "q05": float(q05), "q25": float(q25),
            "median": float(q50), "q75": float(q75), "q95": float(q95)}


def _by_key(keys: list[str | None], correct: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for key, ok in zip(keys, correct, strict=True):
        if key is not None:
            groups[key].append(bool(ok))
    return {key: accuracy_block(groups[key], n_resamples, seed) for key in sorted(groups)}


def split_results(result: ProbeResult) -> dict[str, ProbeResult]:
    """The scored items of each split (`ProbeItem.split`, e.g. in-style vs held-out style), in suite order."""
    indices: dict[str, list[int]] = {}
    for i, item in enumerate(result.items):
        if item.split is not None:
            indices.setdefault(item.split, []).append(i)
    # `subset` keeps each item's blind score, so every split reports its blind baseline too
    return {split: result.subset(kept) for split, kept in sorted(indices.items())}


def summarize(result: ProbeResult, group_metric: str | None = None, n_resamples: int = N_RESAMPLES,
              seed: int = 0) -> dict[str, Any]:
    """One model's report: accuracy with CI, per tag, per relation, confusion, margins, group scores.

    A suite whose items come from two or more splits (`ProbeItem.split`) also gets ``per_split``: the
    same summary for each split's items alone.

    Args:
        result: what `run_probe` returned.
        group_metric: ``whatsup`` (individual/pair/set accuracy) or ``winoground`` (text/image/group
            scores) for suites whose items come in groups.
        n_resamples: bootstrap resamples.
        seed: seeds the bootstrap; the same seed gives the same intervals.
    """
    correct = result.correct
    per_tag = _by_key([item.tag for item in result.items], correct, n_resamples, seed)
    tag_accuracies = [block["accuracy"] for block in per_tag.values()]
    summary = {
        **accuracy_block(correct, n_resamples, seed),
        "macro_accuracy": float(np.mean(tag_accuracies)) if tag_accuracies else None,
        "per_tag": per_tag,
        "per_relation": _by_key([item.relation for item in result.items], correct, n_resamples, seed),
        "confusion": confusion(result),
        "margin": margin_summary(result.margins),
        "bad": len(result.bad),
        **honest_scores(result, n_resamples, seed),
    }
    parts = split_results(result)
    if len(parts) > 1:
        summary["per_split"] = {name: summarize(part, group_metric, n_resamples, seed)
                                for name, part in parts.items()}
    if group_metric == "whatsup":
        summary["whatsup"] = whatsup_scores(result, n_resamples, seed)
    elif group_metric == "winoground":
        summary["winoground"] = winoground_scores(result, n_resamples, seed)
    return summary


def _groups(result: ProbeResult) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(result.items):
        if item.group is not None:
            groups[item.group].append(index)
    return groups


def whatsup_scores(result: ProbeResult, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """What'sUp's individual, pair (a relation and its opposite both right) and set (all right) accuracy."""
    correct = result.correct
    pairs, sets = [], []
    for members in _groups(result).values():
        sets.append(all(correct[i] for i in members))
        for a, b in itertools.combinations(members, 2):
            if PAIR_OPPOSITES.get(result.items[a].relation or "") == result.items[b].relation:
                pairs.append(bool(correct[a] and correct[b]))
    return {"individual": accuracy_block(correct, n_resamples, seed),
            "pair": accuracy_block(pairs, n_resamples, seed), "set": accuracy_block(sets, n_resamples, seed)}


def winoground_scores(result: ProbeResult, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Winoground's text, image and group scores over examples whose two images were both scored.

    Item 0 holds ``[s(c0, i0), s(c1, i0)]`` and item 1 ``[s(c1, i1), s(c0, i1)]``.
    """
    text, image = [], []
    for members in _groups(result).values():
        if len(members) != 2:
            continue
        first, second = (result.scores[i] for i in members)
        text.append(bool(first[0] > first[1] and second[0] > second[1]))
        image.append(bool(first[0] > second[1] and second[0] > first[1]))
    group = [t and i for t, i in zip(text, image, strict=True)]
    blocks = {"text": text, "image": image, "group": group}
    return {name: accuracy_block(flags, n_resamples, seed) for name, flags in blocks.items()}


def pair_directions(result: ProbeResult) -> tuple[dict[tuple[str, str], dict[str, list[int]]], int]:
    """Item indices by pair and direction, and how many items are in no pair (module docstring).

    Returns:
        ``{(a, b): {a: [indices of a -> b items], b: [indices of b -> a items]}}`` with ``a < b``, and
        the number of unpaired items.
    """
    directions: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, item in enumerate(result.items):
        labels = sentence_labels(item)
        if len(labels) == 2 and labels[0] != labels[1]:
            directions[(labels[0], labels[1])].append(index)
    pairs = {(a, b): {a: directions[(a, b)], b: directions[(b, a)]}
             for a, b in sorted(directions) if a < b and (b, a) in directions}
    return pairs, len(result.items) - sum(len(i) for d in pairs.values() for i in d.values())


@dataclass(frozen=True)
class _Estimate:
    """(model, blind) accuracy: the value [2] and its bootstrap samples [R, 2]."""

    value: np.ndarray
    samples: np.ndarray

    @classmethod
    def mean(cls, parts: list[_Estimate]) -> _Estimate:
        """The unweighted mean of estimates (directions of a pair, pairs of a suite)."""
        return cls(np.mean([p.value for p in parts], axis=0), np.mean([p.samples for p in parts], axis=0))


Estimator = Callable[[np.ndarray], _Estimate]


def _item_estimator(flags: np.ndarray, n_resamples: int, rng: np.random.Generator) -> Estimator:
    """Estimates from the items at the given indices, resampled on their own (a stratum)."""
    def estimate(indices: np.ndarray) -> _Estimate:
        both = flags[indices]  # [n, 2] model, blind
        return _Estimate(both.mean(axis=0), resampled_means(both, n_resamples, rng))
    return estimate


def _group_estimator(flags: np.ndarray, groups: list[str], n_resamples: int, rng: np.random.Generator
                     ) -> Estimator:
    """Estimates under one shared resampling of whole groups: each draw weights group g by its count."""
    unit = np.unique(np.array(groups), return_inverse=True)[1]  # [n] group index of each item
    n_groups = int(unit.max()) + 1
    weights = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)  # [R, G]

    def estimate(indices: np.ndarray) -> _Estimate:
        counts = np.bincount(unit[indices], minlength=n_groups)  # [G]
        sums = np.stack([np.bincount(unit[indices], flags[indices, k], n_groups) for k in (0, 1)], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):  # a draw without the indices' groups: NaN
            samples = (weights @ sums) / (weights @ counts)[:, None]  # [R, 2]
        return _Estimate(sums.sum(axis=0) / counts.sum(), samples)
    return estimate


def _interval_block(value: float | None, samples: np.ndarray | None) -> dict[str, Any]:
    if value is None or samples is None:
        return {"accuracy": None, "ci95": [None, None]}
    return {"accuracy": value, "ci95": list(percentile_interval(samples))}


def _column(estimate: _Estimate | None, column: int) -> dict[str, Any]:
    if estimate is None:
        return _interval_block(None, None)
    return _interval_block(float(estimate.value[column]), estimate.samples[:, column])


def _gain(estimate: _Estimate | None) -> dict[str, Any]:
    """Model minus blind accuracy, with the interval of the paired difference."""
    if estimate is None:
        return _interval_block(None, None)
    value = float(estimate.value[0] - estimate.value[1])
    return _interval_block(value, estimate.samples[:, 0] - estimate.samples[:, 1])


def honest_scores(result: ProbeResult, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """``{"pair_balanced": ..., "blind": ...}``: pair-balanced accuracy and the blind baseline with CIs.

    ``blind`` is None when the result has no blind scores.
    """
    correct = result.correct.astype(np.float64)
    has_blind = len(result.blind_scores) == len(result.items) > 0
    blind = result.blind_correct.astype(np.float64) if has_blind else np.zeros_like(correct)
    flags, rng = np.stack([correct, blind], axis=1), np.random.default_rng(seed)  # [n, 2]
    groups = [item.group for item in result.items if item.group is not None]
    grouped = len(groups) == len(result.items) > 0
    estimate = _group_estimator(flags, groups, n_resamples, rng) if grouped else \
        _item_estimator(flags, n_resamples, rng)
    pairs, unpaired = pair_directions(result)
    estimates = {pair: _Estimate.mean([estimate(np.array(i)) for i in dirs.values()])
                 for pair, dirs in pairs.items()}
    overall = _Estimate.mean(list(estimates.values())) if estimates else None
    rows = {f"{a} / {b}": {**_column(estimates[(a, b)], 0), "n": sum(map(len, dirs.values())),
                           "directions": {label: {"accuracy": float(correct[i].mean()), "n": len(i)}
                                          for label, i in dirs.items()}}
            for (a, b), dirs in pairs.items()}
    balanced = {**_column(overall, 0), "n": len(correct) - unpaired, "n_pairs": len(pairs),
                "unpaired": unpaired, "pairs": rows}
    if not has_blind:
        return {"pair_balanced": balanced, "blind": None}
    items = estimate(np.arange(len(correct)))
    return {"pair_balanced": balanced, "blind": {
        **accuracy_block(blind.astype(bool), n_resamples, seed), "gain": _gain(items),
        "pair_balanced": _column(overall, 1), "gain_pair_balanced": _gain(overall)}}
