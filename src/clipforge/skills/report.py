"""skills.html: a self-contained page (inline SVG, base64 images) of a `clipforge skills score` report.

Per-skill bars with 95% intervals beside the upper bound and the shuffle baseline (chance marked), the
per-case tables, the alignment and quality table, and a grid of passed and failed examples with the
parser's reading drawn on them.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from clipforge.fileio import write_text_atomic
from clipforge.probe.report import interval_bars
from clipforge.skills.parser import Reading
from clipforge.skills.records import SkillRecord
from clipforge.skills.rules import Verdict

SERIES = (("skills", "generated", "#4e79a7"), ("upper_bound", "upper bound (ground truth)", "#59a14f"),
          ("shuffle", "shuffle baseline", "#bab0ac"))
ALIGNMENT_ROWS = (("generated", "generated"), ("upper_bound", "ground truth"), ("shuffle", "shuffled pairs"))
THUMBNAIL = 128


@dataclass(frozen=True)
class Example:
    """One judged image, for the example grid."""

    skill: str
    record: SkillRecord
    name: str
    image: Image.Image
    reading: Reading
    verdict: Verdict


@dataclass
class SkillsResult:
    """A scoring run: the report (the content of skills.json) and judged examples for the HTML."""

    report: dict[str, Any]
    examples: list[Example]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _interval(block: dict[str, Any] | None) -> str:
    if not block or block.get("accuracy") is None:
        return "–"
    low, high = block["ci95"]
    return f"{_pct(block['accuracy'])} [{_pct(low)}, {_pct(high)}]"


def _skill_table(report: dict[str, Any]) -> str:
    head = ("skill", "generated (95% CI)", "best of k", "upper bound", "shuffle", "chance", "prompts",
            "images", "missing", "unreadable", "unparseable")
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for skill, block in report["skills"].items():
        best = block.get("best_of_k")
        cells = (skill, _interval(block), f"{_interval(best)} (k={best['k']})" if best else "–",
                 _interval(report["upper_bound"].get(skill)), _interval(report["shuffle"].get(skill)),
                 _pct(report["chance"].get(skill)), block["n_prompts"], block["n"], block["missing"],
                 block["unreadable"], block["unparseable"])
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "".join(rows) + "</table>"


def _bars(report: dict[str, Any]) -> str:
    """Per skill, one bar per series with its interval as a whisker, and chance as a red tick."""
    series = [(name, color, report[key]) for key, name, color in SERIES]
    return interval_bars(list(report["skills"]), series, report["chance"], "chance")


def _per_case(report: dict[str, Any]) -> str:
    parts = []
    for skill, block in report["skills"].items():
        for dimension, cases in block["per_case"].items():
            cells = "".join(f"<td><b>{html.escape(value)}</b><br>{_interval(case)}<br>n={case['n']}</td>"
                            for value, case in cases.items())
            parts.append(f"<tr><th>{html.escape(skill)} by {html.escape(dimension)}</th>{cells}</tr>")
    return "<table>" + "".join(parts) + "</table>" if parts else ""


def _alignment_table(report: dict[str, Any]) -> str:
    alignment, quality = report.get("alignment"), report.get("quality")
    if not alignment:
        return "<p>No CLIP given (<code>--clip</code>): alignment and quality metrics were skipped.</p>"
    rows = ["<table><tr><th></th><th>R-precision (mean ± std over repeats)</th><th>CLIPScore</th></tr>"]
    for key, name in ALIGNMENT_ROWS:
        r, c = alignment[key]["r_precision"], alignment[key]["clipscore"]
        r_text = "–" if not r or r["mean"] is None else \
            f"{r['mean']:.3f} ± {r['std']:.3f} (1 in {r['candidates']})"
        c_text = "–" if not c else f"{c['mean']:.3f}"
        rows.append(f"<tr><td>{name}</td><td>{r_text}</td><td>{c_text}</td></tr>")
    rows.append("</table>")
    if quality and quality.get("frechet") is not None:
        floor = quality["reference_split_half"]
        rows.append(
            "<table><tr><th>feature space</th><td colspan='2'>"
            f"{html.escape(quality['feature_space'])}</td></tr>"
            f"<tr><th>reference</th><td colspan='2'>{html.escape(quality['reference'])} "
            f"({quality['n_reference']} images; {quality['n_generated']} generated)</td></tr>"
            "<tr><th></th><th>generated vs reference</th><th>reference split in halves (floor)</th></tr>"
            f"<tr><td>Fréchet distance</td><td>{quality['frechet']:.4f}</td>"
            f"<td>{floor['frechet']:.4f}</td></tr>"
            f"<tr><td>KID (mean ± std)</td><td>{_kid(quality['kid'])}</td><td>{_kid(floor['kid'])}</td></tr>"
            "</table>")
    return "".join(rows)


def _kid(block: dict[str, Any]) -> str:
    if block["subsets"] == 1:
        return f"{block['mean']:.5f} (whole sets of {block['subset_size']}: no subset spread)"
    return f"{block['mean']:.5f} ± {block['std']:.5f} ({block['subsets']} × {block['subset_size']})"


def draw_reading(image: Image.Image, reading: Reading, side: int = THUMBNAIL) -> Image.Image:
    """The image enlarged to `side` pixels with each detected object's box and ``shape/colour`` drawn."""
    scale = side / max(image.size)
    canvas = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                         Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in reading.objects:
        x0, y0, x1, y1 = (v * scale for v in obj.bbox)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 255, 255))
        draw.text((x0 + 1, max(0.0, y0 - 11)), f"{obj.shape or '?'}/{obj.color or '?'}", fill=(255, 255, 255))
    return canvas


