"""adapt.json (merged across methods) and a self-contained adapt.html with inline SVG charts."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforge.eval.frozen import hit_rate
from clipforge.fileio import read_json_object, write_json, write_text_atomic

METHOD_COLORS = {"zero-shot": "#777777", "linear-probe": "#4e79a7", "coop": "#e15759", "wise-ft": "#59a14f"}
CURVE_COLORS = {"val": "#bbbbbb", "test": "#4e79a7"}
SHIFT_COLORS = ("#e15759", "#f28e2b", "#b07aa1", "#76b7b2")


def _short(spec: str) -> str:
    """A shift's legend label: ``corrupt:blur:2:synth:...`` -> ``blur 2``."""
    parts = spec.split(":")
    return f"{parts[1]} {parts[2]}" if parts[0] == "corrupt" and len(parts) > 3 else spec[:40]


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, classnames: list[str]
                       ) -> dict[str, float | None]:
    """Accuracy on each class's test images (None for a class without any)."""
    result: dict[str, float | None] = {}
    for index, name in enumerate(classnames):
        mask = labels == index
        result[name] = hit_rate(predictions[mask], labels[mask]) if bool(mask.any()) else None
    return result


def summarize_seeds(runs: list[dict[str, Any]], labels: torch.Tensor, classnames: list[str]
                    ) -> dict[str, Any]:
    """Mean, std (over seeds) and per-seed accuracy; other scalars per seed; per-class mean accuracy."""
    accuracies = [float(r["accuracy"]) for r in runs]
    summary: dict[str, Any] = {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
                               "per_seed": accuracies}
    for name in runs[0]:
        if name not in ("accuracy", "predictions"):
            summary[name] = [r[name] for r in runs]
    if "predictions" in runs[0]:
        tables = [per_class_accuracy(torch.as_tensor(r["predictions"]), labels, classnames) for r in runs]
        summary["per_class"] = {c: _mean_or_none([t[c] for t in tables]) for c in classnames}
    return summary


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def merge_report(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """`report` plus what an earlier run against the same model and test data left in `path`.

    Results merge per method and shot count: a full-data run adds "all" beside earlier few-shot counts.
    """
    if not path.exists():
        return report
    old = read_json_object(path)
    if old.get("model") != report["model"] or old.get("data", {}).get("test") != report["data"]["test"]:
        return report
    merged = {**old, **report}
    results = old.get("results", {})
    for method, by_shot in report["results"].items():
        results[method] = {**results.get(method, {}), **by_shot}
    merged["results"] = results
    merged["data"] = {**old.get("data", {}), **{k: v for k, v in report["data"].items() if v is not None}}
    merged["counts"] = {**old.get("counts", {}), **report["counts"]}
    return merged


def write_report(report: dict[str, Any], out: Path) -> None:
    """Writes ``out/adapt.json`` and ``out/adapt.html``."""
    write_json(report, out / "adapt.json")
    write_text_atomic(out / "adapt.html", render_html(report))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # render to memory only
    import matplotlib.pyplot as plt

    return plt


def _svg(figure: Any) -> str:
    """A matplotlib figure as inline SVG markup; the figure is closed."""
    plt = _pyplot()
    buffer = io.StringIO()
    with plt.rc_context({"svg.hashsalt": "clipforge"}):  # fixed ids, no date: same bytes
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _shot_order(results: dict[str, Any]) -> list[str]:
    keys = {k for method in results.values() for k in method}
    return sorted(keys, key=lambda k: (k == "all", int(k) if k.isdigit() else 0))


def few_shot_chart(report: dict[str, Any]) -> str:
    """Accuracy against shots per class (mean ± std over seeds), the zero-shot line with its 95% CI."""
    plt = _pyplot()
    results = {m: r for m, r in report["results"].items() if m != "wise-ft"}
    shots = _shot_order(results) or ["all"]
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    zero = report["zero_shot"]
    axis.axhline(zero["accuracy"], color=METHOD_COLORS["zero-shot"], linestyle="--", label="zero-shot")
    axis.axhspan(*zero["ci95"], color=METHOD_COLORS["zero-shot"], alpha=0.12)
    for method, by_shot in results.items():
        xs = [i for i, k in enumerate(shots) if k in by_shot]
        means = [by_shot[shots[i]]["mean"] for i in xs]
        stds = [by_shot[shots[i]]["std"] for i in xs]
        axis.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=method,
                      color=METHOD_COLORS.get(method))
    axis.set_xticks(range(len(shots)), shots)
    axis.set(xlabel="training images per class", ylabel="test accuracy", title="Few-shot accuracy")
    axis.legend()
    axis.grid(alpha=0.3)
    return _svg(figure)


