"""``typographic:DATA`` — does a wrong class name written onto an image change the model's prediction?

CLIP reads text in images: a note saying "iPod" on an apple makes it an iPod, and zero-shot classification
is more exposed than a linear probe. This suite measures that on any classification data
(`clipforge.data.classification`: ``synth:shape``, ``imagefolder:DIR``, ``flickr8k-tags:ROOT:test``, ...).

Every image is scored three ways: *clean*; *attacked*, with the name of a wrong class written on it (the
*target*, drawn uniformly from the other classes); and *control*, with a word that names no class written in
exactly the same size, place and colours (`clipforge.data.typographic`). Targets, control words and styles
are drawn from ``--option seed`` (default 0), the same for every model.

Reported per classifier (zero-shot with the data's prompt templates, else OpenAI's 80 ImageNet ones; and a
linear probe when ``--option linear_probe=SPEC`` names labelled training data with the same classes):

- accuracy clean, attacked and control;
- ``drop_beyond_control`` = control minus attacked accuracy: what the wrong class name costs beyond
  covering part of the image with a word;
- ``attack_success``: the share of attacked images predicted as the written class; its baseline
  ``control_success`` is how often the control image is predicted as that same class anyway, and
  ``success_beyond_control`` their difference.

Intervals are percentile bootstraps over images, every quantity of a classifier resampled with the same
images (paired), so differences get their own intervals. The linear probe is the eval engine's
(`clipforge.eval.linear_probe`: L2 logistic regression, C searched on validation data) fitted on the
model's normalized image embeddings of the clean training images; its validation data is
``--option linear_probe_val=SPEC``, else a stratified fifth of the training data.

A model that never saw text in its training images has no reason to read the word: for it the attack is an
occlusion like the control, and ``drop_beyond_control`` and ``success_beyond_control`` near 0 are the
expected result, not robustness. The suite is meant for models trained on web images, which contain text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipforge.data.classification import open_classification
from clipforge.data.labelled import ClassificationData, LabelledImage, MappedData
from clipforge.data.typographic import TextStyle, sample_style, write_text
from clipforge.errors import ConfigError, DataError
from clipforge.eval import linear_probe
from clipforge.eval.frozen import FeatureSet, split_off
from clipforge.eval.templates import OPENAI_IMAGENET_TEMPLATES
from clipforge.eval.zeroshot import ensemble
from clipforge.probe.analysis import headline, parse_options
from clipforge.probe.items import BadItem
from clipforge.probe.report import thumbnail_html
from clipforge.probe.run import Encoder, encode_images
from clipforge.probe.stats import accuracy_block, percentile_interval, resampled_means

# Words that name no class of the shipped tasks; any that names a class of the data is dropped.
CONTROL_WORDS = ("window", "pencil", "cloud", "table", "paper", "lamp", "clock", "chair", "bottle", "spoon",
                 "piano", "candle", "button", "ladder", "mirror", "basket", "kettle", "wallet", "stapler",
                 "carpet")
VARIANTS = ("clean", "attacked", "control")
VAL_FRACTION = 0.2
THUMBNAIL = 112
# Per classifier: rates (prediction equals what) and contrasts (first minus second).
RATES = {"clean_accuracy": ("clean", "label"), "attacked_accuracy": ("attacked", "label"),
         "control_accuracy": ("control", "label"), "attack_success": ("attacked", "target"),
         "control_success": ("control", "target"), "clean_success": ("clean", "target")}
CONTRASTS = {"drop": ("clean_accuracy", "attacked_accuracy"),
             "control_drop": ("clean_accuracy", "control_accuracy"),
             "drop_beyond_control": ("control_accuracy", "attacked_accuracy"),
             "success_beyond_control": ("attack_success", "control_success")}


@dataclass(frozen=True)
class TypographicOptions:
    """``--option`` keys of ``typographic:``.

    Attributes:
        seed: draws each image's target class, control word and text style.
        linear_probe: a classification spec with the same classes to fit a linear probe on, e.g.
            ``synth:shape:64:train``.
        linear_probe_val: validation data for the probe's C search (default: a fifth of the training data).
        examples: images shown in probe.html.
    """

    seed: int = 0
    linear_probe: str | None = None
    linear_probe_val: str | None = None
    examples: int = 6

    def __post_init__(self) -> None:
        if self.linear_probe_val is not None and self.linear_probe is None:
            raise ConfigError("typographic option linear_probe_val needs linear_probe")
        if self.examples < 0:
            raise ConfigError(f"typographic option examples must be >= 0, got {self.examples}")


@dataclass(frozen=True)
class Attack:
    """What is written on one image.

    Attributes:
        target: the wrong class whose name is written on the attacked image.
        control: the non-class word written on the control image.
        style: size, place and colours of both.
    """

    target: int
    control: str
    style: TextStyle


def control_words(classnames: Sequence[str]) -> list[str]:
    """`CONTROL_WORDS` that share no word with a class name.

    Raises:
        DataError: every control word names a class.
    """
    taken = {word for name in classnames for word in re.findall(r"[a-z]+", name.lower())}
    words = [word for word in CONTROL_WORDS if word not in taken]
    if not words:
        raise DataError("typographic: every control word is a class name")
    return words


def plan_attacks(labels: Sequence[int], classnames: Sequence[str], seed: int) -> list[Attack]:
    """Per image, a target drawn uniformly from the other classes, a control word and a style (seeded)."""
    words = control_words(classnames)
    rng = np.random.default_rng(seed)
    attacks = []
    for label in labels:
        target = int(rng.integers(len(classnames) - 1))
        target += target >= label  # skip the true class
        attacks.append(Attack(target, words[int(rng.integers(len(words)))], sample_style(rng)))
    return attacks


def written_data(data: ClassificationData, attacks: dict[str, Attack], variant: str) -> MappedData:
    """`data` with each image's wrong class name (``attacked``) or control word (``control``) on it."""

    def write(image: Image.Image, item: LabelledImage) -> Image.Image:
        attack = attacks[item.key]
        word = data.classnames[attack.target] if variant == "attacked" else attack.control
        return write_text(image, word, attack.style)[0]

    return MappedData(f"typographic-{variant}:{data.name}", data, write)


