import torch
import torch.nn.functional as F

from clipforge.eval.retrieval import recall_at_k


def _naive(images, texts, owner, k):
    sims = [[float(t @ i) for i in images] for t in texts]
    t2i = 0
    for j, row in enumerate(sims):
        ranked = sorted(range(len(images)), key=lambda n: -row[n])
        t2i += owner[j] in ranked[:k]
    i2t = 0
    for n in range(len(images)):
        col = [sims[j][n] for j in range(len(texts))]
        ranked = sorted(range(len(texts)), key=lambda j: -col[j])
        i2t += any(owner[j] == n for j in ranked[:k])
    return t2i / len(texts), i2t / len(images)


def test_recall_matches_naive_loops() -> None:
    gen = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(20, 8, generator=gen), dim=-1)
    owner = torch.arange(20).repeat_interleave(5)  # 5 captions per image
    texts = F.normalize(images[owner] + 0.9 * torch.randn(100, 8, generator=gen), dim=-1)
    metrics = recall_at_k(images, texts, owner, ks=(1, 5, 10))
    for k in (1, 5, 10):
        t2i, i2t = _naive(images, texts, owner.tolist(), k)
        assert abs(metrics[f"t2i_r{k}"] - t2i) < 1e-6
        assert abs(metrics[f"i2t_r{k}"] - i2t) < 1e-6
    assert 0 < metrics["t2i_r1"] < metrics["t2i_r10"] <= 1


def test_perfect_and_reversed() -> None:
    eye = torch.eye(4)
    assert recall_at_k(eye, eye, torch.arange(4), ks=(1,)) == {"i2t_r1": 1.0, "t2i_r1": 1.0}
    assert recall_at_k(eye, eye.flip(0), torch.arange(4), ks=(1,))["t2i_r1"] == 0.0
