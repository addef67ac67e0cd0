"""Transformer building blocks in OpenAI CLIP's parameter layout, on scaled_dot_product_attention."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI's checkpoints were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> nn.Module:
    """The MLP activation named in a config: OpenAI weights need `quick_gelu`, HF configs may say `gelu`."""
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation '{name}' (known: quick_gelu, gelu)")


@dataclass
class LayerCache:
    """Keys and values [B, H, T, Dh] of the positions one attention layer has seen (incremental decoding)."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else int(self.keys.shape[2])

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends the new positions and returns every position's keys and values."""
        if self.keys is not None and self.values is not None:
            keys, values = torch.cat([self.keys, keys], dim=2), torch.cat([self.values, values], dim=2)
        self.keys, self.values = keys, values
        return keys, values


@dataclass
class KVCache:
    """One `LayerCache` per block of a `Transformer`."""

    layers: list[LayerCache] = field(default_factory=list)

    @classmethod
    def empty(cls, depth: int) -> KVCache:
        return cls([LayerCache() for _ in range(depth)])

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0


class Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names (packed in_proj)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, causal: bool = False, cache: LayerCache | None = None) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [B, L, 3D]
        qkv = qkv.reshape(batch, length, 3, self.heads, width // self.heads)  # [B, L, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, L, Dh]
        past = 0 if cache is None else cache.length
        if cache is not None:
            k, v = cache.extend(k, v)  # [B, H, P + L, Dh]
        mask = None
        if causal and past > 0:  # queries sit at the end: query i sees keys up to past + i
            mask = torch.ones(length, past + length, dtype=torch.bool, device=x.device).tril(past)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and past == 0
        )  # [B, H, L, Dh]
        out = out.transpose(1, 2).reshape(batch, length, width)  # [B, L, D]
        return self.out_proj(out)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: float = 4.0, act: str = "quick_gelu", eps: float = 1e-5
    ) -> None:
        super().__init__()
        # round, not int: HF configs give the ratio as hidden / width, which may land a hair below hidden
        hidden = round(width * mlp_ratio)
        self.attn = Attention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, hidden)),
                    ("gelu", activation(act)),
                    ("c_proj", nn.Linear(hidden, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, causal: bool = False, cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal, cache=cache)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks over batch-first sequences [B, L, D]."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float = 4.0,
        act: str = "quick_gelu",
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act, eps) for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor, causal: bool = False, cache: KVCache | None = None) -> torch.Tensor:
        """Runs the blocks; with a `cache`, `x` holds only the positions after those already cached."""
        for k, block in enumerate(self.resblocks):
            x = block(x, causal=causal, cache=None if cache is None else cache.layers[k])
        return x

    def init_weights(self) -> None:
        """OpenAI's init: std shrinks with depth so the residual stream keeps its scale."""
        proj_std = (self.width**-0.5) * ((2 * self.layers) ** -0.5)
        attn_std = self.width**-0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            assert isinstance(block, ResidualAttentionBlock)
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            c_fc, _, c_proj = block.mlp
            nn.init.normal_(c_fc.weight, std=fc_std)  # type: ignore[arg-type]
            nn.init.normal_(c_proj.weight, std=proj_std)  # type: ignore[arg-type]
