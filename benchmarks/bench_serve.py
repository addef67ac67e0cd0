"""Load and soak test of `clipforge serve` on loopback: latency, shedding, errors and memory.

    python benchmarks/bench_serve.py [--model tiny-vit] [--clients 50] [--seconds 30] [--rounds 3] [--write]

Builds an index of `--index-images` images, starts `clipforge serve` in a child process on a free
loopback port, then runs `--rounds` rounds. In each, `--clients` threads send requests back to
back for `--seconds` (at most `--max-requests` in all), mixing text search (50%), image search
(30%) and zero-shot classification (20%) of real JPEG uploads (a client told 503 waits the 1 s its
Retry-After asks), while one more thread probes `/api/health` every 50 ms. A round reports per
endpoint: requests, p50/p95 latency of the answered ones, 503s (shed by the server's bounded
queue) and errors (anything else that is not a 200); and the server's resident memory (RSS) after
it. The first round is the warm-up; RSS growth is measured from its end to the end of the last round.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLICKR = REPO.parent / "shared" / "data" / "flickr8k" / "images"
MIX = (("text", 0.5), ("image", 0.3), ("classify", 0.2))
QUERIES = ("a dog running on the beach", "two people on a bench", "a red car", "children playing in snow")
LABELS = "dog, cat, person, car, beach, snow, bicycle"
RETRY_AFTER_S = 1.0


@dataclass
class RoundStats:
    """Latencies (s) by endpoint, with 503 and error counts, and the server's RSS after the round."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    shed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    rss_mb: float = 0.0

    def record(self, op: str, seconds: float, status: int) -> None:
        if status == 200:
            self.latencies.setdefault(op, []).append(seconds)
        elif status == 503:
            self.shed[op] = self.shed.get(op, 0) + 1
        else:
            self.errors[op] = self.errors.get(op, 0) + 1

    def percentile(self, op: str, q: float) -> float:
        import numpy as np

        values = self.latencies.get(op, [])
        return float(np.percentile(values, q)) if values else float("nan")

    def total(self, op: str) -> int:
        return len(self.latencies.get(op, [])) + self.shed.get(op, 0) + self.errors.get(op, 0)


def build_index(model: str, folder: Path, count: int) -> list[bytes]:
    """Embeds `count` JPEGs (Flickr8k, else generated) into `folder`; returns a few as upload payloads.

    A registry name is saved with seed-0 weights first, so that the server loads the same weights.
    """
    import torch

    from clipforge import create_model
    from clipforge.checkpoint import save
    from clipforge.index import EmbedConfig, embed_collection

    if not Path(model).exists():
        torch.manual_seed(0)
        model = str(save(create_model(model), folder / "model"))
    images = folder / "images"
    images.mkdir(parents=True)
    if FLICKR.is_dir():
        for path in sorted(FLICKR.glob("*.jpg"))[:count]:
            (images / path.name).symlink_to(path)
    else:
        _generate_jpegs(images, count)
    embed_collection(EmbedConfig(model, folder / "idx", images=images, workers=0, progress=False))
    return [p.read_bytes() for p in sorted(images.iterdir())[:8]]


