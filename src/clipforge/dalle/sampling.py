"""Drawing image tokens from a `Generator`: incremental decoding with a key/value cache, temperature,
top-k, top-p and classifier-free guidance; batched over prompts and samples, seeded per image.

Every image row has its own random stream (`image_seed`), and a token is drawn by inverting the CDF
of its distribution at a uniform number from that stream, so an image depends only on its prompt and
seed — not on the batch it was drawn in, nor on whether the key/value cache was used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clipforge.errors import ConfigError
from clipforge.models.generator import Generator
from clipforge.models.layers import KVCache
from clipforge.tokenizer import get_tokenizer


@dataclass(frozen=True)
class SamplingConfig:
    """How image tokens are drawn.

    Attributes:
        temperature: logits are divided by it; 0 picks the most likely token.
        top_k: keep only the k most likely tokens (0: all).
        top_p: keep the smallest set of tokens whose probability reaches p (1: all).
        cond_scale: classifier-free guidance, ``uncond + s * (cond - uncond)``; 1 is plain conditioning.
        use_cache: decode incrementally with a key/value cache (off: recompute the whole prefix per token).
        batch_size: image rows decoded at once.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cond_scale: float = 1.0
    use_cache: bool = True
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 or self.batch_size < 1:
            raise ConfigError("sampling: need temperature >= 0, top_k >= 0, 0 < top_p <= 1, batch_size >= 1")


def image_seed(seed: int, prompt: int, sample: int) -> int:
    """The seed of sample `sample` of prompt number `prompt` in a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, prompt, sample]).generate_state(1)[0])


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Logits [B, K] with every token outside the top-k and the top-p nucleus set to -inf."""
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)  # [B, K]
        probs = ordered.softmax(dim=-1)
        outside = probs.cumsum(dim=-1) - probs >= top_p  # the nucleus was full before this token
        drop = torch.zeros_like(outside).scatter(-1, order, outside)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(logits: torch.Tensor, uniforms: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Token ids [B]: the inverse CDF of the filtered, tempered distribution at `uniforms` [B]."""
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits / config.temperature, config.top_k, config.top_p).softmax(dim=-1)
    cdf = probs.cumsum(dim=-1)  # [B, K]
    index = (cdf < uniforms[:, None] * cdf[:, -1:]).sum(dim=-1)
    return index.clamp(max=logits.shape[-1] - 1)


def next_image_logits(
    model: Generator, text: torch.Tensor, prefix: torch.Tensor, cache: KVCache | None = None
) -> torch.Tensor:
    """Logits [B, K] of image token number ``prefix.shape[1]`` after caption `text` and tokens `prefix`.

    With a `cache`, only the positions it has not seen yet go through the transformer (and are added).
    """
    context = model.config.text_context
    if cache is None or cache.length == 0:
        x = torch.cat([model.embed_text(text), model.embed_image(prefix)], dim=1)  # [B, Lt + T, D]
    else:
        done = cache.length - context
        x = model.embed_image(prefix[:, done:], start=done)  # [B, T - done, D]
    return model.image_head(model.hidden(x, cache)[:, -1])


def _guided(model: Generator, text: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """The caption rows, followed by as many empty-caption rows when guidance is on."""
    if config.cond_scale == 1.0:
        return text
    empty = get_tokenizer(model.config.tokenizer)([""]).expand(text.shape[0], -1).to(text.device)  # [B, Lt]
    return torch.cat([text, empty])


def _combine(logits: torch.Tensor, rows: int, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return logits
    cond, uncond = logits[:rows], logits[rows:]
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def sample_tokens(
    model: Generator, text: torch.Tensor, seeds: Sequence[int], config: SamplingConfig
) -> torch.Tensor:
    """Image tokens [B, N] for captions `text` [B, Lt] (BPE ids), one seed per row."""
    rows, length = text.shape[0], model.config.image_tokens
    device = model.image_head.weight.device
    # The seeded streams stay on the CPU, so a seed draws the same uniforms on any device.
    streams = [torch.Generator().manual_seed(int(s)) for s in seeds]
    stream_text = _guided(model, text, config).to(device)
    cache = KVCache.empty(model.config.layers) if config.use_cache else None
    tokens = torch.zeros(stream_text.shape[0], 0, dtype=torch.long, device=device)  # [B', 0]
    for _ in range(length):
        logits = _combine(next_image_logits(model, stream_text, tokens, cache), rows, config.cond_scale)
        uniforms = torch.stack([torch.rand((), generator=g) for g in streams]).to(device)  # [B]
        chosen = draw(logits, uniforms, config)
        both = chosen if config.cond_scale == 1.0 else chosen.repeat(2)  # guided rows follow their caption
        tokens = torch.cat([tokens, both[:, None]], dim=1)
    return tokens[:rows]


def sample_images(
    model: Generator, text: torch.Tensor, seeds: Sequence[int], config: SamplingConfig
) -> torch.Tensor:
    """Pixels [B, 3, S, S] in [0, 1] for captions `text` [B, Lt], decoded in batches of `batch_size`."""
    if len(seeds) != text.shape[0]:
        raise ConfigError(f"sampling: {len(seeds)} seeds for {text.shape[0]} captions")
    chunks = []
    for start in range(0, text.shape[0], config.batch_size):
        stop = start + config.batch_size
        tokens = sample_tokens(model, text[start:stop], seeds[start:stop], config)
        chunks.append(model.decode(tokens).cpu())
    return torch.cat(chunks)
