"""`convert`: any checkpoint clipforge loads, written as a clipforge folder or a Hugging Face CLIP folder."""

from __future__ import annotations

from pathlib import Path

from clipforge.checkpoint.hf import save_hf
from clipforge.checkpoint.io import load_model
from clipforge.checkpoint.native import save
from clipforge.errors import ConfigError

CONVERT_TARGETS = ("clipforge", "hf")


def convert(src: str | Path, dst: str | Path, to: str = "clipforge") -> Path:
    """Loads any supported checkpoint and writes it as a clipforge folder or an HF CLIP folder.

    Args:
        src: a registry name, a clipforge or HF folder, or an OpenAI `.pt` file.
        dst: the folder to write.
        to: `clipforge` or `hf`.

    Raises:
        ConfigError: an unknown target, or a model the target format cannot hold.
    """
    if to not in CONVERT_TARGETS:
        raise ConfigError(f"unknown conversion target '{to}' (known: {', '.join(CONVERT_TARGETS)})")
    model = load_model(src)
    if to == "hf":
        return save_hf(model, dst)
    return save(model, dst, extra={"converted_from": str(src)})
