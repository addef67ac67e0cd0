"""A bounded soak of `clipforge serve` on loopback (benchmarks/bench_serve.py, scaled down).

Health must stay fast while uploads keep the model busy, nothing but load shedding (503) may fail,
and the server's memory must level off once warm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_serve  # noqa: E402

HEALTH_P95_S = 0.2
# From the end of the warm-up round to the end of the last: allocator caches may still settle a little,
# but keeping one decoded upload per image request (224x224 RGB + its tensor, ~0.8 MB) would pass it
# within the ~100 uploads of a round.
RSS_GROWTH_MB = 40


@pytest.mark.slow
def test_health_stays_fast_and_memory_levels_off_under_mixed_load(tmp_path: Path) -> None:
    args = argparse.Namespace(index_images=40, clients=12, seconds=6.0, rounds=3, max_requests=2000,
                              threads=1, queue=16)
    rounds = bench_serve.soak("tiny-vit", tmp_path, args)  # the tiny registry model, random weights
    for stats in rounds:
        assert stats.percentile("health", 95) < HEALTH_P95_S, bench_serve.summary(stats)
        assert not stats.errors, bench_serve.summary(stats)
        assert len(stats.latencies.get("image", [])) >= 5 and len(stats.latencies.get("classify", [])) >= 5
    assert rounds[-1].rss_mb - rounds[0].rss_mb < RSS_GROWTH_MB, [r.rss_mb for r in rounds]
