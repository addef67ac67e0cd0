"""The main job: train `plain` and `hardneg` CLIP models on synthetic scenes and compare them.

`run_quickstart` writes, under its output folder::

    quickstart.json          the QuickstartConfig (what --resume re-reads)
    data/                    held-out test scenes (`write_synthetic` layout: probes.jsonl, captions.csv),
                             split ``test`` in the training style, ``test_style`` in the held-out style and
                             ``test_heldout`` (held-out combinations, in the training style)
    zeroshot/                held-out single-object scenes for zero-shot shape and colour accuracy (the
                             same three splits; ``test_heldout`` ones are held-out (colour, shape) objects)
    plain/, hardneg/         the two training runs (log.jsonl, final/ in the clipforge model format)
    probe/                   probe.json and probe.html of both models (the probe library's own report)
    skills/, dvae/,          with a generation stage (`clipforge.quickstart.generation`): the skill set, the
    generator/               dVAE's and the transformer's runs (final/, and generator/early/)
    report.json, report.html the comparison (and its Generation section)

Every number comes from the library code the CLI uses (`clipforge eval`, `clipforge probe`), run on the
files above, so ``clipforge probe --suite synthetic:OUT/data --model hardneg=OUT/hardneg/final`` gives
the same probe accuracies as report.json.

The generation stage's dVAE and transformer train in a third process beside the two CLIP models; its
re-ranking experiment runs after them (it re-ranks with both). Ctrl-C or SIGTERM during training reaches
every training process, which saves a checkpoint at its next step and stops; `resume_quickstart`
(``clipforge quickstart --resume OUT``) continues them and finishes.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import queue
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from clipforge.device import resolve_device
from clipforge.errors import ClipforgeError, ConfigError, Interrupted
from clipforge.fileio import check_writable_dir, read_json_object, write_json
from clipforge.progress import Say, to_stderr
from clipforge.quickstart.config import MODELS, QuickstartConfig, negative_images_phrase, scene_config
from clipforge.quickstart.evaluate import evaluate_models
from clipforge.quickstart.generation import (
    DVAE_SEEN,
    GENERATION,
    GenerationConfig,
    dvae_rerankers,
    evaluate_generation,
    generation_conclusion,
    train_dvae_reranker,
    train_generation,
    write_skill_set,
)
from clipforge.quickstart.report import conclusion, write_report
from clipforge.skills.records import METADATA_NAME
from clipforge.synthetic.dataset import write_synthetic
from clipforge.train.config import (
    DataSection,
    EvalSection,
    LossSection,
    ModelSection,
    TrainRunConfig,
    TrainSection,
)
from clipforge.train.loop import signal_name, stop_requests, train
from clipforge.train.state import RUN_CONFIG
from clipforge.typed import parse_dataclass
from clipforge.version import __version__

QUICKSTART_CONFIG = "quickstart.json"


def train_config(config: QuickstartConfig, hard_negatives: bool) -> TrainRunConfig:
    """The training run of one model; the two runs differ only in their hard negatives."""
    kinds = config.negative_kinds if hard_negatives else ()
    return TrainRunConfig(
        model=ModelSection(config.model),
        # One DataLoader worker per run: the scenes (styled rendering is ~4x the cost of plain) are drawn
        # beside the training step, on the core time the faster `plain` run leaves free. Items are pure
        # functions of their index, so the batches are the same as without a worker.
        data=DataSection(n_train=config.n_train, n_val=config.n_val, seed=config.seed, num_workers=1,
                         style=config.style),
        # One thread each by default: the two runs train side by side, one per core (see `train_both`).
        train=TrainSection(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                           warmup_steps=config.warmup_steps, seed=config.seed, threads=config.threads,
                           device=config.device, progress=False),
        loss=LossSection(hard_negatives=len(kinds), negative_kinds=kinds,
                         negative_images=config.negative_images if hard_negatives else 0.0),
        eval=EvalSection(every=config.eval_every),
    )


def prepare_out(out_dir: Path) -> None:
    """Creates the output folder, refusing one that already holds a quickstart.

    Raises:
        ClipforgeError: it cannot be written or already holds report.json or a run.
    """
    if any((out_dir / name).exists() for name in ("report.json", *MODELS, "data")):
        raise ClipforgeError(f"output folder already holds a quickstart: {out_dir} (use another)")
    check_writable_dir(out_dir)


def write_test_data(config: QuickstartConfig, out_dir: Path) -> dict[str, Any]:
    """Writes the held-out test scenes and the zero-shot scenes; returns the dataset description.

    Each is written once per test split (`QuickstartConfig.test_splits`, listed as ``style_splits``): with a
    style in the training style and in the held-out style, and always with held-out combinations.
    """
    scenes, splits = scene_config(config), tuple(config.test_splits.values())
    test = write_synthetic(out_dir / "data", config.n_test, seed=config.seed, config=scenes, split=splits)
    lone = dataclasses.replace(scenes, count_weights=(1.0,))
    write_synthetic(out_dir / "zeroshot", config.n_zeroshot, seed=config.seed, config=lone, split=splits)
    return {
        "image_size": scenes.image_size, "seed": config.seed, "n_train": config.n_train,
        "n_val": config.n_val, "n_test": config.n_test, "n_zeroshot": config.n_zeroshot,
        "probe_items": test.probes, "test_split": "test", "test_dir": "data", "zeroshot_dir": "zeroshot",
        "style_splits": config.test_splits,
        "scene_config": json.loads(json.dumps(dataclasses.asdict(scenes))),
    }


def train_one(config: QuickstartConfig, out_dir: Path, name: str, say: Say, resume: bool = False
              ) -> dict[str, Any]:
    """Trains one of the two models into ``out_dir/name``; returns its curves and timing.

    The engine's own evaluation makes the validation curve, and its progress lines (one per evaluation,
    with an ETA) go to `say`, marked with the model's name. With `resume`, a finished run is kept and an
    interrupted one continues from its newest checkpoint (`seconds` then counts this process's part).
    """
    run, run_dir = train_config(config, hard_negatives=name == "hardneg"), out_dir / name
    began = time.perf_counter()
    if not (resume and (run_dir / "final").is_dir()):
        started = resume and (run_dir / RUN_CONFIG).is_file()
        train(run, run_dir, resume=started, say=lambda line: say(f"  {name}: {line}"))
    curve = read_curve(run_dir / "log.jsonl")
    return {"seconds": round(time.perf_counter() - began, 1), "steps": curve["step"][-1],
            "final_loss": curve["loss"][-1], "curve": curve}


def _train_job(config: QuickstartConfig, out_dir: Path, name: str, say: Say, resume: bool) -> dict[str, Any]:
    """Trains a CLIP model, or the generation stage's dVAE and transformer (`GENERATION`)."""
    if name == GENERATION and config.generation is not None:
        return train_generation(config.generation, config.seed, out_dir, say, resume)
    if config.generation is not None and name in dvae_rerankers(config.generation):
        return train_dvae_reranker(config.generation, out_dir, name.removesuffix(DVAE_SEEN), say, resume)
    return train_one(config, out_dir, name, say, resume)


def _train_worker(config: QuickstartConfig, out_dir: Path, name: str, resume: bool, messages: Any) -> None:
    """Child process: trains one model (or the generator), sending progress lines and then its result (or
    error) back.

    Ctrl-C reaches the whole process group: the trainer acts on it between steps, and outside the steps
    the child ignores it (the parent passes the stop on as SIGTERM).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        messages.put(("result", name, _train_job(config, out_dir, name, messages.put, resume)))
    except Interrupted as err:
        messages.put(("stopped", name, err.signum))
    except Exception as err:  # any failure must reach the parent, which would otherwise wait forever
        messages.put(("error", name, f"{type(err).__name__}: {err}"))


def train_both(config: QuickstartConfig, out_dir: Path, say: Say, resume: bool = False) -> dict[str, Any]:
    """Trains `plain` and `hardneg` at the same time in two single-threaded processes, and with a
    generation stage the dVAE and the transformer in a third (`GENERATION` in the result).

    Small models use two cores better as processes than as one process with two threads, and a third
    process fills the core the faster `plain` run leaves idle. SIGINT or
    SIGTERM stops both at their next step (each saves a checkpoint); no process outlives this call.

    Raises:
        ClipforgeError: a run failed or its process died.
        Interrupted: stopped by a signal; the message names the command that resumes.
    """
    names = (*MODELS, GENERATION) if config.generation is not None else MODELS
    return train_processes(config, out_dir, names, say, resume)


def train_processes(config: QuickstartConfig, out_dir: Path, names: tuple[str, ...], say: Say,
                    resume: bool = False) -> dict[str, Any]:
    """Trains the runs `names` (see `_train_job`) at the same time, one single-threaded process each,
    stopping them all on SIGINT or SIGTERM (see `train_both`)."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    workers = {name: context.Process(target=_train_worker, args=(config, out_dir, name, resume, messages))
               for name in names}
    results: dict[str, Any] = {}
    stopped: dict[str, int] = {}
    with stop_requests(lambda _signum: _stop_workers(workers)) as stop:
        for worker in workers.values():
            worker.start()
        try:
            while len(results) + len(stopped) < len(workers):
                kind, name, payload = _next_message(messages, workers, {*results, *stopped}, say)
                if kind == "result":
                    results[name] = payload
                elif kind == "stopped" or stop.signum:  # a child killed while stopping has nothing to save
                    stopped[name] = payload if kind == "stopped" else stop.signum
                else:
                    raise ClipforgeError(f"training {name} failed: {payload}")
        finally:
            for worker in workers.values():
                worker.join(timeout=None if len(results) + len(stopped) == len(workers) else 1)
                if worker.is_alive():
                    worker.terminate()
                    worker.join()
    if stopped:
        signum = stop.signum or next(iter(stopped.values()))
        raise Interrupted(f"{signal_name(signum)}: the quickstart stopped while training (each run keeps "
                          f"its checkpoint); resume with: clipforge quickstart --resume {out_dir}", signum)
    return {name: results[name] for name in names}


