"""Entry point of the `clipforge` command.

Every command module is thin: it parses argv into a typed config and makes one library call.
Modules are imported here so that `clipforge --help` lists every command.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import TextIO

import click

from clipforge.cli.output import one_line
from clipforge.errors import ClipforgeError, RandomWeightsWarning, RuntimeNotice
from clipforge.version import __version__

# One module per command group; each defines `register(group)`.
COMMAND_MODULES = [
    "clipforge.cli.models_cmd",
    "clipforge.cli.classify_cmd",
    "clipforge.cli.eval_cmd",
    "clipforge.cli.quickstart_cmd",
    "clipforge.cli.convert_cmd",
    "clipforge.cli.export_cmd",
    "clipforge.cli.train_cmd",
    "clipforge.cli.synth_cmd",
    "clipforge.cli.embed_cmd",
    "clipforge.cli.search_cmd",
    "clipforge.cli.serve_cmd",
    "clipforge.cli.probe_cmd",
    "clipforge.cli.skills_cmd",
    "clipforge.cli.generate_cmd",
    "clipforge.cli.adapt_cmd",
]


class _Group(click.Group):
    """Turns clipforge errors into one-line messages instead of tracebacks, and warnings into lines."""

    def invoke(self, ctx: click.Context) -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RandomWeightsWarning)
            warnings.simplefilter("always", RuntimeNotice)
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except ClipforgeError as err:
                click.echo(f"Error: {one_line(str(err))}", err=True)  # the line a ClickException would print
                raise click.exceptions.Exit(err.exit_code) from err


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Our warnings as one `warning: ...` line on stderr (others keep Python's format)."""
    if issubclass(category, RandomWeightsWarning):
        click.echo(f"warning: {one_line(str(message))}", err=True)
    elif issubclass(category, RuntimeNotice):
        click.echo(f"notice: {one_line(str(message))}", err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line).rstrip(), err=True)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="clipforge")
def main() -> None:
    """Train, use, search with and probe CLIP-style image-text models, offline on a CPU."""


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(main)


_register_all()

if __name__ == "__main__":
    sys.exit(main())
