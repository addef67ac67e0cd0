from collections import Counter

import pytest
import torch

from clipforge.dalle.batches import SceneBatches, TokenBatches, encode_scenes
from clipforge.dalle.scenes import SkillSceneConfig, skill_scene
from clipforge.models.registry import create_any_model
from clipforge.synthetic.scene import OPPOSITE, SceneConfig, spatial_relation
from clipforge.synthetic.text import RELATION_WORDS
from clipforge.tokenizer import ClipTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = SkillSceneConfig(scene=SceneConfig(image_size=32))


def test_skill_scenes_say_what_they_show() -> None:
    scenes = [skill_scene(CONFIG, 0, i) for i in range(400)]
    assert set(Counter(s.skill for s in scenes)) == {"object", "count", "color", "spatial"}
    for s in scenes:
        objects, words = s.scene.objects, s.text.split()
        if s.skill == "object":
            assert len(objects) == 1 and words[-1] == objects[0].shape and words[0] in ("a", "an")
        elif s.skill == "color":
            assert len(objects) == 1 and words[1:] == [objects[0].color, objects[0].shape]
        elif s.skill == "count":
            assert len({o.shape for o in objects}) == 1
            assert words[0] == ("one", "two", "three", "four")[len(objects) - 1]
        else:
            relation = spatial_relation(objects[0], objects[1], s.scene.margin)
            assert relation is not None and RELATION_WORDS[relation] in s.text
            assert words[1] == objects[0].shape and words[-1] == objects[1].shape
    assert skill_scene(CONFIG, 0, 7) == scenes[7]  # a pure function of (config, seed, index)


def test_skill_scenes_respect_the_compositional_holdout() -> None:
    held_pairs = set(CONFIG.scene.heldout_pairs)
    held_relations = set(CONFIG.scene.heldout_relations)
    for i in range(1500):
        s = skill_scene(CONFIG, 1, i)
        assert not {(o.color, o.shape) for o in s.scene.objects} & held_pairs
        if s.skill == "spatial":
            a, b = s.scene.objects
            relation = spatial_relation(a, b, s.scene.margin)
            assert (a.shape, relation) not in held_relations
            assert (b.shape, OPPOSITE[str(relation)]) not in held_relations


def test_aligned_skill_scenes_start_objects_on_the_grid() -> None:
    aligned = SkillSceneConfig(scene=SceneConfig(image_size=32), align_px=4)
    scenes = [skill_scene(aligned, 0, i) for i in range(200)]
    assert all(o.bbox[0] % 4 == 0 and o.bbox[1] % 4 == 0 for s in scenes for o in s.scene.objects)
    assert {len(s.scene.objects) for s in scenes if s.skill == "count"} == {1, 2, 3, 4}
    assert any(o.bbox[0] % 4 for i in range(50) for o in skill_scene(CONFIG, 0, i).scene.objects)


def test_scene_batches_resume_where_they_stopped() -> None:
    source = SceneBatches(CONFIG, 3, 4)
    source.next_batch()
    state = source.state_dict()
    expected = source.next_batch()
    resumed = SceneBatches(CONFIG, 3, 4)
    resumed.load_state_dict(state)
    got = resumed.next_batch()
    assert got.step == expected.step == 1 and len(got.rows(1, 3)) == 2
    assert got.images.shape == (4, 3, 32, 32) and got.images.max() <= 1.0
    assert torch.equal(got.images, expected.images)


def test_token_batches_shuffle_drop_captions_and_resume() -> None:
    dvae = create_any_model("tiny-dvae")
    tokenizer = ClipTokenizer(12)
    pairs = encode_scenes(dvae, tokenizer, [skill_scene(CONFIG, 0, i) for i in range(40)], batch_size=16)
    assert pairs.text.shape == (40, 12) and pairs.image.shape == (40, 64)
    empty = tokenizer([""])
    source = TokenBatches(pairs, empty, 8, seed=0, caption_dropout=0.25)
    batches = [source.next_batch() for _ in range(3)]
    state = source.state_dict()
    later = [source.next_batch() for _ in range(4)]  # crosses into the next epoch (40 / 8 = 5 per epoch)
    resumed = TokenBatches(pairs, empty, 8, seed=0, caption_dropout=0.25)
    resumed.load_state_dict(state)
    for batch, again in zip(later, [resumed.next_batch() for _ in range(4)], strict=True):
        assert torch.equal(batch.text, again.text) and torch.equal(batch.image, again.image)
    dropped = sum(int((b.text == empty).all(dim=1).sum()) for b in batches + later)
    assert 0 < dropped < 7 * 8 * 0.5  # about a quarter of 56 captions
    first_epoch = torch.cat([b.image for b in batches + later[:2]])
    assert sorted(map(tuple, first_epoch.tolist())) == sorted(map(tuple, pairs.image.tolist()))


def test_token_cache_is_keyed_by_dvae_weights_and_data(tmp_path) -> None:
    from clipforge.dalle.tokens import pairs_key, scene_pairs

    dvae, tokenizer = create_any_model("tiny-dvae"), ClipTokenizer(12)
    said: list[str] = []
    first = scene_pairs(dvae, tokenizer, CONFIG, 0, 20, tmp_path, said.append)
    (cached,) = list(tmp_path.glob("pairs-*.safetensors"))
    again = scene_pairs(dvae, tokenizer, CONFIG, 0, 20, tmp_path, said.append)
    assert said[0] == "tokenizing 20 training images with the dVAE"
    assert said[1].startswith("read the image tokens of 20 training images from the cache")
    assert torch.equal(first.image, again.image) and torch.equal(first.text, again.text)
    key = pairs_key(dvae, CONFIG, 0, 20, 12)
    assert key != pairs_key(dvae, CONFIG, 1, 20, 12) and key != pairs_key(dvae, CONFIG, 0, 21, 12)
    cached.write_bytes(b"torn")
    recomputed = scene_pairs(dvae, tokenizer, CONFIG, 0, 20, tmp_path)  # an unreadable file is replaced
    assert torch.equal(recomputed.image, first.image) and cached.stat().st_size > 4
    with torch.no_grad():
        dvae.codebook.weight[0, 0] += 1.0
    assert pairs_key(dvae, CONFIG, 0, 20, 12) != key  # other weights: another file
