"""report.json and a self-contained report.html: plots and scenes are inline base64 PNGs, nothing external."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from PIL import Image

from clipforge.fileio import write_json, write_text_atomic
from clipforge.probe.report import HONEST_NOTE
from clipforge.probe.stats import interval_direction
from clipforge.quickstart.config import negative_images_phrase
from clipforge.quickstart.evaluate import Example, split_block
from clipforge.quickstart.gen_report import generation_html
from clipforge.quickstart.generation import Figures

MODEL_COLORS = {"plain": "#9c9c9c", "hardneg": "#e15759"}
HATCHES = {"held-out style": "//", "held-out combinations": ".."}  # bar hatch by test split label
THUMBNAIL = 128


def write_report(report: dict[str, Any], examples: list[Example], out: Path, figures: Figures | None = None
                 ) -> None:
    """Writes ``out/report.json`` and ``out/report.html`` (with the generation stage's `figures`)."""
    write_json(report, out / "report.json")
    write_text_atomic(out / "report.html", render_html(report, examples, figures))


def conclusion(models: dict[str, Any], steps: int, full_steps: int) -> str:
    """The report's one-sentence finding, computed from the relation-swap probe and its 95% CIs.

    Args:
        models: the report's per-model metrics (``plain`` and ``hardneg``).
        steps: the training steps the models had.
        full_steps: the default budget; fewer steps make this a smoke run, and the sentence says so.
    """
    plain, hard = (models[name]["probe"]["relation_swap"] for name in ("plain", "hardneg"))
    (p_low, p_high), (h_low, h_high) = plain["ci95"], hard["ci95"]
    numbers = f"{plain['accuracy']:.2f} to {hard['accuracy']:.2f}"
    cis = f"95% CIs [{p_low:.2f}, {p_high:.2f}] and [{h_low:.2f}, {h_high:.2f}]"
    direction = interval_direction(plain["ci95"], hard["ci95"])
    if direction:
        moved = "raised" if direction > 0 else "lowered"
        finding = f"hard negatives {moved} relation-swap accuracy from {numbers} ({cis}, disjoint)"
    else:
        both = f"{plain['accuracy']:.2f} for plain, {hard['accuracy']:.2f} for hardneg"
        finding = f"no effect of hard negatives was shown: relation-swap accuracy {both} ({cis} overlap)"
    finding += _heldout_clause(models) + _combinations_clause(models)
    if steps < full_steps:
        return (f"Smoke run ({steps} of the default {full_steps} steps), too short to show the effect of "
                f"hard negatives: {finding}.")
    return finding[0].upper() + finding[1:] + "."


def _heldout_clause(models: dict[str, Any]) -> str:
    """What the same probes say on the held-out style (empty without one), with the object control."""
    if any("heldout_style" not in models[name] for name in ("plain", "hardneg")):
        return ""
    plain, hard = (models[name]["heldout_style"]["probe"] for name in ("plain", "hardneg"))
    return (f"; in a held-out style {plain['relation_swap']['accuracy']:.2f} and "
            f"{hard['relation_swap']['accuracy']:.2f}, with object-swap accuracy "
            f"{plain['object_swap']['accuracy']:.2f} and {hard['object_swap']['accuracy']:.2f}")


def _combinations_clause(models: dict[str, Any]) -> str:
    """What the probes say on held-out combinations (empty without them): relation pair-balanced."""
    if any("heldout_combinations" not in models[name] for name in ("plain", "hardneg")):
        return ""
    plain, hard = (models[name]["heldout_combinations"]["probe"]["relation_swap"]["pair_balanced"]
                   for name in ("plain", "hardneg"))
    return (f"; on held-out combinations relation-swap pair-balanced {plain['accuracy']:.2f} and "
            f"{hard['accuracy']:.2f}")


def _png(figure: Any) -> str:
    """A matplotlib figure as an inline <img>; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='plot' src='data:image/png;base64,{data}'>"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory only
    import matplotlib.pyplot as plt

    return plt


def curves_plot(training: dict[str, Any]) -> str:
    """Training loss and validation text->image R@1 of both models against the step."""
    plt = _pyplot()
    figure, (loss_ax, recall_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, run in training.items():
        curve, color = run["curve"], MODEL_COLORS.get(name)
        loss_ax.plot(curve["step"], curve["loss"], color=color, label=name, linewidth=1)
        recall_ax.plot(curve["eval_step"], curve["val_t2i_r1"], color=color, label=name, marker="o")
    loss_ax.set(xlabel="step", ylabel="training loss", title="Loss")
    recall_ax.set(xlabel="step", ylabel="text->image R@1", title="Validation retrieval", ylim=(0, 1))
    for axis in (loss_ax, recall_ax):
        axis.legend()
        axis.grid(alpha=0.3)
    return _png(figure)


def columns(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The report's metric blocks by column label: each model in each test split ("hardneg, in-style").

    ``dataset.style_splits`` names the test splits (report name -> scene split, see `split_block`); a
    report without them has one column per model.
    """
    splits = report["dataset"].get("style_splits") or {"": "test"}
    found = {}
    for name, metrics in report["models"].items():
        for label, split in splits.items():
            block = split_block(metrics, split)
            if block is not None:
                found[f"{name}, {label}" if label else name] = block
    return found


def _model_color(label: str) -> str | None:
    return MODEL_COLORS.get(label.split(",")[0])


def grouped_bars(groups: list[str], values: dict[str, list[float]],
                 errors: dict[str, list[list[float]]] | None, ylabel: str, title: str) -> str:
    """Bars per group for each column, with asymmetric error bars when `errors` holds [lo, hi] per bar.

    A column's colour is its model's; held-out-style and held-out-combination columns are hatched.
    """
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) + 2), 3.4))
    width = 0.8 / max(len(values), 1)
    for k, (name, heights) in enumerate(values.items()):
        xs = [i + (k - (len(values) - 1) / 2) * width for i in range(len(groups))]
        yerr = None
        if errors is not None:
            yerr = [[max(h - lo, 0) for h, (lo, _) in zip(heights, errors[name], strict=True)],
                    [max(hi - h, 0) for h, (_, hi) in zip(heights, errors[name], strict=True)]]
        axis.bar(xs, heights, width, yerr=yerr, capsize=3, label=name, color=_model_color(name),
                 hatch=_hatch(name), edgecolor="white")
    axis.set_xticks(range(len(groups)), groups)
    axis.set(ylabel=ylabel, ylim=(0, 1.05), title=title)
    axis.axhline(0.5, color="#bbb", linestyle=":", linewidth=1)
    axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")  # six columns would hide bars
    axis.grid(axis="y", alpha=0.3)
    return _png(figure)


