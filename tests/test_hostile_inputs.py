"""The crafted-input corpus of `benchmarks/fuzz_inputs.py`, run in-process (issue 9, items 2, 4 and 5).

Every checkpoint/config case is refused with a one-line ClipforgeError (main gave raw tracebacks for 15 of
42, e.g. RecursionError on nested JSON, IsADirectoryError, TypeError from `_StorageType`, allocator errors
for widths of 1e7), no payload runs, every image is decoded or refused as a counted skip (main: MemoryError
on the 2,000,000 x 1 PNG, hang on the FIFO), and the readers lose nothing silently.
"""

from __future__ import annotations

import importlib.util
import resource
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_inputs.py"


def _fuzz_module() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_inputs", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_inputs"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


fuzz = _fuzz_module()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], Path]:
    return fuzz.build_corpus(tmp_path_factory.mktemp("fuzz"))  # type: ignore[no-any-return]


@pytest.mark.slow
def test_every_crafted_input_is_handled(corpus: tuple[list[Any], Path]) -> None:
    cases, marker = corpus
    groups = {group: [c for c in cases if c.group == group] for group in ("checkpoint", "image", "reader")}
    assert len(groups["checkpoint"]) >= 40 and len(groups["image"]) >= 35 and len(groups["reader"]) >= 10
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    failures = [f"{o.case.group}: {o.case.name}: {o.result}: {o.detail}"
                for o in map(fuzz.run_case, cases) if not o.ok]
    assert failures == []
    assert not marker.exists(), "a crafted pickle ran code"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < fuzz.RSS_BOUND_MB  # the 1 GiB zip bomb and the 10^10-float header are never inflated
