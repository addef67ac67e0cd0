"""`clipforge models`."""

from __future__ import annotations

import click

from clipforge.models.registry import describe_models


def register(group: click.Group) -> None:
    group.add_command(models)


@click.command()
def models() -> None:
    """List registered architectures, one per line, name first."""
    for line in describe_models():
        click.echo(line)