def _hatch(label: str) -> str | None:
    return next((hatch for split, hatch in HATCHES.items() if label.endswith(split)), None)


def probe_plots(models: dict[str, Any]) -> str:
    """Accuracy per probe kind with 95% CIs, then relation-swap accuracy per relation."""
    tags = sorted({tag for metrics in models.values() for tag in metrics["probe"]})
    values = {name: [_num(m["probe"].get(tag, {}).get("accuracy")) for tag in tags]
              for name, m in models.items()}
    errors = {name: [_ci(m["probe"].get(tag, {})) for tag in tags] for name, m in models.items()}
    per_tag = grouped_bars(tags, values, errors, "accuracy", "Probe accuracy per kind (95% CI)")
    swaps = [m["probe"].get("relation_swap", {}).get("per_relation", {}) for m in models.values()]
    relations = sorted({relation for per_relation in swaps for relation in per_relation})
    if not relations:
        return per_tag
    by_relation = {name: [_num(m["probe"]["relation_swap"]["per_relation"].get(r)) for r in relations]
                   for name, m in models.items()}
    cis = {name: [_ci({"ci95": _relation_ci(m, r)}) for r in relations] for name, m in models.items()}
    title = "Relation swap, per relation (95% CI)"
    return per_tag + grouped_bars(relations, by_relation, cis, "accuracy", title)


