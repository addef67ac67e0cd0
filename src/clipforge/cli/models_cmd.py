"""`clipforge models`."""

from __future__ import annotations

import click

from clipforge.models.registry import describe_models


def register(group: click.Group) -> None:
    group.add_command(models)


@click.command()
def models() -> None:
    """List registered architectures, one per line, name first. They carry no trained weights."""
    click.echo("registered architectures: a name loads with untrained weights (to train from scratch); for "
               "predictions pass a trained model (a model folder, an HF or open_clip folder, a .pt file)",
               err=True)
    for line in describe_models():
        click.echo(line)
