"""`clipforge quickstart --out DIR [--quick]`."""

from __future__ import annotations

from pathlib import Path

import click

from clipforge.quickstart import QuickstartConfig, run_quickstart


def register(group: click.Group) -> None:
    group.add_command(quickstart)


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the data, both models, report.json and report.html.")
@click.option("--quick", is_flag=True, help="Smoke-test budget: about 2 min instead of about 10 on 2 cores.")
def quickstart(out: Path, quick: bool) -> None:
    """Train `plain` and `hardneg` CLIP models on synthetic scenes and compare them on held-out scenes."""
    config = QuickstartConfig.quick() if quick else QuickstartConfig()
    run_quickstart(config, out, say=click.echo)
