"""CoOp (Zhou et al. 2022): learn M context vectors in the text tower's input space from a few labelled shots.

The prompt of class c is ``[start] [V1] ... [VM] [name of c] . [end]`` in the token-embedding space of
the text tower (after CLIP's start-of-text token, after MiniLM's [CLS]); the class name may instead sit
in the middle of the context or in front of it. The context is shared by all classes (unified) or learned
per class (class-specific). Both towers stay frozen: only the context vectors train, with SGD, a constant
warm-up epoch and a cosine schedule, as in the paper. With frozen image features, a step only runs the
text tower over the C class prompts.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from clipforge.errors import ConfigError
from clipforge.eval.frozen import FeatureSet, embed_features, logit_scale
from clipforge.fileio import read_json_object, write_bytes_atomic, write_json
from clipforge.models.base import ContrastiveModel
from clipforge.progress import Progress, on_terminal, quiet
from clipforge.tokenizer import TextTokenizer
from clipforge.typed import parse_dataclass

CLASS_POSITIONS = ("end", "middle", "front")
PLACEHOLDER = "X"  # one token in both tokenizers; its embedding is replaced by a context vector
# CoOp's epochs by shots (the paper's schedule for its 10 non-ImageNet datasets); more shots or the whole
# training set: DEFAULT_EPOCHS.
EPOCHS_BY_SHOTS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
DEFAULT_EPOCHS = 50
CONTEXT_FILE, PROMPT_FILE = "context.safetensors", "prompt.json"


@dataclass(frozen=True)
class CoopConfig:
    """CoOp's prompt and optimizer.

    Attributes:
        n_ctx: context vectors M when `ctx_init` is empty (random init, std 0.02).
        ctx_init: text whose token embeddings initialize the context (M = its token count).
        class_specific: one context per class instead of one shared by all.
        class_position: where the class name goes: end, middle or front.
        lr: SGD learning rate after warm-up.
        batch_size: images per step.
        epochs: passes over the training images; 0 picks the paper's schedule by shots.
        warmup_epochs: epochs at the constant `warmup_lr` first.
        warmup_lr: learning rate during warm-up.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
    """

    n_ctx: int = 16
    ctx_init: str = "a photo of a"
    class_specific: bool = False
    class_position: str = "end"
    lr: float = 0.002
    batch_size: int = 32
    epochs: int = 0
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        if self.class_position not in CLASS_POSITIONS:
            raise ConfigError(f"coop: class_position must be one of {', '.join(CLASS_POSITIONS)}, "
                              f"got '{self.class_position}'")
        if self.n_ctx < 1 or self.batch_size < 1 or self.epochs < 0 or self.lr <= 0:
            raise ConfigError("coop: n_ctx and batch_size must be >= 1, epochs >= 0 and lr > 0")


def _name_length(tokenizer: TextTokenizer, name: str) -> int:
    """Tokens of `name` alone, without the start/end ids."""
    return int((tokenizer([name]) != 0).sum()) - 2


def _layout(n_ctx: int, n_name: int, position: str) -> tuple[list[int], str]:
    """Context positions in the token row (start token at 0) and the placeholder text around the name."""
    if position == "end":
        return list(range(1, n_ctx + 1)), f"{' '.join([PLACEHOLDER] * n_ctx)} {{}}."
    if position == "front":
        return list(range(1 + n_name, 1 + n_name + n_ctx)), f"{{}} {' '.join([PLACEHOLDER] * n_ctx)}."
    half = n_ctx // 2
    after = list(range(1 + half + n_name, 1 + n_ctx + n_name))
    text = f"{' '.join([PLACEHOLDER] * half)} {{}} {' '.join([PLACEHOLDER] * (n_ctx - half))}."
    return list(range(1, 1 + half)) + after, text.strip()


class PromptLearner(nn.Module):
    """The learnable context of every class prompt, spliced into the frozen token embeddings.

    Args:
        model: the frozen model whose text tower reads the prompts.
        tokenizer: its tokenizer.
        classnames: one name per class.
        config: the prompt's shape and initialization.
    """

    tokens: torch.Tensor  # [C, L] placeholder token ids (their layout pools the text tower)
    positions: torch.Tensor  # [C, M] where the context vectors go in each row
    base: torch.Tensor  # [C, L, D] frozen token embeddings of the rows

    def __init__(self, model: ContrastiveModel, tokenizer: TextTokenizer, classnames: list[str],
                 config: CoopConfig) -> None:
        super().__init__()
        table = model.text_token_table().detach()
        init_ids = _init_ids(tokenizer, config.ctx_init)
        n_ctx = len(init_ids) if init_ids else config.n_ctx
        rows, positions = [], []
        for name in classnames:
            where, text = _layout(n_ctx, _name_length(tokenizer, name), config.class_position)
            rows.append(tokenizer([text.format(name)])[0])
            positions.append(where)
        tokens = torch.stack(rows)  # [C, L]
        tokens = tokens[:, : int((tokens != 0).sum(dim=1).max())]  # drop all-padding columns
        self.register_buffer("tokens", tokens)
        self.register_buffer("positions", torch.tensor(positions, dtype=torch.long))  # [C, M]
        self.register_buffer("base", table[tokens].clone())  # [C, L, D] frozen token embeddings
        _check_placeholders(tokenizer, tokens, self.positions, classnames)
        self.ctx = nn.Parameter(_init_context(table, init_ids, n_ctx, len(classnames), config.class_specific))
        self.config, self.classnames = config, list(classnames)

    def forward(self) -> torch.Tensor:
        """Prompt embeddings [C, L, D] with the context vectors in place of the placeholders."""
        classes = self.tokens.shape[0]
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.expand(classes, -1, -1)  # [C, M, D]
        rows = torch.arange(classes, device=ctx.device)[:, None]  # [C, 1]
        return self.base.index_put((rows, self.positions), ctx)

    def class_embeddings(self, model: ContrastiveModel) -> torch.Tensor:
        """Normalized text embeddings [C, E] of the learned prompts."""
        return model.encode_text_embeddings(self(), self.tokens, normalize=True)


def _init_ids(tokenizer: TextTokenizer, text: str) -> list[int]:
    if not text.strip():
        return []
    row = tokenizer([text])[0]
    return [int(i) for i in row[1 : int((row != 0).sum()) - 1]]  # without start and end


def _init_context(table: torch.Tensor, init_ids: list[int], n_ctx: int, classes: int,
                  class_specific: bool) -> torch.Tensor:
    ctx = table[torch.tensor(init_ids)].clone() if init_ids else torch.randn(n_ctx, table.shape[1]) * 0.02
    return ctx.expand(classes, -1, -1).clone() if class_specific else ctx


def _check_placeholders(tokenizer: TextTokenizer, tokens: torch.Tensor, positions: torch.Tensor,
                        classnames: list[str]) -> None:
    placeholder = int(tokenizer([PLACEHOLDER])[0, 1])
    for row, where, name in zip(tokens, positions, classnames, strict=True):
        truncated = int((row != 0).sum()) >= tokenizer.context_length
        if truncated or not bool((row[where] == placeholder).all()):
            raise ConfigError(f"coop: the prompt of class '{name}' does not fit the text tower's context")


def schedule(step: int, total: int, warmup: int, config: CoopConfig) -> float:
    """Learning rate at `step`: `warmup_lr` for `warmup` steps, else cosine from `lr` over `total` steps."""
    if step < warmup:
        return config.warmup_lr
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * step / max(total, 1)))


def epochs_for(shots: int | None, config: CoopConfig) -> int:
    """The configured epochs, or the paper's schedule for `shots` per class (None: the whole set)."""
    if config.epochs:
        return config.epochs
    return EPOCHS_BY_SHOTS.get(shots, DEFAULT_EPOCHS) if shots is not None else DEFAULT_EPOCHS


