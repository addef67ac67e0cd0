"""The generation job: draw N candidates per prompt, optionally re-rank them with a CLIP, keep the best M,
write the kept PNGs, one contact sheet per prompt and ``generations.json``.

Layout of ``OUT``::

    images/{p:04d}_{r}.png        kept image of rank r for prompt number p (--prompt / --prompts)
    {skill}/image_{id}_{r}.png    the same for a skill set (--skills): what `clipforge skills score` reads
    grids/{name}.png              every candidate of a prompt in draw order, the kept ones framed
    generations.json              per prompt: text (skill, id), and per candidate its seed, score, rank, file

Candidate k of prompt number p is drawn from its own seed ``image_seed(seed, p, k)``, so the candidates
do not depend on batching, and runs with the same seed re-rank the very same candidates.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipforge.checkpoint import load_folder
from clipforge.dalle.batches import to_pil
from clipforge.dalle.sampling import SamplingConfig, image_seed, sample_images
from clipforge.device import resolve_device
from clipforge.errors import ConfigError
from clipforge.fileio import check_writable, write_bytes_atomic, write_json
from clipforge.generate.grid import candidate_grid
from clipforge.generate.prompts import Prompt, read_prompt_file, read_skill_prompts
from clipforge.generate.rerank import ClipReranker, rank_order
from clipforge.models.generator import Generator
from clipforge.models.registry import create_any_model
from clipforge.tokenizer import get_tokenizer
from clipforge.version import __version__


@dataclass(frozen=True)
class GenerateConfig:
    """One generation run; exactly one of `prompts`, `prompts_file` and `skills` names the prompts.

    Attributes:
        model: a generator folder (or a registry name, for random weights).
        out: the output folder.
        prompts: texts to draw.
        prompts_file: a file with one prompt per line.
        skills: a skill set folder; its `split` prompts are drawn.
        n: candidates per prompt.
        rerank: a CLIP spec that scores the candidates; None keeps them in draw order.
        keep: candidates kept (written) per prompt; None keeps all `n`.
        seed: the run's seed.
        sampling: temperature, top-k/p, guidance, cache and batch size.
        device: where the generator and the re-ranker run (``cpu``, ``cuda`` or ``auto``); a seed draws the
            same uniforms on every device, though float differences between devices can change a draw.
    """

    model: str
    out: Path
    prompts: tuple[str, ...] = ()
    prompts_file: Path | None = None
    skills: Path | None = None
    split: str = "val"
    n: int = 4
    rerank: str | None = None
    keep: int | None = None
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    device: str = "cpu"

    def __post_init__(self) -> None:
        sources = sum([bool(self.prompts), self.prompts_file is not None, self.skills is not None])
        if sources != 1:
            raise ConfigError("generate: give exactly one of --prompt, --prompts FILE, --skills DIR")
        if self.n < 1 or not 1 <= self.kept <= self.n:
            raise ConfigError(f"generate: need n >= 1 and 1 <= keep <= n, got n={self.n}, keep={self.keep}")

    @property
    def kept(self) -> int:
        return self.n if self.keep is None else self.keep


def resolve_prompts(config: GenerateConfig) -> list[Prompt]:
    """The prompts the config names, in order."""
    if config.skills is not None:
        return read_skill_prompts(config.skills, config.split)
    if config.prompts_file is not None:
        return read_prompt_file(config.prompts_file)
    return [Prompt(text) for text in config.prompts]


def load_generator(spec: str, device: str = "cpu") -> Generator:
    """A generator folder, or a registry name (random weights, to try the command), in eval mode on `device`.

    Raises:
        ConfigError: `spec` holds another kind of model.
    """
    if Path(spec).is_dir():
        model = load_folder(spec, device)
    else:
        model = create_any_model(spec).eval().to(resolve_device(device))
    if not isinstance(model, Generator):
        raise ConfigError(f"--model must be a generator folder; {spec} holds a {type(model).__name__}")
    return model


def draw_candidates(model: Generator, prompts: list[Prompt], n: int, seed: int, sampling: SamplingConfig
                    ) -> list[list[Image.Image]]:
    """`n` candidates for each prompt (candidate k of prompt p from seed ``image_seed(seed, p, k)``)."""
    texts = [p.text for p in prompts for _ in range(n)]
    seeds = [image_seed(seed, p, k) for p in range(len(prompts)) for k in range(n)]
    tokens = get_tokenizer(model.config.tokenizer)(texts)  # [P * n, Lt]
    images = to_pil(sample_images(model, tokens, seeds, sampling))
    return [images[p * n : (p + 1) * n] for p in range(len(prompts))]


def candidate_scores(reranker: ClipReranker | None, prompts: list[Prompt],
                     candidates: list[list[Image.Image]]) -> list[np.ndarray | None]:
    """CLIP score of every candidate with its prompt (None per prompt without a re-ranker)."""
    if reranker is None:
        return [None] * len(prompts)
    flat = [image for group in candidates for image in group]
    texts = [p.text for p, group in zip(prompts, candidates, strict=True) for _ in group]
    scores = reranker.scores(flat, texts)
    n = len(candidates[0])
    return [scores[i * n : (i + 1) * n] for i in range(len(prompts))]


def kept_name(prompt: Prompt, number: int, rank: int) -> str:
    """Where the kept candidate of rank `rank` of prompt number `number` goes, relative to OUT."""
    if prompt.skill is not None:
        return f"{prompt.skill}/image_{prompt.id}_{rank}.png"
    return f"images/{number:04d}_{rank}.png"


def write_png(image: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def write_prompt(config: GenerateConfig, number: int, prompt: Prompt, images: list[Image.Image],
                 scores: np.ndarray | None) -> dict[str, Any]:
    """Writes a prompt's kept images and contact sheet; returns its generations.json record."""
    ranks = rank_order(scores) if scores is not None else np.arange(len(images))
    kept = [int(r) < config.kept for r in ranks]
    records = []
    for k, (image, rank, keep) in enumerate(zip(images, ranks, kept, strict=True)):
        name = kept_name(prompt, number, int(rank)) if keep else None
        if name is not None:
            write_png(image, config.out / name)
        records.append({"sample": k, "seed": image_seed(config.seed, number, k), "rank": int(rank),
                        "score": None if scores is None else float(scores[k]), "file": name})
    grid = f"grids/{prompt.skill}_{prompt.id}.png" if prompt.skill else f"grids/{number:04d}.png"
    write_png(candidate_grid(images, kept), config.out / grid)
    return {"text": prompt.text, "skill": prompt.skill, "id": prompt.id, "grid": grid, "candidates": records}


def generate(config: GenerateConfig) -> dict[str, Any]:
    """Runs the job (see the module docstring) and returns what it wrote to ``generations.json``."""
    resolve_device(config.device)  # a missing GPU fails before OUT is made
    check_writable(config.out / "generations.json")
    prompts = resolve_prompts(config)
    model = load_generator(config.model, config.device)
    reranker = ClipReranker(config.rerank, device=config.device) if config.rerank else None
    start = time.perf_counter()
    candidates = draw_candidates(model, prompts, config.n, config.seed, config.sampling)
    seconds = time.perf_counter() - start
    scores = candidate_scores(reranker, prompts, candidates)
    records = [write_prompt(config, p, prompt, images, s)
               for p, (prompt, images, s) in enumerate(zip(prompts, candidates, scores, strict=True))]
    report = {"version": __version__, "model": config.model, "rerank": config.rerank, "seed": config.seed,
              "n": config.n, "keep": config.kept, "sampling": asdict(config.sampling),
              "images_per_s": len(prompts) * config.n / max(seconds, 1e-9), "prompts": records}
    write_json(report, config.out / "generations.json")
    return report
