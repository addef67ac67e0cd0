"""The adaptation jobs behind `clipforge adapt` and `clipforge eval zeroshot` on classification data.

Each job loads the model, opens the data specs, reads frozen image features through the shared cache,
measures zero-shot accuracy (the prompt-template ensemble) and its own method over shots x seeds, and
merges its results into ``OUT/adapt.json`` (methods run earlier against the same model and data are kept)
before rewriting ``OUT/adapt.html``. Hyperparameters are chosen on the validation split only; when no
`val` spec is given, a stratified 20 % of the training images (seed 0) is held out as validation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforge.adapt import coop, wiseft
from clipforge.adapt.journal import Journal
from clipforge.adapt.report import merge_report, per_class_accuracy, summarize_seeds, write_report
from clipforge.adapt.zeroshot import DEFAULT_SINGLE, evaluate_head, greedy_templates, template_embeddings
from clipforge.checkpoint import load
from clipforge.data.classification import open_classification
from clipforge.data.labelled import ClassificationData
from clipforge.data.readers import image_files
from clipforge.data.transforms import Preprocess
from clipforge.errors import ConfigError, DataError
from clipforge.eval import linear_probe
from clipforge.eval.frozen import (
    FeatureSet,
    embed_features,
    few_shot_indices,
    freeze,
    hit_rate,
    image_features,
    logit_scale,
    split_off,
    trainable_image_head,
)
from clipforge.eval.templates import OPENAI_IMAGENET_TEMPLATES
from clipforge.eval.zeroshot import Prediction, classify_images, ensemble
from clipforge.models.base import ContrastiveModel
from clipforge.probe.stats import accuracy_block
from clipforge.progress import to_stderr
from clipforge.tokenizer import TextTokenizer
from clipforge.version import __version__

VAL_FRACTION = 0.2


@dataclass(frozen=True)
class AdaptConfig:
    """What to adapt, on which data, and how the few-shot protocol samples it.

    Attributes:
        model: a model spec (`clipforge.load`).
        test: classification spec the results are reported on.
        out: output folder (adapt.json, adapt.html, learned prompts).
        train: classification spec to learn from (None: zero-shot only).
        val: classification spec for choosing hyperparameters (None: 20 % of train).
        shots: images per class to train on; empty: the whole training set ("all").
        seeds: few-shot draws (and training seeds) per shot count: 1 .. seeds.
        feature_cache: frozen-feature cache folder (default OUT/features); share it with LiT runs.
        batch_size: images per feature-extraction batch.
        workers: image-decoding workers.
    """

    model: str
    test: str
    out: Path
    train: str | None = None
    val: str | None = None
    shots: tuple[int, ...] = ()
    seeds: int = 3
    feature_cache: Path | None = None
    batch_size: int = 64
    workers: int = 0

    def __post_init__(self) -> None:
        if self.seeds < 1 or any(k < 1 for k in self.shots):
            raise ConfigError("adapt: seeds and every shot count must be >= 1")

    @property
    def cache_dir(self) -> Path:
        return self.feature_cache or self.out / "features"


@dataclass
class Task:
    """A loaded model with the frozen features of its data."""

    model: ContrastiveModel
    preprocess: Preprocess
    tokenizer: TextTokenizer
    classnames: list[str]
    templates: list[str]
    test: FeatureSet
    val: FeatureSet | None
    train: FeatureSet | None
    counts: dict[str, dict[str, int]]
    bad: dict[str, dict[str, int]]

    @cached_property
    def prompt_embeddings(self) -> torch.Tensor:
        """Normalized [T, C, E] embeddings of every template of the pool and class."""
        return template_embeddings(self.model, self.tokenizer, self.classnames, self.templates)


def open_task(config: AdaptConfig) -> Task:
    """Loads the model and the frozen features of test, train and val.

    Raises:
        DataError: the specs' class names differ, or a split has no readable image.
    """
    loaded, preprocess, tokenizer = load(config.model)
    model = freeze(loaded)
    test_data = open_classification(config.test)
    opened = {"test": test_data}
    for split, spec in (("train", config.train), ("val", config.val)):
        if spec is not None:
            opened[split] = _same_classes(list(test_data.classnames), config.test, open_classification(spec))
    features = {split: features_of(model, preprocess, data, config) for split, data in opened.items()}
    templates = list(test_data.templates) or list(OPENAI_IMAGENET_TEMPLATES)
    task = Task(model, preprocess, tokenizer, list(test_data.classnames), templates, features["test"],
                features.get("val"), features.get("train"),
                {split: data.class_counts() for split, data in opened.items()},
                {split: data.bad.report() for split, data in opened.items()})
    if task.val is None and task.train is not None:
        kept, held = split_off(task.train.labels, VAL_FRACTION, seed=0)
        task.train, task.val = task.train.subset(kept), task.train.subset(held)
    return task


def features_of(model: ContrastiveModel, preprocess: Preprocess, data: ClassificationData,
                config: AdaptConfig) -> FeatureSet:
    """Frozen features of `data` through the configured cache, with a progress line."""
    to_stderr(f"frozen features of '{data.name}' ({len(data.items)} images, cache {config.cache_dir})")
    return image_features(model, preprocess, data, config.cache_dir, config.batch_size, config.workers,
                          say=to_stderr)


def _same_classes(classnames: list[str], reference: str, other: ClassificationData) -> ClassificationData:
    if list(other.classnames) != classnames:
        raise DataError(f"'{other.name}' has classes {list(other.classnames)[:4]}..., "
                        f"not those of '{reference}' ({classnames[:4]}...)")
    return other


def zero_shot_section(task: Task) -> dict[str, Any]:
    """Test accuracy (95% CI) and per-class accuracy of the prompt-ensemble head."""
    predictions = _head_predictions(task, task.test, ensemble(task.prompt_embeddings))
    correct = (predictions == task.test.labels).numpy()
    block = accuracy_block(correct)
    return {**block, "templates": len(task.templates),
            "per_class": per_class_accuracy(predictions, task.test.labels, task.classnames)}


def _head_predictions(task: Task, data: FeatureSet, head: torch.Tensor) -> torch.Tensor:
    return (embed_features(task.model, data.features) @ head.t()).argmax(dim=1)


def _shot_keys(config: AdaptConfig) -> list[int | None]:
    return list(config.shots) if config.shots else [None]


def _key(shots: int | None) -> str:
    return "all" if shots is None else str(shots)


def _training_set(task: Task, shots: int | None, seed: int) -> FeatureSet:
    if task.train is None:
        raise ConfigError("adaptation needs --train data")
    if shots is None:
        return task.train
    return task.train.subset(few_shot_indices(task.train.labels, shots, seed))


Runner = Callable[[FeatureSet, int | None, int], dict[str, Any]]


def journal(config: AdaptConfig, method: str, settings: Any) -> Journal:
    """The resume journal of one method's sweep in OUT, keyed by the model, data and `settings`."""
    fingerprint = {"method": method, "model": config.model, "train": config.train, "val": config.val,
                   "test": config.test, "settings": settings}
    return Journal(config.out / f".{method}-runs.json", fingerprint)


