"""The main job: train `plain` and `hardneg` CLIP models on synthetic scenes and compare them.

`run_quickstart` writes, under its output folder::

    data/                    held-out test scenes (`write_synthetic` layout: probes.jsonl, captions.csv)
    zeroshot/                held-out single-object scenes for zero-shot shape and colour accuracy
    plain/, hardneg/         the two training runs (log.jsonl, final/ in the clipforge model format)
    probe/                   probe.json and probe.html of both models (the probe library's own report)
    report.json, report.html the comparison

Every number comes from the library code the CLI uses (`clipforge eval`, `clipforge probe`), run on the
files above, so ``clipforge probe --suite synthetic:OUT/data --model hardneg=OUT/hardneg/final`` gives
the same probe accuracies as report.json.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from clipforge.data.synthetic import SceneConfig, write_synthetic
from clipforge.data.synthetic_text import NEGATIVE_KINDS
from clipforge.errors import ClipforgeError, ConfigError
from clipforge.models.registry import get_model_config
from clipforge.train.config import (
    DataSection,
    EvalSection,
    LossSection,
    ModelSection,
    TrainRunConfig,
    TrainSection,
)

Say = Callable[[str], None]
MODELS = ("plain", "hardneg")
PROBE_TAGS = NEGATIVE_KINDS
# The quickstart architecture (registry JSON): ConvNet-64px shrunk for a CPU budget, with 48-px scenes and a
# 2-layer, 64-wide text tower with a 24-token context (the longest scene caption takes 21). The text tower
# runs on every hard negative, so it dominates the cost of a step; the scenes' small vocabulary needs little
# width.
QUICKSTART_MODEL = "ConvNet-48px"


@dataclass(frozen=True)
class QuickstartConfig:
    """The data, training budget and evaluation sizes of the quickstart; both models share all of it.

    Attributes:
        model: registry architecture trained from scratch (its input size sets the scene size).
        steps: optimizer steps per model.
        batch_size: scenes per step.
        lr: peak learning rate (cosine schedule after `warmup_steps`).
        warmup_steps: linear warm-up steps.
        n_train: distinct training scenes (rendered on the fly).
        n_val: validation scenes for the training curves.
        n_test: held-out test scenes for retrieval and probes.
        n_zeroshot: held-out single-object scenes for zero-shot accuracy.
        negative_kinds: hard-negative captions per scene for `hardneg`, one per kind.
        eval_every: steps between points of the validation curve.
        seed: seed of the data and of the training runs.
        n_examples: example scenes shown in report.html.
    """

    model: str = QUICKSTART_MODEL
    steps: int = 1800
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 50
    n_train: int = 60_000
    n_val: int = 256
    n_test: int = 1000
    n_zeroshot: int = 300
    negative_kinds: tuple[str, ...] = ("relation_swap", "attribute_swap")
    eval_every: int = 150
    seed: int = 0
    n_examples: int = 8

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "n_train", "n_val", "n_test", "n_zeroshot", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"quickstart: {name} must be >= 1, got {getattr(self, name)}")
        unknown = [k for k in self.negative_kinds if k not in NEGATIVE_KINDS]
        if unknown or not self.negative_kinds:
            raise ConfigError(f"quickstart: negative_kinds must be a non-empty subset of {NEGATIVE_KINDS}, "
                              f"got {self.negative_kinds}")

    @classmethod
    def quick(cls) -> QuickstartConfig:
        """A smoke-test budget (`--quick`): same pipeline, a fraction of the steps and scenes."""
        return cls(steps=300, n_train=20_000, n_val=128, n_test=300, n_zeroshot=120, eval_every=100)


def train_config(config: QuickstartConfig, hard_negatives: bool) -> TrainRunConfig:
    """The training run of one model; the two runs differ only in their hard negatives."""
    kinds = config.negative_kinds if hard_negatives else ()
    return TrainRunConfig(
        model=ModelSection(config.model),
        data=DataSection(n_train=config.n_train, n_val=config.n_val, seed=config.seed),
        # One thread each: the two runs train side by side, one per core (see `train_both`).
        train=TrainSection(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                           warmup_steps=config.warmup_steps, seed=config.seed, threads=1, progress=False),
        loss=LossSection(hard_negatives=len(kinds), negative_kinds=kinds),
        eval=EvalSection(every=config.eval_every),
    )


def scene_config(config: QuickstartConfig) -> SceneConfig:
    """The scenes the training engine renders for the quickstart model (same defaults, same size)."""
    return SceneConfig(image_size=get_model_config(config.model).preprocess.image_size)


def prepare_out(out_dir: Path) -> None:
    """Creates the output folder, refusing one that already holds a quickstart.

    Raises:
        ClipforgeError: it cannot be written or already holds report.json or a run.
    """
    if any((out_dir / name).exists() for name in ("report.json", *MODELS, "data")):
        raise ClipforgeError(f"output folder already holds a quickstart: {out_dir} (use another)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ClipforgeError(f"cannot write to output folder {out_dir}: {err.strerror or err}") from err


def write_test_data(config: QuickstartConfig, out_dir: Path) -> dict[str, Any]:
    """Writes the held-out test scenes and the zero-shot scenes; returns the dataset description."""
    scenes = scene_config(config)
    test = write_synthetic(out_dir / "data", config.n_test, seed=config.seed, config=scenes, split="test")
    lone = dataclasses.replace(scenes, count_weights=(1.0,))
    write_synthetic(out_dir / "zeroshot", config.n_zeroshot, seed=config.seed, config=lone, split="test")
    return {
        "image_size": scenes.image_size, "seed": config.seed, "n_train": config.n_train,
        "n_val": config.n_val, "n_test": config.n_test, "n_zeroshot": config.n_zeroshot,
        "probe_items": test.probes, "test_split": "test", "test_dir": "data", "zeroshot_dir": "zeroshot",
        "scene_config": json.loads(json.dumps(dataclasses.asdict(scenes))),
    }


class ProgressHook:
    """Evaluation hook of a run: the engine's validation recall, plus a progress line with an ETA."""

    def __init__(self, run: TrainRunConfig, name: str, say: Say) -> None:
        self.run, self.name, self.say = run, name, say
        self.began = time.perf_counter()
        self.inner: Callable[[nn.Module, int], dict[str, Any]] | None = None

    def __call__(self, model: nn.Module, step: int) -> dict[str, Any]:
        from clipforge.train.sources import build_evaluator

        if self.inner is None:
            self.inner = build_evaluator(self.run, model) or (lambda m, s: {})
        metrics = self.inner(model, step)
        elapsed = time.perf_counter() - self.began
        left = elapsed / step * (self.run.train.steps - step)
        recall = metrics.get("text_to_image_r1")
        shown = f", val t2i R@1 {recall:.3f}" if recall is not None else ""
        steps = self.run.train.steps
        self.say(f"  {self.name}: step {step}/{steps}{shown}, {elapsed:.0f} s, ~{left:.0f} s left")
        return metrics


