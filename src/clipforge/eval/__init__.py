"""Evaluation: zero-shot classification and retrieval."""

from clipforge.eval.templates import OPENAI_IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, get_templates
from clipforge.eval.zeroshot import classify, zero_shot_classifier

__all__ = [
    "OPENAI_IMAGENET_TEMPLATES",
    "SIMPLE_TEMPLATES",
    "classify",
    "get_templates",
    "zero_shot_classifier",
]
