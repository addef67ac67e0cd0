"""Prompt templates for zero-shot classification, shipped as data (`eval/data/templates.json`)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def _templates() -> dict[str, list[str]]:
    text = (resources.files("clipforge.eval") / "data" / "templates.json").read_text()
    return {k: v for k, v in json.loads(text).items() if isinstance(v, list)}


def get_templates(name: str) -> list[str]:
    """A named template set: `openai_imagenet` (80), `openai_imagenet_7` or `simple` ("a photo of a {}.")."""
    if name == "simple":
        return ["a photo of a {}."]
    sets = _templates()
    if name not in sets:
        raise KeyError(f"unknown template set '{name}' (known: simple, {', '.join(sets)})")
    return list(sets[name])


OPENAI_IMAGENET_TEMPLATES = get_templates("openai_imagenet")
SIMPLE_TEMPLATES = get_templates("openai_imagenet_7")
