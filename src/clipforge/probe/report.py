"""probe.json and a self-contained probe.html (inline SVG charts, base64 thumbnails, no external assets)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipforge.errors import ImageError
from clipforge.fileio import write_json, write_text_atomic
from clipforge.probe.analysis import Analysis
from clipforge.probe.items import BadItem, ProbeItem, Suite, load_item_image
from clipforge.probe.run import ProbeResult
from clipforge.probe.stats import LEVEL, MIN_BOOTSTRAP_N, summarize

COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
HARDEST = 12
THUMBNAIL = 160
BAD_LISTED = 200
CI_METHOD = f"percentile bootstrap (Wilson score interval below n={MIN_BOOTSTRAP_N})"
HONEST_NOTE = (
    "Pair-balanced: the mean of the two directions of each pair of labels (left of &rarr; right of and "
    "right of &rarr; left of), then the mean over pairs, so a fixed preference for one phrase scores 0.5. "
    "Blind: the same sentences scored against the normalized mean embedding of the suite's images (one "
    "vector for every item of a split), so the pick depends on the text alone; accuracy &minus; blind is "
    "what the image contributed. Their intervals resample whole groups when items come in groups (a flip: "
    "caption, a collage: photo pair), else items within each direction; model and blind are resampled "
    "together."
)


def write_probe_report(
    suite: Suite, scorer: str, results: dict[str, ProbeResult], out: Path, n_resamples: int, seed: int
) -> dict[str, Any]:
    """Summarizes every model's results and writes ``out/probe.json`` and ``out/probe.html``.

    The one writer of probe reports, for `clipforge probe` and the quickstart alike.

    Returns:
        The content of probe.json.
    """
    summaries = {name: summarize(r, suite.group_metric, n_resamples, seed) for name, r in results.items()}
    bad = collect_bad(suite.bad, results)
    report = build_report(suite.spec, scorer, results, summaries, bad, n_resamples, seed)
    write_json(report, out / "probe.json")
    write_html(report, results, out / "probe.html")
    return report


def collect_bad(suite_bad: list[BadItem], results: dict[str, ProbeResult]) -> list[BadItem]:
    """Unreadable entries and unscorable items, each once (every model meets the same missing image)."""
    seen: dict[str, BadItem] = {bad.id: bad for bad in suite_bad}
    for result in results.values():
        for bad in result.bad:
            seen.setdefault(bad.id, bad)
    return list(seen.values())


def build_report(
    suite: str,
    scorer: str,
    results: dict[str, ProbeResult],
    summaries: dict[str, dict[str, Any]],
    bad: list[BadItem],
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """The content of probe.json: suite, bootstrap settings, each model's summary, per-item scores."""
    return {
        "suite": suite,
        "scorer": scorer,
        "ci": {"level": LEVEL, "method": CI_METHOD, "resamples": n_resamples, "seed": seed},
        "bad": {"count": len(bad), "items": [{"id": b.id, "reason": b.reason} for b in bad[:BAD_LISTED]]},
        "models": summaries,
        "items": _item_rows(results),
    }


