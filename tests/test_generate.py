import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import clipforge
from clipforge.cli.main import main
from clipforge.errors import ConfigError, DataError
from clipforge.generate import GenerateConfig, generate
from clipforge.generate.prompts import read_prompt_file, read_skill_prompts
from clipforge.generate.rerank import ClipReranker, rank_order
from clipforge.models.dvae import DVAE
from clipforge.models.registry import create_any_model, get_any_config
from clipforge.skills import (
    SkillSetConfig,
    load_skill_set,
    make_skill_set,
    read_images,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clipforge.save(create_any_model("tiny-generator"), tmp_path_factory.mktemp("gen") / "model")


def _skill_set(root: Path) -> Path:
    """A real skill set (two val prompts per skill, 32 px), as `clipforge skills make` writes it."""
    make_skill_set(root, SkillSetConfig(n_per_skill=2, image_size=32))
    return root


def test_skill_set_prompts_keep_skill_and_id(tmp_path: Path) -> None:
    prompts = read_skill_prompts(_skill_set(tmp_path), "val")
    records = load_skill_set(tmp_path, "val")
    assert [(p.skill, p.id, p.text) for p in prompts] == [
        (skill, r.id, r.text) for skill in ("object", "count", "color", "spatial") for r in records[skill]]
    assert len(prompts) == 8
    with pytest.raises(DataError, match="no skill set|no skill file"):
        read_skill_prompts(tmp_path / "nothing", "val")
    (tmp_path / "color" / "scenes" / "color_val.json").write_text("{}")
    with pytest.raises(DataError, match="color_val.json"):
        read_skill_prompts(tmp_path, "val")


def test_prompt_file(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a red star\n\n  two circles \n")
    assert [p.text for p in read_prompt_file(path)] == ["a red star", "two circles"]
    path.write_text("\n")
    with pytest.raises(DataError, match="no prompts"):
        read_prompt_file(path)


def test_generate_reranks_keeps_the_best_and_records_everything(tmp_path: Path, generator_dir: Path) -> None:
    clip = str(clipforge.save(clipforge.create_model("tiny-vit"), tmp_path / "clip"))
    config = GenerateConfig(str(generator_dir), tmp_path / "out", skills=_skill_set(tmp_path / "skills"), n=4,
                            rerank=clip, keep=2, seed=3)
    report = generate(config)
    assert json.loads((tmp_path / "out" / "generations.json").read_text()) == report
    reranker = ClipReranker(clip)
    for prompt in report["prompts"]:
        candidates = prompt["candidates"]
        scores = np.array([c["score"] for c in candidates])
        assert [c["rank"] for c in candidates] == rank_order(scores).tolist()
        kept = sorted((c for c in candidates if c["file"]), key=lambda c: c["rank"])
        names = [f"{prompt['skill']}/image_{prompt['id']}_{r}.png" for r in (0, 1)]
        assert [c["file"] for c in kept] == names
        assert min(c["score"] for c in kept) >= max(c["score"] for c in candidates if not c["file"])
        best = Image.open(tmp_path / "out" / kept[0]["file"])
        assert best.size == (32, 32)
        rescored = reranker.scores([best.convert("RGB")], [prompt["text"]])[0]
        assert rescored == pytest.approx(kept[0]["score"], abs=1e-4)  # the file is the image that was scored
        assert (tmp_path / "out" / prompt["grid"]).is_file()
    again = generate(GenerateConfig(str(generator_dir), tmp_path / "again", skills=tmp_path / "skills", n=4,
                                    seed=3))  # no re-ranking: all four kept, in draw order
    for prompt, plain in zip(report["prompts"], again["prompts"], strict=True):
        for ranked, drawn in zip(prompt["candidates"], plain["candidates"], strict=True):
            assert ranked["seed"] == drawn["seed"] and drawn["file"].endswith(f"_{drawn['sample']}.png")
            if ranked["file"]:  # the same candidate, written under its rank
                same = [np.asarray(Image.open(tmp_path / d / c["file"])) for d, c in
                        (("out", ranked), ("again", drawn))]
                assert np.array_equal(*same)


def test_cli_prompts_and_errors(tmp_path: Path, generator_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["generate", "--model", str(generator_dir), "--prompt", "a red star",
                                  "--prompt", "two circles", "-n", "3", "--cond-scale", "2", "--top-k", "8",
                                  "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o" / "images").iterdir()) == [
        f"{p:04d}_{k}.png" for p in (0, 1) for k in range(3)]
    record = json.loads((tmp_path / "o" / "generations.json").read_text())
    assert record["sampling"]["cond_scale"] == 2.0 and record["prompts"][1]["text"] == "two circles"
    both = runner.invoke(main, ["generate", "--model", str(generator_dir), "--prompt", "x", "--skills",
                                str(tmp_path), "--out", str(tmp_path / "e")])
    assert both.exit_code != 0 and "exactly one of" in both.output and "Traceback" not in both.output
    clip = clipforge.save(clipforge.create_model("tiny-vit"), tmp_path / "clip")
    wrong = runner.invoke(main, ["generate", "--model", str(clip), "--prompt", "x",
                                 "--out", str(tmp_path / "w")])
    assert wrong.exit_code != 0 and "must be a generator folder" in wrong.output
    with pytest.raises(ConfigError, match="keep"):
        GenerateConfig(str(generator_dir), tmp_path, prompts=("x",), n=2, keep=3)


def test_readme_generate_line_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    first = "clipforge generate --model tiny-generator"
    line = next(row for row in readme.splitlines() if row.startswith(first))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, shlex.split(line)[1:])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "gen-demo" / "images").glob("*.png"))) == 8


