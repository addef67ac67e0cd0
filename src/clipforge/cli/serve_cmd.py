"""`clipforge serve`: the HTTP search API and its web page."""

from __future__ import annotations

from pathlib import Path

import click

from clipforge.cli.output import inference_options
from clipforge.device import Runtime


def register(group: click.Group) -> None:
    group.add_command(serve)


@click.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Index folder written by `clipforge embed`.")
@click.option("--model", default=None, help="Query model (default: the one recorded in the index).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback).")
@click.option("--port", default=8000, show_default=True, help="TCP port.")
@click.option("--token", envvar="CLIPFORGE_TOKEN", default=None,
              help="Require this bearer token for the API and images (or env CLIPFORGE_TOKEN); "
                   "open /?token=TOKEN once in a browser. Use it whenever --host is not loopback.")
@click.option("--allow-host", "allow_hosts", multiple=True,
              help="Also accept this name in the Host header (repeatable; `*`: any). The bound address "
                   "is always accepted, and loopback names when bound to loopback or 0.0.0.0.")
@click.option("--concurrency", default=1, show_default=True, help="Model jobs running at once.")
@click.option("--queue", default=16, show_default=True, help="Model jobs waiting; beyond them, 503.")
@inference_options
def serve(
    index_dir: Path,
    model: str | None,
    host: str,
    port: int,
    token: str | None,
    allow_hosts: tuple[str, ...],
    concurrency: int,
    queue: int,
    runtime: Runtime,
) -> None:
    """Serve search, image search and zero-shot classification over HTTP, with a web UI at /."""
    # Imported here so that the CLI starts without FastAPI installed.
    from clipforge.serve.app import ServeConfig
    from clipforge.serve.app import serve as run_server

    config = ServeConfig(index_dir, model, host, port, token, allow_hosts, concurrency, queue,
                         runtime=runtime)
    run_server(config)