def few_shot_protocol(task: Task, config: AdaptConfig, done: Journal, run: Runner) -> dict[str, Any]:
    """Runs `run(train, shots, seed)` for every shot count and seed not yet in the journal `done`;
    mean, std and per-seed results."""
    results = {}
    for shots in _shot_keys(config):
        runs = []
        for seed in range(1, config.seeds + 1):
            outcome = done.get(_key(shots), seed)
            if outcome is None:
                start = time.time()
                outcome = run(_training_set(task, shots, seed), shots, seed)
                done.add(_key(shots), seed, {**outcome, "seconds": time.time() - start})
            runs.append(outcome)
            to_stderr(f"{_key(shots)} shots, seed {seed}: test accuracy {outcome['accuracy']:.4f}")
        results[_key(shots)] = summarize_seeds(runs, task.test.labels, task.classnames)
    return results


def _finish(config: AdaptConfig, task: Task, results: dict[str, Any], extra: dict[str, Any],
            done: Journal | None = None) -> dict[str, Any]:
    report = {
        "model": config.model, "data": {"train": config.train, "val": config.val, "test": config.test},
        "version": __version__, "classes": task.classnames, "counts": task.counts, "bad_samples": task.bad,
        "zero_shot": zero_shot_section(task), "results": results, **extra,
    }
    merged = merge_report(config.out / "adapt.json", report)
    write_report(merged, config.out)
    if done is not None:
        done.close()
    return merged


