"""Training throughput (samples/s) of the engine on synthetic scenes, one optimizer step at a time.

    python benchmarks/bench_train.py [--models tiny-convnet,ConvNet-64px,ViT-T-64px] [--steps 10]
                                     [--batch-size 64] [--threads 1] [--hard-negatives 0,3] [--write]

Each row builds the run of configs/synthetic-tiny.toml with the given model and batch, takes 2 warm-up
steps, then times `--steps` full optimizer steps (scene rendering, tokenization, forward, backward,
AdamW). "data ms" is the time to make one batch, timed on its own. `--write` puts the table in
benchmarks/RESULTS.md between the `<!-- train:begin -->` / `<!-- train:end -->` markers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from _results import write_section

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "synthetic-tiny.toml"


def bench(model: str, batch_size: int, hard_negatives: int, steps: int) -> dict[str, float | str | int]:
    """Times `steps` optimizer steps of one configuration."""
    from clipforge.progress import quiet
    from clipforge.train.config import load_config
    from clipforge.train.distributed import DistEnv
    from clipforge.train.loop import build_trainer

    overrides = [f"model.name={model}", f"train.batch_size={batch_size}",
                 f"loss.hard_negatives={hard_negatives}", f"data.n_train={batch_size * (2 * steps + 2)}"]
    trainer = build_trainer(load_config(CONFIG, overrides), DistEnv(), quiet)
    for _ in range(2):
        trainer.step()
    began = time.perf_counter()
    for _ in range(steps):  # the batches of the next steps, made once just to time the data side
        trainer.task.batches.next_batch()
    data_s = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    seconds = time.perf_counter() - began
    return {"model": model, "batch": batch_size, "negatives": hard_negatives,
            "samples_s": batch_size * steps / seconds, "step_ms": 1000 * seconds / steps,
            "data_ms": 1000 * data_s / steps}


def table(rows: list[dict[str, float | str | int]], threads: int) -> str:
    import torch

    head = (f"## Training throughput\n\n`python benchmarks/bench_train.py` on {platform.machine()}, "
            f"{threads} torch thread(s) (torch {torch.__version__}), load average {os.getloadavg()[0]:.1f} "
            "at the end (other jobs inflate every time); synthetic scenes, InfoNCE, AdamW.\n\n"
            "| model | batch | hard negatives | samples/s | ms/step | data ms/step |\n"
            "|---|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['model']} | {r['batch']} | {r['negatives']} | {r['samples_s']:.0f} | "
             f"{r['step_ms']:.0f} | {r['data_ms']:.0f} |" for r in rows]
    return head + "\n".join(lines) + "\n"


def write(text: str) -> None:
    """Replaces the train block of RESULTS.md (appending it the first time)."""
    write_section("train", text)

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-convnet,ConvNet-64px,ViT-T-64px")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hard-negatives", default="0,3")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for model in args.models.split(","):
        for k in (int(k) for k in args.hard_negatives.split(",")):
            rows.append(bench(model, args.batch_size, k, args.steps))
            print(f"{model} K={k}: {rows[-1]['samples_s']:.0f} samples/s", file=sys.stderr)
    text = table(rows, args.threads)
    print(text)
    if args.write:
        write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
