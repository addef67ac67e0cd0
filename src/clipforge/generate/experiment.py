"""The re-ranking experiment: how much of a generator's skill failures does re-ranking with a CLIP repair?

For every prompt of a skill set's split, `n` candidates are drawn once; then each picker keeps one:
``none`` (the first candidate drawn, i.e. no re-ranking), each named CLIP re-ranker (the candidate it
scores highest), and the ``oracle`` (any candidate the skill parser accepts: best of `n`, the ceiling
of every re-ranker). Every picker's choices are scored by the skill evaluator with bootstrap CIs, beside
its controls (ground-truth renders, shuffled prompts, chance), per skill and per case (held-out
compositional combinations apart).

With `candidates` set, the drawn candidates are saved there (``{skill}/image_{id}_{k}.png``, the layout
`clipforge skills score` reads, plus ``candidates.json`` naming what drew them) and a later run with the
same generator weights, prompts, seed and sampling reads them back instead of sampling again, so new
re-rankers are scored on the very same candidates.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipforge.dalle.batches import image_pixels, to_pil
from clipforge.dalle.sampling import SamplingConfig
from clipforge.dalle.tokens import weights_fingerprint
from clipforge.errors import ConfigError
from clipforge.fileio import read_json_object, write_json
from clipforge.generate.job import candidate_scores, draw_candidates, load_generator, write_png
from clipforge.generate.prompts import Prompt, read_skill_prompts
from clipforge.generate.rerank import ClipReranker
from clipforge.models.dvae import DVAE
from clipforge.probe.stats import bootstrap_ci
from clipforge.skills import ImageSet, ScoreConfig, SkillRecord, evaluate, load_skill_set, read_images
from clipforge.train.dalle_objectives import code_usage

NO_RERANKING = "none"
ORACLE = "oracle"
CANDIDATES_JSON = "candidates.json"


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
        candidates: a folder where the candidates are saved, and read back from when it holds this run's
            (None: draw and keep them in memory only).
    """

    generator: str
    skills: Path
    rerankers: tuple[tuple[str, str], ...] = ()
    n: int = 16
    split: str = "val"
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    candidates: Path | None = None

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


def prompt_passes(items: list[dict[str, Any]]) -> dict[str, dict[str, bool]]:
    """Per skill and prompt id: whether its picked candidate passed (any of them, for the oracle's n)."""
    out: dict[str, dict[str, bool]] = {}
    for item in items:
        by_id = out.setdefault(item["skill"], {})
        by_id[item["id"]] = by_id.get(item["id"], False) or bool(item["passed"])
    return out


def summarize(report: dict[str, Any], best_of_n: bool) -> dict[str, Any]:
    """Per skill: accuracy with its CI, per-case blocks (best-of-n accuracy for the oracle) and each prompt's
    verdict (``passed``, for paired comparisons of pickers)."""
    out = {}
    passes = prompt_passes(report.get("items", []))
    for skill, block in report["skills"].items():
        main = block.get("best_of_k", block) if best_of_n else block  # n = 1: best of one is the one
        cases = {} if best_of_n else block["per_case"]
        out[skill] = {"accuracy": main["accuracy"], "ci95": main["ci95"], "n_prompts": main["n_prompts"],
                      "per_case": cases, "passed": passes.get(skill, {})}
    return out


def paired_gain(result: dict[str, Any], picker: str, baseline: str, skill: str,
                ids: Collection[str] | None = None) -> dict[str, Any]:
    """How much more often `picker`'s choice passes than `baseline`'s on the same prompts: the mean
    per-prompt difference with a paired bootstrap 95% CI (tighter than comparing two separate CIs).

    Args:
        result: a `run_rerank_experiment` result.
        ids: only these prompt ids (e.g. the held-out combinations); None: every prompt of the skill.
    """
    mine, theirs = (result["pickers"][name][skill]["passed"] for name in (picker, baseline))
    shared = sorted(mine.keys() & theirs.keys() & (set(ids) if ids is not None else mine.keys()))
    diffs = [float(mine[i]) - float(theirs[i]) for i in shared]
    if not diffs:
        return {"gain": None, "ci95": [None, None], "n_prompts": 0}
    low, high = bootstrap_ci(diffs)
    return {"gain": float(np.mean(diffs)), "ci95": [low, high], "n_prompts": len(diffs)}


@dataclass(frozen=True)
class Drawn:
    """The candidates of an experiment and the pickers' choices (for contact sheets)."""

    prompts: list[Prompt]
    candidates: list[list[Image.Image]]
    choices: dict[str, list[list[int]]]


def candidates_key(config: RerankExperiment, generator: torch.nn.Module) -> dict[str, Any]:
    """What decides the candidates: the generator's weights, the prompts, seed, n and sampling."""
    return {"generator": config.generator, "weights_sha256": weights_fingerprint(generator),
            "skills": str(config.skills), "split": config.split, "n": config.n, "seed": config.seed,
            "sampling": asdict(config.sampling)}


def save_candidates(folder: Path, prompts: list[Prompt], candidates: list[list[Image.Image]],
                    key: dict[str, Any]) -> None:
    """Writes every candidate, then ``candidates.json`` (last: its presence means the set is complete)."""
    for prompt, group in zip(prompts, candidates, strict=True):
        for k, image in enumerate(group):
            write_png(image, folder / f"{prompt.skill}/image_{prompt.id}_{k}.png")
    write_json(key, folder / CANDIDATES_JSON)


def load_candidates(folder: Path, records: dict[str, list[SkillRecord]], prompts: list[Prompt],
                    key: dict[str, Any]) -> list[list[Image.Image]] | None:
    """The candidates saved in `folder` for this key; None when it holds none.

    Raises:
        ConfigError: the folder holds candidates drawn otherwise, or not all of them.
    """
    if not (folder / CANDIDATES_JSON).is_file():
        return None
    saved = read_json_object(folder / CANDIDATES_JSON, ConfigError)
    changed = sorted(name for name in key.keys() | saved.keys() if key.get(name) != saved.get(name))
    if changed:
        raise ConfigError(f"{folder} holds candidates drawn with other {', '.join(changed)}; "
                          "use another folder")
    images = read_images(folder, records).images
    groups = [images.get(str(p.skill), {}).get(str(p.id), []) for p in prompts]
    if any(len(group) != key["n"] for group in groups):
        raise ConfigError(f"{folder}: some prompts lack their {key['n']} saved candidates")
    return groups


def obtain_candidates(config: RerankExperiment, records: dict[str, list[SkillRecord]], prompts: list[Prompt]
                      ) -> list[list[Image.Image]]:
    """The saved candidates of this run if `config.candidates` holds them, else freshly drawn (and saved)."""
    generator = load_generator(config.generator)
    if config.candidates is None:
        return draw_candidates(generator, prompts, config.n, config.seed, config.sampling)
    key = candidates_key(config, generator)
    saved = load_candidates(config.candidates, records, prompts, key)
    if saved is not None:
        return saved
    candidates = draw_candidates(generator, prompts, config.n, config.seed, config.sampling)
    save_candidates(config.candidates, prompts, candidates, key)
    return candidates


def rerank_experiment(config: RerankExperiment) -> tuple[dict[str, Any], Drawn]:
    """Draws the candidates once, applies every picker and scores each with the skill evaluator.

    Returns:
        The scores (see `run_rerank_experiment`) and what was drawn and picked.
    """
    records = load_skill_set(config.skills, config.split)
    truth = read_images(config.skills, records)
    prompts = read_skill_prompts(config.skills, config.split)
    candidates = obtain_candidates(config, records, prompts)
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
