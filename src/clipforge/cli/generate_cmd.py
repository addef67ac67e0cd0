"""`clipforge generate`: draw images for prompts with a trained generator, optionally CLIP re-ranked."""

from __future__ import annotations

from pathlib import Path

import click

from clipforge.cli.output import runtime_options
from clipforge.dalle.sampling import SamplingConfig
from clipforge.generate import GenerateConfig, generate


def register(group: click.Group) -> None:
    group.add_command(generate_command)


@click.command("generate")
@click.option("--model", required=True, help="A generator folder (e.g. OUT/generator/final).")
@click.option("--prompt", "prompts", multiple=True, help="A text to draw; repeat for several.")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A file with one prompt per line.")
@click.option("--skills", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A skill set (clipforge skills make); writes OUT/{skill}/image_{id}_{k}.png.")
@click.option("--split", default="val", show_default=True, help="Which split of the skill set to draw.")
@click.option("-n", "n", type=click.IntRange(min=1), default=4, show_default=True,
              help="Candidates per prompt.")
@click.option("--rerank", default=None, help="A CLIP spec that scores the candidates (best first).")
@click.option("--keep", type=click.IntRange(min=1), default=None,
              help="Candidates kept per prompt (default: all N).")
@click.option("--cond-scale", type=float, default=1.0, show_default=True,
              help="Classifier-free guidance scale (1: none).")
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True, help="0: no top-k.")
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@runtime_options
def generate_command(model: str, prompts: tuple[str, ...], prompts_file: Path | None, skills: Path | None,
                     split: str, n: int, rerank: str | None, keep: int | None, cond_scale: float,
                     temperature: float, top_k: int, top_p: float, batch_size: int, seed: int,
                     out: Path, device: str) -> None:
    """Draw N images per prompt; keep the best M (by --rerank, else the first M) as PNGs."""
    sampling = SamplingConfig(temperature, top_k, top_p, cond_scale, batch_size=batch_size)
    config = GenerateConfig(model, out, prompts, prompts_file, skills, split, n, rerank, keep, seed, sampling,
                            device)
    report = generate(config)
    kept = sum(c["file"] is not None for p in report["prompts"] for c in p["candidates"])
    click.echo(f"{len(report['prompts'])} prompts, {kept} images kept "
               f"({report['images_per_s']:.1f} images/s drawn); wrote {out / 'generations.json'}")
