"""What every command shares: printing file names safely on one line, and the model-runtime options.

A file name may hold a newline, a tab, an escape sequence or bytes that are not UTF-8 (kept as lone
surrogates); printed raw it would break line-oriented output (one result per line) or crash the print.
`quote_path` prints such names as Python string literals, the same way everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from clipforge.device import BACKENDS, DEVICES, PRECISIONS, Runtime, set_threads

F = TypeVar("F", bound=Callable[..., Any])


def quote_path(name: str) -> str:
    """`name` as is when it is plain printable text, else quoted with escapes (e.g. ``'a\\nb.jpg'``).

    Names that start with a quote are quoted too, so a quoted name never reads as another plain one.
    """
    if name.isprintable() and not name.startswith(("'", '"')):
        return name
    return repr(name)


def one_line(text: str) -> str:
    """`text` with control characters and undecodable bytes escaped, so a message stays on one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


_DEVICE_HELP = "Where the model runs: cpu, cuda, or auto (cuda when available)."


def runtime_options(command: F) -> F:
    """Adds ``--device auto|cpu|cuda`` and ``--threads N`` to a command that runs a model.

    ``--threads`` is applied here (torch's intra-op threads are process-wide, and onnxruntime sessions
    take the same count); the command passes ``device`` on to the library call that loads the model.
    """
    command = click.option(
        "--threads", type=click.IntRange(min=0), default=0, show_default=True, expose_value=False,
        callback=lambda _ctx, _param, value: set_threads(value),
        help="CPU threads for torch and onnxruntime (0: default).",
    )(command)
    return click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
                        help=_DEVICE_HELP)(command)


def run_options(command: F) -> F:
    """``--device`` and ``--threads`` for a command whose run config records them (train, quickstart).

    Both reach the command as values (None when not given, leaving the config's own), because a training
    run pins its thread count itself and ``--resume`` must keep what the run was started with.
    """
    command = click.option(
        "--threads", type=click.IntRange(min=0), default=None,
        help="CPU threads for torch (0: torch's default) [default: the run config's].",
    )(command)
    return click.option("--device", type=click.Choice(DEVICES), default=None,
                        help=f"{_DEVICE_HELP} [default: the run config's, cpu]")(command)


def inference_options(command: F) -> F:
    """`runtime_options` plus ``--backend torch|onnx`` and ``--precision fp32|bf16|int8``, for commands
    that only encode (classify, eval, embed, search, serve, skills score).

    The command receives device, backend and precision as one ``runtime: Runtime`` argument and passes
    it on to the library call that loads the model.
    """

    @functools.wraps(command)
    def with_runtime(*args: Any, device: str, backend: str, precision: str, **kwargs: Any) -> Any:
        return command(*args, runtime=Runtime(device, backend, precision), **kwargs)

    with_precision = click.option(
        "--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
        help="fp32; bf16 (torch, where the CPU has bf16 units); int8 (onnx graphs or torch dynamic "
             "quantization).",
    )(with_runtime)
    with_backend = click.option(
        "--backend", type=click.Choice(BACKENDS), default="torch", show_default=True,
        help="torch, or onnx (onnxruntime; a torch model is exported for the run first).",
    )(with_precision)
    return cast(F, runtime_options(with_backend))
