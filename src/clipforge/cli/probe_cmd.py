"""`clipforge probe`: score a probing suite with one or more models and write probe.json + probe.html."""

from __future__ import annotations

from pathlib import Path

import click

from clipforge.cli.output import runtime_options
from clipforge.probe import SCORERS, ProbeConfig, parse_model_option, probe
from clipforge.probe.pipeline import headline


def register(group: click.Group) -> None:
    group.add_command(probe_command)


@click.command("probe")
@click.option("--suite", required=True,
              help="pairs:FILE.jsonl, preposition-swap:DATA, flip:DATA, collage:DATA, synthetic:DIR, "
                   "spatialvoc2k:FILE, whatsup:FILE, aro:FILE, sugarcrepe:FILE_OR_DIR, winoground:FILE.jsonl "
                   "bias:DATA (DATA: a --data spec such as flickr8k:ROOT:test) or typographic:DATA (DATA: "
                   "classification data such as synth:shape or flickr8k-tags:ROOT:test).")
@click.option("--model", "models", multiple=True, required=True,
              help="NAME=SPEC (registry name, model folder, HF folder or OpenAI .pt); repeat to compare.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the suite's image paths are relative to (default: the suite file's folder).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for probe.json and probe.html.")
@click.option("--scorer", type=click.Choice(SCORERS), default="cosine", show_default=True,
              help="cosine, or compositional (sum of per-relation-clause scores).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Probe only the first N items.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--resamples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="An option of the suite kind: top_k=20 or queries=FILE for bias:, seed=1 for collage:, "
                   "linear_probe=SPEC, linear_probe_val=SPEC, seed=1 or examples=6 for typographic:.")
@click.option("--write-suite", is_flag=True,
              help="Also write the items as a pairs suite (OUT/suite/pairs.jsonl, generated images as PNG).")
@runtime_options
def probe_command(suite: str, models: tuple[str, ...], images: Path | None, out: Path, scorer: str,
                  limit: int | None, batch_size: int, resamples: int, seed: int, options: tuple[str, ...],
                  write_suite: bool, device: str) -> None:
    """Does each model score the true sentence above the false ones? Accuracy with CIs, per tag."""
    config = ProbeConfig(suite, tuple(parse_model_option(m) for m in models), out, images, scorer, limit,
                         batch_size, resamples, seed, options, write_suite, device)
    report = probe(config)
    for name, summary in report["models"].items():
        click.echo(f"{name}: {headline(summary)}")
        for split, part in summary.get("per_split", {}).items():
            click.echo(f"  {split}: {headline(part)}")
    if report["bad"]["count"]:
        click.echo(f"skipped {report['bad']['count']} unreadable items (listed in probe.json)", err=True)
    click.echo(f"wrote {out / 'probe.json'} and {out / 'probe.html'}")
