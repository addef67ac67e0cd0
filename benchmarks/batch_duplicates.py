"""How often does a training batch hold the same caption twice? (InfoNCE makes them each other's negatives)

For the default quickstart's CLIP runs (synthetic scenes, 128 per step, all steps) and for the generation
stage's re-ranker fine-tune (skill scenes with the prompts that ask for them), from the same batch order the
training engine draws (`train.batches.epoch_permutation`); captions only, nothing is rendered.

    python benchmarks/batch_duplicates.py
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable

import numpy as np

from clipforge.dalle.scenes import skill_scene
from clipforge.quickstart.config import QuickstartConfig, scene_config
from clipforge.synthetic.scene import generate_scene
from clipforge.synthetic.text import scene_caption
from clipforge.train.batches import epoch_permutation
from clipforge.train.dalle_tasks import skill_scenes


def batch_rows(caption: Callable[[int], str], n: int, batch_size: int, steps: int,
               seed: int) -> dict[str, float]:
    """Per batch: samples whose caption another sample of the batch repeats, and the largest repeat."""
    per_epoch = n // batch_size
    repeated, largest = [], []
    for step in range(steps):
        epoch, offset = divmod(step, per_epoch)
        indices = epoch_permutation(n, seed, epoch)[offset * batch_size : (offset + 1) * batch_size]
        counts = Counter(caption(int(i)) for i in indices)
        repeated.append(sum(c for c in counts.values() if c > 1))
        largest.append(max(counts.values()))
    return {"batches with a repeat": float(np.mean(np.array(repeated) > 0)),
            "repeated samples per batch": float(np.mean(repeated)),
            "largest repeat (mean)": float(np.mean(largest)),
            "largest repeat (max)": float(max(largest))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rerank-steps", type=int, default=150)
    args = parser.parse_args()
    qs = QuickstartConfig()
    scenes = scene_config(qs)
    rows = {"quickstart CLIPs (synthetic captions)": batch_rows(
        lambda i: scene_caption(generate_scene(scenes, qs.seed, "train", i), scenes).text,
        qs.n_train, qs.batch_size, qs.steps, qs.seed)}
    skills = skill_scenes(32)
    rows["re-ranker fine-tune (skill prompts)"] = batch_rows(
        lambda i: skill_scene(skills, 0, i).text, 19200, 128, args.rerank_steps, 0)
    heads = list(next(iter(rows.values())))
    print("| batches | " + " | ".join(heads) + " |\n|---|" + "---|" * len(heads))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.3g}" for v in row.values()) + " |")


if __name__ == "__main__":
    main()