def open_typographic(location: str, options: Sequence[str], limit: int | None) -> TypographicSuite:
    """Opens ``typographic:DATA`` (module docstring).

    Args:
        location: a classification spec, e.g. ``synth:shape`` or ``flickr8k-tags:ROOT:test``.
        options: ``KEY=VALUE`` strings for `TypographicOptions`.
        limit: use only the first `limit` images.

    Raises:
        DataError: the data (or the linear probe's) cannot be opened, or their classes differ.
    """
    parsed = parse_options(TypographicOptions, options, "typographic options")
    data = open_classification(location)
    items = list(data.items[:limit] if limit is not None else data.items)
    attacks = plan_attacks([item.label for item in items], data.classnames, parsed.seed)
    probe_data = [_same_classes(open_classification(spec), data) for spec in
                  (parsed.linear_probe, parsed.linear_probe_val) if spec is not None]
    return TypographicSuite(f"typographic:{location}", data, items, attacks, parsed, probe_data)


def _same_classes(other: ClassificationData, data: ClassificationData) -> ClassificationData:
    if other.classnames != data.classnames:
        raise DataError(f"typographic: linear-probe data '{other.name}' has classes "
                        f"{list(other.classnames)}, not those of '{data.name}'")
    return other


class TypographicSuite:
    """Classification images with a wrong class name or a neutral word written on them (an `Analysis`)."""

    kind = "typographic"

    def __init__(self, spec: str, data: ClassificationData, items: list[LabelledImage], attacks: list[Attack],
                 options: TypographicOptions, probe_data: Sequence[ClassificationData] = ()) -> None:
        self.spec, self.data, self.items, self.attacks = spec, data, items, attacks
        self.options, self.probe_data = options, list(probe_data)
        self.bad: list[BadItem] = []
        by_key = {item.key: attack for item, attack in zip(items, attacks, strict=True)}
        self.written = {v: written_data(data, by_key, v) for v in VARIANTS[1:]}
        self._decoded: tuple[str, Image.Image] | None = None

    def render(self, index: int, variant: str) -> Image.Image:
        """Image `index` clean, attacked or control: `written`'s image function applied to the decoded image,
        which is kept for the image's other variants (the same pixels as ``written[variant].image(key)``).

        Raises:
            ImageError: the image cannot be read.
        """
        key = self.items[index].key
        if self._decoded is None or self._decoded[0] != key:
            self._decoded = (key, self.data.image(key).convert("RGB"))
        image = self._decoded[1]
        if variant == "clean":
            return image.copy()  # callers may resize it in place
        return self.written[variant].transform(image, self.items[index])

    def analyze(self, encoder: Encoder, n_resamples: int, seed: int) -> dict[str, Any]:
        """Accuracy clean / attacked / control and attack success, for zero-shot and the linear probe."""
        loaders = {f"{item.key}@{variant}": partial(self.render, index, variant)
                   for index, item in enumerate(self.items) for variant in VARIANTS}
        embedded, failed = encode_images(loaders, encoder)
        keys = [item.key for item in self.items]
        kept = [i for i, key in enumerate(keys) if all(f"{key}@{v}" in embedded for v in VARIANTS)]
        if not kept:
            raise DataError(f"typographic: no readable image in '{self.data.name}'")
        images = {v: np.stack([embedded[f"{keys[i]}@{v}"] for i in kept]) for v in VARIANTS}  # [N, E]
        truth = {"label": np.array([self.items[i].label for i in kept]),
                 "target": np.array([self.attacks[i].target for i in kept])}
        heads = {"zero_shot": self._zero_shot_head(encoder)}
        fit: dict[str, Any] = {}
        if self.probe_data:
            heads["linear_probe"], fit = self._linear_probe_head(encoder, seed)
        predictions = {name: {v: head(images[v]) for v in VARIANTS} for name, head in heads.items()}
        scores = {name: head_scores(p, truth, n_resamples, seed) for name, p in predictions.items()}
        success = scores["zero_shot"]["attack_success"]
        rows = [self._image_row(i, predictions, j) for j, i in enumerate(kept)]
        names = list(self.data.classnames)
        return {"headline": headline("zero-shot attack success (prediction = written class)",
                                     success["value"], success["ci95"], len(kept)),
                "classes": names, "n": len(kept), "scores": scores, "linear_probe": fit,
                "per_target": {name: per_target(rows, names, name, n_resamples, seed) for name in heads},
                "images": rows, "unreadable": sorted({key.rpartition("@")[0] for key in failed})}

    def _zero_shot_head(self, encoder: Encoder) -> Callable[[np.ndarray], np.ndarray]:
        templates = list(self.data.templates) or list(OPENAI_IMAGENET_TEMPLATES)
        names = self.data.classnames
        texts = encoder.encode_texts([t.format(name) for t in templates for name in names])  # [T * C, E]
        embeddings = torch.from_numpy(np.asarray(texts)).reshape(len(templates), len(names), -1)  # [T, C, E]
        classes = ensemble(embeddings).numpy()  # [C, E]
        return lambda images: np.asarray((images @ classes.T).argmax(axis=1))

    def _linear_probe_head(self, encoder: Encoder, seed: int
                           ) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
        train = _feature_set(self.probe_data[0], encoder)
        if len(self.probe_data) > 1:
            val = _feature_set(self.probe_data[1], encoder)
        else:
            kept, held = split_off(train.labels, VAL_FRACTION, seed)
            train, val = train.subset(kept), train.subset(held)
        search = linear_probe.search_c(train, val, seed=seed)
        model = linear_probe.fit(train, search.c, seed)
        fit = {"train": self.probe_data[0].name, "n_train": len(train), "n_val": len(val), "C": search.c,
               "val_accuracy": search.val_accuracy}
        return lambda images: linear_probe.predict(model, _unlabelled(images)), fit

    def _image_row(self, index: int, predictions: dict[str, dict[str, np.ndarray]], row: int
                   ) -> dict[str, Any]:
        item, attack = self.items[index], self.attacks[index]
        return {"key": item.key, "label": item.label, "target": attack.target, "control": attack.control,
                "predicted": {name: {v: int(p[v][row]) for v in VARIANTS} for name, p in predictions.items()}}

    def html(self, models: dict[str, dict[str, Any]]) -> str:
        """The scores of every model and classifier side by side, then example images with predictions."""
        return "\n".join([f"<p>{html.escape(_NOTE)}</p>", "<h2>Scores (95% CI)</h2>", _score_table(models),
                          "<h2>Predicted as the written class, per written class: attacked / control</h2>",
                          _target_table(models), "<h2>Examples: clean, attacked, control</h2>",
                          self._examples(models)])

    def _examples(self, models: dict[str, dict[str, Any]]) -> str:
        """The first images the attack fooled (zero-shot, any model), then others, up to `examples`."""
        first = next(iter(models.values()))["images"]
        fooled = [j for j, row in enumerate(first) if any(
            s["images"][j]["predicted"]["zero_shot"]["attacked"] == row["target"] for s in models.values())]
        rest = [j for j in range(len(first)) if j not in set(fooled)]
        picked = (fooled + rest)[: self.options.examples]
        index = {item.key: i for i, item in enumerate(self.items)}
        return "".join(self._example(index[first[j]["key"]], j, models) for j in picked)

    def _example(self, index: int, row: int, models: dict[str, dict[str, Any]]) -> str:
        attack, names = self.attacks[index], self.data.classnames
        written = {"clean": "", "attacked": names[attack.target], "control": attack.control}
        tiles = "".join(f"<figure style='display:inline-block;margin:2px'>"
                        f"{thumbnail_html(partial(self.render, index, v), f'{v}', THUMBNAIL)}"
                        f"<figcaption>{v} {html.escape(written[v])}</figcaption></figure>" for v in VARIANTS)
        lines = "".join(
            f"<br>{html.escape(model)} {head.replace('_', '-')}: " + " / ".join(
                html.escape(names[p[v]]) for v in VARIANTS)
            for model, s in models.items() for head, p in s["images"][row]["predicted"].items())
        return (f"<div class='item'>{tiles}<div><b>{html.escape(self.items[index].key)}</b>: "
                f"{html.escape(names[self.items[index].label])}; predicted clean / attacked / control{lines}"
                "</div></div>")


