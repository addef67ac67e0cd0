"""Where models run: `--device auto|cpu|cuda` and `--threads`, resolved in one place.

CPU is the default and the target. `auto` picks CUDA when torch sees a GPU; asking for `cuda` without
one is a one-line error, not a crash deep inside a forward pass. Models move their inputs to their own
device, so a loaded model is the only thing that has to be placed.
"""

from __future__ import annotations

import torch

from clipforge.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "cpu") -> torch.device:
    """The torch device for `auto`, `cpu` or `cuda` (also `cuda:N`).

    Raises:
        ConfigError: an unknown name, or CUDA requested where torch has none.
    """
    kind = name.partition(":")[0]
    if kind not in DEVICES:
        raise ConfigError(f"unknown device '{name}' (known: {', '.join(DEVICES)})")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested, but torch has no CUDA here; use --device cpu or auto")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    """Sets torch's intra-op CPU threads; None or 0 keeps torch's default.

    Raises:
        ConfigError: a negative count.
    """
    if threads is None or threads == 0:
        return
    if threads < 0:
        raise ConfigError(f"threads must be >= 0 (0: torch's default), got {threads}")
    torch.set_num_threads(threads)