def run_linear_probe(config: AdaptConfig) -> dict[str, Any]:
    """Few-shot (or full) linear probes with the C search on val; writes OUT/adapt.json and adapt.html."""
    task = open_task(config)
    val = _require_val(task)

    def run(train: FeatureSet, shots: int | None, seed: int) -> dict[str, Any]:
        return linear_probe.probe(train, val, task.test, seed)

    done = journal(config, "linear-probe", {"coarse": linear_probe.COARSE_EXPONENTS})
    return _finish(config, task, {"linear-probe": few_shot_protocol(task, config, done, run)}, {}, done)


def _require_val(task: Task) -> FeatureSet:
    if task.val is None:
        raise ConfigError("this method needs validation data: give --val or --train")
    return task.val


def run_coop(config: AdaptConfig, coop_config: coop.CoopConfig, lrs: tuple[float, ...] = ()
             ) -> dict[str, Any]:
    """Few-shot CoOp; the prompt learned with the most shots (seed 1) is saved to OUT/coop/.

    Args:
        config: model, data and few-shot protocol.
        coop_config: the prompt and optimizer.
        lrs: learning rates to choose from on val for every run (empty: `coop_config.lr` only).
    """
    task = open_task(config)
    val = _require_val(task)
    saved: dict[str, Any] = {}

    def run(train: FeatureSet, shots: int | None, seed: int) -> dict[str, Any]:
        trained = {lr: coop.timed_train(task.model, task.tokenizer, task.classnames, train,
                                        dataclasses.replace(coop_config, lr=lr), shots, seed)
                   for lr in lrs or (coop_config.lr,)}
        scores = {lr: hit_rate(coop.predict(task.model, prompt, val), val.labels)
                  for lr, (prompt, _) in trained.items()}
        lr = max(scores, key=lambda r: scores[r])
        prompt = trained[lr][0]
        predictions = coop.predict(task.model, prompt, task.test)
        if seed == 1 and shots == _shot_keys(config)[-1]:
            saved.update(_save_prompt(config, task, prompt, shots))
        return {"accuracy": hit_rate(predictions, task.test.labels), "predictions": predictions, "lr": lr,
                "val_accuracy": scores[lr], "train_seconds": sum(s for _, s in trained.values())}

    done = journal(config, "coop", {"coop": dataclasses.asdict(coop_config), "lrs": lrs})
    results = few_shot_protocol(task, config, done, run)
    return _finish(config, task, {"coop": results}, {"coop": saved or _saved_prompt(config)}, done)


def _save_prompt(config: AdaptConfig, task: Task, prompt: coop.PromptLearner, shots: int | None
                 ) -> dict[str, Any]:
    words = coop.nearest_words(task.model, task.tokenizer, prompt)
    meta = {"model": config.model, "shots": _key(shots), "seed": 1, "nearest_words": words}
    coop.save_prompt(prompt, config.out / "coop", meta)
    return _saved_prompt(config)


def _saved_prompt(config: AdaptConfig) -> dict[str, Any]:
    """The report's view of the prompt in OUT/coop (also when a resumed sweep saved it earlier)."""
    folder = config.out / "coop"
    meta = coop.read_prompt_meta(folder)
    return {"prompt": str(folder), "shots": meta["shots"], "nearest_words": meta["nearest_words"]}