def _item_rows(results: dict[str, ProbeResult]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        for item, scores in zip(result.items, result.scores, strict=True):
            row = rows.setdefault(item.id, {"id": item.id, "tag": item.tag, "image": _image_name(item),
                                            "true": item.true, "false": list(item.false), "scores": {}})
            row["scores"][name] = [float(s) for s in scores]
    return list(rows.values())


def _image_name(item: ProbeItem) -> str:
    return str(item.image) if isinstance(item.image, str | Path) else item.image_key


def write_html(report: dict[str, Any], results: dict[str, ProbeResult], path: Path) -> Path:
    """Writes probe.html: overview, per-tag bars with CIs, margins, confusion heatmaps, hardest items."""
    names = list(report["models"])
    sections = [
        f"<h1>Probe: {html.escape(report['suite'])}</h1>",
        f"<p>scorer <b>{html.escape(report['scorer'])}</b>; {html.escape(report['ci']['method'])}, "
        f"{report['ci']['resamples']} resamples, seed {report['ci']['seed']}; "
        f"{report['bad']['count']} unreadable or unscorable items.</p>",
        _overview_table(report["models"]),
        _split_table(report["models"]),
        "<h2>Pair-balanced accuracy and the blind baseline (95% CI)</h2>", _honest_tables(report["models"]),
        "<h2>Accuracy per tag (95% CI)</h2>", _tag_bars(report["models"]),
        "<h2>Score margin (true minus best false)</h2>",
        "".join(_histogram(name, results[name].margins, _color(i)) for i, name in enumerate(names)),
        "<h2>Confusion: which sentence wins</h2>",
        "".join(_confusion_table(name, report["models"][name]["confusion"]) for name in names),
        "<h2>Hardest items</h2>", _hardest(results),
        _bad_list(report["bad"]),
    ]
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>clipforge probe</title>{_STYLE}</head>"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, page + "<body>" + "\n".join(sections) + "</body></html>\n")
    return path


def _interval(block: dict[str, Any] | None) -> str:
    if block is None or block.get("accuracy") is None:
        return "–"
    low, high = block["ci95"]
    return f"{_pct(block['accuracy'])} <small>[{_pct(low)}, {_pct(high)}]</small>"


def _honest_tables(models: dict[str, Any]) -> str:
    """Per model: accuracy, pair-balanced and blind with intervals; then each pair's directions."""
    head = ("model", "accuracy", "pair-balanced", "pairs / unpaired items", "blind", "accuracy &minus; blind",
            "blind pair-balanced", "pair-balanced &minus; blind")
    rows = [f"<p>{HONEST_NOTE}</p><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for name, s in models.items():
        balanced, blind = s["pair_balanced"], s.get("blind") or {}
        cells = (html.escape(name), _interval(s), _interval(balanced),
                 f"{balanced['n_pairs']} / {balanced['unpaired']}", _interval(blind or None),
                 _interval(blind.get("gain")), _interval(blind.get("pair_balanced")),
                 _interval(blind.get("gain_pair_balanced")))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(rows) + "</table>" + _pair_table(models)


def _pair_table(models: dict[str, Any]) -> str:
    pairs = sorted({pair for s in models.values() for pair in s["pair_balanced"]["pairs"]})
    if not pairs:
        return ""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in models)
    rows = [f"<table><tr><th>pair</th>{head}</tr>"]
    for pair in pairs:
        cells = []
        for s in models.values():
            block = s["pair_balanced"]["pairs"].get(pair)
            directions = " / ".join(f"{html.escape(label)} {_pct(d['accuracy'])} (n={d['n']})"
                                    for label, d in (block or {}).get("directions", {}).items())
            cells.append(f"{_interval(block)}<br><small>{directions}</small>")
        rows.append(f"<tr><th>{html.escape(pair)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(rows) + "</table>"


def write_analysis_report(suite: Analysis, summaries: dict[str, dict[str, Any]], out: Path, n_resamples: int,
                          seed: int) -> dict[str, Any]:
    """Writes ``out/probe.json`` and ``out/probe.html`` of an analysis suite from each model's summary.

    The analysis counterpart of `write_probe_report`.

    Returns:
        The content of probe.json.
    """
    report = build_analysis_report(suite.spec, suite.kind, summaries, suite.bad, n_resamples, seed)
    write_json(report, out / "probe.json")
    write_analysis_html(report, suite.html(summaries), out / "probe.html")
    return report


def build_analysis_report(suite: str, kind: str, summaries: dict[str, dict[str, Any]], bad: list[BadItem],
                          n_resamples: int, seed: int) -> dict[str, Any]:
    """The content of probe.json for an analysis suite (``bias:``, ...): each model's summary."""
    return {
        "suite": suite,
        "kind": kind,
        "ci": {"level": LEVEL, "resamples": n_resamples, "seed": seed},
        "bad": {"count": len(bad), "items": [{"id": b.id, "reason": b.reason} for b in bad[:BAD_LISTED]]},
        "models": summaries,
    }


def write_analysis_html(report: dict[str, Any], body: str, path: Path) -> Path:
    """Writes probe.html of an analysis suite: a header, then the sections the suite rendered."""
    header = (f"<h1>Probe: {html.escape(report['suite'])}</h1><p>{report['ci']['resamples']} bootstrap "
              f"resamples, seed {report['ci']['seed']}; {report['bad']['count']} unreadable entries.</p>")
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>clipforge probe</title>{_STYLE}</head>"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, page + "<body>" + header + body + _bad_list(report["bad"]) + "</body></html>\n")
    return path


_STYLE = """<style>
body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px}
th{background:#f4f4f4}
.item{display:flex;gap:12px;margin:10px 0;border-bottom:1px solid #eee;padding-bottom:8px}
.ok{color:#2a7}.no{color:#c33}svg text{font-size:11px}
</style>"""


def _color(index: int) -> str:
    return COLORS[index % len(COLORS)]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _overview_table(models: dict[str, Any]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("model", "accuracy", "95% CI", "n", "macro", "groups"))
    rows = [f"<table><tr>{head}</tr>"]
    for name, summary in models.items():
        low, high = summary["ci95"]
        groups = "; ".join(f"{metric} {_pct(block['accuracy'])}" for key in ("whatsup", "winoground")
                           for metric, block in summary.get(key, {}).items())
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{_pct(summary['accuracy'])}</td>"
                    f"<td>{_pct(low)} – {_pct(high)}</td><td>{summary['n']}</td>"
                    f"<td>{_pct(summary['macro_accuracy'])}</td><td>{html.escape(groups)}</td></tr>")
    return "".join(rows) + "</table>"


def _split_table(models: dict[str, Any]) -> str:
    """Accuracy per split and per tag within it (e.g. in-style vs held-out style); empty without splits."""
    if not any("per_split" in summary for summary in models.values()):
        return ""
    tags = sorted({tag for summary in models.values() for part in summary.get("per_split", {}).values()
                   for tag in part["per_tag"]})
    head = "".join(f"<th>{h}</th>" for h in ("model", "split", "accuracy", "95% CI", "n", *tags))
    rows = [f"<h2>Per split</h2><table><tr>{head}</tr>"]
    for name, summary in models.items():
        for split, part in summary.get("per_split", {}).items():
            low, high = part["ci95"]
            cells = "".join(f"<td>{_pct(part['per_tag'].get(tag, {}).get('accuracy'))}</td>" for tag in tags)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(split)}</td>"
                        f"<td>{_pct(part['accuracy'])}</td><td>{_pct(low)} – {_pct(high)}</td>"
                        f"<td>{part['n']}</td>{cells}</tr>")
    return "".join(rows) + "</table>"