def _generate_jpegs(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(folder / f"{i:05d}.jpg")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(index: Path, port: int, threads: int, queue: int) -> subprocess.Popen[bytes]:
    """`clipforge serve` in a child process; returns once /api/health answers."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "clipforge.cli.main", "serve", "--index", str(index), "--port",
               str(port), "--threads", str(threads), "--queue", str(queue), "--device", "cpu"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            said = server.stderr.read().decode()[-2000:] if server.stderr else ""
            raise RuntimeError(f"server exited: {said}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("server did not start within 180 s")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_round(url: str, payloads: list[bytes], clients: int, seconds: float, max_requests: int) -> RoundStats:
    """One round of mixed load plus a health probe; returns its statistics."""
    stats, lock = RoundStats(), threading.Lock()
    stop = time.monotonic() + seconds
    budget = [max_requests]
    workers = [threading.Thread(target=_client, args=(url, payloads, stop, budget, stats, lock, seed))
               for seed in range(clients)]
    probe = threading.Thread(target=_probe, args=(url, stop, stats, lock))
    for thread in [*workers, probe]:
        thread.start()
    for thread in [*workers, probe]:
        thread.join()
    return stats


def _client(url, payloads, stop, budget, stats, lock, seed) -> None:  # type: ignore[no-untyped-def]
    import httpx

    rng = random.Random(seed)
    ops, weights = zip(*MIX, strict=True)
    with httpx.Client(base_url=url, timeout=120) as client:
        while time.monotonic() < stop:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            op = rng.choices(ops, weights)[0]
            start = time.perf_counter()
            try:
                status = _request(client, op, rng, payloads)
            except httpx.HTTPError:
                status = -1
            with lock:
                stats.record(op, time.perf_counter() - start, status)
            if status == 503:
                time.sleep(RETRY_AFTER_S)  # as the server's Retry-After asks; no tight loop of refusals


def _request(client, op: str, rng: random.Random, payloads: list[bytes]) -> int:  # type: ignore[no-untyped-def]
    if op == "text":
        return int(client.get("/api/search", params={"q": rng.choice(QUERIES), "k": 10}).status_code)
    files = {"file": ("q.jpg", io.BytesIO(rng.choice(payloads)), "image/jpeg")}
    if op == "image":
        return int(client.post("/api/search/image", params={"k": 10}, files=files).status_code)
    return int(client.post("/api/classify", files=files, data={"labels": LABELS}).status_code)


def _probe(url, stop, stats, lock) -> None:  # type: ignore[no-untyped-def]
    import httpx

    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                status = client.get("/api/health").status_code
            except httpx.HTTPError:
                status = -1
            with lock:
                stats.record("health", time.perf_counter() - start, status)
            time.sleep(0.05)


def soak(model: str, work: Path, args: argparse.Namespace) -> list[RoundStats]:
    """Builds the index, serves it, runs the rounds; the server is stopped whatever happens."""
    payloads = build_index(model, work, args.index_images)
    port = free_port()
    server = start_server(work / "idx", port, args.threads, args.queue)
    rounds = []
    try:
        for i in range(args.rounds):
            url = f"http://127.0.0.1:{port}"
            stats = run_round(url, payloads, args.clients, args.seconds, args.max_requests)
            stats.rss_mb = rss_mb(server.pid)
            rounds.append(stats)
            print(f"round {i + 1}: " + summary(stats), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    return rounds


def summary(stats: RoundStats) -> str:
    parts = [f"{op} n={stats.total(op)} p50={1e3 * stats.percentile(op, 50):.0f}ms "
             f"p95={1e3 * stats.percentile(op, 95):.0f}ms shed={stats.shed.get(op, 0)} "
             f"err={stats.errors.get(op, 0)}" for op in ("health", "text", "image", "classify")]
    return "; ".join(parts) + f"; RSS {stats.rss_mb:.0f} MB"


def table(rounds: list[RoundStats], args: argparse.Namespace) -> str:
    lines = [
        "### Serving under load (`clipforge serve`, loopback)",
        "",
        f"`python benchmarks/bench_serve.py --model {args.model} --clients {args.clients} --seconds "
        f"{args.seconds:g} --rounds {args.rounds}`: {args.clients} clients back to back (text 50%, image "
        "upload 30%, classify 20%; after a 503 a client waits the 1 s Retry-After asks) + a health probe "
        f"every 50 ms; server `--threads {args.threads} --concurrency 1 --queue {args.queue}`; the load "
        "generator runs on the same machine. Latencies are of answered (200) requests.",
        "",
        "| round | endpoint | requests | p50 (ms) | p95 (ms) | 503 shed | errors | server RSS after (MB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, stats in enumerate(rounds, start=1):
        for op in ("health", "text", "image", "classify"):
            lines.append(f"| {i} | {op} | {stats.total(op)} | {1e3 * stats.percentile(op, 50):.0f} | "
                         f"{1e3 * stats.percentile(op, 95):.0f} | {stats.shed.get(op, 0)} | "
                         f"{stats.errors.get(op, 0)} | {stats.rss_mb:.0f} |")
    growth = rounds[-1].rss_mb - rounds[0].rss_mb
    lines += ["", f"RSS growth from the end of round 1 (warm-up) to the end of round {len(rounds)}: "
              f"{growth:+.1f} MB."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-vit")
    parser.add_argument("--index-images", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-requests", type=int, default=20_000, help="per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queue", type=int, default=16)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        rounds = soak(args.model, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(rounds, args)
    print(text)
    if args.write:
        from _results import write_section

        write_section("serve-load", text, container="search")
    return 0


if __name__ == "__main__":
    sys.exit(main())
