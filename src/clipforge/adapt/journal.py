"""Finished (shots, seed) runs of one method, on disk, so an interrupted few-shot sweep resumes.

The journal is keyed by everything that decides a run's outcome (model, data specs, method settings):
a journal written under other settings is ignored and replaced. `run_*` jobs delete it once the sweep
is in adapt.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from clipforge.fileio import read_json, write_json


class Journal:
    """Outcomes of finished runs by ``"SHOTS/SEED"``; tensors are stored as lists."""

    def __init__(self, path: Path, fingerprint: dict[str, Any]) -> None:
        self.path, self.fingerprint = path, json.loads(json.dumps(fingerprint, default=str))
        self.done: dict[str, dict[str, Any]] = {}
        if not path.exists():
            return
        stored = read_json(path)
        if isinstance(stored, dict) and stored.get("fingerprint") == self.fingerprint:
            self.done = stored.get("runs", {})

    def get(self, shots: str, seed: int) -> dict[str, Any] | None:
        """The outcome of a finished run, or None."""
        return self.done.get(f"{shots}/{seed}")

    def add(self, shots: str, seed: int, outcome: dict[str, Any]) -> dict[str, Any]:
        """Records an outcome (written at once) and returns it."""
        stored = {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in outcome.items()}
        self.done[f"{shots}/{seed}"] = stored
        write_json({"fingerprint": self.fingerprint, "runs": self.done}, self.path)
        return outcome

    def close(self) -> None:
        """Removes the journal (its runs are in adapt.json now)."""
        self.path.unlink(missing_ok=True)
