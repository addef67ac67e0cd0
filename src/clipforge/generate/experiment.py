"""The re-ranking experiment: how much of a generator's skill failures does re-ranking with a CLIP repair?

For every prompt of a skill set's split, `n` candidates are drawn once; then each picker keeps one:
``none`` (the first candidate drawn, i.e. no re-ranking), each named CLIP re-ranker (the candidate it
scores highest), and the ``oracle`` (any candidate the skill parser accepts: best of `n`, the ceiling
of every re-ranker). Every picker's choices are scored by the skill evaluator with bootstrap CIs, beside
its controls (ground-truth renders, shuffled prompts, chance), per skill and per case (held-out
compositional combinations apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipforge.dalle.batches import image_pixels, to_pil
from clipforge.dalle.sampling import SamplingConfig
from clipforge.errors import ConfigError
from clipforge.generate.job import candidate_scores, draw_candidates, load_generator
from clipforge.generate.prompts import Prompt, read_skill_prompts
from clipforge.generate.rerank import ClipReranker
from clipforge.models.dvae import DVAE
from clipforge.skills import ImageSet, ScoreConfig, evaluate, load_skill_set, read_images
from clipforge.train.dalle_objectives import code_usage

NO_RERANKING = "none"
ORACLE = "oracle"


@dataclass(frozen=True)
class RerankExperiment:
    """One run of the experiment.

    Attributes:
        generator: a generator folder.
        skills: a skill set folder (`clipforge skills make`); its `split` prompts are drawn.
        rerankers: ``(name, CLIP spec)`` pairs, e.g. ``("hardneg", "runs/qs/hardneg/final")``.
        n: candidates per prompt.
        seed: the candidates' seed (candidate k of prompt p: ``image_seed(seed, p, k)``).
        sampling: temperature, top-k/p and guidance.
    """

    generator: str
    skills: Path
    rerankers: tuple[tuple[str, str], ...] = ()
    n: int = 16
    split: str = "val"
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        names = [name for name, _ in self.rerankers]
        if self.n < 1 or len(set(names)) != len(names) or {NO_RERANKING, ORACLE} & set(names):
            raise ConfigError(f"rerank experiment: need n >= 1 and distinct re-ranker names other than "
                              f"'{NO_RERANKING}' and '{ORACLE}', got n={self.n}, names={names}")


def picked(prompts: list[Prompt], candidates: list[list[Image.Image]], choice: list[list[int]]) -> ImageSet:
    """The chosen candidates of every prompt as an `ImageSet` the skill evaluator scores."""
    images = ImageSet()
    for prompt, group, chosen in zip(prompts, candidates, choice, strict=True):
        for k in chosen:
            name = f"{prompt.skill}/image_{prompt.id}_{k}.png"
            images.add(str(prompt.skill), str(prompt.id), group[k], name)
    return images


def picker_choices(config: RerankExperiment, prompts: list[Prompt], candidates: list[list[Image.Image]]
                   ) -> dict[str, list[list[int]]]:
    """Which candidates each picker keeps, per prompt (the oracle keeps all: it is scored best-of-n)."""
    choices = {NO_RERANKING: [[0] for _ in prompts]}
    for name, spec in config.rerankers:
        scores = candidate_scores(ClipReranker(spec), prompts, candidates)
        choices[name] = [[int(np.argmax(s))] for s in scores if s is not None]
    choices[ORACLE] = [list(range(config.n)) for _ in prompts]
    return choices


def summarize(report: dict[str, Any], best_of_n: bool) -> dict[str, Any]:
    """Per skill: accuracy with its CI and per-case blocks (best-of-n accuracy for the oracle)."""
    out = {}
    for skill, block in report["skills"].items():
        main = block.get("best_of_k", block) if best_of_n else block  # n = 1: best of one is the one
        cases = {} if best_of_n else block["per_case"]
        out[skill] = {"accuracy": main["accuracy"], "ci95": main["ci95"], "n_prompts": main["n_prompts"],
                      "per_case": cases}
    return out


@dataclass(frozen=True)
class Drawn:
    """The candidates of an experiment and the pickers' choices (for contact sheets)."""

    prompts: list[Prompt]
    candidates: list[list[Image.Image]]
    choices: dict[str, list[list[int]]]


def rerank_experiment(config: RerankExperiment) -> tuple[dict[str, Any], Drawn]:
    """Draws the candidates once, applies every picker and scores each with the skill evaluator.

    Returns:
        The scores (see `run_rerank_experiment`) and what was drawn and picked.
    """
    records = load_skill_set(config.skills, config.split)
    truth = read_images(config.skills, records)
    prompts = read_skill_prompts(config.skills, config.split)
    candidates = draw_candidates(load_generator(config.generator), prompts, config.n, config.seed,
                                 config.sampling)
    pickers: dict[str, Any] = {}
    controls: dict[str, Any] = {}
    choices = picker_choices(config, prompts, candidates)
    for name, choice in choices.items():
        images = picked(prompts, candidates, choice)
        report = evaluate(records, images, truth, ScoreConfig(seed=config.seed)).report
        pickers[name] = summarize(report, best_of_n=name == ORACLE)
        controls = {key: report[key] for key in ("upper_bound", "shuffle", "chance")}
    result = {"generator": config.generator, "n": config.n, "seed": config.seed, "split": config.split,
              "rerankers": dict(config.rerankers), "pickers": pickers, **controls}
    return result, Drawn(prompts, candidates, choices)


def run_rerank_experiment(config: RerankExperiment) -> dict[str, Any]:
    """Per picker and skill: accuracy with CIs (and per case), beside the evaluator's controls."""
    return rerank_experiment(config)[0]


@torch.no_grad()
def reconstruction_report(dvae: DVAE, skills: Path, split: str = "val") -> dict[str, Any]:
    """The skill evaluator on dVAE reconstructions (argmax tokens decoded) of a skill set's ground truth,
    with the codebook usage of those tokens: what the generator could draw at best."""
    records = load_skill_set(skills, split)
    truth = read_images(skills, records)
    rebuilt = ImageSet()
    tokens = []
    for skill, by_id in truth.images.items():
        for record_id, images in by_id.items():
            codes = dvae.encode(image_pixels(images))  # [k, G * G]
            tokens.append(codes)
            for k, image in enumerate(to_pil(dvae.decode(codes))):
                rebuilt.add(skill, record_id, image, f"{skill}/image_{record_id}_{k}.png")
    report = evaluate(records, rebuilt, truth, ScoreConfig()).report
    usage = code_usage(torch.cat(tokens), dvae.config.codebook_size)
    return {"skills": summarize(report, best_of_n=False), **usage}
