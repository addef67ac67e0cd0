"""Throughput of the synthetic scene generator on one core, at 48 (the quickstart's), 64 and 224 px.

Run: python benchmarks/bench_synthetic.py [--n 2000] [--textured] [--occlusion 0.2] [--style]
Stages, cumulative: scene metadata; + PIL rendering; full training item (+ caption, 5 hard negatives,
uint8 tensor), i.e. what `SyntheticScenes.__getitem__` costs a DataLoader worker. ``--style`` renders
in the default randomized style (`clipforge.synthetic.style`). CPU time of this process, so that other
load on the machine changes the numbers less than wall time would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import click
import torch

from clipforge.synthetic.dataset import SceneConfig, SyntheticScenes, generate_scene, render_scene
from clipforge.synthetic.style import StyleConfig


def _metadata(config: SceneConfig, index: int) -> object:
    return generate_scene(config, 0, "train", index)


def _rendered(config: SceneConfig, index: int) -> object:
    return render_scene(generate_scene(config, 0, "train", index), config.style)


def per_second(n: int, work: Callable[[int], object]) -> float:
    start = time.process_time()
    for index in range(n):
        work(index)
    return n / (time.process_time() - start)


@click.command()
@click.option("--n", default=2000, show_default=True, help="scenes per measurement")
@click.option("--textured", is_flag=True, help="textured background")
@click.option("--occlusion", default=0.0, show_default=True, help="share of scenes with an occluding pair")
@click.option("--style", "styled", is_flag=True, help="the default randomized style")
def main(n: int, textured: bool, occlusion: float, styled: bool) -> None:
    """Prints scenes/s per stage and image size."""
    torch.set_num_threads(1)
    click.echo(f"{'size':>5} {'metadata/s':>11} {'+render/s':>10} {'item/s':>8}")
    for size in (48, 64, 224):
        config = SceneConfig(image_size=size, textured_background=textured, occlusion=occlusion,
                             style=StyleConfig() if styled else None)
        data = SyntheticScenes(config, "train", n)
        scenes = per_second(n, partial(_metadata, config))
        rendered = per_second(n, partial(_rendered, config))
        items = per_second(n, data.__getitem__)
        click.echo(f"{size:>5} {scenes:>11,.0f} {rendered:>10,.0f} {items:>8,.0f}")


if __name__ == "__main__":
    main()
