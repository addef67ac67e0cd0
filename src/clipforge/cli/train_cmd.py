"""`clipforge train CONFIG.toml --out DIR [--set key=value ...]` and `clipforge train --resume DIR`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from clipforge.cli.output import run_options
from clipforge.errors import ConfigError
from clipforge.train import load_config, load_run_config, train


def register(group: click.Group) -> None:
    group.add_command(train_command)


@click.command("train")
@click.argument("config_path", metavar="CONFIG.toml", required=False, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Run folder to create.")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="Continue the run in this folder from its newest checkpoint.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, TOML syntax: --set train.lr=1e-3 (repeatable).")
@run_options
def train_command(
    config_path: Path | None,
    out_dir: Path | None,
    resume_dir: Path | None,
    overrides: tuple[str, ...],
    device: str | None,
    threads: int | None,
) -> None:
    """Train a CLIP-style model (run under `torchrun --nproc_per_node N` for data parallelism).

    Ctrl-C or SIGTERM saves a checkpoint at the next step and prints the command that resumes.
    """
    overrides = (*overrides, *runtime_overrides(device, threads))
    if resume_dir is not None:
        if config_path is not None or out_dir is not None:
            raise ConfigError("--resume DIR takes neither CONFIG.toml nor --out (the run folder has both)")
        result = train(load_run_config(resume_dir, overrides), resume_dir, resume=True)
    else:
        if config_path is None or out_dir is None:
            raise ConfigError("give CONFIG.toml and --out DIR, or --resume DIR")
        result = train(load_config(config_path, overrides), out_dir)
    best = result.run_dir / "best" / "config.json"
    chosen = ""
    if best.is_file():
        chosen = f" (the best evaluation's model, step {json.loads(best.read_text())['extra']['step']})"
    click.echo(f"trained {result.steps} steps, last loss {result.loss:.4f}: {result.final_dir}{chosen}")


def runtime_overrides(device: str | None, threads: int | None) -> tuple[str, ...]:
    """``--device`` and ``--threads`` as config overrides (``train.device``, ``train.threads``)."""
    given = (("train.device", None if device is None else f'"{device}"'), ("train.threads", threads))
    return tuple(f"{key}={value}" for key, value in given if value is not None)
