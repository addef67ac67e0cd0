"""`clipforge.load`: a model spec loaded to run on a device, a backend and a precision.

The torch backend at fp32 is the model as trained. bf16 and int8 wrap it (`PrecisionModel`); bf16 on a
CPU without bf16 units falls back to fp32 with a notice, since it would run slower there. The onnx
backend runs an exported folder's graphs; a torch model asked to run on it is exported (and checked
against torch) into a temporary folder first, once per load. An exported folder always runs on onnxruntime.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from clipforge.checkpoint.io import detect_format, load_model
from clipforge.checkpoint.onnx import load_onnx_folder
from clipforge.checkpoint.onnx_export import ExportConfig, export_onnx
from clipforge.checkpoint.precision import PrecisionModel
from clipforge.data.transforms import Preprocess
from clipforge.device import Runtime, bf16_supported, resolve_device
from clipforge.errors import ConfigError, RuntimeNotice
from clipforge.models.base import ContrastiveModel
from clipforge.tokenizer import TextTokenizer, get_tokenizer


def load(spec: str | Path, device: str = "cpu", backend: str = "torch",
         precision: str = "fp32") -> tuple[ContrastiveModel, Preprocess, TextTokenizer]:
    """Loads `(model, preprocess, tokenizer)`; the format is detected from `spec`.

    The tokenizer is the one the model was trained with (its type and context length travel with the
    weights): encode text for this model with it, not with another model's.

    Args:
        spec: a registry name (random init), a clipforge folder, an exported ONNX folder, a Hugging Face
            CLIP folder, an open_clip folder, or an OpenAI `.pt` file (TorchScript archive or state dict).
        device: ``cpu`` (default), ``cuda`` or ``auto``.
        backend: ``torch`` or ``onnx`` (see `clipforge.device.Runtime`).
        precision: ``fp32``, ``bf16`` or ``int8``.
    """
    return load_with(spec, Runtime(device, backend, precision))


def load_with(spec: str | Path, runtime: Runtime) -> tuple[ContrastiveModel, Preprocess, TextTokenizer]:
    """`load` with the device, backend and precision in one typed `Runtime` (what engine configs hold)."""
    model = runtime_model(spec, runtime)
    return model, Preprocess(model.config.preprocess), get_tokenizer(model.config.tokenizer)


def runtime_model(spec: str | Path, runtime: Runtime) -> ContrastiveModel:
    """The model of `spec`, in eval mode, running as `runtime` says."""
    if runtime.backend == "onnx" or detect_format(spec) == "onnx":
        return _onnx_model(spec, runtime)
    model = load_model(spec, runtime.device)
    if runtime.precision == "bf16" and resolve_device(runtime.device).type == "cpu" and not bf16_supported():
        warnings.warn("bf16 requested, but this CPU has no bf16 units (it would run slower): running fp32",
                      RuntimeNotice, stacklevel=3)
        return model
    return model if runtime.precision == "fp32" else PrecisionModel(model, runtime.precision)


def _onnx_model(spec: str | Path, runtime: Runtime) -> ContrastiveModel:
    if resolve_device(runtime.device).type != "cpu":
        raise ConfigError("the onnx backend runs on the CPU: use --device cpu (or --backend torch)")
    if runtime.precision == "bf16":
        raise ConfigError(f"{spec} is an ONNX export: it runs fp32 or int8, not bf16")
    if detect_format(spec) == "onnx":
        return load_onnx_folder(Path(spec), runtime.precision)
    warnings.warn(f"exporting {spec} to ONNX for this run (`clipforge export onnx` keeps an export)",
                  RuntimeNotice, stacklevel=4)
    with tempfile.TemporaryDirectory(prefix="clipforge-onnx-") as folder:
        export_onnx(spec, Path(folder) / "model", ExportConfig(int8=runtime.precision == "int8"))
        return load_onnx_folder(Path(folder) / "model", runtime.precision)