def test_rerank_experiment_scores_every_picker_under_the_oracle_ceiling(
        tmp_path: Path, generator_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipforge.generate import experiment

    clip = str(clipforge.save(clipforge.create_model("tiny-vit"), tmp_path / "clip"))
    skills = _skill_set(tmp_path / "skills")
    records = load_skill_set(skills, "val")
    truth = read_images(skills, records)
    blank = Image.new("RGB", (32, 32))

    def candidates(model, prompts, n, seed, sampling):  # prompt i: its true render at position i % 2
        rows = []
        for i, prompt in enumerate(prompts):
            row = [blank] * n
            row[i % 2] = truth.images[prompt.skill][prompt.id][0]
            rows.append(row)
        return rows

    monkeypatch.setattr(experiment, "draw_candidates", candidates)
    config = experiment.RerankExperiment(str(generator_dir), skills, (("tiny", clip),), n=3, seed=1)
    result = experiment.run_rerank_experiment(config)
    assert list(result["pickers"]) == ["none", "tiny", "oracle"]
    for skill in ("object", "count", "color", "spatial"):
        assert result["pickers"]["none"][skill]["accuracy"] == 0.5  # the first of each skill's two prompts
        assert result["pickers"]["oracle"][skill]["accuracy"] == 1.0
        assert result["pickers"]["tiny"][skill]["accuracy"] <= 1.0
        assert result["upper_bound"][skill]["accuracy"] == 1.0
        for picker in ("none", "tiny", "oracle"):  # per-prompt verdicts average to the evaluator's accuracy
            passed = result["pickers"][picker][skill]["passed"]
            assert np.mean(list(passed.values())) == result["pickers"][picker][skill]["accuracy"]
        gain = experiment.paired_gain(result, "oracle", "none", skill)
        assert gain["gain"] == 0.5 and gain["n_prompts"] == 2 and gain["ci95"][0] <= 0.5 <= gain["ci95"][1]
        first = sorted(result["pickers"]["none"][skill]["passed"])[:1]  # the prompt `none` gets right
        assert experiment.paired_gain(result, "oracle", "none", skill, first)["gain"] == 0.0
        assert experiment.paired_gain(result, "none", "oracle", skill)["gain"] == -0.5
    with pytest.raises(ConfigError, match="distinct re-ranker names"):
        experiment.RerankExperiment(str(generator_dir), skills, (("oracle", clip),))


def test_rerank_experiment_saves_its_candidates_and_rescores_them_without_sampling(
        tmp_path: Path, generator_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from clipforge.generate import experiment

    clip = str(clipforge.save(clipforge.create_model("tiny-vit"), tmp_path / "clip"))
    saved = tmp_path / "candidates"
    skills = _skill_set(tmp_path / "skills")
    config = experiment.RerankExperiment(str(generator_dir), skills, (("tiny", clip),), n=2, seed=1,
                                         candidates=saved)
    first, drawn = experiment.rerank_experiment(config)
    assert len(list(saved.glob("*/image_*_*.png"))) == 2 * len(drawn.prompts)

    def no_sampling(*args: object) -> None:
        raise AssertionError("saved candidates were sampled again")

    monkeypatch.setattr(experiment, "draw_candidates", no_sampling)
    again, reread = experiment.rerank_experiment(config)
    assert again == first
    for group, back in zip(drawn.candidates, reread.candidates, strict=True):
        assert [np.asarray(im).tolist() for im in group] == [np.asarray(im).tolist() for im in back]
    with pytest.raises(ConfigError, match="other seed"):
        experiment.rerank_experiment(replace(config, seed=2))


class _Lookup(DVAE):
    """A perfect 'dVAE': each image's tokens are its index in a table, decoded back exactly."""

    def __init__(self) -> None:
        super().__init__(get_any_config("tiny-dvae"))
        self.table: list[torch.Tensor] = []

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.table += list(images)
        first = len(self.table) - len(images)
        return torch.arange(first, len(self.table))[:, None].repeat(1, 64) % 16  # [B, G * G]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.table[-len(tokens):])


def test_reconstruction_report_scores_what_the_dvae_draws_back(tmp_path: Path) -> None:
    from clipforge.generate.experiment import reconstruction_report

    skills = _skill_set(tmp_path / "skills")
    perfect = reconstruction_report(_Lookup(), skills)
    assert all(block["accuracy"] == 1.0 for block in perfect["skills"].values())
    assert perfect["dead_codes"] == 8 and perfect["perplexity"] == pytest.approx(8.0)  # codes 0..7, 64 each
    random_dvae = reconstruction_report(create_any_model("tiny-dvae").eval(), skills)
    assert all(block["accuracy"] < 1.0 for block in random_dvae["skills"].values())


def test_sampling_sweep_scores_every_candidate_not_just_the_first(
        tmp_path: Path, generator_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/gen_sampling_sweep.py: accuracy is the mean pass rate over all n candidates of a prompt."""
    import argparse
    import sys

    from clipforge.generate import job

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gen_sampling_sweep

    skills = _skill_set(tmp_path / "skills")
    truth = read_images(skills, load_skill_set(skills, "val"))
    blank = Image.new("RGB", (32, 32))

    def candidates(model, prompts, n, seed, sampling):  # the true render second: first sample always wrong
        assert sampling.temperature == 0.5 and sampling.top_k == 4 and sampling.cond_scale == 2.0
        return [[blank, truth.images[p.skill][p.id][0]] for p in prompts]

    monkeypatch.setattr(job, "draw_candidates", candidates)
    out = tmp_path / "sweep.json"
    gen_sampling_sweep.main(["--generator", str(generator_dir), "--skills", str(skills), "--n", "2",
                             "--setting", "T0.5,k4,cs2", "--json", str(out)])
    [setting] = json.loads(out.read_text())["settings"]
    for block in setting["skills"].values():
        assert (block["accuracy"], block["best_of_n"]) == (0.5, 1.0)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown setting"):
        gen_sampling_sweep.parse_setting("q3")
