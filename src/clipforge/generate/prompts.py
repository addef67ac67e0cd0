"""Where prompts come from: texts given on the command line, a file with one per line, or a
PaintSkills-format skill set (``DIR/{skill}/scenes/{skill}_{split}.json``, see `clipforge skills make`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipforge.errors import DataError
from clipforge.skills import load_skill_set


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
    records = load_skill_set(root, split)
    return [Prompt(r.text, skill, r.id) for skill, rs in records.items() for r in rs]