def train_one(config: QuickstartConfig, out_dir: Path, name: str, say: Say) -> dict[str, Any]:
    """Trains one of the two models into ``out_dir/name``; returns its curves and timing."""
    from clipforge.train.loop import train

    run = train_config(config, hard_negatives=name == "hardneg")
    began = time.perf_counter()
    result = train(run, out_dir / name, on_eval=ProgressHook(run, name, say))
    return {"seconds": round(time.perf_counter() - began, 1), "steps": result.steps,
            "final_loss": result.loss, "curve": read_curve(out_dir / name / "log.jsonl")}


def _train_worker(config: QuickstartConfig, out_dir: Path, name: str, messages: Any) -> None:
    """Child process: trains one model, sending progress lines and then its result (or error) back."""
    try:
        messages.put(("result", name, train_one(config, out_dir, name, messages.put)))
    except Exception as err:  # any failure must reach the parent, which would otherwise wait forever
        messages.put(("error", name, f"{type(err).__name__}: {err}"))


def train_both(config: QuickstartConfig, out_dir: Path, say: Say) -> dict[str, Any]:
    """Trains `plain` and `hardneg` at the same time in two single-threaded processes.

    Small models use two cores better as two processes than as one process with two threads.

    Raises:
        ClipforgeError: a run failed or its process died.
    """
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    workers = [context.Process(target=_train_worker, args=(config, out_dir, name, messages))
               for name in MODELS]
    for worker in workers:
        worker.start()
    results: dict[str, Any] = {}
    try:
        while len(results) < len(MODELS):
            message = _next_message(messages, workers)
            if isinstance(message, str):
                say(message)
            elif message[0] == "error":
                raise ClipforgeError(f"training {message[1]} failed: {message[2]}")
            else:
                results[message[1]] = message[2]
    finally:
        for worker in workers:
            worker.join(timeout=1 if len(results) < len(MODELS) else None)
            if worker.is_alive():
                worker.terminate()
    return {name: results[name] for name in MODELS}


