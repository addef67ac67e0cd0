"""benchmarks/objswap_errors.py: reading the swap, the counterfactual render and the error table."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from clipforge.probe.stats import wilson_ci
from clipforge.synthetic.scene import SceneConfig, generate_scene, render_scene, render_styled, scene_style
from clipforge.synthetic.style import StyleConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import objswap_errors  # noqa: E402

STYLE = StyleConfig()
CONFIG = SceneConfig(image_size=48)


def test_read_swap_names_the_changed_phrase() -> None:
    true = "a small red circle to the left of a blue star"
    assert objswap_errors.read_swap(true, true.replace("star", "cross")) == objswap_errors.Swap(
        "star", "cross", "blue", None, 1)
    assert objswap_errors.read_swap(true, true.replace("circle", "square")) == objswap_errors.Swap(
        "circle", "square", "red", "small", 0)


def test_every_object_swap_item_is_read_back_to_its_scene() -> None:
    """Each item's swap names an object of its scene, and putting the new shape word in its place in the
    true caption gives the false caption exactly."""
    found = list(objswap_errors.records(CONFIG, STYLE, 15))
    assert len(found) == 30  # one object-swap item per scene, both splits
    for record in found:
        swap, words = record.swap, record.item.true.split()
        obj = record.scene.objects[objswap_errors.named_object(record.scene, swap)]
        assert (obj.shape, obj.color) == (swap.shape, swap.color) and swap.new != swap.shape
        at = [i for i, w in enumerate(words) if w in objswap_errors.SHAPES][swap.which]
        assert " ".join(words[:at] + [swap.new] + words[at + 1:]) == record.item.false[0]


def test_counterfactual_render_is_the_scene_itself_when_nothing_is_swapped() -> None:
    scene = generate_scene(dataclasses.replace(CONFIG, style=STYLE), 0, "val", 3)
    style = scene_style(scene, STYLE)
    assert np.array_equal(np.asarray(render_styled(scene, style)), np.asarray(render_scene(scene, STYLE)))
    obj = scene.objects[0]
    same = objswap_errors.Swap(obj.shape, obj.shape, obj.color, None, 0)
    assert objswap_errors.counterfactual_distance(scene, style, same) == 0.0
    other = "square" if obj.shape != "square" else "circle"
    assert objswap_errors.counterfactual_distance(scene, style, dataclasses.replace(same, new=other)) > 100


def test_error_rows_count_and_bound_each_bin() -> None:
    bins = [{"noise": band} for band in ("< 3", ">= 6.5", "< 6.5", "< 3", "< 3")]
    errors = {"m": np.array([True, False, False, True, False])}
    rows = objswap_errors.error_rows(bins, errors, "noise")
    low, high = wilson_ci(2, 3)
    assert rows[0] == f"| noise: < 3 | 3 | 0.667 [{low:.2f}, {high:.2f}] (2) |"
    assert [r.split("|")[1].strip() for r in rows] == ["noise: < 3", "noise: < 6.5", "noise: >= 6.5"]


def test_accuracy_cells_split_confusable_shapes_from_the_others() -> None:
    shapes = objswap_errors.SHAPES
    labels = torch.tensor([shapes.index(s) for s in ("cross", "star", "circle", "square")])
    predicted = torch.tensor([shapes.index(s) for s in ("diamond", "star", "circle", "circle")])
    cells = [c.split(" [")[0] for c in objswap_errors.accuracy_cells(predicted, labels).split(" | ")]
    assert cells == ["0.500", "0.500", "0.500"]
    assert objswap_errors.accuracy_cells(labels, labels).startswith("1.000")


def test_shape_tower_trains_on_styled_single_object_scenes() -> None:
    torch.set_num_threads(1)
    net, preprocess = objswap_errors.train_shape_tower(CONFIG, STYLE, steps=2, batch=4)
    image = render_scene(generate_scene(dataclasses.replace(CONFIG, style=STYLE), 0, "val", 0), STYLE)
    assert net(preprocess(image)[None]).shape == (1, len(objswap_errors.SHAPES))
