"""Models that run their encoders another way than torch fp32 (onnxruntime, bf16, int8), and the
fingerprint that names the weights behind any of them.

A `RuntimeModel` has the encoding part of the model contract (`encode_image`, `encode_text`, `config`,
`logit_scale`), so every consumer takes it as it takes the torch model. It only encodes (training it is
a one-line error), returns float32 features, and carries its source's fingerprint, so an index built
with one runtime answers queries encoded by another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors
from torch import nn

from clipforge.errors import ConfigError
from clipforge.models.base import CLIPOutput, ContrastiveModel, Model
from clipforge.models.config import ModelConfig


def weights_fingerprint(model: Model) -> str:
    """sha256 over a model's config and its safetensors-serialized state dict (a runtime model: its
    source's).

    Two loads of the same weights give the same fingerprint whatever the spec (registry name plus
    seed, folder, converted checkpoint) or the runtime, and any change to a single weight changes it.
    """
    if isinstance(model, RuntimeModel):
        return model.source_fingerprint
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    digest.update(save_safetensors(tensors))
    return digest.hexdigest()


class RuntimeModel(ContrastiveModel):
    """The encoders of a model run by another runtime; subclasses implement `_encode_image/_text`.

    Attributes:
        config: the source model's config (preprocessing and tokenizer included).
        logit_scale: the source's learned log-scale, fp32 and frozen.
        logit_bias: the source's SigLIP logit bias (frozen), or None.
        source_fingerprint: `weights_fingerprint` of the source model.
        backend: `torch` or `onnx`.
        precision: `fp32`, `bf16` or `int8`.
    """

    def __init__(self, config: ModelConfig, logits: tuple[float, float | None], source_fingerprint: str,
                 backend: str, precision: str) -> None:
        super().__init__()
        self.config = config
        scale, bias = logits
        self.logit_scale = nn.Parameter(torch.tensor(scale), requires_grad=False)
        frozen_bias = None if bias is None else nn.Parameter(torch.tensor(bias), requires_grad=False)
        self.register_parameter("logit_bias", frozen_bias)
        self.source_fingerprint = source_fingerprint
        self.backend, self.precision = backend, precision
        super().train(False)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeds preprocessed images [B, 3, S, S] into float32 [B, E]."""
        features = self._encode_image(images).float()
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeds zero-padded token ids [B, L] into float32 [B, E]."""
        features = self._encode_text(tokens).float()
        return F.normalize(features, dim=-1) if normalize else features

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> CLIPOutput:
        raise ConfigError(f"{self._what()} only encodes: call encode_image / encode_text")

    def train(self, mode: bool = True) -> RuntimeModel:
        if mode:
            self._refuse_training()
        return super().train(False)

    def lock_image_tower(self, unlocked_blocks: int | None = None) -> None:
        self._refuse_training()

    def lock_text_tower(self, unlocked_blocks: int | None = None) -> None:
        self._refuse_training()

    def enable_logit_bias(self, init_scale: float, init_bias: float) -> None:
        self._refuse_training()

    def _refuse_training(self) -> None:
        raise ConfigError(f"{self._what()} only encodes: train the fp32 torch model it came from")

    def _what(self) -> str:
        return f"a {self.backend} {self.precision} model"


class PrecisionModel(RuntimeModel):
    """A torch model's encoders in bf16 or int8.

    bf16 casts the weights once and runs the encoders under autocast, so LayerNorm and softmax still
    compute in fp32 (autocast alone would re-cast every weight on every call). int8 is torch's dynamic
    quantization of the `nn.Linear` layers (int8 weights, activations quantized per batch), CPU only.
    """

    def __init__(self, model: ContrastiveModel, precision: str) -> None:
        if precision not in ("bf16", "int8"):
            raise ConfigError(f"PrecisionModel runs bf16 or int8, not '{precision}'")
        super().__init__(model.config, logit_values(model), weights_fingerprint(model), "torch", precision)
        self.device_type = next(model.parameters()).device.type
        self.model = model.to(torch.bfloat16) if precision == "bf16" else quantize_linear_int8(model)

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        if self.precision == "bf16":
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        with self._running():
            return self.model.encode_image(images)

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        with self._running():
            return self.model.encode_text(tokens)


def logit_values(model: ContrastiveModel) -> tuple[float, float | None]:
    """A model's learned logit scale and SigLIP bias (None when it has none), as plain numbers."""
    bias = None if model.logit_bias is None else float(model.logit_bias.detach())
    return float(model.logit_scale.detach()), bias


def quantize_linear_int8(model: ContrastiveModel) -> ContrastiveModel:
    """`model` with its `nn.Linear` layers dynamically quantized to int8 in place (torch.ao, CPU only).

    Raises:
        ConfigError: the model is not on the CPU.
    """
    if next(model.parameters()).device.type != "cpu":
        raise ConfigError("torch int8 runs on the CPU: use --device cpu (or --backend onnx)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao announces its move to torchao; the API still works
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model