def _feature_set(data: ClassificationData, encoder: Encoder) -> FeatureSet:
    """The encoder's image embeddings of `data`'s readable images, with their labels."""
    embedded, _ = encode_images({item.key: partial(data.image, item.key) for item in data.items}, encoder)
    keys = tuple(item.key for item in data.items if item.key in embedded)
    if not keys:
        raise DataError(f"typographic: no readable image in linear-probe data '{data.name}'")
    features = torch.from_numpy(np.stack([embedded[k] for k in keys])).float()  # [N, E]
    return FeatureSet(keys, features, torch.tensor([data.label_of(k) for k in keys], dtype=torch.long))


def _unlabelled(images: np.ndarray) -> FeatureSet:
    rows = torch.from_numpy(images).float()  # [N, E]
    return FeatureSet(tuple(str(i) for i in range(len(rows))), rows, torch.zeros(len(rows), dtype=torch.long))


def head_scores(predicted: dict[str, np.ndarray], truth: dict[str, np.ndarray], n_resamples: int, seed: int
                ) -> dict[str, dict[str, Any]]:
    """`RATES` and `CONTRASTS` of one classifier, with paired bootstrap intervals over images.

    Args:
        predicted: per variant, the predicted class of each image [N].
        truth: ``label`` (true class) and ``target`` (written class) of each image [N].
    """
    hits = [predicted[variant] == truth[against] for variant, against in RATES.values()]
    table = np.stack(hits, axis=1).astype(np.float64)  # [N, M]
    means = resampled_means(table, n_resamples, np.random.default_rng(seed))  # [R, M]
    names, n = list(RATES), len(table)
    scores = {name: _block(float(table[:, j].mean()), means[:, j], n) for j, name in enumerate(names)}
    for name, (a, b) in CONTRASTS.items():
        i, j = names.index(a), names.index(b)
        scores[name] = _block(float(table[:, i].mean() - table[:, j].mean()), means[:, i] - means[:, j], n)
    return scores


