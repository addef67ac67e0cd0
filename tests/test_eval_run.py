"""Evaluation over data specs: retrieval and zero-shot, in memory and through `clipforge eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from torch import nn

from clipforge.checkpoint import load
from clipforge.cli.main import main
from clipforge.data.specs import open_data
from clipforge.data.transforms import pil_to_tensor
from clipforge.errors import DataError
from clipforge.eval.retrieval import recall_at_k
from clipforge.eval.run import EvalConfig, embed_dataset, evaluate_zeroshot
from clipforge.models import ContrastiveModel
from clipforge.synthetic.dataset import SceneConfig, render_scene, single_object_scenes, write_synthetic
from clipforge.synthetic.scene import PALETTE
from clipforge.synthetic.zeroshot import ATTRIBUTES, attribute_prompts, load_labelled_scenes

METRICS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")
COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (10, 250, 250)]


class ColourModel(ContrastiveModel):
    """Embeds an image as its mean RGB and a "caption" as the RGB triple it spells."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(4.6))
        self.logit_bias = None

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return F.normalize(images.mean(dim=(2, 3)) - 0.5, dim=-1)  # [B, 3]

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return F.normalize(tokens / 255.0 - 0.5, dim=-1)


def colour_tokens(texts: list[str]) -> torch.Tensor:
    return torch.tensor([[float(v) for v in t.split()] for t in texts])  # [N, 3]


def _spell(rgb: tuple[int, int, int]) -> str:
    return " ".join(str(v) for v in rgb)


@pytest.fixture
def colour_folder(tmp_path: Path) -> Path:
    """Five flat images; each has its own colour as a caption, image 4 also a wrong one (image 0's)."""
    for i, rgb in enumerate(COLOURS):
        Image.new("RGB", (8, 8), rgb).save(tmp_path / f"im{i}.png")
        extra = f"\n{_spell(COLOURS[0])}" if i == 4 else ""
        (tmp_path / f"im{i}.txt").write_text(_spell(rgb) + extra + "\n")
    return tmp_path


def test_embed_dataset_keeps_caption_owners_across_batches(colour_folder: Path) -> None:
    data = open_data(f"folder:{colour_folder}")
    features = embed_dataset(ColourModel(), pil_to_tensor, colour_tokens, data, EvalConfig(batch_size=2))
    assert features.keys == [f"im{i}.png" for i in range(5)]
    assert features.text_to_image.tolist() == [0, 1, 2, 3, 4, 4]
    assert features.images.shape == (5, 3) and features.texts.shape == (6, 3)


def test_evaluate_retrieval_counts_the_misleading_caption(colour_folder: Path) -> None:
    data = open_data(f"folder:{colour_folder}")
    features = embed_dataset(ColourModel(), pil_to_tensor, colour_tokens, data, EvalConfig(batch_size=2))
    metrics = recall_at_k(features.images, features.texts, features.text_to_image, (1, 10))
    # 5 of 6 captions find their image first; image 4's second caption ranks image 0 first.
    assert metrics["t2i_r1"] == pytest.approx(5 / 6)
    assert metrics["t2i_r10"] == 1.0
    # Each image's own-colour caption ranks first; image 0 ties with image 4's copy of its caption,
    # and only strictly higher scores push a rank down.
    assert metrics["i2t_r1"] == 1.0


def reference_zeroshot(model, preprocess, tokenizer, images, labels) -> dict[str, float]:
    """One prompt and one image at a time: normalize, average each class's prompts, renormalize, argmax."""
    accuracy = {}
    for attribute in ATTRIBUTES:
        names, templates = attribute_prompts(attribute)
        classes = []
        for name in names:
            prompts = [model.encode_text(tokenizer([t.format(name)]), normalize=True)[0] for t in templates]
            classes.append(F.normalize(torch.stack(prompts).mean(dim=0), dim=0))
        hits = 0
        for image, label in zip(images, labels, strict=True):
            feature = model.encode_image(preprocess(image).unsqueeze(0), normalize=True)[0]
            scores = [float(feature @ c) for c in classes]
            hits += names[scores.index(max(scores))] == label[attribute]
        accuracy[attribute] = hits / len(images)
    return accuracy


