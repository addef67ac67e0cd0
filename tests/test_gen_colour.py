"""benchmarks/gen_colour.py: outcome classes, n-gram ids against a plain loop, and an end-to-end run."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import clipforge
from clipforge.models.registry import create_any_model
from clipforge.skills import SkillSetConfig, make_skill_set

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gen_colour  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_outcome_classes_follow_the_colour_rule() -> None:
    ask = ("star", "red")
    assert gen_colour.outcome(*ask, []) == ("no object", None)
    assert gen_colour.outcome(*ask, [("circle", "blue"), ("star", "red")]) == ("right", None)
    wrong = ("shape right, wrong colour", "orange")
    assert gen_colour.outcome(*ask, [("star", "orange"), ("star", "red")]) == wrong
    assert gen_colour.outcome(*ask, [("star", None)]) == ("shape right, no colour", None)
    assert gen_colour.outcome(*ask, [("circle", "blue"), ("cross", "red")]) == (
        "other shape in the asked colour", "cross")
    assert gen_colour.outcome(*ask, [(None, "blue")]) == ("other shape, other colour", None)


def test_pattern_ids_match_a_plain_loop_and_unseen_shares_count_them() -> None:
    grid, codes = 3, 5
    tokens = np.random.default_rng(0).integers(0, codes, size=(4, grid * grid))
    ids = gen_colour.pattern_ids(tokens, grid, codes)
    for n, row in enumerate(tokens):
        t = row.reshape(grid, grid)
        patches = {tuple(t[r:r + 2, c:c + 2].ravel()) for r in range(grid - 1) for c in range(grid - 1)}
        decoded = {tuple(int(i) // codes**p % codes for p in (3, 2, 1, 0)) for i in ids["2x2 patch"][n]}
        assert decoded == patches
        assert sorted(ids["pair down"][n]) == sorted(t[r, c] * codes + t[r + 1, c]
                                                     for r in range(grid - 1) for c in range(grid))
    seen = np.unique(ids["pair across"][:2])
    shares = gen_colour.unseen_shares(ids["pair across"], seen)
    assert shares[:2].tolist() == [0.0, 0.0]
    expected = [np.mean([i not in set(seen.tolist()) for i in row]) for row in ids["pair across"][2:]]
    assert shares[2:] == pytest.approx(expected)


def test_cell_codes_and_colour_table() -> None:
    tokens = np.arange(16)  # a 4x4 grid of 8-px cells, code = cell index
    assert gen_colour.cell_codes(tokens, (7, 0, 9, 8), 8, 4).tolist() == [0, 1]  # x 7..8 spans cells 0-1
    assert gen_colour.cell_codes(tokens, (8, 8, 24, 16), 8, 4).tolist() == [5, 6]
    objects = [("red", (0, 0, 8, 8)), ("blue", (0, 0, 16, 8))]
    table = gen_colour.code_colour_table(np.stack([tokens, tokens]), objects, ["red", "blue"], 8, 4, 16)
    assert table[0].tolist() == [1, 1] and table[1].tolist() == [0, 1] and table[2:].sum() == 0


def test_end_to_end_reads_the_ground_truth_as_right(tmp_path: Path) -> None:
    skills = tmp_path / "skills"
    make_skill_set(skills, SkillSetConfig(n_per_skill=4, image_size=32))
    model = create_any_model("tiny-generator")
    folder = clipforge.save(model, tmp_path / "gen")
    tokens = torch.randint(0, 16, (30, 64))
    text = torch.zeros(30, 12, dtype=torch.long)
    save_file({"image": tokens, "text": text}, str(tmp_path / "p.safetensors"))
    out = tmp_path / "colour.json"
    gen_colour.main(["--generator", str(folder), "--skills", str(skills), "--train-tokens",
                     str(tmp_path / "p.safetensors"), "--n", "2", "--json", str(out)])
    record = json.loads(out.read_text())
    truth = record["outcomes"]["ground truth"]
    assert sum(sum(g.values()) for g in truth.values()) == 4
    assert all(set(g) <= {"right"} for g in truth.values())
    assert sum(sum(g.values()) for g in record["outcomes"]["samples"].values()) == 8
