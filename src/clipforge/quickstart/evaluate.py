"""Evaluating the quickstart's two models on its held-out scenes with the shared eval and probe code."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clipforge.checkpoint import load
from clipforge.data.specs import open_data
from clipforge.data.transforms import Preprocess
from clipforge.eval.retrieval import recall_at_k
from clipforge.eval.run import (
    EvalConfig,
    RetrievalFeatures,
    embed_dataset,
    evaluate_zeroshot,
)
from clipforge.models.base import ContrastiveModel
from clipforge.probe import ClipEncoder, ProbeResult, Suite, load_suite, run_probe, summarize
from clipforge.probe.formats import synthetic_item_id
from clipforge.probe.report import write_probe_report
from clipforge.probe.stats import N_RESAMPLES, accuracy_block, split_results
from clipforge.quickstart.config import SPLIT_KEYS, QuickstartConfig, scene_config
from clipforge.synthetic.dataset import probes_naming_heldout
from clipforge.synthetic.text import same_color_pair
from clipforge.synthetic.zeroshot import load_labelled_scenes

RETRIEVAL_KEYS = ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5")
TOP_CAPTIONS = 3
PROBE_SEED = 0  # the `clipforge probe` default, so both give the same intervals


@dataclass
class Example:
    """A test scene for report.html, with each model's top retrieved captions.

    Attributes:
        key: the scene's record key in the test data.
        image: path of the scene's PNG.
        captions: the scene's own captions.
        top: per model, ``(caption, cosine, is_true)`` of its best-scoring test captions.
    """

    key: str
    image: Path
    captions: list[str]
    top: dict[str, list[tuple[str, float, bool]]] = field(default_factory=dict)


def probe_block(result: ProbeResult, tag: str, named: set[str]) -> dict[str, Any]:
    """``{"accuracy", "n", "ci95", "per_relation", "per_relation_ci95", "pair_balanced", "blind",
    "same_color", "names_heldout"}`` of one probe kind.

    ``pair_balanced`` and ``blind`` are ``{"accuracy", "ci95"}`` (see `clipforge.probe.stats`); ``same_color``
    (only for ``relation_swap``) and ``names_heldout`` (the items whose id is in `named`, when there are
    any) are ``{"accuracy", "n", "ci95"}``, else None.
    """
    sub = result.subset([i for i, item in enumerate(result.items) if item.tag == tag])
    summary = summarize(sub, n_resamples=N_RESAMPLES, seed=PROBE_SEED)
    per_relation = {rel: block["accuracy"] for rel, block in summary["per_relation"].items()}
    per_relation_ci = {rel: block["ci95"] for rel, block in summary["per_relation"].items()}
    honest = {key: summary[key] and {"accuracy": summary[key]["accuracy"], "ci95": summary[key]["ci95"]}
              for key in ("pair_balanced", "blind")}
    return {"accuracy": summary["accuracy"], "n": summary["n"], "ci95": summary["ci95"],
            "per_relation": per_relation, "per_relation_ci95": per_relation_ci, **honest,
            "same_color": same_color_block(sub) if tag == "relation_swap" else None,
            "names_heldout": named_block(sub, named)}


def same_color_block(result: ProbeResult) -> dict[str, Any]:
    """Accuracy with its 95% CI on the items whose two objects share a colour name.

    Where each colour lies tells a relation swap apart whenever the colours differ, so a model can pass
    most relation items without telling the objects apart; these items are the ones it cannot.
    """
    pairs = zip(result.items, result.correct, strict=True)
    flags = [bool(ok) for item, ok in pairs if same_color_pair(item.true)]
    return accuracy_block(flags, N_RESAMPLES, PROBE_SEED)


def named_block(result: ProbeResult, named: set[str]) -> dict[str, Any] | None:
    """Accuracy with its 95% CI on the items whose true caption names a held-out combination (`named`
    holds their ids); None when there are none (every split but ``test_heldout``).

    No training caption names one, so these items ask whether a model reads the combination's parts in
    a pairing it has never seen as true.
    """
    pairs = zip(result.items, result.correct, strict=True)
    flags = [bool(ok) for item, ok in pairs if item.id in named]
    return accuracy_block(flags, N_RESAMPLES, PROBE_SEED) if flags else None


def top_captions(features: RetrievalFeatures, index: int, k: int = TOP_CAPTIONS
                 ) -> list[tuple[str, float, bool]]:
    """The `k` test captions closest to image `index`, marked true when they describe it."""
    own = {features.captions[j] for j in (features.text_to_image == index).nonzero().flatten().tolist()}
    scores = features.texts @ features.images[index]  # [M]
    best = scores.topk(min(k, len(features.captions)))
    return [(features.captions[j], float(s), features.captions[j] in own)
            for s, j in zip(best.values.tolist(), best.indices.tolist(), strict=True)]


def split_metrics(loaded: tuple[ContrastiveModel, Preprocess, Any], out: Path, split: str,
                  result: ProbeResult, named: set[str]) -> tuple[dict[str, Any], RetrievalFeatures]:
    """Retrieval, zero-shot and probe numbers on the test scenes of one split, and its retrieval features.

    Args:
        loaded: ``(model, preprocess, tokenizer)`` as `clipforge.checkpoint.load` returns them.
        out: the quickstart folder.
        split: the scene split of the test scenes.
        result: the model's probe scores on the whole suite.
        named: ids of the probe items whose true caption names a held-out combination.
    """
    model, preprocess, tokenizer = loaded
    with torch.no_grad():
        test_data = open_data(f"synthetic:{out / 'data'}:{split}")
        features = embed_dataset(model, preprocess, tokenizer, test_data, EvalConfig())
        recall = recall_at_k(features.images, features.texts, features.text_to_image, (1, 5))
        images, labels, _ = load_labelled_scenes(out / "zeroshot", split)
        zeroshot = evaluate_zeroshot(model, preprocess, tokenizer, images, labels)
    part = split_results(result).get(split, result)
    metrics = {
        "retrieval": {key: recall[key] for key in RETRIEVAL_KEYS},
        "zeroshot": zeroshot,
        "probe": {tag: probe_block(part, tag, named) for tag in sorted({item.tag for item in part.items})},
    }
    return metrics, features


def evaluate_model(name: str, out: Path, suite: Suite, examples: list[Example], splits: dict[str, str],
                   named: set[str]) -> tuple[dict[str, Any], ProbeResult]:
    """Retrieval, zero-shot and probe numbers of ``out/name/final``; fills each example's top captions.

    The first of `splits` (report name -> scene split) gives the top-level numbers; each other split
    gives the same keys under its `SPLIT_KEYS` key (``heldout_style``, ``heldout_combinations``).
    `named` is as in `split_metrics`.
    """
    loaded = load(out / name / "final")
    result = run_probe(suite.items, ClipEncoder(*loaded))
    (_, first), *others = splits.items()
    metrics, features = split_metrics(loaded, out, first, result, named)
    for example in examples:
        example.top[name] = top_captions(features, features.keys.index(example.key))
    for _, split in others:
        metrics[SPLIT_KEYS[split]] = split_metrics(loaded, out, split, result, named)[0]
    return metrics, result


def split_block(metrics: dict[str, Any], split: str) -> dict[str, Any] | None:
    """A model's numbers on one test split, from its report.json block: the block itself for ``test``
    (the first split), else its `SPLIT_KEYS` key; None when the report lacks that split."""
    return metrics.get(SPLIT_KEYS[split]) if split in SPLIT_KEYS else metrics


def first_examples(out: Path, n: int, split: str) -> list[Example]:
    """The first `n` test scenes of `split` and their captions (captions.csv, as retrieval reads them)."""
    data = open_data(f"synthetic:{out / 'data'}:{split}")
    records = list(itertools.islice(data.records(), n))
    return [Example(record.key, Path(record.source), list(record.captions)) for record in records]


def _pct(probe: dict[str, Any], tag: str) -> str:
    accuracy = probe.get(tag, {}).get("accuracy")
    return "-" if accuracy is None else f"{accuracy:.3f}"


def _sub_block(probe: dict[str, Any], key: str) -> str:
    accuracy = (probe.get("relation_swap", {}).get(key) or {}).get("accuracy")
    return "-" if accuracy is None else f"{accuracy:.3f}"


def summary_line(name: str, label: str, metrics: dict[str, Any]) -> str:
    """One model's headline numbers on one test split, for the progress output."""
    probe = metrics["probe"]
    named = "" if probe.get("relation_swap", {}).get("names_heldout") is None else (
        f"; true caption names a held-out combination {_sub_block(probe, 'names_heldout')}")
    return (f"  {name}, {label}: t2i R@1 {metrics['retrieval']['t2i_r1']:.3f}, relation_swap "
            f"{_pct(probe, 'relation_swap')} (same-colour pairs {_sub_block(probe, 'same_color')}{named}), "
            f"object_swap {_pct(probe, 'object_swap')}, attribute_swap {_pct(probe, 'attribute_swap')}")


def evaluate_models(config: QuickstartConfig, out: Path, say: Callable[[str], None]
                    ) -> tuple[dict[str, Any], list[Example]]:
    """Evaluates `plain` and `hardneg`; also writes ``out/probe/probe.{json,html}`` for both.

    Returns:
        The ``models`` section of report.json and the example scenes.
    """
    suite = load_suite(f"synthetic:{out / 'data'}")
    splits = config.test_splits
    named = {synthetic_item_id(*key) for key in probes_naming_heldout(out / "data", scene_config(config))}
    examples = first_examples(out, config.n_examples, next(iter(splits.values())))
    models, results = {}, {}
    for name in ("plain", "hardneg"):
        models[name], results[name] = evaluate_model(name, out, suite, examples, splits, named)
        for label, split in splits.items():
            block = split_block(models[name], split)
            if block is not None:
                say(summary_line(name, label, block))
    write_probe_report(suite, "cosine", results, out / "probe", N_RESAMPLES, PROBE_SEED)
    return models, examples
