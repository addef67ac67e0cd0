"""Image towers: OpenAI's VisionTransformer and ModifiedResNet, and a small conv net for CPU training."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.models.config import ConvNetConfig, ResNetConfig, ViTConfig
from clipforge.models.fused import FoldCache, FoldedConv, can_fold, compute_dtype, fold
from clipforge.models.layers import Transformer


class Bottleneck(nn.Module):
    """ResNet bottleneck whose strided convs are replaced by avgpool after a stride-1 conv (anti-aliasing)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu3(out + identity)

    def fold(self, dtype: torch.dtype) -> list[FoldedConv]:
        """conv1, conv2, conv3 (and the downsample conv) with their batch-norms folded in."""
        convs = [fold(self.conv1, self.bn1, "relu", dtype), fold(self.conv2, self.bn2, "relu", dtype),
                 fold(self.conv3, self.bn3, "relu", dtype)]
        if self.downsample is not None:
            _, conv, bn = self.downsample
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            convs.append(fold(conv, bn, "none", dtype))
        return convs

    def forward_folded(self, x: torch.Tensor, convs: list[FoldedConv]) -> torch.Tensor:
        """`forward` with the convolutions `fold` returned; the residual add runs inside conv3."""
        identity = x if self.downsample is None else convs[3](self.downsample[0](x))
        out = self.avgpool(convs[1](convs[0](x)))
        return convs[2](out, identity)


class AttentionPool2d(nn.Module):
    """Pools a feature map with one attention query: the mean token attends over all positions."""

    def __init__(self, spacial_dim: int, embed_dim: int, heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        x = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # [B, HW+1, C]
        x = x + self.positional_embedding.to(x.dtype)
        head_dim = channels // self.heads
        q = self.q_proj(x[:, :1]).reshape(batch, 1, self.heads, head_dim).transpose(1, 2)  # [B, H, 1, Dh]
        k = self.k_proj(x).reshape(batch, -1, self.heads, head_dim).transpose(1, 2)  # [B, H, HW+1, Dh]
        v = self.v_proj(x).reshape(batch, -1, self.heads, head_dim).transpose(1, 2)  # [B, H, HW+1, Dh]
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, 1, Dh]
        return self.c_proj(out.reshape(batch, channels))  # [B, output_dim]

    def init_weights(self) -> None:
        std = self.c_proj.in_features**-0.5
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            nn.init.normal_(proj.weight, std=std)


class ModifiedResNet(nn.Module):
    """OpenAI's CLIP ResNet: 3-conv stem with avgpool, anti-aliased strides, attention pooling."""

    def __init__(self, config: ResNetConfig, output_dim: int) -> None:
        super().__init__()
        width = config.width
        self.input_resolution = config.image_size
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, config.layers[0])
        self.layer2 = self._make_layer(width * 2, config.layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, config.layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, config.layers[3], stride=2)
        self.attnpool = AttentionPool2d(config.image_size // 32, width * 32, config.heads, output_dim)
        self._folds: FoldCache[tuple[list[FoldedConv], list[list[FoldedConv]]]] = FoldCache()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if can_fold(self):
            return self._forward_folded(x)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)

    def _blocks(self) -> list[Bottleneck]:
        stages = (self.layer1, self.layer2, self.layer3, self.layer4)
        return [block for stage in stages for block in stage if isinstance(block, Bottleneck)]

    def _forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` in eval mode without autograd: batch-norm folded, activations and adds fused (NHWC)."""
        dtype = compute_dtype(x)
        stem, blocks = self._folds.get(self, self._fold, dtype)
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)
        x = self.avgpool(stem[2](stem[1](stem[0](x))))
        for block, convs in zip(self._blocks(), blocks, strict=True):
            x = block.forward_folded(x, convs)
        return self.attnpool(x)

    def _fold(self, dtype: torch.dtype) -> tuple[list[FoldedConv], list[list[FoldedConv]]]:
        stem = [fold(self.conv1, self.bn1, "relu", dtype), fold(self.conv2, self.bn2, "relu", dtype),
                fold(self.conv3, self.bn3, "relu", dtype)]
        return stem, [block.fold(dtype) for block in self._blocks()]

    def init_weights(self) -> None:
        """Zero-init the last BN of each block so every residual branch starts as identity."""
        self.attnpool.init_weights()
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                assert isinstance(block, Bottleneck)
                nn.init.zeros_(block.bn3.weight)


class VisionTransformer(nn.Module):
    """ViT: patch embedding, class token, pre-LN transformer, projection of the class token."""

    def __init__(self, config: ViTConfig, output_dim: int) -> None:
        super().__init__()
        width = config.width
        grid = config.image_size // config.patch_size
        scale = width**-0.5
        self.input_resolution = config.image_size
        self.conv1 = nn.Conv2d(3, width, config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid**2 + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=config.eps)
        self.transformer = Transformer(
            width, config.layers, config.heads, config.mlp_ratio, config.act, config.eps
        )
        self.ln_post = nn.LayerNorm(width, eps=config.eps)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # [B, D, G, G]
        x = x.flatten(2).transpose(1, 2)  # [B, G*G, D]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [B, 1, D]
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # [B, G*G+1, D]
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj  # [B, output_dim]

    def init_weights(self) -> None:
        self.transformer.init_weights()


class ConvNet(nn.Module):
    """Strided 3x3 convs, then flatten and an MLP: unlike global pooling, flattening keeps *where* things are,
    which spatial-relation captions depend on. With `max_pool`, each channel's maximum over positions joins
    the flattened map, so *what* is in the image is learned once for every position."""

    def __init__(self, config: ConvNetConfig, output_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for channels in config.channels:
            layers += [nn.Conv2d(in_channels, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            in_channels = channels
        self.input_resolution = config.image_size
        self.convs = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.channels)
        self.max_pool = config.max_pool
        self.mlp = nn.Sequential(
            nn.Linear(in_channels * (side * side + config.max_pool), config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)  # [B, C, S, S]
        if not self.max_pool:
            return self.mlp(x.flatten(1))  # [B, C*S*S] -> [B, output_dim]
        x = torch.cat([x.flatten(1), x.amax(dim=(2, 3))], dim=1)  # [B, C*S*S + C]
        return self.mlp(x)  # [B, output_dim]

    def init_weights(self) -> None:
        """PyTorch's default init works for this net; nothing to change."""


def build_vision_tower(
    config: ViTConfig | ResNetConfig | ConvNetConfig, output_dim: int
) -> VisionTransformer | ModifiedResNet | ConvNet:
    """The image tower named by `config.type`."""
    if isinstance(config, ViTConfig):
        return VisionTransformer(config, output_dim)
    if isinstance(config, ResNetConfig):
        return ModifiedResNet(config, output_dim)
    return ConvNet(config, output_dim)
