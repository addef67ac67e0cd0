"""`clipforge classify`: zero-shot classification of image files with a prompt ensemble."""

from __future__ import annotations

import sys

import click

from clipforge.eval.templates import get_templates
from clipforge.eval.zeroshot import classify_files


def register(group: click.Group) -> None:
    group.add_command(classify)


@click.command()
@click.option("--model", "spec", required=True, help="Registry name, model folder, HF folder or OpenAI .pt.")
@click.option("--labels", required=True, help='Comma-separated class names, e.g. "cat,dog,car".')
@click.option(
    "--templates",
    default="openai_imagenet_7",
    show_default=True,
    help="Prompt ensemble: simple, openai_imagenet_7 or openai_imagenet.",
)
@click.option("--top", "top_k", default=3, show_default=True, help="Labels shown per image.")
@click.argument("images", nargs=-1, required=True)
def classify(spec: str, labels: str, templates: str, top_k: int, images: tuple[str, ...]) -> None:
    """Zero-shot classify IMAGES with a prompt ensemble and print the top labels."""
    names = [name.strip() for name in labels.split(",") if name.strip()]
    predictions = classify_files(spec, list(images), names, get_templates(templates), top_k)
    width = max(len(p.image) for p in predictions)
    for pred in predictions:
        if pred.error:
            click.echo(f"error: {pred.error}", err=True)
            continue
        ranked = "  ".join(f"{label} {prob:.3f}" for label, prob in pred.labels)
        click.echo(f"{pred.image:<{width}}  {ranked}")
    if any(p.error for p in predictions):
        sys.exit(1)
