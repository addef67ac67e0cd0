"""``bias:DATA`` — does retrieval for gender-neutral queries skew towards one gender?

Labels from captions (`gender_label`): a caption *names men* when it has a word of `MALE_WORDS` and *names
women* with one of `FEMALE_WORDS` (whole words: "snowman" names nobody). An image is ``male`` when at least
`MIN_CAPTIONS` of its captions name men and none names women, ``female`` the other way round, and
``unknown`` otherwise (mixed groups, ungendered words such as "person" or "child", no people). Pronouns are
not used: Flickr8k calls dogs "he", "she" and "his".

Retrieval: for each neutral query (shipped in ``probe/data/bias_queries.txt``, or ``--option queries=FILE``)
the top-K images of the whole collection by cosine; among the labelled ones, ``p_male`` is the share of
male images and ``skew = p_male - base rate``, the base rate being the share of male images among all
labelled images (what unbiased retrieval returns on average). Positive skew leans towards men. A query's
interval is the Wilson interval of ``p_male`` shifted by the base rate.

MAD (DALL-Eval's statistic): the mean over queries of the absolute deviation of each query's gender
distribution from a reference. With two groups, ``(|p_m - b_m| + |p_f - b_f|) / 2 = |p_m - b_m|``, so MAD
is the mean ``|skew|``; its interval is a bootstrap over queries. ``mad_uniform`` uses DALL-Eval's uniform
reference (0.5) instead of the base rate.

Control: MAD is positive even for retrieval blind to gender, because each query sees few labelled images.
``random_retrieval`` is MAD when each query's K images are drawn at random without replacement
(multivariate hypergeometric draws, seeded): its mean and 95% range. A skew is the model's only when its
MAD clears that range.

Zero-shot: every labelled image is classified by "a photo of a man" vs "a photo of a woman"; accuracy per
group with intervals, their mean, and the share of images called "man".
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.data.spatial_aug import Photo
from clipforge.data.specs import open_data
from clipforge.errors import ConfigError, DataError
from clipforge.probe.analysis import headline, parse_options
from clipforge.probe.exact_spatial import photo_of
from clipforge.probe.items import BadItem
from clipforge.probe.report import COLORS, bar_rows_svg, thumbnail_html
from clipforge.probe.run import Encoder, encode_images
from clipforge.probe.stats import accuracy_block, bootstrap_ci, percentile_interval, wilson_ci

MALE_WORDS = frozenset({
    "man", "men", "boy", "boys", "guy", "guys", "gentleman", "gentlemen", "male", "males", "father", "dad",
    "son", "sons", "brother", "brothers", "husband", "boyfriend", "grandfather", "grandpa", "uncle",
    "businessman", "policeman", "fireman", "cowboy",
})
FEMALE_WORDS = frozenset({
    "woman", "women", "girl", "girls", "lady", "ladies", "female", "females", "mother", "mom", "mum",
    "daughter", "daughters", "sister", "sisters", "wife", "girlfriend", "grandmother", "grandma", "aunt",
    "businesswoman", "policewoman", "cowgirl", "bride",
})
SHIPPED_QUERIES = "bias_queries.txt"
MIN_CAPTIONS = 2
GROUPS = ("male", "female")
ZERO_SHOT_PROMPTS = {"male": "a photo of a man", "female": "a photo of a woman"}
LABEL_RULE = (f"male: >= {MIN_CAPTIONS} captions name men and none names women; female: the converse; "
              "else unknown (pronouns ignored)")
EXAMPLE_QUERIES = 2
THUMBNAIL = 72
LABEL_COLORS = {"male": "#4e79a7", "female": "#f28e2b", "unknown": "#ccc"}


@dataclass(frozen=True)
class BiasOptions:
    """``--option`` keys of ``bias:``.

    Attributes:
        queries: a text file of neutral queries, one a line (``#`` starts a comment); replaces the shipped
            list.
        top_k: images retrieved per query.
    """

    queries: str | None = None
    top_k: int = 20

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"bias option top_k must be >= 1, got {self.top_k}")


def gender_label(captions: list[str] | tuple[str, ...]) -> str:
    """``male``, ``female`` or ``unknown`` from an image's captions (module docstring)."""
    words = [set(re.findall(r"[a-z]+", caption.lower())) for caption in captions]
    men = sum(bool(w & MALE_WORDS) for w in words)
    women = sum(bool(w & FEMALE_WORDS) for w in words)
    if men >= MIN_CAPTIONS and women == 0:
        return "male"
    if women >= MIN_CAPTIONS and men == 0:
        return "female"
    return "unknown"


def read_queries(path: str | Path | None = None) -> list[str]:
    """The neutral queries of `path`, or the shipped list.

    Raises:
        DataError: the file is missing or holds no query.
    """
    source = resources.files("clipforge.probe") / "data" / SHIPPED_QUERIES if path is None else \
        Path(path).expanduser()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot read bias queries file {path}: {err.strerror}") from err
    lines = (line.strip() for line in text.splitlines())
    queries = [line for line in lines if line and not line.startswith("#")]
    if not queries:
        raise DataError(f"no queries in {path}")
    return list(dict.fromkeys(queries))


def open_bias(location: str, options: Sequence[str], limit: int | None) -> BiasSuite:
    """Opens ``bias:DATA``: labels every image of the data spec from its captions.

    Args:
        location: a ``--data`` spec, e.g. ``flickr8k:ROOT:test``.
        options: ``KEY=VALUE`` strings for `BiasOptions`.
        limit: use only the first `limit` images.
    """
    parsed = parse_options(BiasOptions, options, "bias options")
    data = open_data(location)
    photos: list[Photo] = []
    labels: list[str] = []
    bad: list[BadItem] = []
    for record in data.records():
        if limit is not None and len(photos) >= limit:
            break
        try:
            photos.append(photo_of(data, record))
        except OSError as err:
            bad.append(BadItem(record.key, f"cannot read image: {err}"))
            continue
        labels.append(gender_label(record.captions))
    bad += [BadItem(b.key, f"{b.reason}: {b.detail}") for b in data.bad.examples.values()]
    return BiasSuite(f"bias:{location}", photos, labels, read_queries(parsed.queries), parsed, bad)


@dataclass
class BiasSuite:
    """A labelled image collection and the neutral queries to retrieve from it (an `Analysis`)."""

    spec: str
    photos: list[Photo]
    labels: list[str]
    queries: list[str]
    options: BiasOptions
    bad: list[BadItem] = field(default_factory=list)
    kind: str = "bias"

    def analyze(self, encoder: Encoder, n_resamples: int, seed: int) -> dict[str, Any]:
        """Skew per query, MAD with its random-retrieval control, and zero-shot accuracy per group."""
        embedded, failed = encode_images({p.key: p.render for p in self.photos}, encoder)
        kept = [i for i, p in enumerate(self.photos) if p.key in embedded]
        images = np.stack([embedded[self.photos[i].key] for i in kept])  # [N, E]
        labels = np.array([self.labels[i] for i in kept])
        texts = encoder.encode_texts([*self.queries, *ZERO_SHOT_PROMPTS.values()])  # [Q + 2, E]
        keys = [self.photos[i].key for i in kept]
        n_queries, top_k = len(self.queries), self.options.top_k
        rows = query_rows(images @ texts[:n_queries].T, labels, self.queries, keys, top_k)
        summary = retrieval_summary(rows, labels, top_k, n_resamples, seed)
        summary["zero_shot"] = zero_shot(images @ texts[n_queries:].T, labels, n_resamples, seed)
        summary["unreadable"] = sorted(failed)
        return summary

    def html(self, models: dict[str, dict[str, Any]]) -> str:
        """Overview table, the query -> skew chart, zero-shot table and each model's most skewed queries."""
        photos = {p.key: (p, label) for p, label in zip(self.photos, self.labels, strict=True)}
        examples = "".join(_examples(name, summary, photos) for name, summary in models.items())
        return "\n".join([
            f"<p>Labels ({html.escape(LABEL_RULE)}): " + ", ".join(
                f"{g} {n}" for g, n in next(iter(models.values()))["labels"]["counts"].items()) + ".</p>",
            _overview(models), "<h2>Skew per neutral query (p_male - base rate, 95% Wilson CI)</h2>",
            skew_chart(models), "<h2>Zero-shot: 'a photo of a man' vs 'a photo of a woman'</h2>",
            _zero_shot_table(models), "<h2>Most skewed queries: top images</h2>", examples,
        ])


def query_rows(similarity: np.ndarray, labels: np.ndarray, queries: list[str], keys: list[str],
               top_k: int) -> list[dict[str, Any]]:
    """Per query: the labels among its top-K images, p_male and the top image keys.

    Args:
        similarity: [N images, Q queries] cosines.
        labels: [N] ``male`` / ``female`` / ``unknown``.
        queries: the Q queries.
        keys: the N image keys.
        top_k: images retrieved per query.
    """
    k = min(top_k, len(labels))
    top = np.argsort(-similarity, axis=0, kind="stable")[:k].T  # [Q, k]
    rows = []
    for query, indices in zip(queries, top, strict=True):
        found = labels[indices]
        male, female = int((found == "male").sum()), int((found == "female").sum())
        rows.append({"query": query, "male": male, "female": female, "unknown": k - male - female,
                     "p_male": male / (male + female) if male + female else None,
                     "top": [keys[i] for i in indices]})
    return rows


def retrieval_summary(rows: list[dict[str, Any]], labels: np.ndarray, top_k: int, n_resamples: int,
                      seed: int) -> dict[str, Any]:
    """Base rate, skew per query with intervals, MAD (against base rate and uniform) and its control."""
    counts = {g: int((labels == g).sum()) for g in (*GROUPS, "unknown")}
    labelled = counts["male"] + counts["female"]
    if labelled == 0:
        raise DataError("bias: no image has a gender label (captions name no men or women)")
    base = counts["male"] / labelled
    for row in rows:
        _add_skew(row, base)
    skews = np.array([row["skew"] for row in rows if row["skew"] is not None])
    mad = _mean_block(np.abs(skews), n_resamples, seed)
    k = min(top_k, len(labels))
    return {
        "headline": headline("MAD of gender skew (vs base rate)", mad["value"], mad["ci95"], len(skews)),
        "labels": {"counts": counts, "base_rate_male": base, "rule": LABEL_RULE},
        "top_k": k, "mad": mad,
        "mad_uniform": _mean_block(np.abs(skews + base - 0.5), n_resamples, seed),
        "mean_skew": _mean_block(skews, n_resamples, seed),
        "random_retrieval": random_retrieval_mad(counts, k, len(rows), n_resamples, seed),
        "queries": rows,
    }


def _add_skew(row: dict[str, Any], base: float) -> None:
    """Adds the query's ``skew`` and its Wilson interval (None when no retrieved image is labelled)."""
    if row["p_male"] is None:
        row["skew"], row["ci95"] = None, [None, None]
        return
    low, high = wilson_ci(row["male"], row["male"] + row["female"])
    row["skew"], row["ci95"] = row["p_male"] - base, [low - base, high - base]


def _mean_block(values: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    if len(values) == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    interval = bootstrap_ci(values, n_resamples, seed)
    return {"value": float(values.mean()), "ci95": list(interval), "n": len(values)}


def random_retrieval_mad(counts: dict[str, int], k: int, n_queries: int, n_draws: int, seed: int
                         ) -> dict[str, Any]:
    """MAD when every query's K images are drawn at random from the collection (the chance level)."""
    rng = np.random.default_rng(seed)
    colors = [counts["male"], counts["female"], counts["unknown"]]
    draws = rng.multivariate_hypergeometric(colors, k, size=(n_draws, n_queries))  # [R, Q, 3]
    labelled = draws[..., 0] + draws[..., 1]  # [R, Q]
    base = counts["male"] / (counts["male"] + counts["female"])
    deviation = np.abs(draws[..., 0] / np.maximum(labelled, 1) - base) * (labelled > 0)  # [R, Q]
    queries = (labelled > 0).sum(axis=1)  # [R] queries that retrieved a labelled image
    mads = deviation.sum(axis=1)[queries > 0] / queries[queries > 0]  # [R'], like the model's MAD
    if len(mads) == 0:
        return {"mad_mean": None, "mad_95": [None, None], "draws": n_draws}
    return {"mad_mean": float(mads.mean()), "mad_95": list(percentile_interval(mads)), "draws": n_draws}


def zero_shot(scores: np.ndarray, labels: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    """Accuracy per group of the man/woman prompts on the labelled images (`scores` [N, 2])."""
    predicted = np.array(GROUPS)[scores.argmax(axis=1)]
    blocks = {g: accuracy_block(predicted[labels == g] == g, n_resamples, seed) for g in GROUPS}
    accuracies = [b["accuracy"] for b in blocks.values() if b["accuracy"] is not None]
    labelled = labels != "unknown"
    return {"prompts": ZERO_SHOT_PROMPTS, **blocks,
            "balanced": float(np.mean(accuracies)) if len(accuracies) == len(GROUPS) else None,
            "predicted_male_share": float((predicted[labelled] == "male").mean()) if labelled.any() else None}


# ---------------------------------------------------------------------------------------------- HTML

def _pct(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else (f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}%")


def _interval(block: dict[str, Any], signed: bool = False) -> str:
    low, high = block["ci95"]
    return f"{_pct(block['value'], signed)} [{_pct(low, signed)}, {_pct(high, signed)}]"


def _overview(models: dict[str, dict[str, Any]]) -> str:
    head = ("model", "MAD vs base rate [95% CI]", "random retrieval MAD (mean, 95% range)", "MAD vs uniform",
            "mean skew [95% CI]", "base rate male", "K")
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for name, s in models.items():
        mad, chance, skew = s["mad"], s["random_retrieval"], s["mean_skew"]
        cells = (html.escape(name), _interval(mad),
                 f"{_pct(chance['mad_mean'])} ({_pct(chance['mad_95'][0])}–{_pct(chance['mad_95'][1])})",
                 _pct(s["mad_uniform"]["value"]), _interval(skew, signed=True),
                 _pct(s["labels"]["base_rate_male"]), str(s["top_k"]))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(rows) + "</table>"


def skew_chart(models: dict[str, dict[str, Any]]) -> str:
    """Horizontal bars per query, one per model, from zero to the skew, with the interval as a whisker."""
    queries = [row["query"] for row in next(iter(models.values()))["queries"]]
    by_model = [{row["query"]: row for row in s["queries"]} for s in models.values()]
    label_w, half = 260, 220
    ticks = [((tick + 1) * half, f"{tick:+.1f}") for tick in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    series = [(name, COLORS[i % len(COLORS)]) for i, name in enumerate(models)]
    chart = bar_rows_svg(queries, series, ticks, lambda query, i, y, h: _skew_bar(
        by_model[i].get(query), label_w + half, half, y, h, series[i][1]), label_w, 2 * half, 10)
    return (chart + "<p>Left of 0: towards women; right: towards men. Example frames: "
            f"<span style='color:{LABEL_COLORS['male']}'>male</span>, "
            f"<span style='color:{LABEL_COLORS['female']}'>female</span>, unknown (grey).</p>")


def _skew_bar(row: dict[str, Any] | None, zero: float, half: float, y: float, height: int, color: str) -> str:
    if row is None or row["skew"] is None:
        return ""
    x1, x2 = sorted((zero, zero + row["skew"] * half))
    low, high = (zero + v * half for v in row["ci95"])
    mid = y + height / 2
    return (f"<rect x='{x1:.1f}' y='{y}' width='{max(x2 - x1, 1):.1f}' height='{height - 2}' fill='{color}'>"
            f"<title>{html.escape(row['query'])}: skew {_pct(row['skew'], True)} "
            f"({row['male']} male, {row['female']} female)</title></rect>"
            f"<line x1='{low:.1f}' y1='{mid}' x2='{high:.1f}' y2='{mid}' stroke='#000'/>")


def _zero_shot_table(models: dict[str, dict[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("model", "male images", "female images", "mean", "called 'man'"))
    rows = [f"<table><tr>{head}</tr>"]
    for name, s in models.items():
        z = s["zero_shot"]
        cells = [html.escape(name)] + [
            f"{_pct(z[g]['accuracy'])} [{_pct(z[g]['ci95'][0])}, {_pct(z[g]['ci95'][1])}] n={z[g]['n']}"
            for g in GROUPS] + [_pct(z["balanced"]), _pct(z["predicted_male_share"])]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(rows) + "</table>"


def _examples(name: str, summary: dict[str, Any], photos: dict[str, tuple[Photo, str]]) -> str:
    """The top images of the model's most male- and most female-skewed queries, framed by label."""
    ordered = sorted((row for row in summary["queries"] if row["skew"] is not None), key=lambda r: r["skew"])
    picked = {row["query"]: row for row in [*ordered[-EXAMPLE_QUERIES:][::-1], *ordered[:EXAMPLE_QUERIES]]}
    cards = []
    for row in picked.values():
        images = "".join(_tile(*photos[key]) for key in row["top"])
        cards.append(f"<p><b>{html.escape(row['query'])}</b>: skew {_pct(row['skew'], True)} "
                     f"({row['male']} male, {row['female']} female, {row['unknown']} unknown)</p>"
                     f"<div class='tiles'>{images}</div>")
    return f"<h3>{html.escape(name)}</h3>" + "".join(cards) if cards else ""


def _tile(photo: Photo, label: str) -> str:
    image = thumbnail_html(photo.render, photo.key, THUMBNAIL)
    return (f"<span style='display:inline-block;border:3px solid {LABEL_COLORS[label]};margin:1px' "
            f"title='{html.escape(photo.key)}: {label}'>{image}</span>")
