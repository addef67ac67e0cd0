"""The quickstart's generation stage: a DALL-E-style generator on the same synthetic scene world, and how
much of its skill failures re-ranking with the quickstart's two CLIP models repairs.

Writes, under the quickstart folder::

    skills/                  the skill set (`clipforge skills make` layout, plain style); its ``val``
                             prompts (held-out compositional combinations included) are drawn
    dvae/                    the dVAE's training run (final/ in the clipforge model format)
    generator/               the transformer's run: final/ (last step) and early/ (step `early_step`,
                             fixed before any evaluation)
    plain-skill/,            the quickstart's two CLIPs fine-tuned on the generator's skill scenes and
    hardneg-skill/           prompts seen through the dVAE (`reranker_steps`; a third and fourth re-ranker)

The dVAE and the transformer train on the generator's skill scenes (`clipforge.dalle.scenes`, plain
style, like the skill set; the CLIP models' randomized styles are not used). The numbers come from
`clipforge.generate.experiment`, the code behind ``clipforge generate`` and ``clipforge skills score``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from clipforge.checkpoint import load_folder
from clipforge.dalle.batches import round_trip
from clipforge.dalle.sampling import SamplingConfig
from clipforge.errors import ConfigError
from clipforge.generate.experiment import (
    ORACLE,
    Drawn,
    RerankExperiment,
    reconstruction_report,
    rerank_experiment,
)
from clipforge.models.dvae import DVAE, DVAEConfig
from clipforge.models.registry import get_any_config
from clipforge.probe.stats import interval_direction
from clipforge.progress import Say
from clipforge.skills import SKILLS, SkillSetConfig, load_skill_set, make_skill_set, read_images
from clipforge.skills.records import METADATA_NAME
from clipforge.train.config import (
    SKILL_SCENES,
    DataSection,
    EvalSection,
    ModelSection,
    TrainRunConfig,
    TrainSection,
)
from clipforge.train.dalle_objectives import DVAEObjective, PriorObjective
from clipforge.train.loop import train
from clipforge.train.state import RUN_CONFIG, checkpoint_name, save_final

GENERATION = "generator"  # the training worker of the stage (its run folder is OUT/generator)
CHECKPOINTS = ("early", "final")
RERANKERS = ("plain", "hardneg")
DVAE_SEEN = "-skill"  # suffix of the re-rankers fine-tuned on the dVAE-seen skill scenes


@dataclass(frozen=True)
class GenerationConfig:
    """The generation stage's budget and evaluation.

    Attributes:
        dvae: registry architecture of the dVAE (its image size sets the skill set's).
        generator: registry architecture of the transformer (its dVAE must be `dvae`'s architecture).
        dvae_steps: dVAE optimizer steps (batches of `dvae_batch_size` fresh scenes).
        dvae_batch_size: scenes per dVAE step.
        dvae_lr: the dVAE's peak learning rate.
        steps: transformer optimizer steps.
        batch_size: (caption, image tokens) pairs per transformer step.
        lr: the transformer's peak learning rate.
        early_step: the transformer step evaluated as the weak ("early") generator.
        n_train: scenes of the transformer's training pool (tokenized once by the dVAE).
        n_prompts: held-out (``val``) prompts per skill; half the color and spatial ones name a held-out
            combination.
        candidates: images drawn per prompt; each picker keeps one.
        temperature: sampling temperature.
        cond_scale: classifier-free guidance scale.
        threads: torch threads of the stage (it trains beside the two CLIP models, one process each).
        reranker_steps: fine-tuning steps of each re-ranker on the generator's skill scenes and prompts
            seen through the dVAE (``plain-skill``, ``hardneg-skill``; 0: none).
        reranker_lr: their peak learning rate.
    """

    dvae: str = "quickstart-dvae-32"
    generator: str = "quickstart-generator-32"
    dvae_steps: int = 600
    dvae_batch_size: int = 32
    dvae_lr: float = 2e-3
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    early_step: int = 250
    n_train: int = 20_000
    n_prompts: int = 50
    candidates: int = 16
    temperature: float = 0.3
    cond_scale: float = 3.0
    threads: int = 1
    reranker_steps: int = 150
    reranker_lr: float = 5e-4

    def __post_init__(self) -> None:
        for name in ("dvae_steps", "dvae_batch_size", "steps", "batch_size", "n_train", "n_prompts",
                     "candidates", "early_step", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"quickstart generation: {name} must be >= 1, got {getattr(self, name)}")
        if self.early_step >= self.steps:
            raise ConfigError(f"quickstart generation: early_step ({self.early_step}) must be < steps "
                              f"({self.steps})")

    @classmethod
    def quick(cls) -> GenerationConfig:
        """The smoke-run budget of ``--quick``."""
        return cls(dvae_steps=150, steps=200, early_step=50, n_train=4000, n_prompts=12, candidates=8,
                   reranker_steps=40)


def dvae_run(config: GenerationConfig, seed: int) -> TrainRunConfig:
    """The dVAE's training run (the temperature anneal and KL warm-up scaled to its steps)."""
    objective = DVAEObjective(beta_warmup=config.dvae_steps // 3, anneal_steps=2 * config.dvae_steps // 3)
    return TrainRunConfig(
        task="dvae", model=ModelSection(config.dvae),
        data=DataSection(n_val=128, seed=seed),
        train=TrainSection(steps=config.dvae_steps, batch_size=config.dvae_batch_size, lr=config.dvae_lr,
                           warmup_steps=20, weight_decay=0.0, seed=seed, threads=config.threads,
                           checkpoint_every=max(config.dvae_steps // 4, 1), log_every=10, progress=False),
        dvae=objective, eval=EvalSection(every=0),
    )


def generator_run(config: GenerationConfig, seed: int, out: Path) -> TrainRunConfig:
    """The transformer's training run: a checkpoint at `early_step` and after it, all kept."""
    every = config.early_step
    return TrainRunConfig(
        task="prior", model=ModelSection(config.generator),
        data=DataSection(n_train=config.n_train, n_val=256, seed=seed),
        train=TrainSection(steps=config.steps, batch_size=config.batch_size, lr=config.lr, warmup_steps=50,
                           weight_decay=0.01, seed=seed, threads=config.threads, checkpoint_every=every,
                           keep_checkpoints=config.steps // every + 1, log_every=10, progress=False),
        prior=PriorObjective(dvae=str(out / "dvae" / "final")),
        eval=EvalSection(every=every),
    )


def dvae_reranker_run(config: GenerationConfig, base: TrainRunConfig, out: Path, name: str) -> TrainRunConfig:
    """Fine-tunes the quickstart CLIP `name` (trained with `base`) on the generator's skill scenes,
    captioned with their prompts and seen through the stage's dVAE, with `base`'s loss and batch size:
    plain and hardneg still differ only in their hard negatives (the prompts' relation swaps)."""
    steps = config.reranker_steps
    # Skill scenes have no swapped-places images (`loss.negative_images` is for the synthetic scenes only).
    return replace(
        base, model=ModelSection(str(out / name / "final")), loss=replace(base.loss, negative_images=0.0),
        data=DataSection(source=SKILL_SCENES, n_train=steps * base.train.batch_size, n_val=256,
                         seed=base.data.seed, dvae=str(out / "dvae" / "final")),
        train=replace(base.train, steps=steps, lr=config.reranker_lr, warmup_steps=steps // 10,
                      threads=config.threads, checkpoint_every=max(steps // 4, 1), log_every=10,
                      progress=False),
        eval=EvalSection(every=steps))


def dvae_rerankers(config: GenerationConfig) -> tuple[str, ...]:
    """The stage's re-rankers fine-tuned on dVAE-seen skill scenes (none when `reranker_steps` is 0)."""
    return tuple(f"{name}{DVAE_SEEN}" for name in RERANKERS) if config.reranker_steps else ()


def train_dvae_reranker(config: GenerationConfig, out: Path, name: str, say: Say, resume: bool = False
                        ) -> dict[str, Any]:
    """``OUT/{name}-skill``: the quickstart CLIP `name` fine-tuned on dVAE-seen skill scenes (needs the dVAE).

    Returns:
        Seconds and CPU seconds this call took.
    """
    began, cpu = time.perf_counter(), time.process_time()
    base = TrainRunConfig.from_dict(json.loads((out / name / RUN_CONFIG).read_text()))
    _train_run(dvae_reranker_run(config, base, out, name), out / f"{name}{DVAE_SEEN}",
               _prefixed(say, f"  {name}{DVAE_SEEN}: "), resume)
    return {"seconds": round(time.perf_counter() - began, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1)}


def _prefixed(say: Say, prefix: str) -> Say:
    return lambda line: say(prefix + line)


def _train_run(run: TrainRunConfig, run_dir: Path, say: Say, resume: bool) -> None:
    """Trains one run unless its final/ exists; continues an interrupted one on resume."""
    if (run_dir / "final").is_dir():
        return
    train(run, run_dir, resume=resume and (run_dir / RUN_CONFIG).is_file(), say=say)


def train_generation(config: GenerationConfig, seed: int, out: Path, say: Say, resume: bool = False
                     ) -> dict[str, Any]:
    """Trains the dVAE, then the transformer, and keeps its `early_step` model as ``generator/early``.

    Returns:
        Seconds and CPU seconds (all threads) this call took, and both runs' held-out curves.
    """
    began, cpu = time.perf_counter(), time.process_time()
    _train_run(dvae_run(config, seed), out / "dvae", lambda line: say(f"  dvae: {line}"), resume)
    _train_run(generator_run(config, seed, out), out / "generator",
               lambda line: say(f"  generator: {line}"), resume)
    early = out / "generator" / "checkpoints" / checkpoint_name(config.early_step) / "model"
    if not (out / "generator" / "early").is_dir():
        save_final(out / "generator", load_folder(early), {"step": config.early_step}, name="early")
    return {"seconds": round(time.perf_counter() - began, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
            "dvae_curve": eval_curve(out / "dvae" / "log.jsonl"),
            "generator_curve": eval_curve(out / "generator" / "log.jsonl")}


def eval_curve(log_path: Path) -> list[dict[str, Any]]:
    """The held-out evaluations of a run, ``[{"step", **metrics}]``, from its log.jsonl."""
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return [{"step": r["step"], **r["eval"]} for r in records if "eval" in r]


def write_skill_set(config: GenerationConfig, seed: int, out: Path) -> None:
    """The held-out prompts and ground truth, at the dVAE's image size (kept when already written)."""
    if (out / "skills" / METADATA_NAME).is_file():
        return
    size = image_size(config)
    make_skill_set(out / "skills", SkillSetConfig(n_per_skill=config.n_prompts, seed=seed, image_size=size))


def image_size(config: GenerationConfig) -> int:
    """The dVAE's image side in pixels (the skill set is drawn at it).

    Raises:
        ConfigError: `config.dvae` is not a dVAE architecture.
    """
    dvae = get_any_config(config.dvae)
    if not isinstance(dvae, DVAEConfig):
        raise ConfigError(f"quickstart generation: dvae '{config.dvae}' is not a dVAE architecture")
    return dvae.image_size


@dataclass
class Figures:
    """Pictures for report.html.

    Attributes:
        reconstructions: ``(prompt, ground truth, dVAE reconstruction)`` of a few held-out records.
        grids: ``(checkpoint, prompt, candidates, {picker: chosen candidate})`` of a few prompts.
    """

    reconstructions: list[tuple[str, Image.Image, Image.Image]]
    grids: list[tuple[str, str, list[Image.Image], dict[str, int]]]


def sampling(config: GenerationConfig) -> SamplingConfig:
    return SamplingConfig(temperature=config.temperature, cond_scale=config.cond_scale, batch_size=256)


def experiment(config: GenerationConfig, seed: int, out: Path, checkpoint: str) -> RerankExperiment:
    """The re-ranking experiment of one generator checkpoint on the skill set's ``val`` prompts."""
    rerankers = tuple((name, str(out / name / "final")) for name in (*RERANKERS, *dvae_rerankers(config)))
    return RerankExperiment(generator=str(out / "generator" / checkpoint), skills=out / "skills",
                            rerankers=rerankers, n=config.candidates, split="val", seed=seed,
                            sampling=sampling(config))


def evaluate_generation(config: GenerationConfig, seed: int, out: Path, say: Say
                        ) -> tuple[dict[str, Any], Figures]:
    """The dVAE's reconstructions and both checkpoints' re-ranking experiments, scored by the skill parser.

    Returns:
        The ``generation`` section of report.json and the report's pictures.
    """
    began, cpu = time.perf_counter(), time.process_time()
    dvae = load_folder(out / "dvae" / "final")
    if not isinstance(dvae, DVAE):
        raise ConfigError(f"not a dVAE: {out / 'dvae' / 'final'}")
    reconstruction = reconstruction_report(dvae, out / "skills")
    say(f"  dVAE reconstructions: {_accuracies(reconstruction['skills'])}, codebook perplexity "
        f"{reconstruction['perplexity']:.1f}")
    results, grids = {}, []
    for checkpoint in CHECKPOINTS:
        results[checkpoint], drawn = rerank_experiment(experiment(config, seed, out, checkpoint))
        # the candidate each picker kept per prompt, in skill-set order (`clipforge generate` ranks it first)
        results[checkpoint]["choices"] = {picker: [chosen[0] for chosen in picks]
                                          for picker, picks in drawn.choices.items() if picker != ORACLE}
        for picker, block in results[checkpoint]["pickers"].items():
            say(f"  {checkpoint} generator, {picker}: {_accuracies(block)}")
        grids += [(checkpoint, *grid) for grid in example_grids(drawn)]
    section = {"seed": seed, "early_step": config.early_step, "steps": config.steps,
               "sampling": asdict(sampling(config)),
               "n_prompts": config.n_prompts, "candidates": config.candidates,
               "reconstruction": reconstruction, "checkpoints": results,
               "seconds": round(time.perf_counter() - began, 1),
               "cpu_seconds": round(time.process_time() - cpu, 1)}
    return section, Figures(reconstruction_examples(dvae, out / "skills"), grids)


def _accuracies(skills: dict[str, Any]) -> str:
    return ", ".join(f"{skill} {skills[skill]['accuracy']:.2f}" for skill in SKILLS if skill in skills)


EXAMPLE_SKILLS = ("spatial", "spatial", "color", "count")


def example_grids(drawn: Drawn) -> list[tuple[str, list[Image.Image], dict[str, int]]]:
    """The first prompts of `EXAMPLE_SKILLS` (two spatial ones: a held-out and a seen combination)."""
    found, used = [], set()
    for skill in EXAMPLE_SKILLS:
        number = next((p for p, prompt in enumerate(drawn.prompts)
                       if prompt.skill == skill and p not in used), None)
        if number is None:
            continue
        used.add(number)
        chosen = {picker: picks[number][0] for picker, picks in drawn.choices.items() if picker != ORACLE}
        found.append((drawn.prompts[number].text, drawn.candidates[number], chosen))
    return found


@torch.no_grad()
def reconstruction_examples(dvae: DVAE, skills: Path, per_skill: int = 2
                            ) -> list[tuple[str, Image.Image, Image.Image]]:
    """The first `per_skill` held-out records of each skill, next to their dVAE reconstruction."""
    records = load_skill_set(skills, "val")
    truth = read_images(skills, records)
    shown = []
    for skill, skill_records in records.items():
        for record in skill_records[:per_skill]:
            image = truth.images[skill][record.id][0]
            rebuilt = round_trip(dvae, [image])[0]
            shown.append((record.text, image, rebuilt))
    return shown


def _spatial(pickers: dict[str, Any], picker: str) -> str:
    block = pickers[picker]["spatial"]
    low, high = block["ci95"]
    return f"{block['accuracy']:.2f} [{low:.2f}, {high:.2f}]"


def _effect(pickers: dict[str, Any], picker: str = "hardneg") -> str:
    """Whether re-ranking by `picker` moved spatial accuracy, judged by its 95% CI against none's."""
    direction = interval_direction(pickers["none"]["spatial"]["ci95"], pickers[picker]["spatial"]["ci95"])
    if direction:
        return f"{'raised' if direction > 0 else 'lowered'} it (CIs disjoint)"
    return "had no effect that the CIs show (they overlap)"


def _dvae_clause(pickers: dict[str, Any]) -> str:
    """The hardneg re-ranker fine-tuned on dVAE-seen skill scenes, when the stage trained one."""
    name = f"hardneg{DVAE_SEEN}"
    if name not in pickers:
        return ""
    return (f"{_spatial(pickers, name)} by hardneg fine-tuned on dVAE-seen skill scenes, which "
            f"{_effect(pickers, name)}, ")


def generation_conclusion(section: dict[str, Any], steps: int, full_steps: int) -> str:
    """The Generation section's one-sentence finding, from the spatial accuracies and their 95% CIs."""
    clauses = []
    for checkpoint in CHECKPOINTS:
        pickers = section["checkpoints"][checkpoint]["pickers"]
        step = section["early_step"] if checkpoint == "early" else section["steps"]
        clauses.append(
            f"{checkpoint} generator (step {step}): spatial accuracy {_spatial(pickers, 'none')} without "
            f"re-ranking, {_spatial(pickers, 'plain')} re-ranked by plain, {_spatial(pickers, 'hardneg')} by "
            f"hardneg, which {_effect(pickers)}, {_dvae_clause(pickers)}against "
            f"{pickers[ORACLE]['spatial']['accuracy']:.2f} for the parser's best of {section['candidates']}")
    finding = "; ".join(clauses)
    if steps < full_steps:
        return f"Smoke run ({steps} of the default {full_steps} generator steps): {finding}."
    return finding[0].upper() + finding[1:] + "."
