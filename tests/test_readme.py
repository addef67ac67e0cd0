"""The README's Python snippet runs as written (issue 9, item 15), on a tiny model saved where it looks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

import clipforge
from clipforge.errors import ModelInputError
from clipforge.models import create_model

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "the README has one Python snippet"
    return str(blocks[0])


def test_readme_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Main's snippet fed clipforge.tokenize's 77 ids to models with shorter contexts: a crash."""
    clipforge.save(create_model("tiny-convnet"), tmp_path / "runs" / "quickstart" / "hardneg" / "final")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "scene.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "circle" in printed and "triangle" in printed


def test_tokenize_refuses_a_model_it_does_not_fit() -> None:
    model = create_model("tiny-vit").eval()  # a 16-token context
    with pytest.raises(ModelInputError, match="token rows are 77 long.*at most 16.*clipforge.load returns"):
        model.encode_text(clipforge.tokenize(["a photo of a cat"]))
    with pytest.raises(ModelInputError, match="outside the 49408-id vocabulary"):
        model.encode_text(clipforge.tokenize(["a cat"], context_length=16) + 49408)
