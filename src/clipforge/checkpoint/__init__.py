"""Checkpoint formats: clipforge folders (every model kind), exported ONNX folders, OpenAI `.pt` files,
Hugging Face and open_clip folders; and the runtimes a loaded model runs on (`load`)."""

from clipforge.checkpoint.io import detect_format, load_folder, load_model
from clipforge.checkpoint.native import save
from clipforge.checkpoint.precision import weights_fingerprint
from clipforge.checkpoint.runtime import load, load_with

__all__ = ["detect_format", "load", "load_folder", "load_model", "load_with", "save", "weights_fingerprint"]
