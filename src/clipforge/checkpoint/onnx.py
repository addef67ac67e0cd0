"""Exported ONNX model folders (`clipforge export onnx`): one ONNX graph per tower, run by onnxruntime.

A folder holds `config.json` (format `clipforge-onnx`: the model config with its preprocessing and
tokenizer, the logit scale, the text input limits, the parity measured at export) and `image.onnx`,
`text.onnx`, plus `image.int8.onnx`, `text.int8.onnx` when exported with `--int8`. `OnnxModel` puts the
two sessions behind the encoding part of the model contract (a `RuntimeModel`), so evaluation, search,
serving and scoring take it as they take a torch model.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from clipforge.checkpoint.files import CONFIG_NAME, read_config
from clipforge.checkpoint.precision import RuntimeModel
from clipforge.errors import CheckpointError, ConfigError, MissingExtraError
from clipforge.models.config import ModelConfig
from clipforge.models.inputs import fit_tokens

FORMAT_NAME = "clipforge-onnx"
PRECISIONS = ("fp32", "int8")
IMAGE_INPUT, TEXT_INPUT, OUTPUT = "pixels", "tokens", "embeddings"


def tower_file(tower: str, precision: str) -> str:
    """File name of a tower's graph: `image.onnx`, `text.int8.onnx`, ..."""
    return f"{tower}.onnx" if precision == "fp32" else f"{tower}.{precision}.onnx"


def import_onnxruntime() -> ModuleType:
    """The onnxruntime module, or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as err:
        raise MissingExtraError("onnxruntime", "onnx") from err


def open_session(path: Path) -> Any:
    """An onnxruntime CPU session on `path`, using as many threads as torch (`--threads`)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no per-node placement chatter
    # Idle threads sleep instead of spinning: they would take cores from torch and data-loading workers.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        detail = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{path}: not a loadable ONNX graph ({detail})") from err


class OnnxModel(RuntimeModel):
    """The encoders of an exported model: onnxruntime sessions behind `encode_image` and `encode_text`."""

    def __init__(self, config: ModelConfig, sessions: tuple[Any, Any], limits: tuple[int, int],
                 logits: tuple[float, float | None], precision: str, source_fingerprint: str) -> None:
        """Wraps two sessions.

        Args:
            config: the source model's config.
            sessions: the image and text onnxruntime sessions.
            limits: the longest token rows and the vocabulary size the text graph takes.
            logits: the source model's log-scale and SigLIP bias (or None).
            precision: `fp32` or `int8`.
            source_fingerprint: identifies the source weights.
        """
        super().__init__(config, logits, source_fingerprint, "onnx", precision)
        self.image_session, self.text_session = sessions
        self.max_length, self.vocab_size = limits

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(images.detach().float().cpu().numpy())
        return self._run(self.image_session, IMAGE_INPUT, pixels)

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Only the columns up to the longest row are fed to the graph (`fit_tokens`)."""
        tokens = fit_tokens(tokens, self.max_length, self.vocab_size, self.config.tokenizer.type)
        return self._run(self.text_session, TEXT_INPUT, np.ascontiguousarray(tokens.cpu().numpy()))

    def _run(self, session: Any, name: str, inputs: np.ndarray) -> torch.Tensor:
        if not len(inputs):
            return torch.zeros(0, self.config.embed_dim)
        return torch.from_numpy(session.run([OUTPUT], {name: inputs})[0])  # [B, E]


def load_onnx_folder(folder: Path, precision: str = "fp32") -> OnnxModel:
    """Opens an exported folder's graphs of one precision.

    Raises:
        ConfigError: an unknown precision, or one the folder was not exported with.
        CheckpointError: a damaged config or graph.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"the onnx backend runs {' or '.join(PRECISIONS)}, not '{precision}'")
    meta = read_config(folder)
    if precision not in meta.get("precisions", ["fp32"]):
        raise ConfigError(f"{folder} has no {precision} graphs: export it again with --{precision}")
    where = str(folder / CONFIG_NAME)
    config = ModelConfig.from_dict(meta.get("model"), where=where)
    try:
        limits = (int(meta["text_max_length"]), int(meta["text_vocab_size"]))
        scale, fingerprint = float(meta["logit_scale"]), str(meta.get("source_fingerprint", ""))
        bias = None if meta.get("logit_bias") is None else float(meta["logit_bias"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: missing or malformed field {err}") from err
    sessions = tuple(open_session(folder / tower_file(tower, precision)) for tower in ("image", "text"))
    return OnnxModel(config, (sessions[0], sessions[1]), limits, (scale, bias), precision, fingerprint)
