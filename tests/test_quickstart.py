"""The quickstart in a micro budget: report schema, self-contained HTML, probe numbers = `clipforge probe`."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from clipforge.cli.main import main
from clipforge.errors import ClipforgeError, ConfigError
from clipforge.quickstart import QuickstartConfig, run_quickstart
from clipforge.quickstart.config import scene_config
from clipforge.quickstart.generation import GenerationConfig, train_generation
from clipforge.quickstart.pipeline import _jsonable, train_config
from clipforge.synthetic.scene import DEFAULT_HELDOUT_PAIRS, DEFAULT_HELDOUT_RELATIONS
from clipforge.synthetic.style import StyleConfig
from clipforge.typed import parse_dataclass

RELATIONS = ("left of", "right of", "above", "below")
TAGS = ("relation_swap", "argument_swap", "attribute_swap", "object_swap", "count")
MICRO_GENERATION = GenerationConfig(dvae="tiny-dvae", generator="tiny-generator", dvae_steps=4,
                                    dvae_batch_size=8, steps=6, batch_size=8, early_step=3, n_train=64,
                                    n_prompts=2, candidates=3, reranker_steps=2)
# Test split -> its numbers' key in a model's report block (the first split's are the block itself).
SPLIT_BLOCKS = {"test": "", "test_style": "heldout_style", "test_heldout": "heldout_combinations"}
MICRO = QuickstartConfig(model="tiny-convnet", steps=6, batch_size=16, warmup_steps=2, n_train=200, n_val=32,
                         n_test=40, n_zeroshot=24, eval_every=3, n_examples=3, generation=MICRO_GENERATION)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("quickstart") / "out"
    lines: list[str] = []
    report = run_quickstart(MICRO, out, say=lines.append)
    assert any(line.startswith("[4/4]") for line in lines) and any("left" in line for line in lines)
    return out, report


def _fraction(value: Any) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.mark.slow
def test_micro_quickstart_writes_a_schema_valid_report(micro_run: tuple[Path, dict[str, Any]]) -> None:
    out, report = micro_run
    assert json.loads((out / "report.json").read_text()) == report
    assert set(report) >= {"models", "dataset", "seconds", "version"}
    assert set(report["models"]) == {"plain", "hardneg"}
    assert report["dataset"]["n_test"] == 40 and report["seconds"] > 0 and report["version"]
    assert report["dataset"]["style_splits"] == {"in-style": "test", "held-out style": "test_style",
                                                 "held-out combinations": "test_heldout"}
    combinations = [m["heldout_combinations"] for m in report["models"].values()]
    for metrics in [m.get(key, m) for m in report["models"].values() for key in SPLIT_BLOCKS.values()]:
        assert set(metrics["retrieval"]) == {"t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5"}
        assert set(metrics["zeroshot"]) == {"shape", "color"}
        assert set(metrics["probe"]) == set(TAGS)
        assert all(_fraction(v) for v in [*metrics["retrieval"].values(), *metrics["zeroshot"].values()])
        for block in metrics["probe"].values():
            low, high = block["ci95"]
            assert block["n"] > 0 and _fraction(block["accuracy"]) and low <= block["accuracy"] <= high
            assert all(_fraction(v) for v in block["per_relation"].values())
        assert set(metrics["probe"]["relation_swap"]["per_relation"]) <= set(RELATIONS)
        assert _fraction(metrics["probe"]["relation_swap"]["pair_balanced"]["accuracy"])
        relation = metrics["probe"]["relation_swap"]
        assert 0 < relation["same_color"]["n"] < relation["n"]
        assert _fraction(relation["same_color"]["accuracy"])
        assert metrics["probe"]["object_swap"]["same_color"] is None
        assert all(_fraction(block["blind"]["accuracy"]) for block in metrics["probe"].values())
        named = relation["names_heldout"]  # only the held-out combinations have such items
        assert (named is None) == (metrics not in combinations)
        assert named is None or (0 < named["n"] <= relation["n"] and _fraction(named["accuracy"]))
    for name in ("plain", "hardneg"):
        assert (out / name / "final" / "model.safetensors").is_file()
        curve = report["training"][name]["curve"]
        assert curve["step"] == list(range(1, 7)) and curve["eval_step"] == [3, 6]
        assert all(_fraction(v) for v in curve["val_t2i_r1"])  # read from the engine's own evaluation


@pytest.mark.slow
def test_report_html_is_self_contained(micro_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = micro_run
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 + 3  # plots + example scenes
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "relation_swap" in page and "hardneg" in page
    assert "probe relation_swap pair-balanced" in page and "probe count blind baseline" in page
    assert "probe relation_swap same-colour pairs" in page
    assert "hardneg, held-out style" in page and "object_swap" in page
    assert "hardneg, held-out combinations" in page
    assert "probe relation_swap true caption names a held-out combination" in page


@pytest.mark.slow
def test_probe_cli_gives_the_quickstart_numbers(micro_run: tuple[Path, dict[str, Any]],
                                                tmp_path: Path) -> None:
    out, report = micro_run
    args = ["probe", "--suite", f"synthetic:{out / 'data'}", "--model", f"plain={out / 'plain' / 'final'}",
            "--model", f"hardneg={out / 'hardneg' / 'final'}", "--out", str(tmp_path / "probe")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "  test: " in result.output and "  test_style: " in result.output  # one line per test split
    assert "  test_heldout: " in result.output
    probed = json.loads((tmp_path / "probe" / "probe.json").read_text())
    for name in ("plain", "hardneg"):
        for split, key in SPLIT_BLOCKS.items():
            metrics = report["models"][name].get(key, report["models"][name])
            theirs_split = probed["models"][name]["per_split"][split]
            for tag in TAGS:
                ours, theirs = metrics["probe"][tag], theirs_split["per_tag"][tag]
                assert ours["accuracy"] == theirs["accuracy"] and ours["n"] == theirs["n"]
                assert ours["ci95"] == theirs["ci95"]
            # Only relation-swap items come in antonym pairs, so the split's pair-balanced score is theirs.
            pair_balanced = theirs_split["pair_balanced"]
            assert metrics["probe"]["relation_swap"]["pair_balanced"] == {
                "accuracy": pair_balanced["accuracy"], "ci95": pair_balanced["ci95"]}


def _shows_heldout(record: dict[str, Any]) -> bool:
    """Reference reading of a scenes.jsonl record: it shows a held-out (colour, shape) or (shape,
    relation)."""
    objects = record["objects"]
    kinds = {(obj["color"], obj["shape"]) for obj in objects}
    relations = {(objects[rel["subject"]]["shape"], rel["relation"]) for rel in record["relations"]}
    return bool(kinds & set(DEFAULT_HELDOUT_PAIRS) or relations & set(DEFAULT_HELDOUT_RELATIONS))


def _records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "scenes.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_heldout_combinations_block_scores_the_test_heldout_scenes(
        micro_run: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``heldout_combinations`` block is read from the `test_heldout` scenes, every one of which shows a
    held-out combination, and from no other split: its probe numbers are recomputed here from probe.json's
    per-item scores of those scenes' items, its "names a held-out combination" rows by an independent
    reading of the true captions' words."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from heldout_negatives import heldout_claims

    out, report = micro_run
    records = _records(out / "data")
    split_of = {record["id"]: record["split"] for record in records}
    heldout = [record for record in records if record["split"] == "test_heldout"]
    assert len(heldout) == MICRO.n_test and all(_shows_heldout(record) for record in heldout)
    assert not any(_shows_heldout(record) for record in records if record["split"] != "test_heldout")
    lone = [record for record in _records(out / "zeroshot") if record["split"] == "test_heldout"]
    assert len(lone) == MICRO.n_zeroshot and all(_shows_heldout(record) for record in lone)
    items = [item for item in json.loads((out / "probe" / "probe.json").read_text())["items"]
             if split_of[int(item["id"].split("/")[0].removeprefix("scene"))] == "test_heldout"]
    config = scene_config(MICRO)
    for name in ("plain", "hardneg"):
        block = report["models"][name]["heldout_combinations"]
        assert block["probe"] not in (report["models"][name]["heldout_style"]["probe"],
                                      report["models"][name]["probe"])
        for tag, metrics in block["probe"].items():
            right = [(max(item["scores"][name][1:]) < item["scores"][name][0],
                      any(heldout_claims(item["true"], config))) for item in items if item["tag"] == tag]
            assert metrics["n"] == len(right)
            assert metrics["accuracy"] == pytest.approx(sum(ok for ok, _ in right) / len(right))
            named = [ok for ok, names in right if names]
            assert (metrics["names_heldout"] or {"n": 0})["n"] == len(named)
            if named:
                assert metrics["names_heldout"]["accuracy"] == pytest.approx(sum(named) / len(named))


def test_existing_quickstart_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(ClipforgeError, match="already holds a quickstart"):
        run_quickstart(MICRO, tmp_path, say=lambda line: None)


def test_bad_budget_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="steps"):
        QuickstartConfig(steps=0)
    with pytest.raises(ConfigError, match="negative_kinds"):
        QuickstartConfig(negative_kinds=("colour_swap",))
    with pytest.raises(ConfigError, match="negative_images must be in"):
        QuickstartConfig(negative_images=1.5)


def test_only_hardneg_gets_negative_images() -> None:
    config = QuickstartConfig()
    assert 0 < config.negative_images < 1
    assert train_config(config, hard_negatives=True).loss.negative_images == config.negative_images
    assert train_config(config, hard_negatives=False).loss.negative_images == 0.0


def test_cli_unwritable_out_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["quickstart", "--out", str(blocker / "run"), "--quick"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "cannot write" in result.output and str(blocker) in result.output


@pytest.mark.slow
def test_eval_cli_gives_the_quickstart_numbers(micro_run: tuple[Path, dict[str, Any]],
                                               tmp_path: Path) -> None:
    out, report = micro_run
    model, written = str(out / "hardneg" / "final"), tmp_path / "e.json"
    cases = (("retrieval", "data", ("t2i_r1", "i2t_r5")), ("zeroshot", "zeroshot", ("shape", "color")))
    styles = {split: report["models"]["hardneg"].get(key, report["models"]["hardneg"])
              for split, key in SPLIT_BLOCKS.items()}
    for (kind, data, keys), (split, metrics) in itertools.product(cases, styles.items()):
        spec = f"synthetic:{out / data}:{split}"
        args = ["eval", kind, "--model", model, "--data", spec, "--out", str(written)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        numbers, section = json.loads(written.read_text()), metrics[kind]
        assert all(numbers[key] == pytest.approx(section[key], abs=1e-6) for key in keys)


def _probe(accuracy: float, low: float, high: float) -> dict:
    return {"probe": {"relation_swap": {"accuracy": accuracy, "ci95": [low, high], "n": 100}}}


def test_conclusion_is_computed_from_the_numbers() -> None:
    """Issue 9 item 18 (main's report had no conclusion and no smoke-run notice)."""
    from clipforge.quickstart.report import conclusion

    raised = {"plain": _probe(0.53, 0.50, 0.56), "hardneg": _probe(0.95, 0.93, 0.97)}
    assert conclusion(raised, 1800, 1800) == (
        "Hard negatives raised relation-swap accuracy from 0.53 to 0.95 "
        "(95% CIs [0.50, 0.56] and [0.93, 0.97], disjoint)."
    )
    overlap = {"plain": _probe(0.50, 0.44, 0.56), "hardneg": _probe(0.54, 0.48, 0.59)}
    assert conclusion(overlap, 1800, 1800).startswith("No effect of hard negatives was shown")
    smoke = conclusion(raised, 300, 1800)
    assert smoke.startswith("Smoke run (300 of the default 1800 steps), too short to show the effect")
    assert smoke.count(".") >= 1 and "raised" in smoke
    styled = {name: {**block, "heldout_style": {"probe": {
        "relation_swap": {"accuracy": accuracy}, "object_swap": {"accuracy": 0.97}}}}
        for (name, block), accuracy in zip(raised.items(), (0.51, 0.92), strict=True)}
    assert conclusion(styled, 1800, 1800).endswith(
        "disjoint); in a held-out style 0.51 and 0.92, with object-swap accuracy 0.97 and 0.97.")
    combined = {name: {**block, "heldout_combinations": {"probe": {"relation_swap": {
        "pair_balanced": {"accuracy": accuracy}}}}}
        for (name, block), accuracy in zip(styled.items(), (0.56, 0.88), strict=True)}
    assert conclusion(combined, 1800, 1800).endswith(
        "0.97 and 0.97; on held-out combinations relation-swap pair-balanced 0.56 and 0.88.")





@pytest.mark.parametrize("style", [StyleConfig(rotation=5.0, noise=(0.0, 4.0), heldout_noise=(1.0, 2.0)),
                                   None])
def test_quickstart_json_keeps_the_style_for_resume(style: StyleConfig | None) -> None:
    config = QuickstartConfig(steps=7, style=style)
    saved = json.loads(json.dumps(_jsonable(config)))  # what --resume reads back from quickstart.json
    assert parse_dataclass(QuickstartConfig, saved, "quickstart.json") == config


@pytest.mark.slow
def test_micro_quickstart_has_a_generation_section(micro_run: tuple[Path, dict[str, Any]]) -> None:
    out, report = micro_run
    section = report["generation"]
    for folder in ("dvae/final", "generator/final", "generator/early"):
        assert (out / folder / "model.safetensors").is_file()
    assert (out / "skills" / "metadata.json").is_file()
    assert section["early_step"] == 3 and section["steps"] == 6 and section["candidates"] == 3
    assert section["conclusion"].startswith("Smoke run (6 of the default")
    assert set(section["reconstruction"]["skills"]) == {"object", "count", "color", "spatial"}
    for checkpoint in ("early", "final"):
        result = section["checkpoints"][checkpoint]
        pickers = ["none", "plain", "hardneg", "plain-skill", "hardneg-skill", "oracle"]
        assert list(result["pickers"]) == pickers
        assert set(result) >= {"upper_bound", "shuffle", "chance", "choices"}
        for skills in result["pickers"].values():
            low, high = skills["spatial"]["ci95"]
            assert _fraction(skills["spatial"]["accuracy"]) and low <= skills["spatial"]["accuracy"] <= high
        assert result["choices"]["none"] == [0] * 8  # 2 prompts per skill, the first candidate
    assert "by hardneg fine-tuned on dVAE-seen skill scenes" in section["conclusion"]
    for name in ("plain-skill", "hardneg-skill"):  # fine-tuned on dVAE-seen skill scenes after both trainings
        assert (out / name / "final" / "model.safetensors").is_file()
        run = json.loads((out / name / "config.json").read_text())
        assert run["data"]["dvae"] == str(out / "dvae" / "final")
    curve = section["training"]["generator_curve"]
    assert [point["step"] for point in curve] == [3, 6] and "image_loss" in curve[0]
    page = (out / "report.html").read_text()
    assert "Generation: does re-ranking" in page and "early: oracle (parser best of 3)" in page
    assert "control: shuffled prompts" in page and "dVAE reconstruction of the ground truth" in page


@pytest.mark.slow
def test_generate_and_skills_score_give_the_quickstart_generation_numbers(
        micro_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """`clipforge generate --rerank OUT/hardneg/final --keep 1` keeps the hardneg picker's candidates, and
    `clipforge skills score` on them gives its accuracies."""
    out, report = micro_run
    result = report["generation"]["checkpoints"]["final"]
    runner = CliRunner()
    args = ["generate", "--model", str(out / "generator" / "final"), "--skills", str(out / "skills"),
            "-n", "3", "--keep", "1", "--rerank", str(out / "hardneg" / "final"), "--temperature", "0.3",
            "--cond-scale", "3", "--seed", "0", "--out", str(tmp_path / "gen")]
    assert runner.invoke(main, args).exit_code == 0
    generations = json.loads((tmp_path / "gen" / "generations.json").read_text())
    kept = [next(c["sample"] for c in p["candidates"] if c["rank"] == 0) for p in generations["prompts"]]
    assert kept == result["choices"]["hardneg"]
    args = ["skills", "score", "--skills", str(out / "skills"), "--images", str(tmp_path / "gen"), "--out",
            str(tmp_path / "score")]
    assert runner.invoke(main, args).exit_code == 0
    scored = json.loads((tmp_path / "score" / "skills.json").read_text())["skills"]
    for skill, block in result["pickers"]["hardneg"].items():
        assert (scored[skill]["accuracy"], scored[skill]["ci95"]) == (block["accuracy"], block["ci95"])


def test_generation_training_resumes_bit_exactly(tmp_path: Path) -> None:
    """An interrupted generation stage (the transformer's last checkpoint and final/ lost) continues from
    its newest checkpoint and ends with the same weights; the finished dVAE is kept."""
    train_generation(MICRO_GENERATION, 0, tmp_path, say=lambda line: None)
    weights = {name: load_file(tmp_path / "generator" / name / "model.safetensors")
               for name in ("final", "early")}
    dvae_time = (tmp_path / "dvae" / "final" / "model.safetensors").stat().st_mtime_ns
    for name in ("final", "early", "checkpoints/step_000006"):
        shutil.rmtree(tmp_path / "generator" / name)
    lines: list[str] = []
    train_generation(MICRO_GENERATION, 0, tmp_path, say=lines.append, resume=True)
    assert (tmp_path / "dvae" / "final" / "model.safetensors").stat().st_mtime_ns == dvae_time
    assert not any("dvae" in line for line in lines)
    for name, expected in weights.items():
        got = load_file(tmp_path / "generator" / name / "model.safetensors")
        assert all(torch.equal(got[key], expected[key]) for key in expected)
