"""Checkpoint formats: clipforge folders, OpenAI `.pt` files, Hugging Face CLIP folders."""

from clipforge.checkpoint.io import detect_format, load, load_model
from clipforge.checkpoint.native import save

__all__ = ["detect_format", "load", "load_model", "save"]
