"""Image-text retrieval recall@K with the CLIP-paper convention for images that have several captions.

Text->image: a caption hits when its own image is among the top K images. Image->text: an image hits when
*any* of its captions is among the top K captions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def recall_at_k(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K in both directions, as fractions in [0, 1].

    Args:
        image_features: normalized image embeddings [N, E].
        text_features: normalized caption embeddings [M, E].
        text_to_image: for each caption, the index of its image [M].
        ks: the cut-offs.

    Returns:
        `t2i_r{k}` and `i2t_r{k}` for every k.
    """
    scores = text_features @ image_features.t()  # [M, N]
    metrics: dict[str, float] = {}
    # Rank of the true image per caption: how many images score strictly higher.
    true_scores = scores.gather(1, text_to_image.view(-1, 1))  # [M, 1]
    t2i_rank = (scores > true_scores).sum(dim=1)  # [M]
    # Best rank of any true caption per image, from the image's side.
    i2t_scores = scores.t()  # [N, M]
    owner = text_to_image.view(1, -1) == torch.arange(scores.shape[1]).view(-1, 1)  # [N, M]
    best_true = i2t_scores.masked_fill(~owner, float("-inf")).max(dim=1, keepdim=True).values  # [N, 1]
    i2t_rank = (i2t_scores > best_true).sum(dim=1)  # [N]
    for k in ks:
        metrics[f"t2i_r{k}"] = (t2i_rank < k).float().mean().item()
        metrics[f"i2t_r{k}"] = (i2t_rank < k).float().mean().item()
    return dict(sorted(metrics.items()))