def _stop_workers(workers: dict[str, Any]) -> None:
    """Passes a stop on to the training processes as SIGTERM (each saves a checkpoint and exits)."""
    for worker in workers.values():
        if worker.pid is not None and worker.is_alive():
            os.kill(worker.pid, signal.SIGTERM)


def _next_message(messages: Any, workers: dict[str, Any], done: set[str], say: Say) -> tuple[str, str, Any]:
    """The next result, stop or error of the workers, passing progress lines to `say`.

    A worker that died without a word (killed, out of memory) gives ``("died", name, exit code)``.
    """
    while True:
        try:
            message = messages.get(timeout=1)
        except queue.Empty:
            dead = [n for n, w in workers.items() if n not in done and w.exitcode not in (None, 0)]
            if dead:
                code = workers[dead[0]].exitcode
                return "died", dead[0], f"its process died (exit code {code})"
            continue
        if isinstance(message, str):
            say(message)
        else:
            kind, name, payload = message
            return str(kind), str(name), payload


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

    Raises:
        Interrupted: SIGINT or SIGTERM during training (see `resume_quickstart`).
    """
    out = Path(out_dir)
    resolve_device(config.device)  # a missing GPU fails before anything is written
    prepare_out(out)
    write_json(_jsonable(config), out / QUICKSTART_CONFIG)
    return _run(config, out, say, resume=False)


def resume_quickstart(out_dir: str | Path, say: Say = to_stderr) -> dict[str, Any]:
    """Finishes an interrupted quickstart with the settings it was started with (``quickstart.json``).

    The scenes are written again (they are a function of the seed), finished models are kept and
    interrupted runs continue from their newest checkpoint.

    Raises:
        ClipforgeError: `out_dir` holds no quickstart, or a finished one.
    """
    out = Path(out_dir)
    if not (out / QUICKSTART_CONFIG).is_file():
        raise ClipforgeError(f"not a quickstart folder (no {QUICKSTART_CONFIG}): {out}")
    if (out / "report.json").exists():
        raise ClipforgeError(f"this quickstart has finished already: {out / 'report.json'}")
    where = str(out / QUICKSTART_CONFIG)
    config = parse_dataclass(QuickstartConfig, read_json_object(out / QUICKSTART_CONFIG, ConfigError), where)
    for name in ("data", "zeroshot"):
        shutil.rmtree(out / name, ignore_errors=True)
    if not (out / "skills" / METADATA_NAME).is_file():  # an interrupted skill set is written again
        shutil.rmtree(out / "skills", ignore_errors=True)
    return _run(config, out, say, resume=True)


def _run(config: QuickstartConfig, out: Path, say: Say, resume: bool) -> dict[str, Any]:
    began = time.perf_counter()
    styles, stages = ", ".join(config.test_splits), 3 if config.generation is None else 4
    say(f"[1/{stages}] writing {config.n_test} test scenes and {config.n_zeroshot} zero-shot scenes per test "
        f"split ({styles})" + ("" if config.generation is None else ", and the skill set"))
    dataset = write_test_data(config, out)
    if config.generation is not None:
        write_skill_set(config.generation, config.seed, out)
    budget = f"{config.steps} steps of {config.batch_size} scenes each"
    images = negative_images_phrase(config.negative_images)
    adds = f"{', '.join(config.negative_kinds)} negatives" + (f", and {images}" if images else "")
    say(f"[2/{stages}] training plain and hardneg side by side ({budget}; hardneg adds {adds})"
        + _generation_budget(config))
    training = train_both(config, out, say, resume)
    generation_training = training.pop(GENERATION, None)
    if config.generation is not None and dvae_rerankers(config.generation):
        say(f"  fine-tuning plain and hardneg on the generator's skill scenes seen through the dVAE "
            f"({config.generation.reranker_steps} steps each, side by side)")
        generation_training = {**(generation_training or {}), "dvae_rerankers": train_processes(
            config, out, dvae_rerankers(config.generation), say, resume)}
    say(f"[3/{stages}] evaluating both models on the held-out scenes (retrieval, zero-shot, probes)")
    models, examples = evaluate_models(config, out, say)
    report: dict[str, Any] = {
        "conclusion": conclusion(models, config.steps, QuickstartConfig.steps), "models": models,
        "dataset": dataset, "seconds": 0.0, "version": __version__, "config": _jsonable(config),
        "training": training}
    figures = None
    if config.generation is not None:
        say(f"[4/4] generation: {config.generation.candidates} candidates per held-out skill prompt from the "
            f"early and the final generator, picked by none / plain / hardneg / the parser")
        section, figures = evaluate_generation(config.generation, config.seed, out, say)
        section["training"] = generation_training
        full = GenerationConfig.steps
        section["conclusion"] = generation_conclusion(section, config.generation.steps, full)
        report["generation"] = section
    report["seconds"] = round(time.perf_counter() - began, 1)
    write_report(report, examples, out, figures)
    say(str(report["conclusion"]))
    if "generation" in report:
        say(str(report["generation"]["conclusion"]))
    say(f"done in {report['seconds']:.0f} s: {out / 'report.json'}, {out / 'report.html'}")
    return report


def _generation_budget(config: QuickstartConfig) -> str:
    gen = config.generation
    if gen is None:
        return ""
    return (f", and beside them the dVAE ({gen.dvae_steps} steps) then the transformer ({gen.steps} steps "
            f"of {gen.batch_size})")


def _jsonable(config: QuickstartConfig) -> dict[str, Any]:
    return dict(json.loads(json.dumps(dataclasses.asdict(config))))

