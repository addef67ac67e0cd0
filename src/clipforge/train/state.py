"""The run folder: resolved config, resumable checkpoints, the final model.

Layout of ``DIR``::

    config.json                    the resolved TrainRunConfig (what --resume re-reads)
    log.jsonl                      one JSON line per logged step / evaluation
    checkpoints/step_000040/       model/ (clipforge format) + state.pt (optimizer, schedule, RNG, data)
    final/                         the trained model in clipforge format (`clipforge.load` reads it)

Checkpoints are written into a temporary folder and renamed into place, so a folder named
``step_NNNNNN`` is always complete, even if the process is killed while writing. A failed write deletes
its temporary folder; a killed one leaves it, and the next start of the run deletes it.
"""

from __future__ import annotations

import errno
import io
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforge.checkpoint import save as save_model
from clipforge.checkpoint.files import WEIGHTS_NAME, load_safetensors, load_state_dict_strict
from clipforge.errors import CheckpointError, ConfigError, DiskFullError
from clipforge.fileio import check_writable_dir, write_bytes_atomic, write_json
from clipforge.fileio import remove_stale_temps as remove_stale_files
from clipforge.models.base import Model
from clipforge.train.config import TrainRunConfig, config_with_overrides, read_config_file

RUN_CONFIG = "config.json"
STATE_NAME = "state.pt"
LOG_NAME = "log.jsonl"
CHECKPOINTS = "checkpoints"
TMP_PREFIX = ".tmp_"  # folders being written; stale after a kill


def checkpoint_name(step: int) -> str:
    """``step_000040``: six digits, so names sort in step order."""
    return f"step_{step:06d}"


def prepare_run_dir(out_dir: Path, config: TrainRunConfig) -> None:
    """Creates a fresh run folder and writes its config.

    Raises:
        ConfigError: the folder already holds a run, or cannot be written.
    """
    if (out_dir / RUN_CONFIG).exists():
        raise ConfigError(f"output folder already holds a run: {out_dir} (use --resume, or another --out)")
    check_writable_dir(out_dir)
    write_json(config.to_dict(), out_dir / RUN_CONFIG)


def check_run_dir(run_dir: Path) -> None:
    """Raises CheckpointError unless `run_dir` is a clipforge run folder."""
    if not (run_dir / RUN_CONFIG).is_file():
        raise CheckpointError(f"not a clipforge run folder (no {RUN_CONFIG}): {run_dir}")


def load_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainRunConfig:
    """The config a run was started with, plus `overrides` (e.g. more steps).

    Raises:
        CheckpointError: `run_dir` is not a clipforge run folder.
    """
    check_run_dir(run_dir)
    path = run_dir / RUN_CONFIG
    return config_with_overrides(read_config_file(path), overrides, where=str(path))


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain values (loadable with weights_only)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    assert isinstance(key, np.ndarray)
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
        # A run on a GPU draws its noise (the dVAE's Gumbel samples) from the CUDA generators.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    key = np_state["key"].numpy().astype(np.uint32)
    np.random.set_state((np_state["kind"], key, np_state["pos"], np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda"):  # checkpoints of CPU runs (and older ones) hold none
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainingState:
    """Everything besides the model weights that a checkpoint restores."""

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    data: dict[str, Any]
    elapsed_s: float


def save_checkpoint(run_dir: Path, model: Model, state: TrainingState, keep: int) -> Path:
    """Writes ``checkpoints/step_NNNNNN`` atomically and deletes all but the newest `keep`.

    Raises:
        DiskFullError: the disk filled up; nothing of the new checkpoint is left behind.
    """
    root = run_dir / CHECKPOINTS
    root.mkdir(exist_ok=True)
    payload = {**vars(state), "rng": rng_state()}

    def write(tmp: Path) -> None:
        save_model(model, tmp / "model")
        buffer = io.BytesIO()  # torch.save straight to disk fails with a raw C++ error when the disk is full
        torch.save(payload, buffer)
        write_bytes_atomic(tmp / STATE_NAME, buffer.getvalue())

    size = model_bytes(model) + tensor_bytes(payload)
    final = write_folder(root / checkpoint_name(state.step), write, size)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_folder(final: Path, write: Callable[[Path], object], size: int) -> Path:
    """Writes the folder `final` through `write(tmp)` into a temporary sibling renamed into place.

    On any failure the temporary folder is deleted (a full disk must not stay full), and a full disk
    is reported as such.

    Args:
        final: the folder to create or replace.
        write: fills the folder it is given.
        size: about how many bytes `write` writes (for the disk-full message).

    Raises:
        DiskFullError: no space (or quota) left on the folder's disk.
    """
    tmp = final.parent / f"{TMP_PREFIX}{final.name}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            raise disk_full(final.parent, size) from err
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final


def disk_full(folder: Path, size: int) -> DiskFullError:
    """The one-line error for a write of about `size` bytes into `folder` that found the disk full."""
    return DiskFullError(f"no space left on {folder} (needs ~{math.ceil(size / 2**20)} MB)")


def is_disk_full(err: BaseException | None) -> bool:
    """Whether `err`, or an error it was raised from, is ENOSPC or EDQUOT."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


def remove_stale_temps(run_dir: Path) -> int:
    """Deletes the temporary folders that a killed run left in `run_dir`; returns how many.

    A run folder is written by one run at a time, so every temporary folder in it is stale at start.
    """
    folders = (run_dir, run_dir / CHECKPOINTS)
    stale = [path for folder in folders for path in folder.glob(f"{TMP_PREFIX}*") if path.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale) + sum(remove_stale_files(run_dir / name) for name in (RUN_CONFIG, LOG_NAME))


def model_bytes(model: Model) -> int:
    """Bytes of the model's weights and buffers as saved."""
    return tensor_bytes(model.state_dict())


def tensor_bytes(data: object) -> int:
    """Bytes of all tensors in nested dicts, lists and tuples."""
    if isinstance(data, torch.Tensor):
        return data.numel() * data.element_size()
    if isinstance(data, dict):
        return sum(tensor_bytes(value) for value in data.values())
    if isinstance(data, list | tuple):
        return sum(tensor_bytes(value) for value in data)
    return 0


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / CHECKPOINTS
    return sorted(p for p in root.glob("step_[0-9]*") if p.is_dir()) if root.is_dir() else []


def load_checkpoint(path: Path, model: Model) -> TrainingState:
    """Loads the weights into `model`, restores the RNGs and returns the rest of the state."""
    load_state_dict_strict(model, load_safetensors(path / "model" / WEIGHTS_NAME), str(path))
    try:
        payload = torch.load(path / STATE_NAME, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise CheckpointError(f"cannot read training state {path / STATE_NAME}: {err}") from err
    set_rng_state(payload.pop("rng"))
    payload.pop("loss", None)  # loss state, which checkpoints held before SigLIP's moved into the model
    return TrainingState(**payload)


def save_final(run_dir: Path, model: Model, extra: dict[str, Any], name: str = "final") -> Path:
    """Writes ``final/`` (or another model folder of the run) via a temporary folder, like the checkpoints."""
    return write_folder(run_dir / name, lambda tmp: save_model(model, tmp, extra=extra), model_bytes(model))


def promote(run_dir: Path, name: str) -> Path:
    """Makes the run's model folder `name` (e.g. ``best``) its ``final/``, atomically."""
    source = run_dir / name
    size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    return write_folder(run_dir / "final", lambda tmp: shutil.copytree(source, tmp), size)