def per_target(rows: Sequence[dict[str, Any]], classes: Sequence[str], head: str, n_resamples: int, seed: int
               ) -> dict[str, dict[str, Any]]:
    """Per written class: how often the attacked image and the control image are predicted as that class.

    Which words act shows whether a model reads or reacts to the shape of particular words.

    Args:
        rows: the ``images`` rows of a summary (``target`` and ``predicted[head][variant]``).
        classes: the class names.
        head: ``zero_shot`` or ``linear_probe``.
    """
    table = {}
    for target, name in enumerate(classes):
        picked = [row["predicted"][head] for row in rows if row["target"] == target]
        hits = {v: np.array([p[v] == target for p in picked], dtype=bool) for v in ("attacked", "control")}
        table[name] = {"attacked": accuracy_block(hits["attacked"], n_resamples, seed),
                       "control": accuracy_block(hits["control"], n_resamples, seed)}
    return table


def _block(value: float, samples: np.ndarray, n: int) -> dict[str, Any]:
    return {"value": value, "ci95": list(percentile_interval(samples)), "n": n}


# ---------------------------------------------------------------------------------------------- HTML

_NOTE = ("Attacked: a wrong class name written on the image; control: a word that names no class, in the "
         "same size, place and colours. Drop beyond control = control - attacked accuracy; success = share "
         "of attacked images predicted as the written class, against how often the control image is "
         "predicted as that class anyway. A model that never saw text in images should show ~0 beyond the "
         "control.")