def _next_message(messages: Any, workers: list[Any]) -> Any:
    """The next message of the workers; fails when one died without a word (killed, out of memory)."""
    while True:
        try:
            return messages.get(timeout=5)
        except queue.Empty:
            dead = [w for w in workers if w.exitcode not in (None, 0)]
            if dead:
                raise ClipforgeError(f"a training process died (exit code {dead[0].exitcode})") from None


def read_curve(log_path: Path) -> dict[str, list[float]]:
    """Loss per logged step and validation recall per evaluation, from a run's log.jsonl."""
    curve: dict[str, list[float]] = {"step": [], "loss": [], "eval_step": [], "val_t2i_r1": []}
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if "eval" in record:
            curve["eval_step"].append(record["step"])
            curve["val_t2i_r1"].append(record["eval"].get("text_to_image_r1", float("nan")))
        elif "loss" in record:
            curve["step"].append(record["step"])
            curve["loss"].append(record["loss"])
    return curve


def run_quickstart(config: QuickstartConfig, out_dir: str | Path, say: Say = print) -> dict[str, Any]:
    """Generates the data, trains `plain` and `hardneg`, evaluates both and writes the report.

    Args:
        config: data, budget and evaluation sizes.
        out_dir: output folder (see the module docstring); must not hold a quickstart already.
        say: receives one progress line per stage.

    Returns:
        The content of report.json.
    """
    from clipforge import __version__
    from clipforge.quickstart.evaluate import evaluate_models
    from clipforge.quickstart.report import write_report

    out = Path(out_dir)
    prepare_out(out)
    began = time.perf_counter()
    say(f"[1/3] writing {config.n_test} held-out test scenes and {config.n_zeroshot} zero-shot scenes")
    dataset = write_test_data(config, out)
    budget = f"{config.steps} steps of {config.batch_size} scenes each"
    say(f"[2/3] training plain and hardneg side by side ({budget}; hardneg adds "
        f"{', '.join(config.negative_kinds)} negatives)")
    training = train_both(config, out, say)
    say("[3/3] evaluating both models on the held-out scenes (retrieval, zero-shot, probes)")
    models, examples = evaluate_models(config, out, say)
    report = {"models": models, "dataset": dataset, "seconds": round(time.perf_counter() - began, 1),
              "version": __version__, "config": _jsonable(config), "training": training}
    write_report(report, examples, out)
    say(f"done in {report['seconds']:.0f} s: {out / 'report.json'}, {out / 'report.html'}")
    return report


def _jsonable(config: QuickstartConfig) -> dict[str, Any]:
    return dict(json.loads(json.dumps(dataclasses.asdict(config))))

