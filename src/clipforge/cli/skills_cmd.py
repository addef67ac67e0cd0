"""`clipforge skills`: write PaintSkills-format skill sets and score generated images against them."""

from __future__ import annotations

from pathlib import Path

import click

from clipforge.cli.output import inference_options
from clipforge.device import Runtime
from clipforge.skills.make import SkillSetConfig, make_skill_set
from clipforge.skills.score import ScoreConfig, score


def register(group: click.Group) -> None:
    group.add_command(skills)


@click.group()
def skills() -> None:
    """Image-skill evaluation (DALL-Eval / PaintSkills): object, count, color, spatial."""


@skills.command("make")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to create.")
@click.option("--n-per-skill", type=click.IntRange(min=1), default=200, show_default=True,
              help="Prompts per skill in each of the train and val splits.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=click.IntRange(32, 224), default=64, show_default=True,
              help="Image side in pixels.")
def make_command(out: Path, n_per_skill: int, seed: int, size: int) -> None:
    """Write a skill set: {skill}/scenes/{skill}_{train,val}.json and ground-truth renders."""
    written = make_skill_set(out, SkillSetConfig(n_per_skill=n_per_skill, seed=seed, image_size=size))
    total = sum(sum(splits.values()) for splits in written.values())
    click.echo(f"wrote {total} prompts with their renders ({', '.join(written)}) to {out}")


@skills.command("score")
@click.option("--skills", "skills_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              required=True, help="Skill set folder (clipforge skills make, or PaintSkills).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Generated images: IMAGES/{skill}/image_{id}.png or image_{id}_{k}.png.")
@click.option("--clip", default=None, help="CLIP spec for R-precision, CLIPScore and quality features.")
@click.option("--reference", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Reference images for quality (default: the skill set's ground-truth renders).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for skills.json and skills.html.")
@click.option("--split", default="val", show_default=True, help="Skill-set split to score.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the bootstrap, the shuffle, R-precision distractors and KID subsets.")
@click.option("--resamples", type=click.IntRange(min=1), default=1000, show_default=True)
@inference_options
def score_command(skills_dir: Path, images: Path, clip: str | None, reference: Path | None, out: Path,
                  split: str, seed: int, resamples: int, runtime: Runtime) -> None:
    """Score generated images: skill accuracy with CIs and controls, alignment and quality."""
    config = ScoreConfig(clip=clip, reference=reference, split=split, n_resamples=resamples, seed=seed,
                         runtime=runtime)
    report = score(skills_dir, images, out, config)
    for skill, block in report["skills"].items():
        low, high = block["ci95"]
        accuracy = "n/a" if block["accuracy"] is None else f"{100 * block['accuracy']:.1f}%"
        interval = "" if low is None else f" [{100 * low:.1f}, {100 * high:.1f}]"
        upper = report["upper_bound"][skill]["accuracy"]
        click.echo(f"{skill}: {accuracy}{interval} on {block['n']} images "
                   f"(upper bound {100 * (upper or 0):.1f}%, missing {block['missing']})")
    if report["r_precision"]:
        r_precision, clip_score = report["r_precision"]["mean"], report["clipscore"]["mean"]
        click.echo(f"R-precision {r_precision:.3f}, CLIPScore {clip_score:.3f}")
    click.echo(f"wrote {out / 'skills.json'} and {out / 'skills.html'}")
