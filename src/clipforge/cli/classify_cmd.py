"""`clipforge classify`: zero-shot classification of image files with a prompt ensemble."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from clipforge.adapt.run import classify_with_prompt
from clipforge.cli.adapt_cmd import torch_cpu_only
from clipforge.cli.output import inference_options, one_line, quote_path
from clipforge.device import Runtime
from clipforge.errors import ConfigError
from clipforge.eval.templates import get_templates
from clipforge.eval.zeroshot import Prediction, classify_files


def register(group: click.Group) -> None:
    group.add_command(classify)


@click.command()
@click.option("--model", "spec", default=None,
              help="Registry name, model folder, HF folder or OpenAI .pt (--prompt: its own by default).")
@click.option("--labels", default=None, help='Comma-separated class names, e.g. "cat,dog,car".')
@click.option(
    "--templates",
    default="openai_imagenet_7",
    show_default=True,
    help="Prompt ensemble: simple, openai_imagenet_7 or openai_imagenet.",
)
@click.option("--prompt", type=click.Path(file_okay=False, exists=True), default=None,
              help="A CoOp prompt folder (OUT/coop of `clipforge adapt coop`): learned prompts and classes.")
@click.option("--top", "top_k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Labels shown per image.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per forward pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (errors included).")
@inference_options
@click.argument("images", nargs=-1, required=True)
def classify(spec: str | None, labels: str | None, templates: str, prompt: str | None, top_k: int,
             batch_size: int, as_json: bool, runtime: Runtime, images: tuple[str, ...]) -> None:
    """Zero-shot classify IMAGES (files, or folders searched recursively) and print the top labels.

    With --prompt, the classes and prompts are those a CoOp run learned. Unreadable files are reported
    and the others still classified; the exit status is then 1.
    """
    if prompt is not None:
        if labels:
            raise ConfigError("--labels and --prompt exclude each other: a prompt has its own classes")
        torch_cpu_only(runtime)
        predictions = classify_with_prompt(Path(prompt), list(images), top_k, spec, batch_size)
    else:
        if not spec or not labels:
            raise ConfigError("classify needs --model and --labels (or a learned --prompt)")
        names = [name.strip() for name in labels.split(",") if name.strip()]
        predictions = classify_files(spec, list(images), names, get_templates(templates), top_k, batch_size,
                                     runtime)
    if as_json:
        click.echo(json.dumps({"results": [_as_dict(p) for p in predictions]}, indent=2))
    else:
        _print_table(predictions)
    if any(p.error for p in predictions):
        sys.exit(1)


def _as_dict(pred: Prediction) -> dict[str, object]:
    labels = [{"label": label, "probability": prob} for label, prob in pred.labels]
    return {"image": pred.image, "labels": labels, "error": pred.error}


def _print_table(predictions: list[Prediction]) -> None:
    shown = [quote_path(p.image) for p in predictions]
    width = max(len(s) for s in shown)
    for pred, name in zip(predictions, shown, strict=True):
        if pred.error:
            click.echo(f"error: {one_line(pred.error)}", err=True)
            continue
        ranked = "  ".join(f"{label} {prob:.3f}" for label, prob in pred.labels)
        click.echo(f"{name:<{width}}  {ranked}")
