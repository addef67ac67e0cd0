"""`clipforge synth`: write a synthetic spatial-scene dataset to disk."""

from __future__ import annotations

from pathlib import Path

import click

from clipforge.synthetic.dataset import SPLITS, SceneConfig, write_synthetic
from clipforge.synthetic.style import StyleConfig


def register(group: click.Group) -> None:
    group.add_command(synth)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to create.")
@click.option("--n", "n", type=int, required=True, help="Number of scenes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-size", type=int, default=64, show_default=True, help="Image side in pixels (32-224).")
@click.option("--split", "splits", type=click.Choice(("all", *SPLITS)), multiple=True,
              help="Write N scenes of this split (repeat for several); default 'all': N scenes split "
                   "80/5/10/5 over train/val/test/test_heldout.")
@click.option("--textured", is_flag=True, help="Draw on a grey noise texture instead of a plain background.")
@click.option("--style", "styled", is_flag=True,
              help="Draw in the randomized style (default ranges); val_style and test_style scenes use the "
                   "held-out style.")
@click.option("--occlusion", type=float, default=0.0, show_default=True,
              help="Share of multi-object scenes with an occluding pair (in front of / behind).")
def synth(out: Path, n: int, seed: int, image_size: int, splits: tuple[str, ...], textured: bool,
          styled: bool, occlusion: float) -> None:
    """Write N synthetic scenes to OUT: images/, captions.csv, scenes.jsonl, probes.jsonl."""
    style = StyleConfig() if styled else None
    config = SceneConfig(image_size=image_size, textured_background=textured, occlusion=occlusion,
                         style=style)
    split = "all" if splits in ((), ("all",)) else splits
    summary = write_synthetic(out, n, seed=seed, config=config, split=split)
    counts = ", ".join(f"{name} {count}" for name, count in summary.scenes.items())
    click.echo(f"wrote {n} scenes ({counts}) and {summary.probes} probe items to {out}")
