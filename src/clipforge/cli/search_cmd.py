"""`clipforge search`: query an index folder by text or by image."""

from __future__ import annotations

import json
from pathlib import Path

import click

from clipforge.cli.output import inference_options, one_line, quote_path
from clipforge.device import Runtime
from clipforge.index.search import SearchConfig
from clipforge.index.search import search as run_search


def register(group: click.Group) -> None:
    group.add_command(search)


@click.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Index folder written by `clipforge embed`.")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Query image.")
@click.option("--model", default=None, help="Query model (default: the one recorded in the index).")
@click.option("-k", "k", default=10, show_default=True, help="Number of results.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@inference_options
@click.argument("text", required=False)
def search(
    index_dir: Path,
    image: Path | None,
    model: str | None,
    k: int,
    as_json: bool,
    runtime: Runtime,
    text: str | None,
) -> None:
    """Print the K indexed images closest to TEXT or to --image PATH."""
    hits = run_search(SearchConfig(index_dir, text, image, model, k, runtime=runtime))
    if as_json:
        click.echo(json.dumps({"results": [hit.to_dict() for hit in hits]}, indent=2))
        return
    for rank, hit in enumerate(hits, start=1):
        caption = f"  {hit.item.caption}" if hit.item.caption else ""
        click.echo(f"{rank:>3}  {hit.score:.4f}  {quote_path(hit.item.path)}{one_line(caption)}")
