"""Losses against naive loop references, optimizer groups, the lr schedule and config parsing."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipforge.errors import ConfigError
from clipforge.train.batches import pad_negatives
from clipforge.train.config import TrainRunConfig, TrainSection, apply_overrides, load_config, parse_override
from clipforge.train.loss import InfoNCELoss, PairFeatures, SigLipLoss
from clipforge.train.optim import build_optimizer, lr_factor


def _features(b: int = 5, k: int = 0, e: int = 8, masked: tuple[tuple[int, int], ...] = ()) -> PairFeatures:
    g = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(b, e, generator=g, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(b, e, generator=g, dtype=torch.float64), dim=-1)
    scale = torch.tensor(7.5, dtype=torch.float64)
    if k == 0:
        return PairFeatures(images, texts, scale)
    negatives = F.normalize(torch.randn(b * k, e, generator=g, dtype=torch.float64), dim=-1)
    mask = torch.ones(b, k, dtype=torch.bool)
    for i, j in masked:
        mask[i, j] = False
    return PairFeatures(images, texts, scale, negatives, mask)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b, strict=True))


def naive_infonce(f: PairFeatures) -> float:
    """Explicit loops: log-softmax of each row over its allowed columns."""
    b, s = f.images.shape[0], float(f.logit_scale)
    k = 0 if f.negative_mask is None else f.negative_mask.shape[1]
    total = 0.0
    for i in range(b):
        columns = [s * _dot(f.images[i], f.texts[j]) for j in range(b)]
        for n in range(b * k):
            if f.negative_mask is not None and f.negatives is not None and f.negative_mask[n // k, n % k]:
                columns.append(s * _dot(f.images[i], f.negatives[n]))
        total += -(columns[i] - math.log(sum(math.exp(c) for c in columns))) / 2
        rows = [s * _dot(f.texts[i], f.images[j]) for j in range(b)]
        if f.negative_images is not None and f.negative_image_mask is not None:
            rows += [s * _dot(f.texts[i], f.negative_images[j]) for j in range(b) if f.negative_image_mask[j]]
        total += -(rows[i] - math.log(sum(math.exp(r) for r in rows))) / 2
    return total / b


def naive_siglip(f: PairFeatures, log_scale: float, bias: float) -> float:
    """Explicit loops: -log sigmoid(z * logit) for every (image, caption) pair, divided by the batch."""
    b, s = f.images.shape[0], math.exp(log_scale)
    k = 0 if f.negative_mask is None else f.negative_mask.shape[1]
    total = 0.0
    for i in range(b):
        for j in range(b):
            z = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-z * (s * _dot(f.images[i], f.texts[j]) + bias)))
        for n in range(b * k):
            if f.negative_mask is not None and f.negatives is not None and f.negative_mask[n // k, n % k]:
                total += math.log1p(math.exp(s * _dot(f.images[i], f.negatives[n]) + bias))
    return total / b


@pytest.mark.parametrize("k, masked", [(0, ()), (2, ()), (3, ((0, 2), (4, 0), (4, 1)))])
def test_infonce_matches_naive(k: int, masked: tuple[tuple[int, int], ...]) -> None:
    f = _features(k=k, masked=masked)
    assert float(InfoNCELoss()(f)) == pytest.approx(naive_infonce(f), rel=1e-10)


def test_infonce_negatives_raise_the_loss_and_masked_ones_do_not_count() -> None:
    plain = float(InfoNCELoss()(_features(k=0)))
    assert float(InfoNCELoss()(_features(k=2))) > plain
    all_masked = tuple((i, j) for i in range(5) for j in range(2))
    assert float(InfoNCELoss()(_features(k=2, masked=all_masked))) == pytest.approx(plain, rel=1e-12)


def _with_negative_images(f: PairFeatures, real: list[bool]) -> PairFeatures:
    g = torch.Generator().manual_seed(2)
    negatives = F.normalize(torch.randn(f.images.shape, generator=g, dtype=torch.float64), dim=-1)
    return PairFeatures(f.images, f.texts, f.logit_scale, f.negatives, f.negative_mask,
                        negative_images=negatives, negative_image_mask=torch.tensor(real))


@pytest.mark.parametrize("k", [0, 2])
def test_infonce_with_negative_images_matches_naive(k: int) -> None:
    """Each caption's row on the text->image side gets every real hard-negative image as a column."""
    f = _with_negative_images(_features(k=k), [True, False, True, True, False])
    assert float(InfoNCELoss()(f)) == pytest.approx(naive_infonce(f), rel=1e-10)
    assert float(InfoNCELoss()(f)) > float(InfoNCELoss()(_features(k=k)))
    none_real = _with_negative_images(_features(k=k), [False] * 5)
    assert float(InfoNCELoss()(none_real)) == pytest.approx(float(InfoNCELoss()(_features(k=k))), rel=1e-12)


