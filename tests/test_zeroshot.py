"""Zero-shot classification: the prompt-ensemble math, the probabilities, and the `classify` CLI."""

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import clipforge
from clipforge.cli.main import main
from clipforge.errors import ConfigError
from clipforge.eval.templates import OPENAI_IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, get_templates


def test_templates_ship_as_data() -> None:
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 and len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    assert len(SIMPLE_TEMPLATES) == 7 and set(SIMPLE_TEMPLATES) <= set(OPENAI_IMAGENET_TEMPLATES)
    assert all(t.count("{}") == 1 for t in OPENAI_IMAGENET_TEMPLATES)
    with pytest.raises(KeyError, match="unknown template set"):
        get_templates("nope")


def test_classifier_is_the_renormalized_mean_of_normalized_prompts() -> None:
    model, _, tokenizer = clipforge.load("tiny-vit")
    names, templates = (
        ["cat", "dog", "red car"],
        ["a photo of a {}.", "itap of the {}.", "a {} in a video game."],
    )
    weights = clipforge.zero_shot_classifier(model, tokenizer, names, templates, batch_size=2)
    with torch.no_grad():
        for c, name in enumerate(names):
            prompts = [
                F.normalize(model.encode_text(tokenizer([t.format(name)])), dim=-1)[0] for t in templates
            ]
            expected = F.normalize(torch.stack(prompts).mean(dim=0), dim=0)
            assert torch.allclose(weights[:, c], expected, atol=1e-6)
    images = torch.randn(4, 3, 32, 32)
    probs = clipforge.classify(model, images, weights)
    assert probs.shape == (4, 3) and torch.allclose(probs.sum(dim=1), torch.ones(4), atol=1e-6)
    with torch.no_grad():
        logits = model.logit_scale.exp() * model.encode_image(images, normalize=True) @ weights
    assert torch.allclose(probs, logits.softmax(dim=1), atol=1e-6)


def test_bad_labels_are_clear_errors() -> None:
    model, _, tokenizer = clipforge.load("tiny-vit")
    with pytest.raises(ConfigError, match="label list is empty"):
        clipforge.zero_shot_classifier(model, tokenizer, [], SIMPLE_TEMPLATES)
    with pytest.raises(ConfigError, match="empty label"):
        clipforge.zero_shot_classifier(model, tokenizer, ["cat", " "], SIMPLE_TEMPLATES)


def test_classify_cli_prints_a_table_and_names_bad_files(tmp_path) -> None:
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "red.png")
    (tmp_path / "notes.txt").write_text("not an image")
    clipforge.save(clipforge.create_model("tiny-vit"), tmp_path / "model")  # a saved model: no warning
    model = str(tmp_path / "model")
    runner = CliRunner()
    ok = runner.invoke(
        main, ["classify", "--model", model, "--labels", "cat,dog,car", str(tmp_path / "red.png")]
    )
    assert ok.exit_code == 0, ok.output
    row = ok.output.strip().splitlines()[0].split()
    assert row[0].endswith("red.png") and {row[1], row[3], row[5]} == {"cat", "dog", "car"}
    bad = runner.invoke(
        main, ["classify", "--model", model, "--labels", "cat", str(tmp_path / "notes.txt")]
    )
    assert bad.exit_code == 1 and "not a readable image" in bad.output and "notes.txt" in bad.output
    empty = runner.invoke(
        main, ["classify", "--model", model, "--labels", " , ", str(tmp_path / "red.png")]
    )
    assert empty.exit_code == 1 and empty.output.count("\n") == 1 and "label list is empty" in empty.output
