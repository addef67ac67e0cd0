"""Sampling speed of a generator: key/value-cache decoding vs recomputing the prefix for every token.

    python benchmarks/bench_generate.py [--model skills-generator-32] [--images 64] [--threads 2] [--write]

Draws the same images both ways (same seeds, so the same tokens: checked) at the architecture's own
image-token length, and reports images/s and the speed-up (tokens and decoding to pixels included).
Weights are random: speed does not depend on them. `--write` puts the table in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

from _results import write_section


def time_sampling(model, text, seeds, config) -> tuple[float, object]:  # noqa: ANN001
    from clipforge.dalle.sampling import sample_tokens

    start = time.perf_counter()
    tokens = sample_tokens(model, text, seeds, config)
    model.decode(tokens)
    return time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="skills-generator-32")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--cond-scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from clipforge.dalle.sampling import SamplingConfig
    from clipforge.models.registry import create_any_model
    from clipforge.tokenizer import get_tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_any_model(args.model).eval()
    config = model.config
    text = get_tokenizer(config.tokenizer)(["a red star to the left of a circle"] * args.images)
    seeds = list(range(args.images))
    cached = SamplingConfig(cond_scale=args.cond_scale, batch_size=args.images)
    time_sampling(model, text[:2], seeds[:2], cached)  # warm-up
    fast_s, fast = time_sampling(model, text, seeds, cached)
    slow_s, slow = time_sampling(model, text, seeds, dataclasses.replace(cached, use_cache=False))
    assert torch.equal(fast, slow), "cached and uncached sampling disagree"
    rows = [
        f"| {args.model} | {config.image_tokens} | {config.text_context} | {args.images} | "
        f"{args.images / fast_s:.1f} | {args.images / slow_s:.1f} | {slow_s / fast_s:.1f}x |"
    ]
    print(rows[0])
    if args.write:
        load = os.getloadavg()[0]
        text_block = "\n".join([
            "### Generation: key/value-cache sampling",
            "",
            f"`python benchmarks/bench_generate.py --model {args.model} --images {args.images} "
            f"--threads {args.threads} --write` ({args.threads} torch threads, load average {load:.1f} "
            f"at the end; random weights; guidance scale {args.cond_scale}). Same seeds both ways: the "
            "tokens are identical (checked).",
            "",
            "| model | image tokens | text tokens | images | cached img/s | uncached img/s | speed-up |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ])
        write_section("generate-sampling", text_block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