@pytest.mark.parametrize("k, masked", [(0, ()), (2, ((1, 1),))])
def test_siglip_matches_naive(k: int, masked: tuple[tuple[int, int], ...]) -> None:
    f = _features(k=k, masked=masked)
    log_scale, bias = torch.tensor(math.log(10.0)).item(), -3.0  # ln 10 rounded to float32, as models hold it
    f.logit_scale, f.logit_bias = torch.tensor(math.exp(log_scale), dtype=torch.float64), torch.tensor(bias)
    expected = naive_siglip(f, log_scale, bias)
    assert float(SigLipLoss()(f).detach()) == pytest.approx(expected, rel=1e-10)


def test_siglip_trains_the_models_scale_and_bias() -> None:
    from clipforge import create_model

    model = create_model("tiny-vit")
    model.enable_logit_bias(math.log(10.0), -10.0)
    f = _features()
    scale, bias = model.similarity_scale(), model.logit_bias
    SigLipLoss()(PairFeatures(f.images.float(), f.texts.float(), scale, logit_bias=bias)).backward()
    assert model.logit_bias is not None and model.logit_bias.grad is not None
    assert float(model.logit_bias.grad) != 0.0
    assert model.logit_scale.grad is not None and float(model.logit_scale.grad) != 0.0


def test_siglip_without_a_bias_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="logit bias"):
        SigLipLoss()(_features())


def test_pad_negatives_crops_and_masks() -> None:
    assert pad_negatives(["a", "b", "c"], 2) == (["a", "b"], [True, True])
    assert pad_negatives(["a"], 3) == (["a", "", ""], [True, False, False])


def test_weight_decay_skips_gains_biases_and_logit_scale() -> None:
    from clipforge import create_model

    model = create_model("tiny-vit")
    optimizer = build_optimizer([model], TrainSection(weight_decay=0.2))
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert optimizer.param_groups[0]["weight_decay"] == 0.2 and optimizer.param_groups[1]["weight_decay"] == 0
    assert "logit_scale" not in names and not any(n.endswith(".bias") for n in names)
    assert not any("ln_" in n for n in names)
    assert "text_projection" in names and "transformer.resblocks.0.attn.in_proj_weight" in names


def test_lr_schedule_warms_up_then_follows_cosine() -> None:
    cfg = TrainSection(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert lr_factor(110, cfg) == pytest.approx(0.1)


def test_overrides_use_toml_values() -> None:
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override('data.source="flickr8k:/x:train"') == (["data", "source"], "flickr8k:/x:train")
    assert parse_override("data.source=synthetic") == (["data", "source"], "synthetic")
    config = TrainRunConfig.from_dict(apply_overrides({}, ["train.steps=7", "train.betas=[0.8, 0.9]"]))
    assert config.train.steps == 7 and config.train.betas == (0.8, 0.9)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", "unknown config key 'stepz'"),
        ("train.steps=-1", "train.steps must be >= 1"),
        ("train.steps=1.5", "'steps' must be int"),
        ("loss.kind=triplet", "loss.kind must be one of"),
        ("nonsense.x=1", "unknown config key 'nonsense'"),
        ("loss.negative_images=1.5", r"loss.negative_images must be in \[0, 1\]"),
        ("data.source=flickr8k", "loss.negative_images works with loss.kind = 'infonce' and data.source"),
    ],
)
def test_bad_config_values_are_one_line_errors(override: str, message: str) -> None:
    extra = ["loss.negative_images=0.5"] if override.startswith("data.source") else []
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override, *extra])
    assert "\n" not in str(info.value)


def test_shipped_config_parses(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "synthetic-tiny.toml")
    assert config.train.steps == 60 and config.train.checkpoint_every == 20
    assert TrainRunConfig.from_dict(config.to_dict()) == config
