"""`clipforge embed`: embed an image collection into an index folder (incremental)."""

from __future__ import annotations

from pathlib import Path

import click

from clipforge.cli.output import inference_options
from clipforge.device import Runtime
from clipforge.index.ann import KINDS, TARGET_RECALL
from clipforge.index.embed import EmbedConfig, embed_collection


def register(group: click.Group) -> None:
    group.add_command(embed)


@click.command()
@click.option("--model", required=True, help="Registry name, model folder, HF folder or OpenAI .pt.")
@click.option("--data", default=None, help="Data spec with captions, e.g. flickr8k:ROOT:test or folder:DIR.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder searched recursively for images (no captions).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Index folder.")
@click.option("--batch-size", default=32, show_default=True, help="Images per forward pass.")
@click.option("--workers", default=1, show_default=True,
              help="Processes decoding images (0: in this one); one feeds a CPU encoder.")
@click.option("--index", "kind", type=click.Choice(KINDS), default="auto", show_default=True,
              help="Vector index: exact below 50k images, ivf-pq above (4-bit fast-scan codes, 32x less "
                   "memory, candidates re-scored exactly; ivf where the codes fall short), unless forced "
                   "(ivf: float vectors; ivf-sq8: 8-bit; hnsw: slow to build, rebuilt on every deletion).")
@click.option("--target-recall", default=TARGET_RECALL, show_default=True,
              help="Recall@10 vs exact search that approximate indexes are tuned to reach.")
@inference_options
def embed(
    model: str,
    data: str | None,
    images: Path | None,
    out: Path,
    batch_size: int,
    workers: int,
    kind: str,
    target_recall: float,
    runtime: Runtime,
) -> None:
    """Embed new and changed images into OUT and drop deleted ones; bad images are skipped and counted."""
    config = EmbedConfig(model, out, data, images, batch_size=batch_size, workers=workers, index=kind,
                         target_recall=target_recall, runtime=runtime)
    click.echo(embed_collection(config).summary())