def wise_ft_chart(section: dict[str, Any]) -> str:
    """Accuracy along the mixing coefficient α (mean ± std over seeds) on val, test and each shift."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    alphas = np.asarray(section["alphas"])
    for k, (name, curve) in enumerate(section["curves"].items()):
        mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
        color = CURVE_COLORS.get(name, SHIFT_COLORS[k % len(SHIFT_COLORS)])
        axis.plot(alphas, mean, marker="o", color=color, label=_short(name))
        axis.fill_between(alphas, mean - std, mean + std, color=color, alpha=0.15)
    axis.axvline(section["alpha_val"], color="#999", linestyle=":", label="α chosen on val")
    axis.set(xlabel="α  (0: zero-shot head, 1: fine-tuned)", ylabel="accuracy", title="WiSE-FT")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return _svg(figure)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{cells}</table>"


def results_table(report: dict[str, Any]) -> str:
    """Zero-shot test accuracy (%) with its 95% CI, then each method per shot count, mean ± std over seeds."""
    zero = report["zero_shot"]
    line = (f"<p>Zero-shot ({zero['templates']}-template ensemble): <b>{_pct(zero['accuracy'])}</b> "
            f"[{_pct(zero['ci95'][0])}, {_pct(zero['ci95'][1])}] on {zero['n']} test images.</p>")
    results = report["results"]
    shots = _shot_order(results)
    rows = [[method, *[f"{_pct(by_shot[k]['mean'])} ± {_pct(by_shot[k]['std'])}" if k in by_shot else ""
                       for k in shots]] for method, by_shot in results.items()]
    return line + (_table(["method", *[f"{k} shots" for k in shots]], rows) if rows else "")


def per_class_table(report: dict[str, Any]) -> str:
    """Per-class test accuracy (%): zero-shot and each method at its largest shot count."""
    columns = {"zero-shot": report["zero_shot"]["per_class"]}
    for method, by_shot in report["results"].items():
        top = _shot_order({method: by_shot})[-1]
        if "per_class" in by_shot[top]:
            columns[f"{method} ({top})"] = by_shot[top]["per_class"]
    counts = report.get("counts", {}).get("test", {})
    rows = [[html.escape(c), str(counts.get(c, "")), *[_pct(col.get(c)) for col in columns.values()]]
            for c in report["classes"]]
    return _table(["class", "test images", *columns], rows)


def template_table(section: dict[str, Any]) -> str:
    """Single template, the whole pool and the greedy choice: val and test accuracy."""
    rows = []
    for name, row in section.items():
        test = row["test"]
        more = " ..." if len(row["templates"]) > 6 else ""
        templates = html.escape("; ".join(row["templates"][:6]) + more)
        interval = f"{_pct(test['accuracy'])} [{_pct(test['ci95'][0])}, {_pct(test['ci95'][1])}]"
        rows.append([name, str(len(row["templates"])), _pct(row["val_accuracy"]), interval, templates])
    return _table(["head", "templates", "val acc", "test acc [95% CI]", "templates used"], rows)


def coop_words(section: dict[str, Any]) -> str:
    """The nearest vocabulary tokens of each learned context vector."""
    rows = [[str(i + 1), html.escape(", ".join(f"{w} ({d:.2f})" for w, d in words))]
            for i, words in enumerate(section["nearest_words"])]
    where = f"<code>{html.escape(section['prompt'])}</code>"
    intro = f"<p>Prompt learned with {section['shots']} shots (seed 1), saved in {where}.</p>"
    return intro + _table(["vector", "nearest tokens"], rows)


def render_html(report: dict[str, Any]) -> str:
    """The whole page."""
    specs = {"model": report["model"], **report["data"]}
    data = {k: f"<code>{html.escape(str(v))}</code>" for k, v in specs.items()}
    intro = (f"<p>Model {data['model']}; test {data['test']}, train {data.get('train')}, "
             f"val {data.get('val')}. {len(report['classes'])} classes. "
             f"clipforge {html.escape(report['version'])}.</p>")
    parts = ["<h1>clipforge adapt</h1>", intro, "<h2>Test accuracy (%)</h2>", results_table(report)]
    if report["results"]:
        parts += ["<h2>Few-shot curves</h2>", few_shot_chart(report)]
    if "wise_ft" in report:
        parts += ["<h2>WiSE-FT</h2>", wise_ft_chart(report["wise_ft"])]
    if "template_search" in report:
        parts += ["<h2>Template search (chosen on val)</h2>", template_table(report["template_search"])]
    if "coop" in report and report["coop"]:
        parts += ["<h2>CoOp context</h2>", coop_words(report["coop"])]
    parts += ["<h2>Per-class accuracy (%)</h2>", per_class_table(report)]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>clipforge adapt</title>{_STYLE}"
            f"</head><body>{''.join(parts)}</body></html>\n")


_STYLE = """<style>
body{font-family:sans-serif;margin:24px;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f4f4f4}svg{max-width:100%;height:auto}
</style>"""
