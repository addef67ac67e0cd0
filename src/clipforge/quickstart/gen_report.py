"""The Generation section of report.html: the skill table with CIs, reconstructions and contact sheets."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from PIL import Image

from clipforge.generate.grid import marked_grid
from clipforge.quickstart.generation import CHECKPOINTS, Figures
from clipforge.skills import SKILLS

PICKER_COLORS = {"none": (60, 110, 230), "plain": (156, 156, 156), "hardneg": (225, 87, 89),
                 "hardneg-skill": (240, 170, 40)}
HELD_OUT = ("color", "spatial")
SCALE = 4


def _img(image: Image.Image, scale: int = SCALE) -> str:
    big = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='image' src='data:image/png;base64,{data}'>"


def _cell(block: dict[str, Any] | None) -> str:
    if not block or block.get("accuracy") is None:
        return "-"
    low, high = block.get("ci95") or (None, None)
    if low is None:
        return f"{block['accuracy']:.2f}"
    return f"{block['accuracy']:.2f} <small>[{low:.2f}, {high:.2f}]</small>"


def _held_out(block: dict[str, Any] | None) -> dict[str, Any] | None:
    return (block or {}).get("per_case", {}).get("combination", {}).get("held-out")


def _row(label: str, skills: dict[str, Any]) -> str:
    cells = [_cell(skills.get(skill)) for skill in SKILLS]
    cells += [_cell(_held_out(skills.get(skill))) for skill in HELD_OUT]
    return f"<tr><td>{html.escape(label)}</td>{''.join(f'<td>{c}</td>' for c in cells)}</tr>"


def skill_table(section: dict[str, Any]) -> str:
    """One row per checkpoint and picker, then the dVAE reconstructions and the evaluator's controls."""
    head = "".join(f"<th>{s}</th>" for s in (*SKILLS, *(f"{s}, held-out combinations" for s in HELD_OUT)))
    rows = []
    for checkpoint in CHECKPOINTS:
        for picker, skills in section["checkpoints"][checkpoint]["pickers"].items():
            label = f"{checkpoint}: {'oracle (parser best of ' + str(section['candidates']) + ')'}" \
                if picker == "oracle" else f"{checkpoint}: {picker}"
            rows.append(_row(label, skills))
    rows.append(_row("dVAE reconstruction of the ground truth", section["reconstruction"]["skills"]))
    final = section["checkpoints"]["final"]
    rows.append(_row("control: ground-truth renders", final["upper_bound"]))
    rows.append(_row("control: shuffled prompts", final["shuffle"]))
    chance = {skill: {"accuracy": value} for skill, value in final["chance"].items() if value is not None}
    rows.append(_row("control: chance", chance))
    return f"<table><tr><th>generator: picker</th>{head}</tr>{''.join(rows)}</table>"


def reconstructions(figures: Figures) -> str:
    cards = "".join(
        f"<div class='pair'>{_img(truth)}{_img(rebuilt)}<br><small>{html.escape(text)}</small></div>"
        for text, truth, rebuilt in figures.reconstructions)
    return f"<div class='pairs'>{cards}</div>"


def grids(figures: Figures) -> str:
    """Every contact sheet, the pickers' choices framed in their colours."""
    out = []
    for checkpoint, text, images, chosen in figures.grids:
        marks = [[PICKER_COLORS[p] for p in PICKER_COLORS if chosen.get(p) == k] for k in range(len(images))]
        out.append(f"<p><b>{html.escape(checkpoint)}</b> generator: <i>{html.escape(text)}</i></p>"
                   f"{_img(marked_grid(images, marks, scale=1), scale=3)}")
    return "".join(out)


def generation_html(section: dict[str, Any], figures: Figures | None) -> str:
    """The whole Generation section."""
    sampling = section["sampling"]
    legend = ", ".join(f"<span style='color:rgb{c}'>&#9632; {p}</span>" for p, c in PICKER_COLORS.items())
    parts = [
        "<h2>Generation: does re-ranking with a relation-aware CLIP repair spatial errors?</h2>",
        f"<p class='conclusion'><b>{html.escape(section['conclusion'])}</b></p>",
        f"<p>A dVAE and a DALL-E-style transformer trained on the plain-style skill scenes (not the CLIP "
        f"models' randomized styles). For each of {section['n_prompts']} held-out prompts per skill (half "
        f"the color and spatial ones name a held-out combination), {section['candidates']} candidates are "
        f"drawn (temperature {sampling['temperature']}, guidance {sampling['cond_scale']}) from the early "
        f"(step {section['early_step']}, fixed in advance) and the final generator; each picker keeps one "
        f"and the skill parser judges it. Accuracy with 95% bootstrap CIs; the oracle passes when any "
        f"candidate does.</p>",
        skill_table(section),
        f"<p>dVAE codebook perplexity {section['reconstruction']['perplexity']:.1f}, "
        f"{section['reconstruction']['dead_codes']} dead codes.</p>",
    ]
    if figures is not None:
        parts += ["<h3>Ground truth and its dVAE reconstruction</h3>", reconstructions(figures),
                  f"<h3>Candidates and the pickers' choices</h3><p>Frames: {legend}.</p>", grids(figures)]
    parts.append("<h3>Reproduce</h3><pre>" + html.escape(
        f"clipforge generate --model OUT/generator/final --skills OUT/skills -n {section['candidates']} "
        f"--keep 1 --rerank OUT/hardneg/final --temperature {sampling['temperature']} --cond-scale "
        f"{sampling['cond_scale']} --seed {section['seed']} --out OUT/gen-hardneg\n"
        f"clipforge skills score --skills OUT/skills --images OUT/gen-hardneg --seed {section['seed']} "
        f"--out OUT/gen-hardneg/score\n# without --rerank: the 'none' picker (the first candidate)")
        + "</pre>")
    return "".join(parts)
