"""What a finer dVAE grid costs the transformer: CPU seconds of one training step of a generator whose dVAE
writes an 8x8 grid (64 image tokens) and of the same generator over a 16x16 grid (256 tokens), interleaved
in one process so that the ratio survives a loaded machine.

    python benchmarks/gen_token_cost.py --generator quickstart-generator-32 --steps 6
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="quickstart-generator-32", help="registry generator, 8x8 dVAE")
    parser.add_argument("--fine-dvae", default="skills-dvae-32-g16", help="registry dVAE with the finer grid")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model (the first is dropped)")
    args = parser.parse_args(argv)
    import torch

    from clipforge.dalle.batches import TokenBatch
    from clipforge.models.dvae import DVAEConfig
    from clipforge.models.generator import Generator, GeneratorConfig
    from clipforge.models.registry import get_any_config
    from clipforge.train.dalle_objectives import PriorObjective, prior_loss

    torch.set_num_threads(1)
    torch.manual_seed(0)
    coarse, fine = get_any_config(args.generator), get_any_config(args.fine_dvae)
    assert isinstance(coarse, GeneratorConfig) and isinstance(fine, DVAEConfig)
    configs = (coarse, dataclasses.replace(coarse, dvae=fine))
    models = {f"{c.dvae.grid}x{c.dvae.grid}": Generator(c) for c in configs}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-3) for name, m in models.items()}
    text = torch.zeros(args.batch_size, coarse.text_context, dtype=torch.long)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.steps):
        for name, model in models.items():
            shape = (args.batch_size, model.config.dvae.grid ** 2)  # [B, G * G]
            images = torch.randint(0, model.config.dvae.codebook_size, shape)
            start = time.process_time()
            loss = prior_loss(model, TokenBatch(text, images), PriorObjective())[0]
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            seconds[name].append(time.process_time() - start)
    medians = {name: statistics.median(times[1:]) for name, times in seconds.items()}
    for name, median in medians.items():
        print(f"{name} grid: {median:.3f} CPU s per step of {args.batch_size}")
    low, high = medians.values()
    print(f"ratio {high / low:.1f}x")


if __name__ == "__main__":
    main()
