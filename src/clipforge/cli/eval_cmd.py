"""`clipforge eval retrieval` and `clipforge eval zeroshot`."""

from __future__ import annotations

from pathlib import Path

import click

from clipforge.adapt.run import AdaptConfig, run_template_search, run_zero_shot
from clipforge.cli.adapt_cmd import torch_cpu_only
from clipforge.cli.output import inference_options
from clipforge.data.classification import is_classification_spec
from clipforge.device import Runtime
from clipforge.errors import ConfigError
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
@inference_options
def retrieval(model_spec: str, data_spec: str, out: str, batch_size: int, workers: int,
              runtime: Runtime) -> None:
    """Image<->text recall@1/5/10 (CLIP-paper convention for images with several captions)."""
    check_writable(out)
    report = retrieval_report(model_spec, data_spec, EvalConfig(batch_size, workers, runtime))
    write_json(report, out)
    click.echo(" ".join(f"{k}={report[k]:.4f}" for k in RETRIEVAL_KEYS))
    click.echo(f"{report['images']} images, {report['captions']} captions; wrote {out}")


@eval_group.command()
@click.option("--model", "model_spec", required=True, help=_MODEL_HELP)
@click.option("--data", "data_spec", required=True,
              help="synthetic:DIR[:split] (shape and colour of single-object scenes), or a classification "
                   "spec: imagefolder:DIR, synth:TASK[:SIZE][:split], flickr8k-tags:ROOT[:split], corrupt:")
@click.option("--out", required=True, type=click.Path(),
              help="JSON file (synthetic:DIR) or output folder for adapt.json/adapt.html (classification).")
@click.option("--val", default=None, help="Validation data for --template-search (classification specs).")
@click.option("--template-search", is_flag=True,
              help="Greedy template selection on --val, reported on --data beside one template and the pool.")
@click.option("--feature-cache", type=click.Path(file_okay=False), default=None,
              help="Frozen-feature cache folder (classification specs; default OUT/features).")
@click.option("--batch-size", default=64, show_default=True, help="Images per forward pass.")
@inference_options
def zeroshot(model_spec: str, data_spec: str, out: str, val: str | None, template_search: bool,
             feature_cache: str | None, batch_size: int, runtime: Runtime) -> None:
    """Zero-shot accuracy: attributes of synthetic scenes, or a classification task (prompt ensemble)."""
    if is_classification_spec(data_spec):
        torch_cpu_only(runtime)
        config = AdaptConfig(model=model_spec, test=data_spec, out=Path(out), val=val, batch_size=batch_size,
                             feature_cache=Path(feature_cache) if feature_cache else None)
        _classification_zeroshot(config, template_search)
        return
    if template_search or val:
        raise ConfigError("--template-search and --val need a classification spec as --data")
    check_writable(out)
    report = zeroshot_report(model_spec, data_spec, EvalConfig(batch_size, runtime=runtime))
    write_json(report, out)
    click.echo(f"shape={report['shape']:.4f} color={report['color']:.4f} on {report['images']} scenes")
    click.echo(f"wrote {out}")


def _classification_zeroshot(config: AdaptConfig, template_search: bool) -> None:
    if template_search and config.val is None:
        raise ConfigError("--template-search needs --val (templates are chosen on validation data only)")
    report = run_template_search(config) if template_search else run_zero_shot(config)
    zero = report["zero_shot"]
    click.echo(f"zero-shot accuracy {zero['accuracy']:.4f} ({zero['templates']}-template ensemble, "
               f"{zero['n']} images)")
    for name, row in report.get("template_search", {}).items():
        click.echo(f"{name}: test {row['test']['accuracy']:.4f} with {len(row['templates'])} templates")
    click.echo(f"wrote {config.out / 'adapt.json'} and adapt.html")