def train_prompt(
    model: ContrastiveModel,
    tokenizer: TextTokenizer,
    classnames: list[str],
    train: FeatureSet,
    config: CoopConfig,
    epochs: int,
    seed: int,
) -> PromptLearner:
    """Learns the context on `train` (frozen features) with everything else frozen."""
    torch.manual_seed(seed)
    prompt = PromptLearner(model, tokenizer, classnames, config)
    images = embed_features(model, train.features)  # [N, E], fixed: the image side is frozen
    scale = logit_scale(model)
    optimizer = torch.optim.SGD([prompt.ctx], lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(train) / config.batch_size)
    total, generator = epochs * per_epoch, torch.Generator().manual_seed(seed)
    bar = Progress("coop", total, quiet, bar=on_terminal(), unit="step", tenths=False)
    for step in range(total):
        if step % per_epoch == 0:
            order = torch.randperm(len(train), generator=generator)
        batch = order[(step % per_epoch) * config.batch_size :][: config.batch_size]
        for group in optimizer.param_groups:
            group["lr"] = schedule(step, total, config.warmup_epochs * per_epoch, config)
        logits = scale * images[batch] @ prompt.class_embeddings(model).t()  # [B, C]
        loss = F.cross_entropy(logits, train.labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update()
    bar.close()
    return prompt


@torch.no_grad()
def predict(model: ContrastiveModel, prompt: PromptLearner, data: FeatureSet) -> torch.Tensor:
    """Predicted class per row of `data` under the learned prompts."""
    return (embed_features(model, data.features) @ prompt.class_embeddings(model).t()).argmax(dim=1)


@torch.no_grad()
def nearest_words(model: ContrastiveModel, tokenizer: TextTokenizer, prompt: PromptLearner,
                  k: int = 3) -> list[list[tuple[str, float]]]:
    """For each context vector (of the first class when class-specific), its `k` nearest vocabulary
    tokens by Euclidean distance in the input embedding space, as the paper interprets them."""
    table = model.text_token_table()
    ctx = prompt.ctx if prompt.ctx.dim() == 2 else prompt.ctx[0]  # [M, D]
    distances = torch.cdist(ctx, table)  # [M, V]
    top = distances.topk(k, dim=1, largest=False)
    return [[(tokenizer.decode([int(i)]) or f"<id {int(i)}>", round(float(d), 4))
             for d, i in zip(ds, ids, strict=True)] for ds, ids in zip(top.values, top.indices, strict=True)]


def save_prompt(prompt: PromptLearner, folder: Path, meta: dict[str, Any]) -> Path:
    """Writes the learned context (`context.safetensors`) and what rebuilds the prompts (`prompt.json`)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CONTEXT_FILE}.tmp"
    save_file({"ctx": prompt.ctx.detach().contiguous()}, str(tmp))
    write_bytes_atomic(folder / CONTEXT_FILE, tmp.read_bytes())
    tmp.unlink()
    write_json({"classnames": prompt.classnames, "coop": asdict(prompt.config), **meta}, folder / PROMPT_FILE)
    return folder


def read_prompt_meta(folder: Path) -> dict[str, Any]:
    """The `prompt.json` of a saved prompt.

    Raises:
        ConfigError: the folder does not hold one.
    """
    meta = read_json_object(folder / PROMPT_FILE, ConfigError)
    if not isinstance(meta.get("classnames"), list) or not isinstance(meta.get("coop"), dict):
        raise ConfigError(f"{folder / PROMPT_FILE}: not a CoOp prompt description (classnames, coop)")
    return meta


def load_prompt(folder: Path, model: ContrastiveModel, tokenizer: TextTokenizer) -> PromptLearner:
    """Rebuilds a saved prompt for `model` (which must be the one it was learned with).

    Raises:
        ConfigError: the folder does not hold a CoOp prompt, or its context does not fit the model.
    """
    meta = read_prompt_meta(folder)
    try:
        ctx = load_file(str(folder / CONTEXT_FILE))["ctx"]
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"{folder / CONTEXT_FILE}: not a readable CoOp context ({err})") from err
    config = parse_dataclass(CoopConfig, meta.get("coop", {}), where=str(folder / PROMPT_FILE))
    prompt = PromptLearner(model, tokenizer, list(meta["classnames"]), config)
    if ctx.shape != prompt.ctx.shape:
        raise ConfigError(f"{folder}: context {tuple(ctx.shape)} does not fit this model "
                          f"({tuple(prompt.ctx.shape)}); use the model it was learned with")
    prompt.ctx.data.copy_(ctx)
    return prompt


def timed_train(model: ContrastiveModel, tokenizer: TextTokenizer, classnames: list[str], train: FeatureSet,
                config: CoopConfig, shots: int | None, seed: int) -> tuple[PromptLearner, float]:
    """`train_prompt` with the paper's epochs for `shots`, and its wall time in seconds."""
    start = time.time()
    prompt = train_prompt(model, tokenizer, classnames, train, config, epochs_for(shots, config), seed)
    return prompt, time.time() - start
