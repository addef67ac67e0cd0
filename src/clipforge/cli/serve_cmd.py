"""`clipforge serve`: the HTTP search API and its web page."""

from __future__ import annotations

from pathlib import Path

import click


def register(group: click.Group) -> None:
    group.add_command(serve)


@click.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Index folder written by `clipforge embed`.")
@click.option("--model", default=None, help="Query model (default: the one recorded in the index).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback).")
@click.option("--port", default=8000, show_default=True, help="TCP port.")
def serve(index_dir: Path, model: str | None, host: str, port: int) -> None:
    """Serve search, image search and zero-shot classification over HTTP, with a web UI at /."""
    # Imported here so that the CLI starts without FastAPI installed.
    from clipforge.serve.app import ServeConfig
    from clipforge.serve.app import serve as run_server

    run_server(ServeConfig(index_dir, model, host, port))