def _thumbnail(example: Example) -> str:
    buffer = io.BytesIO()
    draw_reading(example.image, example.reading).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    mark = "ok" if example.verdict.passed else "no"
    return (f"<div class='ex'><img alt='{html.escape(example.name)}' src='data:image/png;base64,{data}'><br>"
            f"{html.escape(example.record.text)}<br>"
            f"<span class='{mark}'>{html.escape(example.verdict.reason)}</span><br>"
            f"<small>{html.escape(example.name)}</small></div>")


def _grid(examples: list[Example]) -> str:
    parts = []
    for skill in dict.fromkeys(e.skill for e in examples):
        chosen = [e for e in examples if e.skill == skill]
        parts.append(f"<h3>{html.escape(skill)}</h3><div class='grid'>"
                     + "".join(_thumbnail(e) for e in chosen) + "</div>")
    return "".join(parts)


_STYLE = """<style>
body{font-family:sans-serif;margin:24px;max-width:1150px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px}
th{background:#f4f4f4}svg text{font-size:11px}.grid{display:flex;flex-wrap:wrap;gap:10px}
.ex{width:140px;font-size:12px}.ok{color:#2a7}.no{color:#c33}
</style>"""


def write_html(result: SkillsResult, path: Path) -> Path:
    """Writes skills.html atomically."""
    report = result.report
    ci = report["ci"]
    sections = [
        "<h1>Image-skill evaluation</h1>",
        f"<p>split <b>{html.escape(str(report.get('split', '')))}</b>; images "
        f"{html.escape(str(report.get('images_dir', '(in memory)')))}; {html.escape(ci['method'])}, "
        f"{ci['resamples']} resamples, seed {ci['seed']}. Upper bound: the ground-truth renders through the "
        "parser; shuffle: each prompt judged on another prompt's ground-truth render; chance: the exact "
        "expected shuffle accuracy from the scenes' metadata.</p>",
        f"<p>{html.escape(report['note'])}</p>" if report.get("note") else "",
        "<h2>Skill accuracy</h2>", _skill_table(report), _bars(report),
        "<h2>Per case</h2>", _per_case(report),
        "<h2>Alignment and quality</h2>", _alignment_table(report),
        "<h2>Examples (the parser's reading drawn on each)</h2>", _grid(result.examples),
    ]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>clipforge skills</title>{_STYLE}</head>"
            "<body>" + "\n".join(sections) + "</body></html>\n")
    return write_text_atomic(path, page)