def test_zeroshot_of_a_random_model_matches_the_per_image_reference() -> None:
    config = SceneConfig(image_size=32)
    scenes = single_object_scenes(config, "test", 12, seed=3)
    images = [render_scene(s) for s in scenes]
    labels = [{"shape": s.objects[0].shape, "color": s.objects[0].color} for s in scenes]
    model, preprocess, tokenizer = load("tiny-convnet")
    with torch.no_grad():
        acc = evaluate_zeroshot(model, preprocess, tokenizer, images, labels, EvalConfig(batch_size=5))
        expected = reference_zeroshot(model, preprocess, tokenizer, images, labels)
    assert acc == expected  # batches of 5 over 12 images, prompt ensembles and label order all line up


def palette_tokens(texts: list[str]) -> torch.Tensor:
    """A prompt's "tokens" are the RGB of the colour it names."""
    named = [next(PALETTE[word] for word in text.split() if word in PALETTE) for text in texts]
    return torch.tensor(named, dtype=torch.float32)  # [N, 3]


def test_zeroshot_labels_and_prompt_ensembles_line_up() -> None:
    shapes = ["circle", "star", "circle", "square", "cross", "circle"]
    colours = ["red", "blue", "green", "yellow", "purple", "orange"]
    images = [Image.new("RGB", (8, 8), PALETTE[c]) for c in colours]
    labels = [{"shape": s, "color": c} for s, c in zip(shapes, colours, strict=True)]
    acc = evaluate_zeroshot(ColourModel(), pil_to_tensor, palette_tokens, images, labels, EvalConfig(4))
    # Colour prompts point at their colour: all right. Shape prompts average over every colour, so all
    # shapes tie and the first class ("circle") wins: right for the 3 circles only.
    assert acc == {"shape": 0.5, "color": 1.0}


def test_zeroshot_needs_images() -> None:
    with pytest.raises(DataError, match="at least one"):
        evaluate_zeroshot(ColourModel(), pil_to_tensor, colour_tokens, [], [])


def test_cli_retrieval_writes_metrics_and_provenance(colour_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "retrieval.json"
    torch.manual_seed(0)
    result = CliRunner().invoke(main, ["eval", "retrieval", "--model", "tiny-convnet",
                                       "--data", f"folder:{colour_folder}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["t2i_r10"] == 1.0  # 5 images: every image is in the top 10
    torch.manual_seed(0)  # the random weights the CLI's model got
    model, preprocess, tokenizer = load("tiny-convnet")
    features = embed_dataset(model, preprocess, tokenizer, open_data(f"folder:{colour_folder}"), EvalConfig())
    expected = recall_at_k(features.images, features.texts, features.text_to_image, (1, 5, 10))
    assert {k: report[k] for k in METRICS} == pytest.approx(expected, abs=1e-6)
    assert report["model"] == "tiny-convnet" and report["data"] == f"folder:{colour_folder}"
    assert report["version"] and report["images"] == 5 and report["captions"] == 6


def test_cli_zeroshot_on_synthetic_folder(tmp_path: Path) -> None:
    root = tmp_path / "synth"
    write_synthetic(root, 40, seed=1, config=SceneConfig(image_size=32), split="test")
    lines = (root / "scenes.jsonl").read_text().splitlines()
    lone = sum(len(json.loads(line)["objects"]) == 1 for line in lines)
    out = tmp_path / "zs.json"
    torch.manual_seed(0)
    result = CliRunner().invoke(main, ["eval", "zeroshot", "--model", "tiny-convnet",
                                       "--data", f"synthetic:{root}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert lone > 0 and report["images"] == lone and report["bad_images"] == 0
    torch.manual_seed(0)  # the random weights the CLI's model got
    model, preprocess, tokenizer = load("tiny-convnet")
    images, labels, _ = load_labelled_scenes(root)
    with torch.no_grad():
        expected = reference_zeroshot(model, preprocess, tokenizer, images, labels)
    assert {"shape": report["shape"], "color": report["color"]} == expected
    assert report["model"] == "tiny-convnet" and report["version"]


def test_cli_zeroshot_rejects_non_synthetic_data(colour_folder: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["eval", "zeroshot", "--model", "tiny-convnet",
                                       "--data", f"folder:{colour_folder}",
                                       "--out", str(tmp_path / "z.json")])
    assert result.exit_code == 1
    assert "synthetic:DIR" in result.output


def test_cli_unwritable_out_is_one_clear_error(colour_folder: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["eval", "retrieval", "--model", "tiny-convnet",
                                       "--data", f"folder:{colour_folder}", "--out", str(blocker / "r.json")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "cannot write" in result.output and str(blocker) in result.output
