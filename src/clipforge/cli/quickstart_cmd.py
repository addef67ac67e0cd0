"""`clipforge quickstart --out DIR [--quick] [--seed N]` and `clipforge quickstart --resume DIR`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from clipforge.cli.output import run_options
from clipforge.errors import ConfigError
from clipforge.quickstart import QuickstartConfig, resume_quickstart, run_quickstart


def register(group: click.Group) -> None:
    group.add_command(quickstart)


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the data, both models, report.json and report.html.")
@click.option("--quick", is_flag=True, help="Smoke-test budget: minutes instead of about 20 on 2 cores.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the scenes, their order and every training run (default 0, the README's numbers; "
                   "other seeds land a few points either side).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Finish the interrupted quickstart in this folder, with the settings it was started with.")
@run_options
def quickstart(out: Path | None, quick: bool, seed: int | None, resume_dir: Path | None, device: str | None,
               threads: int | None) -> None:
    """Train `plain` and `hardneg` CLIP models on synthetic scenes and compare them on held-out scenes; then
    train a DALL-E-style generator on the same scene world and re-rank its samples with both.

    Ctrl-C or SIGTERM while training saves both runs at their next step and prints the command that resumes.
    --device and --threads apply to the two training processes (default: cpu, one thread each).
    """
    if resume_dir is not None:
        if out is not None or quick or seed is not None or device is not None or threads is not None:
            raise ConfigError("--resume DIR takes no other option (DIR/quickstart.json holds the settings)")
        resume_quickstart(resume_dir, say=click.echo)
        return
    if out is None:
        raise ConfigError("give --out DIR (or --resume DIR to finish an interrupted quickstart)")
    config = QuickstartConfig.quick() if quick else QuickstartConfig()
    config = dataclasses.replace(config, device=device or config.device,
                                 seed=config.seed if seed is None else seed,
                                 threads=config.threads if threads is None else threads)
    run_quickstart(config, out, say=click.echo)
