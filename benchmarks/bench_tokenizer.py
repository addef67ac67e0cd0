"""Throughput of clipforge's CLIP BPE tokenizer on 10k captions, with a cold and a warm word cache.

Run: python benchmarks/bench_tokenizer.py [--captions ../shared/data/flickr8k/captions.txt]
Uses the Flickr8k captions when the file exists, otherwise seeded synthetic captions.
"""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path

import click

from clipforge.tokenizer import ClipTokenizer
from clipforge.tokenizer.bpe import load_vocab

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAPTIONS = REPO.parent / "shared" / "data" / "flickr8k" / "captions.txt"


def synthetic_captions(n: int, seed: int = 0) -> list[str]:
    """Varied caption-like strings: a shared core vocabulary plus rare made-up words and numbers."""
    rng = random.Random(seed)
    common = ["a", "man", "woman", "dog", "cat", "child", "girl", "boy", "in", "on", "the", "of", "with",
              "running", "jumping", "sitting", "red", "blue", "grass", "water", "beach", "street", "ball",
              "bike", "near", "two", "three", "people", "wearing", "shirt", "3", "Zoë", "naïve", "&amp;"]
    captions = []
    for _ in range(n):
        words = [rng.choice(common) for _ in range(rng.randint(5, 18))]
        if rng.random() < 0.5:  # a novel word keeps the cold cache honest
            words.insert(rng.randrange(len(words)), "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=8)))
        captions.append(" ".join(words).capitalize() + rng.choice([" .", "!", "", " , ok"]))
    return captions


def load_captions(path: Path, n: int) -> tuple[list[str], str]:
    """The first n captions of a Flickr8k-style CSV (image,caption), or synthetic ones if it is missing."""
    if not path.is_file():
        return synthetic_captions(n), "synthetic"
    with path.open(encoding="utf-8", newline="") as f:
        captions = [row["caption"] for row in csv.DictReader(f)][:n]
    return captions, str(path)


def captions_per_second(tokenizer: ClipTokenizer, captions: list[str], batch_size: int) -> float:
    """Tokenizes all captions in batches and returns the throughput."""
    start = time.perf_counter()
    for i in range(0, len(captions), batch_size):
        tokenizer(captions[i : i + batch_size])
    return len(captions) / (time.perf_counter() - start)


@click.command()
@click.option("--captions", "captions_path", type=click.Path(path_type=Path), default=DEFAULT_CAPTIONS)
@click.option("--n", default=10_000, show_default=True, help="number of captions")
@click.option("--batch-size", default=256, show_default=True)
def main(captions_path: Path, n: int, batch_size: int) -> None:
    """Prints captions/s for a cold and a warm word cache."""
    captions, source = load_captions(captions_path, n)
    start = time.perf_counter()
    load_vocab()
    click.echo(f"vocab load: {time.perf_counter() - start:.2f} s; {len(captions)} captions from {source}")
    tokenizer = ClipTokenizer()
    cold = captions_per_second(tokenizer, captions, batch_size)
    click.echo(f"cold cache: {cold:,.0f} captions/s ({len(tokenizer._cache)} words cached)")
    warm = captions_per_second(tokenizer, captions, batch_size)
    click.echo(f"warm cache: {warm:,.0f} captions/s")


if __name__ == "__main__":
    main()
