"""`convert`: any checkpoint clipforge loads, written as a clipforge folder or a Hugging Face CLIP folder.

The output is written to a temporary folder beside the target and loaded back before it is moved into
place, so `convert` never leaves a model that `load` would then reject.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from clipforge.checkpoint.hf import save_hf
from clipforge.checkpoint.io import load_model
from clipforge.checkpoint.native import save
from clipforge.errors import CheckpointError, ClipforgeError, ConfigError

CONVERT_TARGETS = ("clipforge", "hf")


def convert(src: str | Path, dst: str | Path, to: str = "clipforge") -> Path:
    """Loads any supported checkpoint and writes it as a clipforge folder or an HF CLIP folder.

    Args:
        src: a registry name, a clipforge or HF folder, or an OpenAI `.pt` file.
        dst: the folder to write (files already there with the same names are replaced).
        to: `clipforge` or `hf`.

    Raises:
        ConfigError: an unknown target, or a model the target format cannot hold.
        CheckpointError: the written model does not load back equal to the source (nothing is left at `dst`).
    """
    if to not in CONVERT_TARGETS:
        raise ConfigError(f"unknown conversion target '{to}' (known: {', '.join(CONVERT_TARGETS)})")
    model = load_model(src)
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".convert", dir=out.parent))
    try:
        if to == "hf":
            save_hf(model, staging)
        else:
            save(model, staging, extra={"converted_from": str(src)})
        _check_reloads(model, staging, out)
        move_files(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_reloads(model: torch.nn.Module, folder: Path, out: Path) -> None:
    """Loads what was written and compares every tensor with the source model."""
    try:
        back = load_model(folder)
    except ClipforgeError as err:
        why = f"conversion to {out} failed: the written model does not load back ({err})"
        raise CheckpointError(why) from err
    theirs = back.state_dict()
    for key, value in model.state_dict().items():
        if key not in theirs or not torch.equal(value.cpu(), theirs[key].cpu()):
            raise CheckpointError(f"conversion to {out} failed: tensor '{key}' changed in the round trip")


def move_files(staging: Path, out: Path) -> None:
    """Moves a staged model folder's files into `out`, its JSON config last."""
    out.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():  # weights before config: a config.json always has its weights
        if item.suffix != ".json":
            item.replace(out / item.name)
    for item in staging.iterdir():
        item.replace(out / item.name)
