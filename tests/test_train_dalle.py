"""Both DALL-E stages trained by the one training engine: dVAE and transformer tasks, token cache, resume."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import clipforge
from clipforge.errors import ConfigError, DataError
from clipforge.models.dvae import DVAE
from clipforge.models.generator import Generator
from clipforge.train import load_config, load_run_config, train

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
COMMON = ["data.n_val=16", "train.batch_size=8", "train.threads=1", "train.warmup_steps=1",
          "train.log_every=1"]


def _dvae_config(*overrides: str):
    return load_config(REPO / "configs" / "dvae-skills.toml",
                       ["model.name=tiny-dvae", "train.steps=4", "eval.every=2", *COMMON, *overrides])


def _prior_config(dvae: Path | str, cache: Path, *overrides: str):
    return load_config(REPO / "configs" / "generator-skills.toml",
                       ["model.name=tiny-generator", f"prior.dvae={dvae}", f"prior.token_cache={cache}",
                        "data.n_train=40", "train.steps=6", "eval.every=3", *COMMON, *overrides])


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dvae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("dvae") / "run"
    train(_dvae_config(), run)
    return run


def test_dvae_trains_logs_usage_and_saves_a_loadable_final(dvae_run: Path) -> None:
    steps = [r for r in _log(dvae_run) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert set(steps[0]) >= {"recon_mse", "kl", "temperature", "beta", "perplexity", "dead_codes"}
    assert steps[0]["temperature"] == 1.0 and steps[1]["temperature"] < 1.0  # the anneal runs on steps
    evals = [r["eval"] for r in _log(dvae_run) if "eval" in r]
    assert len(evals) == 2 and set(evals[0]) == {"recon_mse", "perplexity", "dead_codes"}
    model = clipforge.load_folder(dvae_run / "final")
    assert isinstance(model, DVAE) and model.config == clipforge.models.registry.get_any_config("tiny-dvae")


def test_prior_embeds_the_trained_dvae_and_caches_its_tokens(dvae_run: Path, tmp_path: Path) -> None:
    train(_prior_config(dvae_run / "final", tmp_path / "cache"), tmp_path / "prior")
    generator = clipforge.load_folder(tmp_path / "prior" / "final")
    dvae = clipforge.load_folder(dvae_run / "final")
    assert isinstance(generator, Generator) and isinstance(dvae, DVAE)
    for name, tensor in dvae.state_dict().items():
        assert torch.equal(generator.dvae.state_dict()[name], tensor), name  # frozen: unchanged by training
    assert len(list((tmp_path / "cache").glob("pairs-*.safetensors"))) == 2  # training pool and held-out
    steps = [r for r in _log(tmp_path / "prior") if "loss" in r]
    assert set(steps[0]) >= {"text_loss", "image_loss"} and len(steps) == 6


def test_prior_resumes_bit_for_bit(dvae_run: Path, tmp_path: Path) -> None:
    config = _prior_config(dvae_run / "final", tmp_path / "cache", "train.checkpoint_every=3")
    train(config, tmp_path / "full")
    partial = tmp_path / "partial"  # died after step 4: the step-3 checkpoint and a log to step 4 survive
    shutil.copytree(tmp_path / "full", partial)
    shutil.rmtree(partial / "final")
    shutil.rmtree(partial / "checkpoints" / "step_000006")
    lines = (partial / "log.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= 4]
    (partial / "log.jsonl").write_text("".join(line + "\n" for line in kept))
    train(load_run_config(partial), partial, resume=True)
    full, resumed = (load_file(str(r / "final" / "model.safetensors")) for r in (tmp_path / "full", partial))
    for name, tensor in full.items():
        assert torch.equal(tensor, resumed[name]), name
    def losses(run: Path) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in _log(run) if "loss" in r]

    assert losses(partial) == losses(tmp_path / "full") and len(losses(partial)) == 6


def test_prior_learns_aligned_scenes_when_asked(dvae_run: Path, tmp_path: Path) -> None:
    from clipforge.dalle.batches import encode_scenes
    from clipforge.dalle.scenes import skill_scene
    from clipforge.train.dalle_tasks import PriorTask

    task = PriorTask(_prior_config(dvae_run / "final", tmp_path / "cache", "prior.align_px=4"), print)
    assert task.scenes.align_px == 4
    scenes = [skill_scene(task.scenes, 0, i) for i in range(40)]  # the training pool: data.seed 0
    assert all(o.bbox[0] % 4 == 0 and o.bbox[1] % 4 == 0 for s in scenes for o in s.scene.objects)
    expected = encode_scenes(task.model.dvae, task.tokenizer, scenes)
    assert torch.equal(task.batches.pairs.image, expected.image)
    with pytest.raises(ConfigError, match="align_px"):
        _prior_config(dvae_run / "final", tmp_path / "cache", "prior.align_px=-1")


def test_wrong_models_and_data_are_one_line_errors(dvae_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task 'dvae' trains a DVAE; model.name 'tiny-vit' is a CLIP"):
        train(_dvae_config("model.name=tiny-vit"), tmp_path / "a")
    with pytest.raises(DataError, match="coco spec 'coco:x' must look like"):
        train(_dvae_config("data.source=coco:x"), tmp_path / "c")
    other = clipforge.save(clipforge.models.registry.create_any_model("skills-dvae-32"), tmp_path / "big")
    with pytest.raises(ConfigError, match="not a dVAE with the generator's dvae architecture"):
        train(_prior_config(other, tmp_path / "cache"), tmp_path / "b")


@pytest.mark.slow
def test_prior_sigkill_then_resume_ends_bit_identical(dvae_run: Path, tmp_path: Path, sigkill_run) -> None:
    config = REPO / "configs" / "generator-skills.toml"
    sets = ["model.name=tiny-generator", f"prior.dvae={dvae_run / 'final'}", f"prior.token_cache={tmp_path}",
            "data.n_train=64", "data.n_val=16", "train.batch_size=8", "train.threads=1", "train.steps=40",
            "train.checkpoint_every=10", "train.log_every=1", "eval.every=20"]
    sigkill_run([str(config), *[arg for item in sets for arg in ("--set", item)]], tmp_path, kill_at=20)
    expected = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    got = load_file(str(tmp_path / "killed" / "final" / "model.safetensors"))
    assert set(expected) == set(got)
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    assert [r["step"] for r in _log(tmp_path / "killed") if "loss" in r] == list(range(1, 41))


def _chained_recipe(tmp_path: Path, dvae_toml: str, prior_toml: str) -> Generator:
    """One step of a dVAE config, then one step of the generator config embedding that dVAE; the generator."""
    dvae = load_config(REPO / "configs" / dvae_toml, ["train.steps=1", "eval.every=1", *COMMON])
    train(dvae, tmp_path / "dvae")
    prior = load_config(REPO / "configs" / prior_toml,
                        [f"prior.dvae={tmp_path / 'dvae' / 'final'}", f"prior.token_cache={tmp_path / 'c'}",
                         "data.n_train=8", "train.steps=1", "eval.every=1", *COMMON])
    train(prior, tmp_path / "gen")
    generator = clipforge.load_folder(tmp_path / "gen" / "final")
    assert isinstance(generator, Generator)
    return generator


def test_fine_grid_recipe_chains_its_dvae_into_its_generator(tmp_path: Path) -> None:
    """configs/dvae-skills-g16.toml trains the dVAE that configs/generator-skills-g16.toml's model embeds."""
    from clipforge.models.registry import get_any_config

    generator = _chained_recipe(tmp_path, "dvae-skills-g16.toml", "generator-skills-g16.toml")
    assert generator.config.image_tokens == 256
    assert generator.config.dvae == get_any_config("skills-dvae-32-g16")


def test_large_recipe_builds_the_wider_generator_over_the_skills_dvae(tmp_path: Path) -> None:
    """configs/generator-skills-large.toml: the skills generator, 192 wide, over the skills dVAE."""
    from dataclasses import replace

    from clipforge.models.registry import get_any_config

    shipped = load_config(REPO / "configs" / "generator-skills-large.toml").train
    assert 400 % shipped.checkpoint_every == 0  # the early (weak) checkpoint, step 400, is written ...
    assert shipped.keep_checkpoints * shipped.checkpoint_every >= shipped.steps  # ... and never pruned
    generator = _chained_recipe(tmp_path, "dvae-skills.toml", "generator-skills-large.toml")
    assert generator.config == replace(get_any_config("skills-generator-32"), width=192, heads=6)
