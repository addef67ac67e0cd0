"""Randomized styles: pixels change but metadata never; held-out styles stay out of training; names hold."""

from __future__ import annotations

import colorsys
import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipforge.errors import ConfigError
from clipforge.probe.run import ProbeResult
from clipforge.probe.stats import summarize
from clipforge.probe.suites import load_suite
from clipforge.synthetic.dataset import SyntheticScenes, load_probe_items, load_scenes, write_synthetic
from clipforge.synthetic.render import PALETTE
from clipforge.synthetic.scene import SceneConfig, generate_scene, object_mask, render_scene, scene_style
from clipforge.synthetic.style import HUE_RANGES, StyleConfig, sample_style
from clipforge.train.config import TrainRunConfig, load_config

STYLE = StyleConfig()
STYLED = SceneConfig(style=STYLE)
# Every option off: a grey solid background, exact geometry, no blur, noise or JPEG; only shades vary.
QUIET = StyleConfig(backgrounds=("solid", "split"), heldout_backgrounds=("split",),
                    background_value=(0.3, 0.3), background_saturation=0.0, scale=(1.0, 1.0), aspect=1.0,
                    rotation=0.0, supersample=(1,), blur=(0.0, 0.0), heldout_blur=(0.0, 0.0),
                    noise=(0.0, 0.0), heldout_noise=(0.0, 0.0), jpeg=0.0)
# One option at a time on top of QUIET: each must change pixels.
ONE_OPTION = {
    "gradient": {"backgrounds": ("gradient", "split"), "background_value": (0.1, 0.9)},
    "texture": {"backgrounds": ("texture", "split")},
    "scale": {"scale": (0.85, 0.9)},
    "rotation": {"rotation": 15.0},
    "aspect": {"aspect": 1.25},
    "supersample": {"supersample": (3,)},
    "blur": {"blur": (0.8, 1.0), "heldout_blur": (0.8, 0.8)},
    "noise": {"noise": (8.0, 10.0), "heldout_noise": (8.0, 8.0)},
    "jpeg": {"jpeg": 1.0, "jpeg_quality": (20, 30)},
}


def _in_hue_range(rgb: tuple[int, int, int], low: float, high: float) -> bool:
    """Whether the colour's hue lies in [low, high] degrees (up to rounding to 8 bits), wrapping at 360."""
    hue = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360
    return (hue - low + 0.5) % 360 <= high - low + 1


def test_style_changes_pixels_but_never_metadata() -> None:
    plain = SceneConfig()
    for split in ("train", "val", "test", "test_heldout"):
        for index in range(20):
            scene = generate_scene(STYLED, 3, split, index)
            assert scene == generate_scene(plain, 3, split, index)  # the exact truth is style-free
            styled, drawn = np.asarray(render_scene(scene, STYLE)), np.asarray(render_scene(scene))
            assert styled.shape == drawn.shape == (64, 64, 3) and not np.array_equal(styled, drawn)


@pytest.mark.parametrize("option", sorted(ONE_OPTION))
def test_each_style_option_changes_pixels_only(option: str) -> None:
    style = dataclasses.replace(QUIET, **ONE_OPTION[option])
    changed = 0
    for index in range(12):
        scene = generate_scene(SceneConfig(style=style), 0, "train", index)
        assert scene == generate_scene(SceneConfig(style=QUIET), 0, "train", index)
        quiet, styled = (np.asarray(render_scene(scene, s)).astype(int) for s in (QUIET, style))
        changed += int(np.abs(quiet - styled).max() > 2)
    assert changed >= 9, option  # a few scenes may draw a value that changes nothing (e.g. a circle's angle)


def test_quiet_style_draws_exact_boxes_in_their_shades() -> None:
    for index in range(30):
        scene = generate_scene(SceneConfig(style=QUIET), 1, "train", index)
        pixels, style = np.asarray(render_scene(scene, QUIET)), scene_style(scene, QUIET)
        for obj, shade in zip(scene.objects, style.shades, strict=True):
            assert (pixels[object_mask(obj, 64)] == shade).all()


def test_styled_geometry_stays_in_its_box_and_keeps_its_centre() -> None:
    """Relations are read from box centres: a scaled, stretched, turned shape must keep both."""
    style = dataclasses.replace(QUIET, scale=(0.85, 1.0), aspect=1.25, rotation=15.0, supersample=(1, 3))
    for index in range(40):
        scene = generate_scene(SceneConfig(style=style), 2, "train", index)
        pixels = np.asarray(render_scene(scene, style)).astype(int)
        drawn = np.abs(pixels - pixels[0, 0]).sum(axis=2) > 0  # [H, W]: not background
        inside = np.zeros_like(drawn)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.bbox
            inside[y0:y1, x0:x1] = True
            ys, xs = np.nonzero(drawn[y0:y1, x0:x1])
            weights = np.abs(pixels[y0:y1, x0:x1] - pixels[0, 0]).sum(axis=2)[ys, xs]
            centre = (x0 + np.average(xs + 0.5, weights=weights), y0 + np.average(ys + 0.5, weights=weights))
            extent = ((x0 + xs.min() + x0 + xs.max() + 1) / 2, (y0 + ys.min() + y0 + ys.max() + 1) / 2)
            assert np.allclose(extent, obj.centre, atol=1.0), (obj, extent)
            assert np.allclose(centre, obj.centre, atol=0.25 * (x1 - x0)), (obj, centre)
        assert not (drawn & ~inside).any()