def _tag_bars(models: dict[str, Any]) -> str:
    """Horizontal bars per tag, one per model, with the CI as a whisker."""
    tags = sorted({tag for summary in models.values() for tag in summary["per_tag"]})
    series = [(name, _color(i), summary["per_tag"]) for i, (name, summary) in enumerate(models.items())]
    return interval_bars(tags, series)


def interval_bars(rows: list[str], series: list[tuple[str, str, dict[str, Any]]],
                  markers: dict[str, float] | None = None, marker_name: str = "") -> str:
    """An SVG of horizontal accuracy bars: per row, one bar per series with its CI as a whisker.

    Args:
        rows: row labels.
        series: ``(name, colour, {row: accuracy block})``; a block is ``{"accuracy", "n", "ci95"}``.
        markers: an optional red tick per row (e.g. chance), named `marker_name` in the legend.
    """
    label_w, bar_w, bar_h = 200, 480, 12
    ticks = [(frac * bar_w, f"{int(frac * 100)}%") for frac in (0.0, 0.25, 0.5, 0.75, 1.0)]

    def bar(label: str, i: int, y: float, height: int) -> str:
        svg = _bar(series[i][2].get(label), label_w, bar_w, y, height, series[i][1])
        level = (markers or {}).get(label)
        if level is not None and i == len(series) - 1:  # one tick across the row's bars
            x = label_w + level * bar_w
            svg += (f"<line x1='{x:.1f}' y1='{y - i * bar_h}' x2='{x:.1f}' y2='{y + bar_h}' "
                    "stroke='#e15759' stroke-width='2'/>")
        return svg

    extra = f" <span style='color:#e15759'>| {html.escape(marker_name)}</span>" if markers else ""
    return bar_rows_svg(rows, [(name, color) for name, color, _ in series], ticks, bar, label_w, bar_w,
                        bar_h, extra)


