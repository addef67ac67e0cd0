"""Writes one benchmark's block of `benchmarks/RESULTS.md`, leaving every other block as it is."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _replace(current: str, name: str, text: str, container: str | None) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in current and end in current:
        head, _, rest = current.partition(begin)
        return head + block + rest.partition(end)[2]
    if container is not None:
        outer_end = f"<!-- {container}:end -->"
        if outer_end not in current:
            current = _replace(current, container, "", None)
        return current.replace(outer_end, f"{block}\n{outer_end}", 1)
    return current.rstrip("\n") + f"\n\n{block}\n"


def write_section(name: str, text: str, container: str | None = None) -> None:
    """Puts `text` between `<!-- name:begin -->` and `<!-- name:end -->`, inside `container` if given."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(_replace(current, name, text, container))
