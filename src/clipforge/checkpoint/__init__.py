"""Checkpoint formats: clipforge folders, OpenAI `.pt` files, Hugging Face CLIP folders."""

from clipforge.checkpoint.io import detect_format, load, load_model, save

__all__ = ["detect_format", "load", "load_model", "save"]
