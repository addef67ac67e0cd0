"""Re-rankers that have seen generated-looking images: training on dVAE-seen scenes, and the diagnoses."""

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

import clipforge
from clipforge.dalle.batches import round_trip
from clipforge.dalle.scenes import skill_scene
from clipforge.data.transforms import Preprocess
from clipforge.errors import ConfigError, DataError
from clipforge.generate.diagnose import pairwise_accuracy, relation_accuracy, swap_relation
from clipforge.models.registry import create_any_model
from clipforge.quickstart.generation import (
    DVAE_SEEN,
    GenerationConfig,
    dvae_reranker_run,
    dvae_rerankers,
    train_dvae_reranker,
)
from clipforge.synthetic.dataset import image_tensor, render_scene
from clipforge.synthetic.scene import OPPOSITE
from clipforge.synthetic.text import RELATION_WORDS
from clipforge.train.config import DataSection, LossSection, ModelSection, TrainRunConfig, TrainSection
from clipforge.train.dalle_tasks import HELD_OUT_SEED_OFFSET, skill_scenes
from clipforge.train.dvae_views import SkillSceneItems
from clipforge.train.loop import train
from clipforge.train.sources import synthetic_pairs
from clipforge.train.state import RUN_CONFIG

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dvae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return clipforge.save(create_any_model("tiny-dvae"), tmp_path_factory.mktemp("dvae") / "final")


def _run(dvae: str, **train: int) -> TrainRunConfig:
    return TrainRunConfig(model=ModelSection("tiny-convnet"),
                          data=DataSection(n_train=16, n_val=8, dvae=dvae),
                          train=TrainSection(batch_size=4, threads=1, log_every=1, **train),
                          loss=LossSection(hard_negatives=1, negative_kinds=("relation_swap",)))


def test_dvae_seen_batches_are_the_round_trip_of_the_scenes(dvae_dir: Path) -> None:
    model = create_any_model("tiny-convnet")
    dataset, collate = synthetic_pairs(_run(str(dvae_dir)), model, "train", 16, 1)
    plain_dataset, plain_collate = synthetic_pairs(_run(""), model, "train", 16, 1)
    items = [dataset[i] for i in range(4)]
    batch, plain = collate(items), plain_collate([plain_dataset[i] for i in range(4)])
    rendered = [render_scene(dataset.scene(i)) for i in range(4)]
    expected = torch.stack([Preprocess(model.config.preprocess)(im)
                            for im in round_trip(clipforge.load_folder(dvae_dir), rendered)])
    torch.testing.assert_close(batch.images, expected)
    assert not torch.allclose(batch.images, plain.images)  # the round trip changed what the model sees
    assert torch.equal(batch.tokens, plain.tokens)
    assert torch.equal(batch.negative_tokens, plain.negative_tokens)


