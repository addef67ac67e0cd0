"""Embedding throughput of `clipforge embed` (images/s), end to end: list, decode, preprocess, encode, store.

    python benchmarks/bench_embed.py [--models tiny-vit,ViT-B-32] [--images 256] [--workers 2] [--write]

Uses the first N Flickr8k images when ../shared/data/flickr8k exists (224x224 JPEGs), else generated
224x224 JPEGs. Model weights are random (speed does not depend on them); model loading is timed
separately and left out of the rate. `--write` adds the table to benchmarks/RESULTS.md inside the
search section's markers, below the search table.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _results import write_section

REPO = Path(__file__).resolve().parents[1]
FLICKR = REPO.parent / "shared" / "data" / "flickr8k" / "images"


def collect_images(folder: Path, count: int) -> str:
    """Links (or generates) `count` JPEGs into `folder`; returns where they came from."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    if FLICKR.is_dir():
        for path in sorted(FLICKR.glob("*.jpg"))[:count]:
            (folder / path.name).symlink_to(path)
        return "Flickr8k JPEGs (224x224)"
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=85)
    return "generated noise JPEGs (224x224)"


def bench_model(name: str, images: Path, work: Path, batch_size: int, workers: int) -> dict:
    import torch

    from clipforge import create_model
    from clipforge.checkpoint import save
    from clipforge.index import EmbedConfig, embed_collection

    torch.manual_seed(0)
    model_dir = save(create_model(name), work / f"model-{name}")
    start = time.perf_counter()
    from clipforge.checkpoint import load

    load(model_dir)
    load_s = time.perf_counter() - start
    config = EmbedConfig(str(model_dir), work / f"idx-{name}", images=images, batch_size=batch_size,
                         workers=workers, progress=False)
    start = time.perf_counter()
    report = embed_collection(config)
    total_s = time.perf_counter() - start
    rate = report.total / max(total_s - load_s, 1e-9)
    print(f"{name:<12} {report.total} images, {total_s:.1f}s (load {load_s:.1f}s): {rate:.1f} img/s")
    return {"model": name, "images": report.total, "seconds": total_s - load_s, "rate": rate}


def write_block(name: str, text: str) -> None:
    """Puts `text` in sub-block `name` of the search section of RESULTS.md."""
    write_section(name, text, container="search")

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-vit,ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        source = collect_images(work / "images", args.images)
        models = args.models.split(",")
        rows = [bench_model(m, work / "images", work, args.batch_size, args.workers) for m in models]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "### Embedding throughput (`clipforge embed`)",
        "",
        f"`python benchmarks/bench_embed.py`: {source}, batch {args.batch_size}, {args.workers} workers, "
        f"{args.threads} torch threads; decode + preprocess + encode + SQLite write, model loading excluded.",
        "",
        "| model | images | seconds | images/s |",
        "|---|---:|---:|---:|",
        *(f"| {r['model']} | {r['images']} | {r['seconds']:.1f} | {r['rate']:.1f} |" for r in rows),
    ]
    print("\n".join(lines))
    if args.write:
        write_block("embed-throughput", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
