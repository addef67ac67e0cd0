"""`clipforge convert`: rewrite any loadable checkpoint as a clipforge or Hugging Face folder."""

from __future__ import annotations

import click

from clipforge.checkpoint.convert import CONVERT_TARGETS, convert


def register(group: click.Group) -> None:
    group.add_command(convert_command)


@click.command("convert")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--to", "target", type=click.Choice(CONVERT_TARGETS), default="clipforge", show_default=True,
              help="Output format: a clipforge folder or a transformers CLIPModel folder.")
def convert_command(src: str, dst: str, target: str) -> None:
    """Convert SRC (registry name, clipforge or HF folder, OpenAI .pt) into a model folder DST."""
    folder = convert(src, dst, to=target)
    click.echo(f"wrote {target} model to {folder}")
