"""Where and how models run: `--device auto|cpu|cuda`, `--threads`, `--backend torch|onnx` and
`--precision fp32|bf16|int8`, resolved in one place.

CPU is the default and the target. `auto` picks CUDA when torch sees a GPU; asking for `cuda` without
one is a one-line error, not a crash deep inside a forward pass. Models move their inputs to their own
device, so a loaded model is the only thing that has to be placed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from clipforge.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("torch", "onnx")
PRECISIONS = ("fp32", "bf16", "int8")
# CPU flags of native bfloat16 arithmetic: AVX512-BF16 and AMX on x86, BF16 on ARM.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs.

    Attributes:
        device: `cpu`, `cuda` (or `cuda:N`) or `auto`.
        backend: `torch`, or `onnx` (onnxruntime on the CPU; a torch model is exported first).
        precision: `fp32`; `bf16` (torch: weights cast once, encoders under autocast; fp32 with a notice
            where the CPU has no bf16 units); `int8` (onnx: int8 graphs; torch: dynamic quantization).
    """

    device: str = "cpu"
    backend: str = "torch"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.device.partition(":")[0] not in DEVICES:
            raise ConfigError(f"unknown device '{self.device}' (known: {', '.join(DEVICES)})")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{self.backend}' (known: {', '.join(BACKENDS)})")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}' (known: {', '.join(PRECISIONS)})")
        if self.backend == "onnx" and self.precision == "bf16":
            raise ConfigError("the onnx backend runs fp32 or int8; for bf16 use --backend torch")


DEFAULT_RUNTIME = Runtime()  # torch fp32 on the CPU


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


def bf16_supported(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has native bfloat16 arithmetic, so that bf16 is faster than fp32, not slower.

    Reads the flags of the first processor in `cpuinfo` (Linux); False where it cannot be read.
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return bool(BF16_FLAGS & set(value.split()))
    return False
