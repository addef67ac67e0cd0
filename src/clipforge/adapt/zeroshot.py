"""Zero-shot heads from prompt templates, and greedy template selection on a validation split.

The embedding of a class under a set of templates is the renormalized mean of its normalized prompt
embeddings (CLIP's prompt ensembling). Greedy search (forward selection) starts from no template and adds,
one at a time, the template whose addition gives the best validation accuracy (ties: the higher mean
log-likelihood of the true class), stopping when no addition improves on the current set. It only ever
sees the validation embeddings and labels; test accuracy is measured afterwards on what it chose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipforge.eval.frozen import hit_rate
from clipforge.eval.zeroshot import ensemble
from clipforge.models.base import ContrastiveModel
from clipforge.tokenizer import TextTokenizer

DEFAULT_SINGLE = "a photo of a {}."


@torch.no_grad()
def template_embeddings(
    model: ContrastiveModel,
    tokenizer: TextTokenizer,
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """Normalized text embeddings [T, C, E] of every (template, class) prompt."""
    prompts = [t.format(name) for t in templates for name in classnames]
    starts = range(0, len(prompts), batch_size)
    chunks = [_encode(model, tokenizer, prompts[i : i + batch_size]) for i in starts]
    return torch.cat(chunks).reshape(len(templates), len(classnames), -1)  # [T, C, E]


def _encode(model: ContrastiveModel, tokenizer: TextTokenizer, texts: list[str]) -> torch.Tensor:
    tokens = tokenizer(texts)
    length = int((tokens != 0).sum(dim=1).max())
    return model.encode_text(tokens[:, :length], normalize=True)  # trailing padding changes nothing


@dataclass(frozen=True)
class Fit:
    """How well a head does on labelled embeddings."""

    accuracy: float
    log_likelihood: float  # mean log-probability of the true class

    def key(self) -> tuple[float, float]:
        return (self.accuracy, self.log_likelihood)


def evaluate_head(images: torch.Tensor, labels: torch.Tensor, head: torch.Tensor, scale: float) -> Fit:
    """Accuracy and log-likelihood of class head [C, E] on normalized image embeddings [N, E]."""
    logits = scale * images @ head.t()  # [N, C]
    accuracy = hit_rate(logits.argmax(dim=1), labels)
    likelihood = float(F.log_softmax(logits, dim=1).gather(1, labels[:, None]).mean())
    return Fit(accuracy, likelihood)


def greedy_templates(
    embeddings: torch.Tensor, val_images: torch.Tensor, val_labels: torch.Tensor, scale: float
) -> list[int]:
    """Template indices chosen by forward selection on the validation split (module docstring)."""
    chosen: list[int] = []
    best: tuple[float, float] | None = None
    while len(chosen) < len(embeddings):
        scores = {t: evaluate_head(val_images, val_labels, ensemble(embeddings, [*chosen, t]), scale).key()
                  for t in range(len(embeddings)) if t not in chosen}
        candidate = max(scores, key=lambda t: scores[t])
        if best is not None and scores[candidate] <= best:
            break
        chosen.append(candidate)
        best = scores[candidate]
    return chosen