def run_wise_ft(config: AdaptConfig, wise: wiseft.WiseFtConfig, shifts: tuple[str, ...] = ()
                ) -> dict[str, Any]:
    """Fine-tunes the zero-shot classifier and reports accuracy along the mixing coefficient α on val, test
    and every shifted test set in `shifts` (classification specs, e.g. ``corrupt:blur:2:...``)."""
    task = open_task(config)
    val = _require_val(task)
    sets = {"val": val, "test": task.test}
    for spec in shifts:
        shifted = _same_classes(task.classnames, config.test, open_classification(spec))
        sets[spec] = features_of(task.model, task.preprocess, shifted, config)
    zero_shot = wiseft.ZeroShotClassifier(trainable_image_head(task.model), ensemble(task.prompt_embeddings),
                                          logit_scale(task.model))

    def run(train: FeatureSet, shots: int | None, seed: int) -> dict[str, Any]:
        lr, tuned = wiseft.best_lr(zero_shot, train, val, wise, seed)
        curve = wiseft.alpha_curve(zero_shot, tuned, sets, wise.alphas)
        best = int(np.argmax(curve["val"]))  # this seed's α, chosen on val
        return {"accuracy": curve["test"][best], "alpha": wise.alphas[best], "lr": lr, "curve": curve}

    done = journal(config, "wise-ft", {"wise": dataclasses.asdict(wise), "shifts": shifts})
    results = few_shot_protocol(task, config, done, run)
    section = wise_ft_section(results, wise.alphas, shifts)
    return _finish(config, task, {"wise-ft": results}, {"wise_ft": section}, done)


def wise_ft_section(results: dict[str, Any], alphas: tuple[float, ...], shifts: tuple[str, ...]
                    ) -> dict[str, Any]:
    """Mean and std over seeds of the α curves (val, test, each shift) of the largest shot count, and the
    α chosen on val."""
    runs = results[list(results)[-1]]
    curves = runs["curve"]
    stats = {n: {"mean": np.mean([c[n] for c in curves], axis=0).tolist(),
                 "std": np.std([c[n] for c in curves], axis=0).tolist()} for n in curves[0]}
    chosen = int(np.argmax(stats["val"]["mean"]))
    return {"alphas": list(alphas), "shifts": list(shifts), "lrs": runs["lr"], "curves": stats,
            "alpha_val": alphas[chosen], "at_alpha_val": {n: stats[n]["mean"][chosen] for n in stats}}


def run_template_search(config: AdaptConfig) -> dict[str, Any]:
    """Zero-shot accuracy of the single template, the whole pool and the greedy selection made on val."""
    task = open_task(config)
    val = _require_val(task)
    scale = logit_scale(task.model)
    embeddings = task.prompt_embeddings
    val_images, test_images = (embed_features(task.model, s.features) for s in (val, task.test))
    chosen = greedy_templates(embeddings, val_images, val.labels, scale)
    single = [task.templates.index(DEFAULT_SINGLE)] if DEFAULT_SINGLE in task.templates else [0]
    rows = {"single": single, "ensemble": list(range(len(embeddings))), "greedy": chosen}
    search = {name: _template_row(task, ids, val_images, val.labels, test_images, scale)
              for name, ids in rows.items()}
    return _finish(config, task, {}, {"template_search": search})


def _template_row(task: Task, ids: list[int], val_images: torch.Tensor, val_labels: torch.Tensor,
                  test_images: torch.Tensor, scale: float) -> dict[str, Any]:
    head = ensemble(task.prompt_embeddings, ids)
    correct = ((test_images @ head.t()).argmax(dim=1) == task.test.labels).numpy()
    return {"templates": [task.templates[i] for i in ids], "test": accuracy_block(correct),
            "val_accuracy": evaluate_head(val_images, val_labels, head, scale).accuracy}


def classify_with_prompt(folder: Path, images: list[str], top_k: int = 3, model_spec: str | None = None,
                         batch_size: int = 32) -> list[Prediction]:
    """Classifies image files (or folders of them) with a CoOp prompt saved by `run_coop`, on its model
    unless `model_spec` names another copy of it."""
    paths = image_files(images)
    meta = coop.read_prompt_meta(folder)
    loaded, preprocess, tokenizer = load(model_spec or str(meta["model"]))
    model = freeze(loaded)
    prompt = coop.load_prompt(folder, model, tokenizer)
    with torch.no_grad():
        classifier = prompt.class_embeddings(model).t()  # [E, C]
    return classify_images(model, preprocess, paths, prompt.classnames, classifier, top_k, batch_size)


def run_zero_shot(config: AdaptConfig) -> dict[str, Any]:
    """Zero-shot accuracy of the prompt-ensemble head only."""
    return _finish(config, open_task(config), {}, {})
