"""`clipforge eval retrieval` and `clipforge eval zeroshot`."""

from __future__ import annotations

import click

from clipforge.cli.output import runtime_options
from clipforge.eval.run import EvalConfig, retrieval_report, zeroshot_report
from clipforge.fileio import check_writable, write_json


def register(group: click.Group) -> None:
    group.add_command(eval_group)


@click.group(name="eval")
def eval_group() -> None:
    """Evaluate a model on a dataset and write the numbers with their provenance as JSON."""


_MODEL_HELP = "Registry name, model folder, HF folder or OpenAI .pt."
RETRIEVAL_KEYS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")


@eval_group.command()
@click.option("--model", "model_spec", required=True, help=_MODEL_HELP)
@click.option("--data", "data_spec", required=True,
              help="Data spec, e.g. flickr8k:ROOT:test or synthetic:DIR:test.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
@click.option("--batch-size", default=64, show_default=True, help="Images per forward pass.")
@click.option("--workers", default=0, show_default=True, help="DataLoader workers decoding images.")
@runtime_options
def retrieval(model_spec: str, data_spec: str, out: str, batch_size: int, workers: int, device: str) -> None:
    """Image<->text recall@1/5/10 (CLIP-paper convention for images with several captions)."""
    check_writable(out)
    report = retrieval_report(model_spec, data_spec, EvalConfig(batch_size, workers, device))
    write_json(report, out)
    click.echo(" ".join(f"{k}={report[k]:.4f}" for k in RETRIEVAL_KEYS))
    click.echo(f"{report['images']} images, {report['captions']} captions; wrote {out}")


@eval_group.command()
@click.option("--model", "model_spec", required=True, help=_MODEL_HELP)
@click.option("--data", "data_spec", required=True, help="Synthetic scenes: synthetic:DIR[:split].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
@click.option("--batch-size", default=64, show_default=True, help="Images per forward pass.")
@runtime_options
def zeroshot(model_spec: str, data_spec: str, out: str, batch_size: int, device: str) -> None:
    """Zero-shot shape and colour accuracy on the single-object synthetic scenes."""
    check_writable(out)
    report = zeroshot_report(model_spec, data_spec, EvalConfig(batch_size, device=device))
    write_json(report, out)
    click.echo(f"shape={report['shape']:.4f} color={report['color']:.4f} on {report['images']} scenes")
    click.echo(f"wrote {out}")