def test_shades_keep_their_colour_names() -> None:
    for color, (low, high) in HUE_RANGES.items():
        for index in range(200):
            style = sample_style(STYLE, [(color, "circle")], _rng(color, index), heldout=index % 2 == 1)
            r, g, b = style.shades[0]
            assert _in_hue_range(style.shades[0], low, high), (color, style.shades[0])
            saturation = (max(r, g, b) - min(r, g, b)) / max(r, g, b)
            assert saturation >= 0.64 and max(r, g, b) >= 0.74 * 255
        assert _in_hue_range(PALETTE[color], low, high)  # the plain palette lies in its own range
    ranges = sorted(HUE_RANGES.values())
    assert all(a[1] + 10 <= b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # gaps between names
    assert ranges[-1][1] + 10 <= ranges[0][0] + 360


def _rng(key: str, index: int) -> random.Random:
    return random.Random(f"{key}:{index}")


def test_heldout_styles_never_appear_in_training_splits() -> None:
    band = {"hue": STYLE.heldout_hue, "blur": STYLE.heldout_blur, "noise": STYLE.heldout_noise}

    def held(name: str, value: float) -> bool:
        return band[name][0] <= value <= band[name][1]

    for split in ("train", "val", "test", "test_heldout", "val_style", "test_style"):
        heldout = split.endswith("_style")
        for index in range(150):
            style = scene_style(generate_scene(STYLED, 7, split, index), STYLE)
            values = [("blur", style.blur), ("noise", style.noise)]
            values += [("hue", p) for p in style.hue_positions]
            assert (style.background in STYLE.heldout_backgrounds) is heldout, (split, style)
            assert all(held(name, value) is heldout for name, value in values), (split, style)


def test_style_config_rejects_bad_ranges_in_one_line() -> None:
    cases = {
        "unknown background": {"backgrounds": ("solid", "stripes")},
        "proper subset": {"heldout_backgrounds": ("solid", "gradient", "texture", "split")},
        "leaves nothing": {"heldout_noise": (0.0, 10.0)},
        "heldout_blur": {"heldout_blur": (0.5, 1.5)},
        "named colour": {"background_saturation": 0.6},
        "as small as small": {"scale": (0.6, 1.0)},
        "supersample": {"supersample": (5,)},
    }
    for message, change in cases.items():
        with pytest.raises(ConfigError, match=message) as caught:
            StyleConfig(**change)  # type: ignore[arg-type]
        assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="needs a style"):
        generate_scene(SceneConfig(), 0, "test_style", 0)
    with pytest.raises(ConfigError, match="textured_background"):
        SceneConfig(style=STYLE, textured_background=True)


def test_styled_dataset_on_disk_and_in_memory_agree(tmp_path: Path) -> None:
    out = tmp_path / "styled"
    summary = write_synthetic(out, 8, seed=2, config=STYLED, split=("test", "test_style"))
    assert summary.scenes == {"test": 8, "test_style": 8}
    records = [json.loads(line) for line in (out / "scenes.jsonl").open()]
    assert [r["split"] for r in records] == ["test"] * 8 + ["test_style"] * 8
    assert all(r["style"]["background"] == "split" for r in records[8:])
    scenes = load_scenes(out)
    assert scenes[9] == generate_scene(STYLED, 2, "test_style", 1)
    stored = np.asarray(Image.open(out / records[9]["image"]))
    assert np.array_equal(stored, np.asarray(render_scene(scenes[9], STYLE)))
    assert {p.split for p in load_probe_items(out)} == {"test", "test_style"}
    item = SyntheticScenes(STYLED, "test_style", 8, seed=2)[1]
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), stored)  # [3, H, W] -> [H, W, 3]


def test_probe_reports_each_style_split(tmp_path: Path) -> None:
    out = tmp_path / "styled"
    write_synthetic(out, 6, seed=1, config=STYLED, split=("test", "test_style"))
    suite = load_suite(f"synthetic:{out}")
    assert {item.split for item in suite.items} == {"test", "test_style"}
    # Items pass by a fixed rule, so every split's accuracy is known exactly.
    passes = [item.tag == "object_swap" or item.split == "test" for item in suite.items]
    scores = [np.array([1.0, 0.0]) if ok else np.array([0.0, 1.0]) for ok in passes]
    summary = summarize(ProbeResult(suite.items, scores), n_resamples=50)
    parts = summary["per_split"]
    assert parts["test"]["accuracy"] == 1.0 and "per_split" not in parts["test"]
    assert parts["test_style"]["per_tag"]["object_swap"]["accuracy"] == 1.0
    assert parts["test_style"]["per_tag"]["relation_swap"]["accuracy"] == 0.0
    n = {name: sum(item.split == name for item in suite.items) for name in parts}
    assert parts["test"]["n"] + parts["test_style"]["n"] == summary["n"] == sum(n.values())


def test_train_config_reads_a_style_section(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("[data]\nn_train = 64\n[data.style]\nnoise = [0.0, 4.0]\nheldout_noise = [1.0, 2.0]\n")
    config = load_config(toml)
    assert config.data.style == StyleConfig(noise=(0.0, 4.0), heldout_noise=(1.0, 2.0))
    assert TrainRunConfig.from_dict(config.to_dict()) == config
    assert load_config(None).data.style is None
    assert TrainRunConfig.from_dict(load_config(None).to_dict()).data.style is None
    with pytest.raises(ConfigError, match="noise"):
        load_config(toml, ["data.style.noise=[0.0, 1.5]"])


def test_cli_synth_writes_both_style_splits(tmp_path: Path) -> None:
    from clipforge.cli.main import main

    args = ["synth", "--out", str(tmp_path / "d"), "--n", "5", "--style", "--split", "test", "--split",
            "test_style", "--image-size", "48"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "test 5, test_style 5" in result.output
    args = ["synth", "--out", str(tmp_path / "e"), "--n", "5", "--split", "test_style"]
    bad = CliRunner().invoke(main, args)
    assert bad.exit_code != 0 and bad.output.strip().count("\n") == 0 and "style" in bad.output
