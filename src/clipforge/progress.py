"""Progress of long jobs, one mechanism everywhere.

A job reports through a `Say` sink: one line per stage or event. Counted work (training steps, feature
extraction, embedding) goes through `Progress`: a tqdm bar when asked for one on a terminal, otherwise a
line to the sink every tenth of the way. Library functions take the sink as an argument, so the CLI prints
to stderr, the quickstart forwards its training processes' lines through a queue, and tests collect them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType

from tqdm import tqdm

Say = Callable[[str], None]


def to_stderr(message: str) -> None:
    """The default sink: ``clipforge: message`` on stderr, so stdout stays clean for results."""
    print(f"clipforge: {message}", file=sys.stderr, flush=True)


def quiet(message: str) -> None:
    """A sink that drops every line (other ranks of a distributed run, silent library calls)."""


def on_terminal() -> bool:
    """Whether stderr is a terminal, where a redrawn bar reads better than lines."""
    return sys.stderr.isatty()


class Progress:
    """Counts work done out of `total`.

    Args:
        label: what is being counted, e.g. ``train`` or ``image features of 'flickr8k'``.
        total: units of work in all.
        say: where lines go.
        bar: draw a tqdm bar on stderr instead of lines (callers pass `on_terminal()` and their own switch).
        start: units already done (a resumed run).
        unit: the unit's name on the bar.
        tenths: without a bar, say ``label: done/total`` each time another tenth is done.
    """

    def __init__(self, label: str, total: int, say: Say = to_stderr, *, bar: bool = False, start: int = 0,
                 unit: str = "it", tenths: bool = True) -> None:
        self.label, self.total, self.say, self.done, self.tenths = label, total, say, start, tenths
        self._bar = tqdm(total=total, initial=start, unit=unit, desc=label, file=sys.stderr) if bar else None
        self._said = {self._tenth()}

    def _tenth(self) -> int:
        return 10 * self.done // max(self.total, 1)

    def update(self, n: int = 1, **fields: str) -> None:
        """Counts `n` more units; `fields` (e.g. ``loss="0.31"``) are shown beside the bar."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if fields:
                self._bar.set_postfix(fields)
        elif self.tenths and self._tenth() not in self._said:
            self._said.add(self._tenth())
            self.say(f"{self.label}: {self.done}/{self.total}")

    def advance_to(self, done: int) -> None:
        """Counts up to `done` units in all (for work that reports absolute positions)."""
        self.update(done - self.done)

    def note(self, message: str) -> None:
        """A line about the work in progress, written above the bar when there is one."""
        if self._bar is None:
            self.say(message)
            return
        with tqdm.external_write_mode(file=sys.stderr):
            self.say(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
