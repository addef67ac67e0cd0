"""`clipforge export onnx`: a model's two towers as ONNX graphs, kept only once they match torch.

Each tower becomes one graph with dynamic batch (and, for text, sequence) axes, written with the model's
config (preprocessing and tokenizer) beside it. `--int8` adds int8 graphs: onnxruntime's dynamic
quantization (int8 weights per output channel, activations quantized per batch), or for the image tower
a static QDQ quantization calibrated on a few hundred images of a data spec. Before anything is moved
into place the graphs are run on a probe batch against the torch model: fp32 within 1e-4 (max abs
difference of the unit-norm embeddings), int8 with every embedding at cosine >= 0.99.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipforge.checkpoint.convert import move_files
from clipforge.checkpoint.files import CONFIG_NAME
from clipforge.checkpoint.io import load_model
from clipforge.checkpoint.onnx import (
    FORMAT_NAME,
    IMAGE_INPUT,
    OUTPUT,
    TEXT_INPUT,
    import_onnxruntime,
    open_session,
    tower_file,
)
from clipforge.checkpoint.precision import logit_values, weights_fingerprint
from clipforge.data.loader import ImageTextLoader, LoaderConfig
from clipforge.data.specs import open_data
from clipforge.data.transforms import Preprocess
from clipforge.errors import CheckpointError, ConfigError, MissingExtraError
from clipforge.fileio import write_json
from clipforge.models.base import ContrastiveModel
from clipforge.models.config import ModelConfig, TextTransformerConfig
from clipforge.models.inputs import trim_padding
from clipforge.models.minilm import VOCAB_SIZE as MINILM_VOCAB_SIZE
from clipforge.tokenizer import get_tokenizer
from clipforge.version import __version__

FP32_MAX_ABS = 1e-4
INT8_MIN_COSINE = 0.99
MIN_OPSET = 18  # torch's ONNX exporter writes opset 18 and up
PROBE_TEXTS = (
    "a photo of a dog.",
    "two children play football in a park near an old stone church",
    "red!",
    "A man in a blue shirt is standing on a ladder cleaning windows .",
    "a black and white cat sleeping on a sofa",
    "Three people ride bicycles down a steep dirt road while others watch from the side .",
    "snow",
    "the sun sets over the sea",
)


@dataclass(frozen=True)
class ExportConfig:
    """What `export_onnx` writes.

    Attributes:
        int8: also write int8 graphs.
        opset: the ONNX opset (None: torch's default).
        calibration: a data spec whose images calibrate a static int8 image tower (None: dynamic int8).
        calibration_images: how many of its images.
    """

    int8: bool = False
    opset: int | None = None
    calibration: str | None = None
    calibration_images: int = 300

    def __post_init__(self) -> None:
        if self.opset is not None and self.opset < MIN_OPSET:
            raise ConfigError(f"opset {self.opset} is too old: torch's exporter writes {MIN_OPSET} and up")
        if self.calibration is not None and not self.int8:
            raise ConfigError("--calibrate chooses how int8 graphs are made: add --int8")
        if self.calibration_images < 1:
            raise ConfigError(f"calibration_images must be >= 1, got {self.calibration_images}")


@dataclass(frozen=True)
class Parity:
    """How one precision's graphs compare with torch on the probe batch.

    Attributes:
        precision: `fp32` or `int8`.
        image: fp32: max abs difference of unit-norm image embeddings; int8: their lowest cosine.
        text: the same for text embeddings.
    """

    precision: str
    image: float
    text: float

    @property
    def passed(self) -> bool:
        if self.precision == "fp32":
            return max(self.image, self.text) <= FP32_MAX_ABS
        return min(self.image, self.text) >= INT8_MIN_COSINE

    def describe(self) -> str:
        measure, bound = ("max abs diff", f"<= {FP32_MAX_ABS:g}") if self.precision == "fp32" else (
            "min cosine", f">= {INT8_MIN_COSINE}")
        return f"{self.precision}: image {measure} {self.image:.3g}, text {self.text:.3g} (needs {bound})"


@dataclass(frozen=True)
class ExportReport:
    """What `export_onnx` wrote and how its graphs matched torch."""

    folder: Path
    files: list[str]
    parity: list[Parity]
    int8_method: str | None

    def summary(self) -> str:
        lines = [f"wrote {self.folder}: {', '.join(self.files)}"]
        lines += [f"parity {p.describe()}: ok" for p in self.parity]
        if self.int8_method:
            lines.append(f"int8: {self.int8_method}")
        return "\n".join(lines)


def export_onnx(spec: str | Path, out: str | Path, config: ExportConfig = ExportConfig()) -> ExportReport:
    """Exports a model's towers to ONNX in `out`, verified against torch before they are moved there.

    Args:
        spec: anything `clipforge.load` accepts (a torch model).
        out: the folder to write (files of the same names are replaced).
        config: int8, opset and calibration choices.

    Raises:
        MissingExtraError: onnx, onnxscript or onnxruntime is not installed.
        CheckpointError: the graphs do not match torch on the probe batch (nothing is written to `out`).
    """
    _require_exporter()
    model = load_model(spec)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".export", dir=out.parent))
    try:
        opset = export_towers(model, staging, config.opset)
        method = quantize(model, staging, config) if config.int8 else None
        precisions = ["fp32", "int8"] if config.int8 else ["fp32"]
        parity = [check_parity(model, staging, precision) for precision in precisions]
        for result in parity:
            if not result.passed:
                raise CheckpointError(f"ONNX export of {spec} does not match torch ({result.describe()}); "
                                      f"nothing was written to {out}")
        meta = _meta(model, spec, opset, parity, method)
        write_json(meta, staging / CONFIG_NAME)
        files = sorted(item.name for item in staging.iterdir())
        move_files(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportReport(out, files, parity, method)


def _require_exporter() -> None:
    for module, package in (("onnx", "onnx"), ("onnxscript", "onnxscript")):
        try:
            __import__(module)
        except ImportError as err:
            raise MissingExtraError(package, "onnx") from err
    import_onnxruntime()


class _ImageGraph(nn.Module):
    """A model's image encoder as a module of its own, for the exporter."""

    def __init__(self, model: ContrastiveModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class _TextGraph(nn.Module):
    """A model's text encoder as a module of its own, for the exporter."""

    def __init__(self, model: ContrastiveModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


def text_limits(config: ModelConfig) -> tuple[int, int]:
    """The longest token rows and the vocabulary size the exported text graph takes."""
    if isinstance(config.text, TextTransformerConfig):
        return config.text.context_length, config.text.vocab_size
    return config.tokenizer.context_length, MINILM_VOCAB_SIZE


def export_towers(model: ContrastiveModel, folder: Path, opset: int | None) -> int:
    """Writes `image.onnx` and `text.onnx` (fp32) into `folder`; returns the opset written."""
    config = model.config
    size = config.preprocess.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = trim_padding(get_tokenizer(config.tokenizer)(list(PROBE_TEXTS[:2])))
    batch = torch.export.Dim("batch", min=1)
    length = torch.export.Dim("length", min=1, max=text_limits(config)[0])
    graphs = (
        (_ImageGraph(model), pixels, IMAGE_INPUT, {0: batch}, "image"),
        (_TextGraph(model), tokens, TEXT_INPUT, {0: batch, 1: length}, "text"),
    )
    written = opset or MIN_OPSET
    for graph, example, name, axes, tower in graphs:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                graph.eval(), (example,), input_names=[name], output_names=[OUTPUT], opset_version=opset,
                dynamic_shapes={name: axes}, dynamo=True, external_data=False, verbose=False,
            )
        assert program is not None
        program.save(str(folder / tower_file(tower, "fp32")))
        written = int(program.model_proto.opset_import[0].version)
    return written


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keeps torch's exporter and onnxruntime's quantizer from printing progress and advice (e.g. about
    torchvision, or pre-processing) that is not about this export."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def quantize(model: ContrastiveModel, folder: Path, config: ExportConfig) -> str:
    """Writes `image.int8.onnx` and `text.int8.onnx` beside the fp32 graphs; returns how.

    The text graph keeps its MLP down-projections in fp32: in BERT-style encoders their input (after
    GELU) carries activation outliers that one dynamic int8 scale per tensor clips (the trained Flickr8k
    LiT text tower's lowest cosine to fp32 over 300 captions: 0.985 with them quantized, 0.992 without).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    towers = ("text",) if config.calibration is not None else ("image", "text")
    for tower in towers:
        source = folder / tower_file(tower, "fp32")
        keep = mlp_down_projections(source) if tower == "text" else []
        with _quiet():
            quantize_dynamic(source, folder / tower_file(tower, "int8"), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, nodes_to_exclude=keep)
    if config.calibration is None:
        return "dynamic (int8 MatMul/Gemm weights per output channel, activations quantized per batch)"
    count = _quantize_static_image(model, folder, config.calibration, config.calibration_images)
    return f"image tower static QDQ calibrated on {count} images of {config.calibration}; text tower dynamic"


def mlp_down_projections(path: Path) -> list[str]:
    """Names of the weight MatMul/Gemm nodes fed by a GELU (or QuickGELU's x * sigmoid(1.702 x))."""
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {output: node for node in graph.node for output in node.output}
    weights = {tensor.name for tensor in graph.initializer}

    def is_gelu(name: str) -> bool:
        node = producers.get(name)
        if node is None:
            return False
        fed_by_sigmoid = any(producers[i].op_type == "Sigmoid" for i in node.input if i in producers)
        return node.op_type == "Gelu" or (node.op_type == "Mul" and fed_by_sigmoid)

    return [node.name for node in graph.node
            if node.op_type in ("MatMul", "Gemm") and weights & set(node.input) and is_gelu(node.input[0])]


def _quantize_static_image(model: ContrastiveModel, folder: Path, spec: str, images: int) -> int:
    """Static int8 (QDQ, per-channel weights) of the image graph, calibrated on `images` images of `spec`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batches = calibration_batches(model, spec, images)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(({IMAGE_INPUT: b} for b in self._batches), None)

    with _quiet():
        quantize_static(folder / tower_file("image", "fp32"), folder / tower_file("image", "int8"), Reader(),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    return sum(len(b) for b in batches)


def calibration_batches(
    model: ContrastiveModel, spec: str, images: int, batch_size: int = 32
) -> list[np.ndarray]:
    """The first `images` usable images of a data spec, preprocessed for `model`, in batches.

    Raises:
        DataError: the spec has no usable image.
    """
    config = model.config
    preprocess = Preprocess(config.preprocess)
    loader = ImageTextLoader(open_data(spec), preprocess, LoaderConfig("images", batch_size))
    batches, seen = [], 0
    for batch in loader.epoch():
        batches.append(batch.images[: images - seen].numpy())
        seen += len(batches[-1])
        if seen >= images:
            break
    return batches


def probe_inputs(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed probe batch: 3 seeded random images and 8 captions of different lengths (trimmed).

    Other batch sizes and lengths than the export example's exercise the dynamic axes.
    """
    size = config.preprocess.image_size
    pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    return pixels, trim_padding(get_tokenizer(config.tokenizer)(list(PROBE_TEXTS)))


def check_parity(model: ContrastiveModel, folder: Path, precision: str) -> Parity:
    """Compares the graphs of `precision` in `folder` with the torch model on the probe batch."""
    config = model.config
    pixels, tokens = probe_inputs(config)
    with torch.inference_mode():
        ours = (model.encode_image(pixels, normalize=True), model.encode_text(tokens, normalize=True))
    image = _run(open_session(folder / tower_file("image", precision)), IMAGE_INPUT, pixels)
    text = _run(open_session(folder / tower_file("text", precision)), TEXT_INPUT, tokens)
    if precision == "fp32":
        return Parity(precision, _max_abs(image, ours[0]), _max_abs(text, ours[1]))
    return Parity(precision, _min_cosine(image, ours[0]), _min_cosine(text, ours[1]))


def _run(session: Any, name: str, inputs: torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.from_numpy(session.run([OUTPUT], {name: inputs.numpy()})[0]), dim=-1)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b.float()).abs().max())


def _min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b.float(), dim=-1).min())


def _meta(model: ContrastiveModel, spec: str | Path, opset: int, parity: list[Parity],
          method: str | None) -> dict[str, Any]:
    config = model.config
    max_length, vocab = text_limits(config)
    scale, bias = logit_values(model)
    return {
        "format": FORMAT_NAME,
        "version": __version__,
        "model": config.to_dict(),
        "logit_scale": scale,
        "logit_bias": bias,
        "text_max_length": max_length,
        "text_vocab_size": vocab,
        "precisions": [p.precision for p in parity],
        "int8_method": method,
        "opset": opset,
        "parity": {p.precision: {"image": p.image, "text": p.text} for p in parity},
        "source": str(spec),
        "source_fingerprint": weights_fingerprint(model),
    }