BarRenderer = Callable[[str, int, float, int], str]


def bar_rows_svg(labels: list[str], series: list[tuple[str, str]], ticks: list[tuple[float, str]],
                 bar: BarRenderer, label_w: int, plot_w: int, bar_h: int = 12, legend_extra: str = "") -> str:
    """A chart with one row per label and one bar per series in it, plus a colour legend.

    Args:
        labels: the rows.
        series: ``(name, colour)`` of each bar of a row (the models).
        ticks: ``(x from the plot's left edge, text)`` of the vertical grid lines.
        bar: ``bar(label, series index, y, height)`` returns a bar's SVG.
        label_w: width of the label column; the plot starts there.
        plot_w: width of the plot.
        bar_h: height of one bar.
        legend_extra: HTML appended to the legend.
    """
    row_h = bar_h * len(series) + 10
    height = row_h * len(labels)
    width = label_w + plot_w + 70
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height + 30}'>"]
    for x, text in ticks:
        parts.append(f"<line x1='{label_w + x}' y1='0' x2='{label_w + x}' y2='{height}' stroke='#ddd'/>"
                     f"<text x='{label_w + x - 8}' y='{height + 14}'>{html.escape(text)}</text>")
    for row, label in enumerate(labels):
        y0 = row * row_h + 5
        parts.append(f"<text x='0' y='{y0 + row_h / 2}'>{html.escape(label[:40])}</text>")
        parts += [bar(label, i, y0 + i * bar_h, bar_h) for i in range(len(series))]
    legend = " ".join(f"<span style='color:{color}'>&#9632; {html.escape(name)}</span>"
                      for name, color in series)
    return "".join(parts) + "</svg><div>" + legend + legend_extra + "</div>"


def _bar(block: dict[str, Any] | None, x0: int, width: int, y: float, height: int, color: str) -> str:
    if block is None or block["accuracy"] is None:
        return ""
    low, high = block["ci95"]
    mid = y + height / 2
    length = block["accuracy"] * width
    return (f"<rect x='{x0}' y='{y}' width='{length:.1f}' height='{height - 2}' fill='{color}'>"
            f"<title>{_pct(block['accuracy'])} (n={block['n']})</title></rect>"
            f"<line x1='{x0 + low * width:.1f}' y1='{mid}' x2='{x0 + high * width:.1f}' y2='{mid}' "
            "stroke='#000'/>"
            f"<text x='{x0 + width + 6}' y='{mid + 4}'>n={block['n']}</text>")


