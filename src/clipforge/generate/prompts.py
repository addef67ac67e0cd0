"""Where prompts come from: texts given on the command line, a file with one per line, or a
PaintSkills-format skill set (``DIR/{skill}/scenes/{skill}_{split}.json``, see `clipforge skills make`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clipforge.errors import DataError

SKILL_NAMES = ("object", "count", "color", "spatial")


@dataclass(frozen=True)
class Prompt:
    """One text to draw; skill-set prompts also carry their skill and scene id."""

    text: str
    skill: str | None = None
    id: str | None = None


def read_prompt_file(path: Path) -> list[Prompt]:
    """One prompt per non-empty line (surrounding spaces dropped).

    Raises:
        DataError: the file cannot be read or holds no prompt.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read prompts file {path}: {err}") from err
    prompts = [Prompt(line.strip()) for line in lines if line.strip()]
    if not prompts:
        raise DataError(f"no prompts in {path}")
    return prompts


def read_skill_prompts(root: Path, split: str) -> list[Prompt]:
    """The prompts of every skill's `split` in a skill set, in skill order then file order.

    Raises:
        DataError: no skill file of that split exists, or one is malformed (the message names it).
    """
    files = [(skill, root / skill / "scenes" / f"{skill}_{split}.json") for skill in SKILL_NAMES]
    found = [(skill, path) for skill, path in files if path.is_file()]
    if not found:
        raise DataError(f"no skill set in {root}: expected e.g. {files[0][1]}")
    return [prompt for skill, path in found for prompt in _skill_file(skill, path)]


def _skill_file(skill: str, path: Path) -> list[Prompt]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["data"]
        return [Prompt(str(r["text"]), skill, str(r["id"])) for r in records]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"malformed skill file {path}: {type(err).__name__}: {err}") from err
