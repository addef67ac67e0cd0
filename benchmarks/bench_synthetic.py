"""Throughput of the synthetic scene generator on one core, at 64 and 224 px.

Run: python benchmarks/bench_synthetic.py [--n 2000] [--textured] [--occlusion 0.2]
Stages, cumulative: scene metadata; + PIL rendering; full training item (+ caption, 5 hard negatives,
uint8 tensor), i.e. what `SyntheticScenes.__getitem__` costs a DataLoader worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import click
import torch

from clipforge.synthetic.dataset import SceneConfig, SyntheticScenes, generate_scene, render_scene


def _metadata(config: SceneConfig, index: int) -> object:
    return generate_scene(config, 0, "train", index)


def _rendered(config: SceneConfig, index: int) -> object:
    return render_scene(generate_scene(config, 0, "train", index))


def per_second(n: int, work: Callable[[int], object]) -> float:
    start = time.perf_counter()
    for index in range(n):
        work(index)
    return n / (time.perf_counter() - start)


@click.command()
@click.option("--n", default=2000, show_default=True, help="scenes per measurement")
@click.option("--textured", is_flag=True, help="textured background")
@click.option("--occlusion", default=0.0, show_default=True, help="share of scenes with an occluding pair")
def main(n: int, textured: bool, occlusion: float) -> None:
    """Prints scenes/s per stage and image size."""
    torch.set_num_threads(1)
    click.echo(f"{'size':>5} {'metadata/s':>11} {'+render/s':>10} {'item/s':>8}")
    for size in (64, 224):
        config = SceneConfig(image_size=size, textured_background=textured, occlusion=occlusion)
        data = SyntheticScenes(config, "train", n)
        scenes = per_second(n, partial(_metadata, config))
        rendered = per_second(n, partial(_rendered, config))
        items = per_second(n, data.__getitem__)
        click.echo(f"{size:>5} {scenes:>11,.0f} {rendered:>10,.0f} {items:>8,.0f}")


if __name__ == "__main__":
    main()