def test_training_on_dvae_seen_scenes_resumes_bit_exactly(tmp_path: Path, dvae_dir: Path) -> None:
    whole = train(_run(str(dvae_dir), steps=4), tmp_path / "whole", say=lambda _: None)
    train(_run(str(dvae_dir), steps=4, checkpoint_every=2), tmp_path / "cut", say=lambda _: None)
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert whole.steps == 4 and all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    a = clipforge.load_folder(tmp_path / "whole" / "final").state_dict()
    b = clipforge.load_folder(tmp_path / "cut" / "final").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dvae_option_refuses_what_it_cannot_see(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.dvae works with"):
        TrainRunConfig.from_dict({"data": {"source": "flickr8k:/x:train", "dvae": "d"}})
    clip = clipforge.save(create_any_model("tiny-convnet"), tmp_path / "clip")
    with pytest.raises(ConfigError, match="data.dvae must be a dVAE folder"):
        synthetic_pairs(_run(str(clip)), create_any_model("tiny-convnet"), "train", 16, 0)


def test_stage_rerankers_differ_only_in_their_hard_negatives(tmp_path: Path) -> None:
    base = _run("")
    kinds = ("relation_swap", "attribute_swap")
    hard = replace(base, loss=LossSection(hard_negatives=2, negative_kinds=kinds))
    config = GenerationConfig(reranker_steps=40)
    plain_run = dvae_reranker_run(config, replace(base, loss=LossSection()), tmp_path, "plain").to_dict()
    hard_run = dvae_reranker_run(config, hard, tmp_path, "hardneg").to_dict()
    assert plain_run["model"]["name"] == str(tmp_path / "plain" / "final")
    assert plain_run["data"]["dvae"] == str(tmp_path / "dvae" / "final")
    assert plain_run["data"]["style"] is None and plain_run["data"]["source"] == "skill-scenes"
    assert plain_run["train"]["steps"] == 40
    differing = {k for k in plain_run if plain_run[k] != hard_run[k]}
    assert differing == {"model", "loss"}
    assert {k for k in plain_run["model"] if plain_run["model"][k] != hard_run["model"][k]} == {"name"}


def test_stage_fine_tunes_both_rerankers(tmp_path: Path, dvae_dir: Path) -> None:
    for name, kinds in (("plain", ()), ("hardneg", ("relation_swap",))):
        run = replace(_run("", steps=2), loss=LossSection(hard_negatives=len(kinds), negative_kinds=kinds))
        train(run, tmp_path / name, say=lambda _: None)
    (tmp_path / "dvae").symlink_to(dvae_dir.parent)
    config = GenerationConfig(reranker_steps=2)
    assert dvae_rerankers(config) == ("plain-skill", "hardneg-skill")
    assert dvae_rerankers(replace(config, reranker_steps=0)) == ()
    for name in ("plain", "hardneg"):
        train_dvae_reranker(config, tmp_path, name, lambda _: None)
        tuned = json.loads((tmp_path / f"{name}{DVAE_SEEN}" / RUN_CONFIG).read_text())
        assert tuned["data"]["dvae"] == str(tmp_path / "dvae" / "final")
        assert (tmp_path / f"{name}{DVAE_SEEN}" / "final").is_dir()


def test_swap_relation() -> None:
    assert swap_relation("a star to the left of a circle") == "a star to the right of a circle"
    assert swap_relation("a cross below a square") == "a cross above a square"
    with pytest.raises(DataError, match="cannot swap"):
        swap_relation("two red stars")


def test_pairwise_accuracy_is_the_per_prompt_auc() -> None:
    rng = np.random.default_rng(0)
    scores, right = rng.integers(0, 4, 16).astype(float), rng.random(16) < 0.4  # ties on purpose
    assert pairwise_accuracy(scores, right) == pytest.approx(roc_auc_score(right, scores))
    assert pairwise_accuracy(np.array([3.0, 1.0, 2.0]), np.array([True, False, False])) == 1.0
    assert pairwise_accuracy(scores, np.ones(16, dtype=bool)) is None


class _LeftLover:
    """Scores "left" captions 1, "right" ones 0, anything else 0.5."""

    def scores(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        return np.array([1.0 if "left" in t else 0.0 if "right" in t else 0.5 for t in texts])


def test_relation_accuracy_compares_with_the_swapped_prompt() -> None:
    images = [Image.new("RGB", (8, 8))] * 3
    texts = ["a star to the left of a circle", "a star to the right of a circle", "a star above a circle"]
    assert relation_accuracy(_LeftLover(), images, texts).tolist() == [1.0, 0.0, 0.5]


def _claims(prompt: str) -> set[tuple[str, str]]:
    """(shape, relation) read from either object of a spatial prompt: "a star above a circle" ->
    {("star", "above"), ("circle", "below")}."""
    relation, words = next((r, w) for r, w in RELATION_WORDS.items() if f" {w} " in prompt)
    first, second = prompt.split(f" {words} ")
    return {(first.split()[-1], relation), (second.split()[-1], OPPOSITE[relation])}


def test_skill_scene_items_are_the_generator_prompts_with_their_relation_swaps() -> None:
    scenes = skill_scenes(32)
    held = set(scenes.scene.heldout_relations)
    items = SkillSceneItems(scenes, 0, 400, 2)
    kept = dropped = 0
    for i in range(400):
        item, scene = items[i], skill_scene(scenes, 0, i)
        assert item["caption"] == scene.text
        assert torch.equal(item["image"], image_tensor(scene.render()))
        if scene.skill != "spatial":
            assert item["negatives"] == []
        elif _claims(swap_relation(scene.text)) & held:  # never a positive: no negative either
            dropped += 1
            assert item["negatives"] == []
        else:
            kept += 1
            assert item["negatives"] == [swap_relation(scene.text)]
    assert kept > 0 and dropped > 0


def test_skill_scenes_train_and_hold_out_the_generator_stream(tmp_path: Path, dvae_dir: Path) -> None:
    run = replace(_run(str(dvae_dir), steps=2), data=DataSection(source="skill-scenes", n_train=16, n_val=8,
                                                                 dvae=str(dvae_dir)))
    model = create_any_model("tiny-convnet")
    train_set, _ = synthetic_pairs(run, model, "train", 16, 1)
    val_set, _ = synthetic_pairs(run, model, "val", 8, 0)
    assert train_set[0]["caption"] == skill_scene(skill_scenes(32), 0, 0).text
    assert val_set[0]["caption"] == skill_scene(skill_scenes(32), 0 + HELD_OUT_SEED_OFFSET, 0).text
    assert train(run, tmp_path / "run", say=lambda _: None).steps == 2


@pytest.mark.parametrize("name", ["plain", "hardneg"])
def test_reranker_config_is_the_quickstart_stage_recipe(tmp_path: Path, name: str) -> None:
    from clipforge.quickstart.config import QuickstartConfig
    from clipforge.quickstart.pipeline import train_config
    from clipforge.train.config import load_config

    base = train_config(QuickstartConfig(), hard_negatives=name == "hardneg")
    recipe = dvae_reranker_run(GenerationConfig(), base, tmp_path, name).to_dict()
    toml = Path(__file__).resolve().parents[1] / "configs" / "reranker-skills.toml"
    sets = [f'model.name="{tmp_path / name / "final"}"', f'data.dvae="{tmp_path / "dvae" / "final"}"']
    if name == "plain":  # the override the config's header documents for the plain twin
        sets += ["loss.hard_negatives=0", "loss.negative_kinds=[]"]
    assert load_config(toml, sets).to_dict() == recipe
