"""Inference fast paths equal the plain ones: folded conv towers, trimmed text, length-bucketed encoding."""

import copy
from typing import TypeVar

import pytest
import torch
from torch import nn

import clipforge.models.clip as clip_module
import clipforge.models.towers as towers_module
from clipforge.models import create_model
from clipforge.models.config import ModelConfig
from clipforge.models.efficientnet import EfficientNetLite0
from clipforge.models.inputs import encode_by_length, row_lengths, trim_padding
from clipforge.models.towers import TowerCLIP
from clipforge.tokenizer import ClipTokenizer

M = TypeVar("M", bound=nn.Module)


def _randomize_batchnorms(model: M) -> M:
    """Non-trivial running statistics and affine parameters, so folding them has something to get wrong."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.bias, 0.0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def effnet() -> EfficientNetLite0:
    torch.manual_seed(0)
    return _randomize_batchnorms(EfficientNetLite0())


def _both_paths(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain forward, folded forward): the plain one runs with autograd on, the folded one without."""
    plain = model(x).detach()
    with torch.inference_mode():
        folded = model(x)
    return plain, folded


@pytest.mark.parametrize("size", [(64, 64), (65, 50)])  # even and odd sizes: TF "SAME" pads differ
def test_efficientnet_folded_equals_plain(effnet: EfficientNetLite0, size: tuple[int, int]) -> None:
    plain, folded = _both_paths(effnet, torch.randn(3, 3, *size))
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)


def test_efficientnet_folded_without_onednn(effnet: EfficientNetLite0) -> None:
    """float64 runs the portable F.conv2d fallback; in double precision it matches to rounding."""
    model = copy.deepcopy(effnet).double()
    plain, folded = _both_paths(model, torch.randn(2, 3, 24, 24, dtype=torch.float64))
    torch.testing.assert_close(folded, plain, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="weights are prepacked for oneDNN")
def test_efficientnet_prepacked_weights_serve_every_batch_size_and_copies(effnet: EfficientNetLite0) -> None:
    """Weights are reordered once into oneDNN's layout; every batch size and a copied model still match."""
    model = copy.deepcopy(effnet)
    _both_paths(model, torch.randn(4, 3, 64, 64))  # folds and packs
    folded = model._folds.get(model, lambda *_: pytest.fail("the cache was rebuilt"), 64, 64, torch.float32)
    assert all(conv.packed is not None and conv.packed.is_mkldnn for convs in folded for conv in convs)
    for batch in (1, 3, 9):
        plain, fast = _both_paths(model, torch.randn(batch, 3, 64, 64))
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    plain, fast = _both_paths(copy.deepcopy(model), torch.randn(2, 3, 64, 64))  # the copy packs afresh
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_folded_weights_follow_parameter_updates(effnet: EfficientNetLite0) -> None:
    model = copy.deepcopy(effnet)
    x = torch.randn(2, 3, 48, 48)
    _both_paths(model, x)  # fills the cache
    with torch.no_grad():
        model.blocks[3].bn1.running_var.mul_(3.0)  # type: ignore[union-attr,operator]
        model.conv_head.weight.add_(0.1)
    plain, folded = _both_paths(model, x)
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)


def test_training_mode_and_autograd_take_the_plain_path(effnet: EfficientNetLite0) -> None:
    model = copy.deepcopy(effnet)
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()  # eval mode with autograd: gradients reach the convs
    assert model.conv_stem.weight.grad is not None and model.conv_stem.weight.grad.abs().sum() > 0
    model.train()
    with torch.no_grad():  # train mode normalizes with batch statistics: never folded
        train_mode = model(x)
        folded = model.eval()(x)
    assert not torch.allclose(train_mode, folded, atol=1e-3)


def test_efficientnet_folded_under_bf16_autocast(effnet: EfficientNetLite0) -> None:
    x = torch.randn(2, 3, 64, 64)
    plain = effnet(x).detach()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        folded = effnet(x)
    assert folded.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(folded.float(), plain).min()
    assert cosine > 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_modified_resnet_folded_equals_plain(dtype: torch.dtype) -> None:
    model = _randomize_batchnorms(create_model("tiny-rn").to(dtype))
    size = model.config.vision.image_size
    x = torch.randn(3, 3, size, size, dtype=dtype)
    plain = model.encode_image(x).detach()
    with torch.inference_mode():
        folded = model.encode_image(x)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(folded, plain, rtol=tolerance, atol=tolerance)


def test_row_lengths_count_to_the_last_id_not_the_nonzero_ones() -> None:
    # CLIP-BPE id 0 is "!": "hi!" is [start, hi, !, end] and must keep its end-of-text.
    tokens = ClipTokenizer(16)(["hi!", "a longer caption here", "!!!"])
    lengths = row_lengths(tokens)
    assert lengths.tolist() == [int(tokens[i].nonzero().max()) + 1 for i in range(3)]
    trimmed = trim_padding(tokens)
    assert trimmed.shape[1] == int(lengths.max()) and (trimmed.argmax(dim=1) == tokens.argmax(dim=1)).all()
    assert row_lengths(tokens[:0]).shape == (0,)


def _untrimmed(monkeypatch: pytest.MonkeyPatch, module: object) -> None:
    """The padded path: the model's token fitting replaced by the check alone (no trimming)."""
    from clipforge.models.inputs import check_tokens

    monkeypatch.setattr(module, "fit_tokens", check_tokens)


def test_clip_text_trimmed_equals_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("tiny-vit").eval()
    tokens = ClipTokenizer(model.config.tokenizer.context_length)(["a dog!", "two red squares", "x"])
    with torch.no_grad():
        trimmed = model.encode_text(tokens)
        _untrimmed(monkeypatch, clip_module)
        padded = model.encode_text(tokens)
    torch.testing.assert_close(trimmed, padded, rtol=1e-6, atol=1e-6)


def test_minilm_text_trimmed_equals_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    config = ModelConfig.from_dict({
        "embed_dim": 16,
        "vision": {"type": "efficientnet_lite0", "weights": "none"},
        "text": {"type": "minilm", "context_length": 24, "weights": "none"},
    })
    model = TowerCLIP(config).eval()
    tokens = torch.zeros(3, 24, dtype=torch.long)
    tokens[0, :5] = torch.tensor([101, 2000, 3000, 4000, 102])
    tokens[1, :3] = torch.tensor([101, 2500, 102])
    tokens[2, :9] = torch.randint(1000, 5000, (9,))
    with torch.no_grad():
        trimmed = model.encode_text(tokens)
        _untrimmed(monkeypatch, towers_module)
        padded = model.encode_text(tokens)
    torch.testing.assert_close(trimmed, padded, rtol=1e-6, atol=1e-6)


def test_encode_by_length_keeps_the_order() -> None:
    model = create_model("tiny-vit").eval()
    texts = ["a", "a much longer caption with many words in it", "two words", "one two three four", "b c"]
    tokens = ClipTokenizer(model.config.tokenizer.context_length)(texts)
    with torch.no_grad():
        bucketed = encode_by_length(model, tokens, batch_size=2)
        one_by_one = torch.cat([model.encode_text(row[None], normalize=True) for row in tokens])
    torch.testing.assert_close(bucketed, one_by_one, rtol=1e-5, atol=1e-6)
