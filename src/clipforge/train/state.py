"""The run folder: resolved config, resumable checkpoints, the final model.

Layout of ``DIR``::

    config.json                    the resolved TrainRunConfig (what --resume re-reads)
    log.jsonl                      one JSON line per logged step / evaluation
    checkpoints/step_000040/       model/ (clipforge format) + state.pt (optimizer, schedule, RNG, data)
    final/                         the trained model in clipforge format (`clipforge.load` reads it)

Checkpoints are written into a temporary folder and renamed into place, so a folder named
``step_NNNNNN`` is always complete, even if the process is killed while writing.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforge.checkpoint import save as save_model
from clipforge.checkpoint.files import WEIGHTS_NAME, load_safetensors, load_state_dict_strict
from clipforge.errors import CheckpointError, ConfigError
from clipforge.fileio import check_writable_dir, write_json
from clipforge.models.base import Model
from clipforge.train.config import TrainRunConfig, config_with_overrides, read_config_file

RUN_CONFIG = "config.json"
STATE_NAME = "state.pt"
CHECKPOINTS = "checkpoints"


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
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    key = np_state["key"].numpy().astype(np.uint32)
    np.random.set_state((np_state["kind"], key, np_state["pos"], np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])


@dataclass
class TrainingState:
    """Everything besides the model weights that a checkpoint restores."""

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    data: dict[str, Any]
    elapsed_s: float


def save_checkpoint(run_dir: Path, model: Model, state: TrainingState, keep: int) -> Path:
    """Writes ``checkpoints/step_NNNNNN`` atomically and deletes all but the newest `keep`."""
    root = run_dir / CHECKPOINTS
    root.mkdir(exist_ok=True)
    final = root / checkpoint_name(state.step)
    tmp = root / f".tmp_{checkpoint_name(state.step)}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp / "model")
    payload = {**vars(state), "rng": rng_state()}
    torch.save(payload, tmp / STATE_NAME)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / CHECKPOINTS
    return sorted(p for p in root.glob("step_[0-9]*") if p.is_dir()) if root.is_dir() else []


def load_checkpoint(path: Path, model: Model) -> TrainingState:
    """Loads the weights into `model`, restores the RNGs and returns the rest of the state."""
    load_state_dict_strict(model, load_safetensors(path / "model" / WEIGHTS_NAME), str(path))
    try:
        payload = torch.load(path / STATE_NAME, weights_only=True)
    except (OSError, RuntimeError) as err:
        raise CheckpointError(f"cannot read training state {path / STATE_NAME}: {err}") from err
    set_rng_state(payload.pop("rng"))
    payload.pop("loss", None)  # loss state, which checkpoints held before SigLIP's moved into the model
    return TrainingState(**payload)


def save_final(run_dir: Path, model: Model, extra: dict[str, Any], name: str = "final") -> Path:
    """Writes ``final/`` (or another model folder of the run) via a temporary folder, like the checkpoints."""
    final = run_dir / name
    tmp = run_dir / f".tmp_{name}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp, extra=extra)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final


def promote(run_dir: Path, name: str) -> Path:
    """Makes the run's model folder `name` (e.g. ``best``) its ``final/``, atomically."""
    final = run_dir / "final"
    tmp = run_dir / f".tmp_final_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir / name, tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final
