"""`clipforge adapt {linear-probe,coop,wise-ft}`: adapt a model to a classification task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from clipforge.adapt.coop import CLASS_POSITIONS, CoopConfig
from clipforge.adapt.run import AdaptConfig, run_coop, run_linear_probe, run_wise_ft
from clipforge.adapt.wiseft import LRS, WiseFtConfig
from clipforge.cli.output import runtime_options
from clipforge.device import Runtime
from clipforge.errors import ConfigError

DATA_HELP = "imagefolder:DIR[:split], synth:TASK[:SIZE][:split], flickr8k-tags:ROOT[:split] or corrupt:..."


def register(group: click.Group) -> None:
    group.add_command(adapt)


@click.group()
def adapt() -> None:
    """Adapt a model to a classification task; results go to OUT/adapt.json and OUT/adapt.html.

    Runs of different methods into the same OUT (same model and test data) are merged, so the
    report's few-shot chart compares them.
    """


def cpu_only(device: str) -> None:
    """Adaptation runs on frozen features cached on the CPU; other devices are refused in one line."""
    if device != "cpu":
        raise ConfigError(f"adaptation and learned prompts run on the CPU only, not --device {device}")


def torch_cpu_only(runtime: Runtime) -> None:
    """Adaptation and learned prompts need the trainable torch model; others are refused in one line."""
    cpu_only(runtime.device)
    if (runtime.backend, runtime.precision) != ("torch", "fp32"):
        raise ConfigError(
            f"adaptation and learned prompts run with --backend torch --precision fp32, not "
            f"--backend {runtime.backend} --precision {runtime.precision}"
        )


def parse_shots(values: tuple[str, ...]) -> tuple[int, ...]:
    """`--shots 1,2,4 --shots 8` -> (1, 2, 4, 8)."""
    try:
        return tuple(int(v) for value in values for v in value.split(",") if v.strip())
    except ValueError as err:
        raise ConfigError(f"--shots takes integers such as 1,2,4,8,16, got {' '.join(values)!r}") from err


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The model, data, few-shot protocol and output options every method shares."""
    options = [
        click.option("--model", "model_spec", required=True, help="Registry name, model folder, HF or .pt."),
        click.option("--train", required=True, help=f"Training data. {DATA_HELP}"),
        click.option("--val", default=None, help="Validation data (default: 20% of --train)."),
        click.option("--test", required=True, help="Test data (the reported numbers)."),
        click.option("--shots", multiple=True, help="Images per class, e.g. 1,2,4,8,16 (default: all)."),
        click.option("--seeds", default=3, show_default=True, help="Few-shot draws per shot count."),
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder."),
        click.option("--feature-cache", type=click.Path(file_okay=False), default=None,
                     help="Frozen-feature cache folder, shareable with LiT training (default OUT/features)."),
        click.option("--batch-size", default=64, show_default=True, help="Images per extraction batch."),
        click.option("--workers", default=0, show_default=True, help="Image-decoding workers."),
    ]
    for option in reversed(options):
        command = option(command)
    return runtime_options(command)


def adapt_config(params: dict[str, Any]) -> AdaptConfig:
    """The shared options as an AdaptConfig."""
    cpu_only(params["device"])
    cache = params["feature_cache"]
    return AdaptConfig(model=params["model_spec"], test=params["test"], out=Path(params["out"]),
                       train=params["train"], val=params["val"], shots=parse_shots(params["shots"]),
                       seeds=params["seeds"], feature_cache=Path(cache) if cache else None,
                       batch_size=params["batch_size"], workers=params["workers"])


def _summary(report: dict[str, Any], method: str) -> None:
    zero = report["zero_shot"]["accuracy"]
    cells = " ".join(f"{k}:{v['mean']:.4f}±{v['std']:.4f}" for k, v in report["results"][method].items())
    click.echo(f"zero-shot {zero:.4f}; {method} {cells}")


@adapt.command(name="linear-probe")
@common_options
def linear_probe(**params: Any) -> None:
    """Logistic regression on frozen image features, C chosen on val (coarse sweep + binary search)."""
    config = adapt_config(params)
    _summary(run_linear_probe(config), "linear-probe")
    click.echo(f"wrote {config.out / 'adapt.json'} and adapt.html")


@adapt.command()
@common_options
@click.option("--n-ctx", default=16, show_default=True, help="Context vectors when --ctx-init is empty.")
@click.option("--ctx-init", default="a photo of a", show_default=True,
              help="Text that initializes the context (its token count sets M); '' for random init.")
@click.option("--class-position", type=click.Choice(CLASS_POSITIONS), default="end", show_default=True)
@click.option("--class-specific", is_flag=True, help="One context per class instead of a shared one.")
@click.option("--epochs", default=0, show_default=True, help="0: the paper's schedule (50/100/200 by shots).")
@click.option("--lr", "lrs", multiple=True, type=float,
              help="SGD learning rate (default 0.002, the paper's); several: each run keeps the best on val.")
def coop(n_ctx: int, ctx_init: str, class_position: str, class_specific: bool, epochs: int,
         lrs: tuple[float, ...], **params: Any) -> None:
    """CoOp prompt learning: M context vectors learned in the text tower's input space."""
    config = adapt_config(params)
    prompt = CoopConfig(n_ctx=n_ctx, ctx_init=ctx_init, class_specific=class_specific,
                        class_position=class_position, epochs=epochs)
    report = run_coop(config, prompt, lrs)
    _summary(report, "coop")
    click.echo(f"learned prompt: {report['coop']['prompt']} (use: clipforge classify --prompt ...)")


@adapt.command(name="wise-ft")
@common_options
@click.option("--shift", "shifts", multiple=True,
              help="Shifted test data, e.g. corrupt:gaussian_noise:3:SPEC (repeat for several).")
@click.option("--epochs", default=10, show_default=True, help="Fine-tuning epochs.")
@click.option("--lr", "lrs", multiple=True, type=float, help=f"Learning rates tried on val (default {LRS}).")
def wise_ft(shifts: tuple[str, ...], epochs: int, lrs: tuple[float, ...], **params: Any) -> None:
    """Fine-tune from the zero-shot head, then mix weights along α in 0, 0.1, ..., 1."""
    config = adapt_config(params)
    report = run_wise_ft(config, WiseFtConfig(epochs=epochs, lrs=lrs or LRS), shifts)
    _summary(report, "wise-ft")
    section = report["wise_ft"]
    for name, curve in section["curves"].items():
        points = " ".join(f"{a:g}:{v:.4f}" for a, v in zip(section["alphas"], curve["mean"], strict=True))
        click.echo(f"{name} along alpha: {points}")