def _histogram(name: str, margins: np.ndarray, color: str, bins: int = 30) -> str:
    """A small SVG histogram of one model's margins, with the zero line (left of it = failed)."""
    if len(margins) == 0:
        return ""
    low, high = float(min(margins.min(), 0.0)), float(max(margins.max(), 0.0))
    counts, edges = np.histogram(margins, bins=bins, range=(low, high + 1e-12))
    width, height = 360, 110
    scale_x, scale_y = width / (high - low + 1e-12), (height - 20) / max(int(counts.max()), 1)
    bars = "".join(f"<rect x='{(edges[i] - low) * scale_x:.1f}' y='{height - 15 - c * scale_y:.1f}' "
                   f"width='{max(width / bins - 1, 1):.1f}' height='{c * scale_y:.1f}' fill='{color}'/>"
                   for i, c in enumerate(counts))
    zero = -low * scale_x
    return (f"<div style='display:inline-block;margin-right:16px'><b>{html.escape(name)}</b><br>"
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>{bars}"
            f"<line x1='{zero:.1f}' y1='0' x2='{zero:.1f}' y2='{height - 15}' stroke='#c33'/>"
            f"<text x='0' y='{height - 2}'>{low:.3f}</text>"
            f"<text x='{width - 40}' y='{height - 2}'>{high:.3f}</text>"
            "</svg></div>")


def _confusion_table(name: str, table: dict[str, dict[str, int]]) -> str:
    """A heatmap table: rows are true labels, columns the label that won, shaded by row share."""
    columns = sorted({col for cols in table.values() for col in cols})
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = [f"<h3>{html.escape(name)}</h3><table><tr><th>true \\ winner</th>{head}</tr>"]
    for row, cols in table.items():
        total = sum(cols.values())
        cells = "".join(_heat_cell(cols.get(c, 0), total, c == row) for c in columns)
        rows.append(f"<tr><th>{html.escape(row)}</th>{cells}</tr>")
    return "".join(rows) + "</table>"


def _heat_cell(count: int, total: int, diagonal: bool) -> str:
    share = count / total if total else 0.0
    rgb = "40,160,90" if diagonal else "220,60,60"
    return f"<td style='background:rgba({rgb},{share:.2f})'>{count or ''}</td>"


def _hardest(results: dict[str, ProbeResult]) -> str:
    """The items with the lowest margin averaged over the models, with their image and sentences."""
    margins: dict[str, list[float]] = {}
    details: dict[str, tuple[ProbeItem, np.ndarray]] = {}
    for result in results.values():
        for item, scores, margin in zip(result.items, result.scores, result.margins, strict=True):
            margins.setdefault(item.id, []).append(float(margin))
            details.setdefault(item.id, (item, scores))
    order = sorted(margins, key=lambda key: float(np.mean(margins[key])))[:HARDEST]
    return "".join(_item_card(details[key][0], details[key][1], margins[key], list(results)) for key in order)


def _item_card(item: ProbeItem, scores: np.ndarray, margins: list[float], names: list[str]) -> str:
    best_false = item.false[int(np.argmax(scores[1:]))]
    per_model = ", ".join(f"{html.escape(n)}: <span class='{'ok' if m > 0 else 'no'}'>{m:+.4f}</span>"
                          for n, m in zip(names, margins, strict=False))
    return (f"<div class='item'>{_thumbnail(item)}<div>"
            f"<b>{html.escape(item.id)}</b> [{html.escape(item.tag)}]<br>"
            f"<span class='ok'>true:</span> {html.escape(item.true)}<br>"
            f"<span class='no'>false:</span> {html.escape(best_false)}<br>margin {per_model}</div></div>")


def _thumbnail(item: ProbeItem) -> str:
    return thumbnail_html(partial(load_item_image, item), item.id)


def thumbnail_html(load: Callable[[], Image.Image], alt: str, size: int = THUMBNAIL) -> str:
    """An image as an inline base64 JPEG thumbnail (a grey box when `load` raises `ImageError`)."""
    try:
        image = load()
    except ImageError:
        return f"<div style='display:inline-block;width:{size}px;height:{size}px;background:#ddd'></div>"
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/jpeg;base64,{data}'>"


def _bad_list(bad: dict[str, Any]) -> str:
    if not bad["count"]:
        return ""
    rows = "".join(f"<tr><td>{html.escape(b['id'])}</td><td>{html.escape(b['reason'])}</td></tr>"
                   for b in bad["items"])
    return f"<h2>Unreadable or unscorable items ({bad['count']})</h2><table>{rows}</table>"
