"""Checkpoint formats: clipforge folders (every model kind), OpenAI `.pt` files, Hugging Face CLIP folders."""

from clipforge.checkpoint.io import detect_format, load, load_folder, load_model
from clipforge.checkpoint.native import save

__all__ = ["detect_format", "load", "load_folder", "load_model", "save"]
