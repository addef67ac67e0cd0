"""Convolution towers for inference: batch-norm folded into each convolution, the activation fused, the
padding part of the convolution.

In eval mode a BatchNorm is an affine map per channel, so it folds into the preceding convolution's
weights and bias; the activation (and a residual add) then run inside the convolution kernel as oneDNN
post-ops instead of as separate passes over memory. The folded weights are derived from the module's own
parameters and rebuilt whenever one of them changes, so training, checkpoints and fingerprints see the
unchanged module; only a forward pass in eval mode without autograd takes the folded path.

`fold` also reorders each weight once into the blocked layout oneDNN's kernels read (an mkldnn
tensor); given a dense weight, oneDNN reorders it on every call, which at small batches costs about
as much as the depthwise convolutions themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

# activation name -> (oneDNN post-op, its scalars)
_POST_OPS: dict[str, tuple[str, list[float]]] = {
    "none": ("none", []),
    "relu": ("relu", []),
    "relu6": ("hardtanh", [0.0, 6.0]),
}
T = TypeVar("T")


def same_padding(kernel: int, stride: int, size: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding (before, after) of one dimension: output ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def can_fold(module: nn.Module) -> bool:
    """Whether `module` may run folded: eval mode, no autograd, and not being traced for an export."""
    tracing = torch.compiler.is_exporting() or torch.jit.is_tracing()
    return not (module.training or torch.is_grad_enabled() or tracing)


@dataclass(frozen=True)
class FoldedConv:
    """A convolution with its batch-norm folded in and its activation (and residual add) fused."""

    weight: torch.Tensor  # [C_out, C_in / groups, kH, kW]
    bias: torch.Tensor  # [C_out]
    stride: int
    padding: tuple[int, int]
    groups: int
    activation: str  # a key of _POST_OPS, applied after the residual add
    packed: torch.Tensor | None = None  # `weight` reordered for oneDNN (an mkldnn tensor), if prepacked

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """activation(conv(x) + bias [+ residual]) for x [B, C_in, H, W]."""
        if _onednn_runs(x):
            return self._onednn(x, residual)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        if residual is not None:
            y += residual
        if self.activation == "relu":
            return y.relu_()
        return y.clamp_(0.0, 6.0) if self.activation == "relu6" else y

    def _onednn(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        post_op, scalars = _POST_OPS[self.activation]
        weight = self.weight if self.packed is None else self.packed
        geometry = (list(self.padding), [self.stride] * 2, [1, 1], self.groups)
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(x, weight, self.bias, *geometry, post_op, scalars,
                                                           "")
        unary = None if post_op == "none" else post_op
        return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, weight, self.bias, *geometry,
                                                              "add", None, unary, scalars, None)


def _onednn_runs(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and (
        torch.backends.mkldnn.is_available()
    )


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d, activation: str, dtype: torch.dtype,
         pads: tuple[tuple[int, int], tuple[int, int]] | None = None) -> FoldedConv:
    """`activation(bn(conv(pad(x))))` in eval mode as one FoldedConv computing in `dtype`.

    Args:
        conv: a bias-free convolution with square stride and no dilation.
        bn: the batch-norm that follows it (its running statistics are used).
        activation: "none", "relu" or "relu6".
        dtype: the dtype the convolution runs in (the autocast dtype under autocast).
        pads: explicit (before, after) padding of height and width that replaces `conv.padding`; where
            before < after (TF "SAME" with a stride), the kernel grows by leading zeros so that a
            symmetric padding of `after` computes the same windows.
    """
    assert bn.running_var is not None and bn.running_mean is not None
    exact = torch.promote_types(conv.weight.dtype, torch.float32)  # fold in fp32 even for bf16 weights
    scale = bn.weight.to(exact) / torch.sqrt(bn.running_var.to(exact) + bn.eps)  # [C_out]
    weight = conv.weight.to(exact) * scale[:, None, None, None]  # [C_out, C_in / groups, kH, kW]
    bias = bn.bias.to(exact) - bn.running_mean.to(exact) * scale
    assert not isinstance(conv.padding, str), "string padding ('same') is resolved before folding"
    padding = (int(conv.padding[0]), int(conv.padding[1]))
    if pads is not None:
        (top, bottom), (left, right) = pads
        weight = F.pad(weight, (right - left, 0, bottom - top, 0))
        padding = (bottom, right)
    weight = weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
    folded = FoldedConv(weight, bias.detach().to(dtype), conv.stride[0], padding, conv.groups, activation)
    return _prepacked(folded) if _onednn_runs(weight) else folded


def _prepacked(conv: FoldedConv) -> FoldedConv:
    """`conv` with its weight also reordered, once, into the blocked layout oneDNN's kernels read."""
    dense = conv.weight.contiguous().to_mkldnn()  # the reorder takes a plain (NCHW) mkldnn tensor
    geometry = (list(conv.padding), [conv.stride] * 2, [1, 1], conv.groups)
    return replace(conv, packed=torch._C._nn.mkldnn_reorder_conv2d_weight(dense, *geometry))


class FoldCache(Generic[T]):
    """The folded convolutions of one module, rebuilt when its tensors change or the input size does.

    The key holds every parameter's and buffer's storage, version counter (bumped by any in-place
    update, e.g. an optimizer step or `load_state_dict`), dtype and device.
    """

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._folded: T | None = None

    def get(self, module: nn.Module, build: Callable[..., T], *args: object) -> T:
        """`build(*args)` for `module`, from the cache while its tensors and `args` are unchanged."""
        tensors = [*module.parameters(), *module.buffers()]
        key = (*args, *((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors))
        if self._folded is None or key != self._key:
            self._folded, self._key = build(*args), key
        return self._folded

    # A copied or pickled module starts with an empty cache: prepacked (mkldnn) tensors cannot be copied,
    # and the folds are derived data that the copy rebuilds from its own tensors.
    def __deepcopy__(self, memo: dict[int, object]) -> FoldCache[T]:
        return FoldCache()

    def __getstate__(self) -> dict[str, object]:
        return {"_key": None, "_folded": None}


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a convolution of `x` computes in: the autocast dtype when CPU autocast is on."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return x.dtype
