"""`clipforge export onnx`: a model's towers as ONNX graphs (fp32, optionally int8), checked against torch."""

from __future__ import annotations

from pathlib import Path

import click

from clipforge.checkpoint.onnx_export import ExportConfig, export_onnx


def register(group: click.Group) -> None:
    group.add_command(export)


@click.group()
def export() -> None:
    """Export a model for other runtimes."""


@export.command()
@click.argument("model")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--int8", is_flag=True, help="Also write int8 graphs (onnxruntime quantization).")
@click.option("--opset", type=click.IntRange(min=1), default=None, help="ONNX opset (default: torch's).")
@click.option("--calibrate", "calibration", default=None,
              help="Data spec whose images calibrate a static int8 image tower (default: dynamic int8).")
@click.option("--calibration-images", type=click.IntRange(min=1), default=300, show_default=True,
              help="Images used from --calibrate.")
def onnx(model: str, out: Path, int8: bool, opset: int | None, calibration: str | None,
         calibration_images: int) -> None:
    """Write MODEL's image and text towers to OUT as ONNX graphs (dynamic batch and sequence axes), with
    its preprocessing and tokenizer config; OUT is then a model spec for every command.

    The graphs are checked against torch on a probe batch before they are kept: fp32 within 1e-4, int8
    at cosine >= 0.99. Needs `pip install 'clipforge[onnx]'`.
    """
    config = ExportConfig(int8, opset, calibration, calibration_images)
    click.echo(export_onnx(model, out, config).summary())
