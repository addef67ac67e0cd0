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
from pathlib import Path
from typing import Any

from clipforge.errors import ClipforgeError
from clipforge.fileio import check_writable_dir
from clipforge.models.registry import get_model_config
from clipforge.progress import Say, to_stderr
from clipforge.quickstart.config import MODELS, QuickstartConfig
from clipforge.quickstart.evaluate import evaluate_models
from clipforge.quickstart.report import conclusion, write_report
from clipforge.synthetic.dataset import SceneConfig, write_synthetic
from clipforge.train.config import (
    DataSection,
    EvalSection,
    LossSection,
    ModelSection,
    TrainRunConfig,
    TrainSection,
)
from clipforge.train.loop import train
from clipforge.version import __version__


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
    check_writable_dir(out_dir)


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


def train_one(config: QuickstartConfig, out_dir: Path, name: str, say: Say) -> dict[str, Any]:
    """Trains one of the two models into ``out_dir/name``; returns its curves and timing.

    The engine's own evaluation makes the validation curve, and its progress lines (one per evaluation,
    with an ETA) go to `say`, marked with the model's name.
    """
    run = train_config(config, hard_negatives=name == "hardneg")
    began = time.perf_counter()
    result = train(run, out_dir / name, say=lambda line: say(f"  {name}: {line}"))
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
            curve["val_t2i_r1"].append(record["eval"].get("t2i_r1", float("nan")))
        elif "loss" in record:
            curve["step"].append(record["step"])
            curve["loss"].append(record["loss"])
    return curve


def run_quickstart(config: QuickstartConfig, out_dir: str | Path, say: Say = to_stderr) -> dict[str, Any]:
    """Generates the data, trains `plain` and `hardneg`, evaluates both and writes the report.

    Args:
        config: data, budget and evaluation sizes.
        out_dir: output folder (see the module docstring); must not hold a quickstart already.
        say: receives one progress line per stage.

    Returns:
        The content of report.json.
    """

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
    report = {"conclusion": conclusion(models, config.steps, QuickstartConfig.steps), "models": models,
              "dataset": dataset, "seconds": round(time.perf_counter() - began, 1), "version": __version__,
              "config": _jsonable(config), "training": training}
    write_report(report, examples, out)
    say(str(report["conclusion"]))
    say(f"done in {report['seconds']:.0f} s: {out / 'report.json'}, {out / 'report.html'}")
    return report


def _jsonable(config: QuickstartConfig) -> dict[str, Any]:
    return dict(json.loads(json.dumps(dataclasses.asdict(config))))

