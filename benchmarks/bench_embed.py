"""`clipforge embed` throughput against the raw encoder on pre-decoded tensors, interleaved.

    python benchmarks/bench_embed.py [--models effnetlite0-minilm,ViT-B-32] [--images 512] [--write]

For each model, alternately (raw, embed, raw, embed, ...; medians over `--reps`):
- raw: `encoder.encode` over the images already decoded and preprocessed into one tensor, in
  batches of `--batch-size`, on `--threads` threads: the ceiling for embedding.
- embed: `embed_collection` into a fresh index folder with the same encoder (list, read, decode,
  resize and crop to uint8 in `--workers` DataLoader workers, normalize each batch in the main
  process, encode, SQLite write, index update): images/s of the whole run. Loading the model and
  fingerprinting its weights happen once per run and are reported separately as start-up.

Uses the first N Flickr8k images when ../shared/data/flickr8k exists (224x224 JPEGs), else generated
224x224 JPEGs. Weights are random (speed does not depend on them). `--write` puts the table in
benchmarks/RESULTS.md inside the search section.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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


def raw_rate(encoder, pixels, batch_size: int) -> float:  # type: ignore[no-untyped-def]
    """Images/s of the encoder alone over pre-decoded pixels [N, 3, S, S]."""
    start = time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        encoder.encode(pixels[i : i + batch_size])
    return len(pixels) / (time.perf_counter() - start)


def embed_rate(encoder, images: Path, out: Path, args: argparse.Namespace) -> float:  # type: ignore[no-untyped-def]
    """Images/s of a full `embed_collection` run into a fresh folder."""
    from clipforge.index import EmbedConfig, embed_collection

    shutil.rmtree(out, ignore_errors=True)
    config = EmbedConfig("bench", out, images=images, batch_size=args.batch_size, workers=args.workers,
                         threads=args.threads, progress=False)
    start = time.perf_counter()
    report = embed_collection(config, encoder=encoder)
    return report.total / (time.perf_counter() - start)


def bench_model(name: str, images: Path, work: Path, args: argparse.Namespace) -> dict:
    import torch

    from clipforge import create_model
    from clipforge.checkpoint import save
    from clipforge.data.transforms import load_image
    from clipforge.index.embed import load_encoder

    torch.manual_seed(0)
    model_dir = save(create_model(name), work / f"model-{name}")
    start = time.perf_counter()
    encoder = load_encoder(str(model_dir))
    startup = time.perf_counter() - start
    pixels = torch.stack([encoder.preprocess(load_image(p)) for p in sorted(images.iterdir())])
    raw_rate(encoder, pixels[: args.batch_size], args.batch_size)  # warm-up
    raws, embeds = [], []
    for _ in range(args.reps):
        raws.append(raw_rate(encoder, pixels, args.batch_size))
        embeds.append(embed_rate(encoder, images, work / f"idx-{name}", args))
        print(f"{name:<20} raw {raws[-1]:6.1f} img/s   embed {embeds[-1]:6.1f} img/s", flush=True)
    raw, emb = statistics.median(raws), statistics.median(embeds)
    return {"model": name, "startup": startup, "raw": raw, "embed": emb, "ratio": emb / raw}


def table(rows: list[dict], source: str, args: argparse.Namespace) -> str:
    lines = [
        "### Embedding throughput (`clipforge embed` vs the raw encoder)",
        "",
        f"`python benchmarks/bench_embed.py`: {args.images} {source}, batch {args.batch_size}, "
        f"{args.workers} decoding workers, {args.threads} torch threads; medians of {args.reps} interleaved "
        "runs. *raw*: the encoder alone on pre-decoded tensors; *embed*: a whole `embed_collection` run "
        "(list, read, decode + crop to uint8 in workers, normalize per batch, encode, SQLite, index); "
        "start-up = model load + weight fingerprint, once per run. 1-min load average "
        f"{args.load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| model | raw img/s | embed img/s | embed / raw | start-up (s) |",
        "|---|---:|---:|---:|---:|",
        *(f"| {r['model']} | {r['raw']:.1f} | {r['embed']:.1f} | {100 * r['ratio']:.0f}% | "
          f"{r['startup']:.1f} |" for r in rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="effnetlite0-minilm,ViT-B-32")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args.load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        source = collect_images(work / "images", args.images)
        rows = [bench_model(m, work / "images", work, args) for m in args.models.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(rows, source, args)
    print(text)
    if args.write:
        write_section("embed-throughput", text, container="search")
    return 0


if __name__ == "__main__":
    sys.exit(main())
