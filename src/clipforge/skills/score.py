"""The scoring job: generated images of a skill set -> skill accuracy with controls, alignment, quality.

`score` is ``clipforge skills score`` (writes ``skills.json`` and ``skills.html``); `score_images` returns
the same report without writing; `evaluate` scores images already in memory (a generator job calls it
with its samples). Generated images are found as ``GEN_DIR/{skill}/image_{id}.png`` or, several per
prompt, ``image_{id}_{k}.png`` (PNG, JPEG or WebP); a skill set folder itself can be scored too (its
ground-truth renders under ``{skill}/images``).

Accuracy is the mean over prompts of the share of their images that pass (with one image per prompt:
the share of images that pass); the 95% interval is a percentile bootstrap over prompts
(`clipforge.probe.stats`; Wilson below 10 prompts). Best-of-k counts a prompt as passed when any of its
images passes. Controls, as DALL-Eval reports them: the upper bound (the ground-truth renders through
the parser) and the shuffle baseline (each prompt paired with another prompt's ground-truth render, a
seeded derangement within the skill), beside chance: the exact expected shuffle accuracy, from the
scenes' metadata over all pairs of different prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipforge.data.transforms import load_image
from clipforge.device import DEFAULT_RUNTIME, Runtime
from clipforge.errors import DataError, ImageError
from clipforge.fileio import write_json
from clipforge.probe.run import ClipEncoder, Encoder
from clipforge.probe.stats import LEVEL, MIN_BOOTSTRAP_N, N_RESAMPLES, bootstrap_ci, wilson_ci
from clipforge.skills.alignment import R_DISTRACTORS, R_REPEATS, clipscore, r_precision
from clipforge.skills.parser import ParserConfig, Reading, parse_image
from clipforge.skills.quality import KID_SUBSET_SIZE, KID_SUBSETS, frechet_distance, kid
from clipforge.skills.records import SkillRecord, load_skill_set, read_metadata, split_relation
from clipforge.skills.report import Example, SkillsResult, write_html
from clipforge.skills.rules import judge, truth_reading
from clipforge.synthetic.render import PALETTE, SHAPES
from clipforge.version import __version__

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CHANCE_PAIRS = 50_000  # pairs sampled for chance when a skill has more


@dataclass(frozen=True)
class ScoreConfig:
    """How `score` runs.

    Attributes:
        clip: CLIP spec for alignment and quality (anything `clipforge.checkpoint.load` takes); None skips
            them.
        reference: folder of reference images for quality (default: the skill set's ground-truth renders).
        split: skill-set split to score.
        n_resamples: bootstrap resamples.
        seed: seeds the bootstrap, the shuffle, R-precision distractors and KID subsets.
        batch_size: images or texts encoded at once.
        examples: passed and failed examples per skill drawn in skills.html.
        parser: parser thresholds.
        runtime: where and how the CLIP runs (device, backend, precision).
    """

    clip: str | None = None
    reference: Path | None = None
    split: str = "val"
    n_resamples: int = N_RESAMPLES
    seed: int = 0
    batch_size: int = 64
    examples: int = 6
    parser: ParserConfig = field(default_factory=ParserConfig)
    runtime: Runtime = DEFAULT_RUNTIME


@dataclass
class ImageSet:
    """Images per skill and record id (several per id allowed), and what could not be read.

    Attributes:
        images: ``{skill: {id: [image, ...]}}``; ids without a readable image are absent.
        names: file names (or labels) matching `images`.
        missing: ``{skill: [id, ...]}`` records with no image file at all.
        unreadable: ``{skill: [file name, ...]}`` files that exist but do not decode.
    """

    images: dict[str, dict[str, list[Image.Image]]] = field(default_factory=dict)
    names: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    unreadable: dict[str, list[str]] = field(default_factory=dict)

    def add(self, skill: str, record_id: str, image: Image.Image, name: str) -> None:
        self.images.setdefault(skill, {}).setdefault(record_id, []).append(image)
        self.names.setdefault(skill, {}).setdefault(record_id, []).append(name)


def _skill_folder(root: Path, skill: str) -> Path:
    """``root/skill``, or ``root/skill/images`` for a skill set folder (ground-truth renders)."""
    folder = root / skill
    nested = folder / "images"
    has_images = folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())
    return nested if not has_images and nested.is_dir() else folder


def _match(stem: str, ids: set[str]) -> tuple[str, int] | None:
    """``image_{id}`` -> (id, 0) and ``image_{id}_{k}`` -> (id, k); None for other names."""
    if not stem.startswith("image_"):
        return None
    rest = stem[len("image_") :]
    if rest in ids:
        return rest, 0
    base, _, k = rest.rpartition("_")
    return (base, int(k)) if k.isdigit() and base in ids else None


def read_images(root: Path, records: dict[str, list[SkillRecord]]) -> ImageSet:
    """Reads ``root/{skill}/image_{id}[_{k}].*`` of every record; missing and unreadable files are counted."""
    found = ImageSet()
    for skill, skill_records in records.items():
        ids = {r.id for r in skill_records}
        folder = _skill_folder(root, skill)
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        matched = [(m, p) for p in files if p.suffix.lower() in IMAGE_SUFFIXES
                   and (m := _match(p.stem, ids)) is not None]
        for (record_id, _), path in sorted(matched, key=lambda item: item[0]):
            try:
                found.add(skill, record_id, load_image(path), path.name)
            except ImageError:
                found.unreadable.setdefault(skill, []).append(path.name)
        seen = {record_id for (record_id, _), _ in matched}
        found.missing[skill] = [r.id for r in skill_records if r.id not in seen]
    return found


def in_renderer_domain(records: Sequence[SkillRecord]) -> bool:
    """Whether the parser can judge these records: renderer shapes and palette colours only."""
    return all(o.shape in SHAPES and (o.color in PALETTE or o.color == "plain")
               for r in records for o in r.objects)


def has_exact_truth(records: Sequence[SkillRecord]) -> bool:
    """Whether the records' scenes are known exactly: renderer vocabulary and every object's box."""
    return in_renderer_domain(records) and all(o.bbox is not None for r in records for o in r.objects)


def _block(fractions: Sequence[float], passes: int, images: int, config: ScoreConfig) -> dict[str, Any]:
    """``{"accuracy", "n", "n_prompts", "ci95"}`` from per-prompt pass shares."""
    if not fractions:
        return {"accuracy": None, "n": 0, "n_prompts": 0, "ci95": [None, None]}
    if len(fractions) < MIN_BOOTSTRAP_N:
        low, high = wilson_ci(passes, images)
    else:
        low, high = bootstrap_ci(fractions, config.n_resamples, config.seed)
    return {"accuracy": float(np.mean(fractions)), "n": images, "n_prompts": len(fractions),
            "ci95": [low, high]}


def accuracy_of(verdicts: Sequence[Sequence[bool]], config: ScoreConfig) -> dict[str, Any]:
    """Accuracy block of per-prompt verdict lists (prompts without images are skipped)."""
    groups = [g for g in verdicts if g]
    fractions = [sum(g) / len(g) for g in groups]
    return _block(fractions, sum(sum(g) for g in groups), sum(len(g) for g in groups), config)


def case_keys(record: SkillRecord) -> dict[str, str]:
    """The sub-cases a record belongs to: shape, count, colour or relation, and held-out or seen."""
    first = record.objects[0]
    keys = {"object": {"shape": first.shape}, "count": {"count": str(len(record.objects))},
            "color": {"color": first.color}}.get(record.skill)
    if keys is None:
        keys = {"relation": split_relation(str(record.objects[1].relation))[0]}
    if record.skill in ("color", "spatial"):
        keys["combination"] = "held-out" if record.heldout else "seen"
    return keys


def _per_case(records: list[SkillRecord], verdicts: dict[str, list[bool]], config: ScoreConfig
              ) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, list[list[bool]]]] = {}
    for record in records:
        for dimension, value in case_keys(record).items():
            groups.setdefault(dimension, {}).setdefault(value, []).append(verdicts.get(record.id, []))
    return {dim: {value: accuracy_of(lists, config) for value, lists in sorted(values.items())}
            for dim, values in groups.items()}


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation with no fixed point (n >= 2): prompt i meets image ``perm[i]``."""
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm


def chance(records: list[SkillRecord], seed: int = 0) -> float | None:
    """Expected shuffle accuracy from the scenes' exact truth, over pairs of different prompts (all of
    them, or `CHANCE_PAIRS` seeded random ones); None when records lack boxes or there is one record."""
    n = len(records)
    if n < 2 or not has_exact_truth(records):
        return None
    truths = [truth_reading(r) for r in records]
    if n * (n - 1) <= CHANCE_PAIRS:
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    else:
        rng = np.random.default_rng(seed)
        drawn = rng.integers(0, n, size=(CHANCE_PAIRS, 2))
        pairs = [(int(i), int(j)) for i, j in drawn if i != j]
    return float(np.mean([judge(records[i], truths[j]).passed for i, j in pairs]))


class _Judge:
    """Parses every image once and judges it against its prompt."""

    def __init__(self, config: ScoreConfig) -> None:
        self.config = config

    def readings(self, images: dict[str, list[Image.Image]]) -> dict[str, list[Reading]]:
        return {rid: [parse_image(im, self.config.parser) for im in ims] for rid, ims in images.items()}

    def verdicts(self, records: list[SkillRecord], readings: dict[str, list[Reading]],
                 pairing: Callable[[int], SkillRecord] | None = None) -> dict[str, list[bool]]:
        """Per prompt, the verdicts of its images; `pairing(i)` names whose image prompt i is shown."""
        out = {}
        for i, record in enumerate(records):
            shown = pairing(i) if pairing is not None else record
            out[record.id] = [judge(record, r).passed for r in readings.get(shown.id, [])]
        return out


def _skill_report(records: list[SkillRecord], verdicts: dict[str, list[bool]], images: ImageSet, skill: str,
                  readings: dict[str, list[Reading]], config: ScoreConfig) -> dict[str, Any]:
    groups = [verdicts.get(r.id, []) for r in records]
    block = accuracy_of(groups, config)
    block["per_case"] = _per_case(records, verdicts, config)
    if any(len(g) > 1 for g in groups):
        best = accuracy_of([[any(g)] for g in groups if g], config)
        block["best_of_k"] = {**best, "k": max(len(g) for g in groups)}
    block["missing"] = len(images.missing.get(skill, []))
    block["unreadable"] = len(images.unreadable.get(skill, []))
    block["unparseable"] = sum(not r.parseable for rs in readings.values() for r in rs)
    return block


def _controls(records: list[SkillRecord], truth: dict[str, list[Reading]], judge_: _Judge,
              config: ScoreConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    upper = accuracy_of(list(judge_.verdicts(records, truth).values()), config)
    if len(records) < 2:
        return upper, accuracy_of([], config)
    perm = derangement(len(records), config.seed)
    shuffled = judge_.verdicts(records, truth, lambda i: records[int(perm[i])])
    return upper, accuracy_of(list(shuffled.values()), config)


def _examples(skill: str, records: list[SkillRecord], images: ImageSet, readings: dict[str, list[Reading]],
              count: int) -> list[Example]:
    """The first `count` passed and `count` failed images of a skill."""
    passed: list[Example] = []
    failed: list[Example] = []
    for record in records:
        for k, reading in enumerate(readings.get(record.id, [])):
            verdict = judge(record, reading)
            bucket = passed if verdict.passed else failed
            if len(bucket) < count:
                bucket.append(Example(skill, record, images.names[skill][record.id][k],
                                      images.images[skill][record.id][k], reading, verdict))
    return passed + failed


def _judge_skills(records: dict[str, list[SkillRecord]], generated: ImageSet, truth: ImageSet,
                  config: ScoreConfig) -> tuple[dict[str, Any], list[Example]]:
    judge_ = _Judge(config)
    report: dict[str, Any] = {"skills": {}, "upper_bound": {}, "shuffle": {}, "chance": {}, "items": []}
    examples: list[Example] = []
    for skill, skill_records in records.items():
        if not in_renderer_domain(skill_records):
            continue
        readings = judge_.readings(generated.images.get(skill, {}))
        verdicts = judge_.verdicts(skill_records, readings)
        report["skills"][skill] = _skill_report(skill_records, verdicts, generated, skill, readings, config)
        truth_readings = judge_.readings(truth.images.get(skill, {}))
        report["upper_bound"][skill], report["shuffle"][skill] = _controls(
            skill_records, truth_readings, judge_, config)
        report["chance"][skill] = chance(skill_records, config.seed)
        examples += _examples(skill, skill_records, generated, readings, config.examples)
        report["items"] += _items(skill_records, generated, readings)
    return report, examples


def _items(records: list[SkillRecord], images: ImageSet, readings: dict[str, list[Reading]]
           ) -> list[dict[str, Any]]:
    """One row per judged image: which file, its prompt, the verdict and what the parser read."""
    rows = []
    for record in records:
        for name, reading in zip(images.names.get(record.skill, {}).get(record.id, []),
                                 readings.get(record.id, []), strict=True):
            verdict = judge(record, reading)
            rows.append({"skill": record.skill, "id": record.id, "image": name, "text": record.text,
                         "passed": verdict.passed, "reason": verdict.reason, "reading": reading.to_json()})
    return rows


def _flatten(records: dict[str, list[SkillRecord]], images: ImageSet
             ) -> tuple[list[Image.Image], list[SkillRecord]]:
    """Every image with its record, in skill and record order."""
    flat_images, flat_records = [], []
    for skill_records in records.values():
        for record in skill_records:
            for image in images.images.get(record.skill, {}).get(record.id, []):
                flat_images.append(image)
                flat_records.append(record)
    return flat_images, flat_records


def false_for(prompt: SkillRecord, candidates: Sequence[SkillRecord]) -> list[bool]:
    """Whether each candidate's text is false for the prompt's ground-truth scene, by the skill rules
    (for "a star" with a red star, "one star" and "a red star" are not false)."""
    truth = truth_reading(prompt)
    return [not judge(candidate, truth).passed for candidate in candidates]


class _Alignment:
    """R-precision and CLIPScore of images against their prompts, in one CLIP's space."""

    def __init__(self, encoder: Encoder, records: dict[str, list[SkillRecord]], config: ScoreConfig) -> None:
        self.config = config
        speakers = {r.text: r for rs in records.values() for r in rs}  # one record per distinct text
        self.texts = sorted(speakers)
        self.speakers = [speakers[t] for t in self.texts]
        self.index = {text: i for i, text in enumerate(self.texts)}
        self.exact = all(has_exact_truth(rs) for rs in records.values())
        self.pool = encoder.encode_texts(self.texts)  # [T, E]
        self._false: dict[tuple[str, str], np.ndarray] = {}

    def false_texts(self, prompt: SkillRecord) -> np.ndarray:
        """[T] bool: the texts that are false for the prompt's ground-truth scene (by the skill rules),
        or every other text when the set has no exact truth."""
        key = (prompt.skill, prompt.id)
        if key not in self._false:
            if self.exact:
                self._false[key] = np.array(false_for(prompt, self.speakers))
            else:
                self._false[key] = np.array([t != prompt.text for t in self.texts])
        return self._false[key]

    def measure(self, embeddings: np.ndarray, prompts: list[SkillRecord]) -> dict[str, Any]:
        if not prompts:
            return {"r_precision": None, "clipscore": None}
        true = np.array([self.index[p.text] for p in prompts])
        allowed = np.stack([self.false_texts(p) for p in prompts])  # [N, T]
        ranked = r_precision(embeddings, true, self.pool, R_DISTRACTORS, R_REPEATS, self.config.seed, allowed)
        scores = clipscore(embeddings, self.pool[true])
        skills = np.array([p.skill for p in prompts])
        per_skill = {s: {"r_precision": ranked.summary(np.flatnonzero(skills == s)),
                         "clipscore": float(scores[skills == s].mean())} for s in dict.fromkeys(skills)}
        return {"r_precision": ranked.summary(),
                "clipscore": {"mean": float(scores.mean()), "std": float(scores.std()), "n": len(scores)},
                "per_skill": per_skill}


def _alignment(encoder: Encoder, records: dict[str, list[SkillRecord]], generated: ImageSet, truth: ImageSet,
               config: ScoreConfig) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Alignment of the generated images and of the two controls; also returns the image embeddings."""
    align = _Alignment(encoder, records, config)
    gen_images, gen_prompts = _flatten(records, generated)
    gen_embeddings = encoder.encode_images(gen_images) if gen_images else np.zeros((0, align.pool.shape[1]))
    truth_images, truth_prompts = _flatten(records, truth)
    truth_embeddings = encoder.encode_images(truth_images) if truth_images else gen_embeddings[:0]
    shuffled = _shuffled_prompts(records, truth_prompts, config.seed)
    return ({"generated": align.measure(gen_embeddings, gen_prompts),
             "upper_bound": align.measure(truth_embeddings, truth_prompts),
             "shuffle": align.measure(truth_embeddings, shuffled)}, gen_embeddings, truth_embeddings)


def _shuffled_prompts(records: dict[str, list[SkillRecord]], shown: list[SkillRecord], seed: int
                      ) -> list[SkillRecord]:
    """For each ground-truth image (showing record `shown[i]`), the prompt the shuffle pairs it with."""
    partner: dict[tuple[str, str], SkillRecord] = {}
    for skill_records in records.values():
        if len(skill_records) < 2:
            continue
        perm = derangement(len(skill_records), seed)
        for i, record in enumerate(skill_records):
            partner[(record.skill, skill_records[int(perm[i])].id)] = record
    return [partner.get((r.skill, r.id), r) for r in shown]


def _quality(generated: np.ndarray, reference: np.ndarray, space: str, reference_name: str,
             config: ScoreConfig) -> dict[str, Any]:
    """Fréchet distance and KID, with the reference's split-half values as the small-N floor."""
    out: dict[str, Any] = {"feature_space": space, "reference": reference_name,
                           "n_generated": len(generated), "n_reference": len(reference)}
    if len(generated) < 2 or len(reference) < 4:
        return {**out, "frechet": None, "kid": None, "reference_split_half": None}
    out["frechet"] = frechet_distance(generated, reference)
    out["kid"] = vars(kid(generated, reference, KID_SUBSETS, KID_SUBSET_SIZE, config.seed))
    order = np.random.default_rng(config.seed).permutation(len(reference))
    half_a, half_b = reference[order[: len(order) // 2]], reference[order[len(order) // 2 :]]
    floor = kid(half_a, half_b, KID_SUBSETS, KID_SUBSET_SIZE, config.seed)
    out["reference_split_half"] = {"frechet": frechet_distance(half_a, half_b), "kid": vars(floor)}
    return out


def _reference_images(folder: Path) -> list[Image.Image]:
    """Every readable image under `folder` (recursively), in path order."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images = []
    for path in paths:
        try:
            images.append(load_image(path))
        except ImageError:
            continue
    if not images:
        raise DataError(f"no readable reference images under {folder}")
    return images


def evaluate(records: dict[str, list[SkillRecord]], generated: ImageSet, truth: ImageSet, config: ScoreConfig,
             encoder: Encoder | None = None, reference: list[Image.Image] | None = None) -> SkillsResult:
    """Scores images in memory: skills with controls and, given an encoder, alignment and quality.

    Args:
        records: ``{skill: records}`` of the scored split.
        generated: the images to score.
        truth: the ground-truth renders (upper bound, shuffle, default quality reference).
        config: settings (its `clip` is only named in the report; pass the encoder).
        encoder: a CLIP encoder (`clipforge.probe.ClipEncoder`) or None to skip alignment and quality.
        reference: quality reference images instead of the ground-truth renders.
    """
    report, examples = _judge_skills(records, generated, truth, config)
    report["images"] = _image_counts(records, generated)
    report["ci"] = {"level": LEVEL, "method": "percentile bootstrap over prompts (Wilson below "
                    f"{MIN_BOOTSTRAP_N} prompts)", "resamples": config.n_resamples, "seed": config.seed}
    report["parser"] = vars(config.parser)
    if not all(in_renderer_domain(rs) for rs in records.values()):
        report["note"] = ("some skills name objects or colours outside the renderer's vocabulary: they get "
                          "alignment and quality metrics only")
    report.update(r_precision=None, clipscore=None, alignment=None, quality=None)
    if encoder is not None:
        alignment, gen_embeddings, truth_embeddings = _alignment(encoder, records, generated, truth, config)
        report["r_precision"] = alignment["generated"]["r_precision"]
        report["clipscore"] = alignment["generated"]["clipscore"]
        report["alignment"] = alignment
        ref = encoder.encode_images(reference) if reference is not None else truth_embeddings
        space = f"unit-norm image embeddings of {config.clip or 'the given CLIP'}"
        ref_name = str(config.reference) if reference is not None else "ground-truth renders of the split"
        report["quality"] = _quality(gen_embeddings, ref, space, ref_name, config)
    return SkillsResult(report, examples)


def _image_counts(records: dict[str, list[SkillRecord]], generated: ImageSet) -> dict[str, Any]:
    return {skill: {"prompts": len(rs),
                    "images": sum(len(v) for v in generated.images.get(skill, {}).values()),
                    "missing": len(generated.missing.get(skill, [])),
                    "unreadable": len(generated.unreadable.get(skill, []))} for skill, rs in records.items()}


def score_images(skills_dir: Path, images_dir: Path, config: ScoreConfig) -> SkillsResult:
    """Reads a skill set and the generated images from disk and scores them (`evaluate`); writes nothing.

    Raises:
        DataError: the skill set or the images folder cannot be read.
    """
    if not images_dir.is_dir():
        raise DataError(f"images folder not found: {images_dir}")
    records = load_skill_set(skills_dir, config.split)
    generated = read_images(images_dir, records)
    truth = read_images(skills_dir, records)
    encoder = ClipEncoder.load(config.clip, config.batch_size, config.runtime) if config.clip else None
    reference = _reference_images(config.reference) if config.reference is not None else None
    result = evaluate(records, generated, truth, config, encoder, reference)
    result.report.update(skills_dir=str(skills_dir), images_dir=str(images_dir), split=config.split,
                         clip=config.clip, version=__version__, metadata=read_metadata(skills_dir))
    return result


def score(skills_dir: Path, images_dir: Path, out: Path, config: ScoreConfig) -> dict[str, Any]:
    """``clipforge skills score``: `score_images`, then ``out/skills.json`` and ``out/skills.html``.

    Returns:
        The content of skills.json.
    """
    result = score_images(skills_dir, images_dir, config)
    write_json(result.report, out / "skills.json")
    write_html(result, out / "skills.html")
    return result.report