def _num(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else float(value)


def _ci(block: dict[str, Any]) -> list[float]:
    low, high = block.get("ci95") or [None, None]
    return [_num(low), _num(high)]


def _relation_ci(metrics: dict[str, Any], relation: str) -> list[float] | None:
    return metrics["probe"]["relation_swap"].get("per_relation_ci95", {}).get(relation)  # type: ignore[no-any-return]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _interval(block: dict[str, Any] | None) -> str:
    if not block or block.get("accuracy") is None:
        return "-"
    low, high = block["ci95"]
    return f"{_pct(block['accuracy'])} <small>[{_pct(low)}, {_pct(high)}]</small>"


def summary_table(models: dict[str, Any]) -> str:
    """One row per metric, one column per model (or per model and style split, see `columns`)."""
    rows: list[tuple[str, list[str]]] = []
    first = next(iter(models.values()))
    for key in first["retrieval"]:
        rows.append((f"retrieval {key}", [_pct(m["retrieval"][key]) for m in models.values()]))
    for key in first["zeroshot"]:
        rows.append((f"zero-shot {key}", [_pct(m["zeroshot"][key]) for m in models.values()]))
    for tag in first["probe"]:
        blocks = [m["probe"].get(tag, {}) for m in models.values()]
        rows.append((f"probe {tag}", [_interval(block) + _n(block) for block in blocks]))
        for key, label in (("pair_balanced", "pair-balanced"), ("blind", "blind baseline"),
                           ("same_color", "same-colour pairs"),
                           ("names_heldout", "true caption names a held-out combination")):
            cells = [_interval(block.get(key)) for block in blocks]
            if any(cell != "-" for cell in cells):
                rows.append((f"probe {tag} {label}", cells))
    head = "".join(f"<th>{html.escape(name)}</th>" for name in models)
    body = "".join(f"<tr><td>{html.escape(label)}</td>{''.join(f'<td>{c}</td>' for c in cells)}</tr>"
                   for label, cells in rows)
    return f"<table><tr><th>metric</th>{head}</tr>{body}</table>"


def _n(block: dict[str, Any]) -> str:
    return f" <small>n={block['n']}</small>" if block.get("n") is not None else ""


def _thumbnail(path: Path) -> str:
    with Image.open(path) as image:
        big = image.convert("RGB").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='scene' src='data:image/png;base64,{data}'>"


def example_cards(examples: list[Example]) -> str:
    """Each example scene with its caption and every model's top retrieved test captions."""
    cards = []
    for example in examples:
        lists = "".join(
            f"<div><b>{html.escape(name)}</b><ol>"
            + "".join(f"<li class='{'ok' if hit else 'no'}'>{html.escape(text)} <small>{s:.3f}</small></li>"
                      for text, s, hit in top)
            + "</ol></div>"
            for name, top in example.top.items()
        )
        caption = html.escape(" / ".join(example.captions))
        cards.append(f"<div class='card'>{_thumbnail(example.image)}<div><p><i>{caption}</i></p>"
                     f"<div class='tops'>{lists}</div></div></div>")
    return "".join(cards)


def _per_style(dataset: dict[str, Any]) -> str:
    splits = list(dataset.get("style_splits", {}))
    named = html.escape(", ".join(splits))
    return f"in each of {len(splits)} test splits ({named}) " if len(splits) > 1 else ""


SPLIT_NOTES = {
    "in-style": "test scenes drawn in the randomized training style",
    "held-out style": "test scenes drawn with a background kind, colour shades, noise levels and blur radii "
                      "that no training scene uses (<code>clipforge.synthetic.style</code>)",
    "held-out combinations": "test scenes (in the training style) that each show a (colour, shape) object or "
                             "a (shape, relation) combination that no training scene shows (split "
                             "<code>test_heldout</code>); its row \"true caption names a held-out "
                             "combination\" keeps the probe items whose true sentence names one",
}


def _style_note(report: dict[str, Any]) -> str:
    """What each test split's name means, with the object control."""
    notes = [f"<b>{label}</b>: {SPLIT_NOTES[label]}" for label in report["dataset"].get("style_splits", {})
             if label in SPLIT_NOTES]
    if not notes:
        return ""
    return ("<p>" + "; ".join(notes) + ". <b>object_swap</b> is the object-recognition control beside the "
            "relation items: a relation failure with object recognition intact is a relation failure, not a "
            "perception one.</p>")


def render_html(report: dict[str, Any], examples: list[Example], figures: Figures | None = None) -> str:
    """The whole page: summary, curves, probe plots, example scenes, how to reproduce, and the Generation
    section when the quickstart has one."""
    dataset = report["dataset"]
    images = negative_images_phrase(report["config"].get("negative_images", 0.0))
    intro = (f"<p>Two CLIP models trained from scratch on the same {dataset['n_train']} synthetic scenes "
             f"with the same budget; <b>plain</b> uses InfoNCE only, <b>hardneg</b> adds hard negatives "
             f"({html.escape(', '.join(report['config']['negative_kinds']))}"
             f"{f'; and {images}' if images else ''}). Evaluated on "
             f"{dataset['n_test']} held-out test scenes and {dataset['n_zeroshot']} single-object scenes "
             f"{_per_style(dataset)}({dataset['probe_items']} probe items in all). "
             f"Total time {report['seconds']:.0f} s; clipforge {html.escape(report['version'])}.</p>")
    reproduce = "<pre>" + "\n".join((
        "clipforge probe --suite synthetic:OUT/data --model plain=OUT/plain/final "
        "--model hardneg=OUT/hardneg/final --out OUT/probe-again",
        "clipforge eval retrieval --model OUT/hardneg/final --data synthetic:OUT/data:test --out r.json",
        "clipforge eval zeroshot --model OUT/hardneg/final --data synthetic:OUT/zeroshot:test --out z.json",
        "# held-out style and combinations: the same with :test_style and :test_heldout; the probe reports "
        "every split (per_split)",
    )) + "</pre>"
    sections = [
        "<h1>clipforge quickstart: hard negatives vs plain InfoNCE</h1>",
        f"<p class='conclusion'><b>{html.escape(report['conclusion'])}</b></p>", intro,
        "<h2>Results on held-out scenes (95% CIs for probes)</h2>", _style_note(report),
        summary_table(columns(report)),
        f"<p><small>{HONEST_NOTE}</small></p>",
        "<h2>Training curves</h2>", curves_plot(report["training"]),
        "<h2>Probe accuracy</h2>", probe_plots(columns(report)),
        "<h2>Example test scenes and their top retrieved captions</h2>",
        "<p>Green: a caption of the scene itself.</p>", example_cards(examples),
        "<h2>Reproduce the numbers</h2>", reproduce,
        "<p>Per-item probe details: <code>probe/probe.html</code>.</p>",
    ]
    if "generation" in report:
        sections.append(generation_html(report["generation"], figures))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>clipforge quickstart</title>{_STYLE}"
            f"</head><body>{''.join(sections)}</body></html>\n")


_STYLE = """<style>
body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f4f4f4}
.card{display:flex;gap:14px;margin:10px 0;border-bottom:1px solid #eee;padding-bottom:8px}
.card img{image-rendering:pixelated;width:128px;height:128px}.tops{display:flex;gap:24px;font-size:13px}
.pairs{display:flex;flex-wrap:wrap;gap:12px}.pair{font-size:12px;max-width:280px}
.ok{color:#2a7}.no{color:#c33}pre{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto}
</style>"""