_COLUMNS = (("clean_accuracy", "clean acc."), ("attacked_accuracy", "attacked acc."),
            ("control_accuracy", "control acc."), ("drop_beyond_control", "drop beyond control"),
            ("attack_success", "attack success"), ("control_success", "control 'success'"),
            ("success_beyond_control", "success beyond control"))


def _cell(block: dict[str, Any]) -> str:
    low, high = block["ci95"]
    return f"{100 * block['value']:.1f}% <small>[{100 * low:.1f}, {100 * high:.1f}]</small>"


def _score_table(models: dict[str, dict[str, Any]]) -> str:
    head = "".join(f"<th>{title}</th>" for _, title in _COLUMNS)
    rows = [f"<table><tr><th>model</th><th>classifier</th><th>n</th>{head}</tr>"]
    for model, summary in models.items():
        for name, scores in summary["scores"].items():
            cells = "".join(f"<td>{_cell(scores[key])}</td>" for key, _ in _COLUMNS)
            rows.append(f"<tr><td>{html.escape(model)}</td><td>{name.replace('_', '-')}</td>"
                        f"<td>{summary['n']}</td>{cells}</tr>")
    return "".join(rows) + "</table>"


def _target_table(models: dict[str, dict[str, Any]]) -> str:
    classes = next(iter(models.values()))["classes"]
    rows = ["<table><tr><th>model</th><th>classifier</th>" + "".join(
        f"<th>{html.escape(c)}</th>" for c in classes) + "</tr>"]
    for model, summary in models.items():
        for name, table in summary["per_target"].items():
            cells = "".join(f"<td>{_pct(table[c]['attacked'])} / {_pct(table[c]['control'])} "
                            f"<small>n={table[c]['attacked']['n']}</small></td>" for c in classes)
            rows.append(f"<tr><td>{html.escape(model)}</td><td>{name.replace('_', '-')}</td>{cells}</tr>")
    return "".join(rows) + "</table>"


def _pct(block: dict[str, Any]) -> str:
    return "–" if block["accuracy"] is None else f"{100 * block['accuracy']:.0f}%"
