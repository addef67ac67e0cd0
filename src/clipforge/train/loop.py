"""The training engine: `train(config, out_dir)` runs, logs, checkpoints and resumes a run of any task.

One optimizer step takes one global batch from the task's batch source, cuts it into `accum_steps`
micro-batches, backpropagates this rank's slice of each through the task's loss, averages gradients over
ranks, clips and steps. Everything a step depends on (weights, optimizer, schedule, RNG, data position)
is in the checkpoints, so a resumed run continues bit for bit where the interrupted one stopped. What is
particular to a kind of model (its batches, loss, evaluation) comes from its `Task` (`train.task`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic

import numpy as np
import torch

from clipforge.device import resolve_device
from clipforge.errors import CheckpointError, ConfigError, Interrupted
from clipforge.fileio import write_text_atomic
from clipforge.models.base import Model
from clipforge.progress import Progress, Say, on_terminal, quiet, to_stderr
from clipforge.train.config import EvalSection, TrainRunConfig, TrainSection
from clipforge.train.distributed import DistEnv, average_gradients, init_from_env, mean_over_ranks, shutdown
from clipforge.train.optim import build_optimizer, build_scheduler
from clipforge.train.state import (
    CHECKPOINTS,
    LOG_NAME,
    TrainingState,
    check_run_dir,
    checkpoint_name,
    disk_full,
    is_disk_full,
    list_checkpoints,
    load_checkpoint,
    prepare_run_dir,
    promote,
    remove_stale_temps,
    save_checkpoint,
    save_final,
)
from clipforge.train.task import B, EvalHook, M, Task
from clipforge.train.tasks import build_task

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    final_dir: Path
    steps: int
    loss: float
    samples_per_s: float
    evals: list[dict[str, Any]] = field(default_factory=list)


class RunLog:
    """Appends JSON lines to ``log.jsonl`` (main rank only)."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None:
            self._truncate(resume_step)

    def _truncate(self, step: int) -> None:
        """Drops lines an interrupted run wrote after the checkpoint it resumes from.

        A run killed mid-write leaves a torn last line; it is dropped too (it was written after the
        checkpoint). A malformed line before the last one is damage, not a kill: that is an error.

        Raises:
            CheckpointError: a line other than the last is not JSON.
        """
        if not self.path.is_file():
            return
        lines = [line for line in self.path.read_text(errors="replace").splitlines() if line.strip()]
        last = len(lines) - 1
        records = [_parse_line(line, self.path, i + 1, i == last) for i, line in enumerate(lines)]
        kept = [
            line for line, record in zip(lines, records, strict=True)
            if record is not None and record.get("step", 0) <= step
        ]
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            if is_disk_full(err):
                raise disk_full(self.path.parent, 2**20) from err
            raise CheckpointError(f"cannot append to {self.path}: {err.strerror or err}") from err


def _parse_line(line: str, path: Path, number: int, last: bool) -> dict[str, Any] | None:
    """A `log.jsonl` record; None for a torn last line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        if last:
            return None
        raise CheckpointError(f"{path}: line {number} is not JSON ({err.msg})") from err
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: line {number} is not a JSON object")
    return record


class StopRequest:
    """The first SIGINT or SIGTERM of a run; the loop saves a checkpoint at the next step boundary and stops.

    Later signals are ignored (Ctrl-C reaches every process of the group, and the quickstart forwards
    SIGTERM to its trainers): the checkpoint is at most one step away. SIGKILL still stops at once.
    """

    def __init__(self, forward: Callable[[int], None] | None = None) -> None:
        self.signum, self.forward = 0, forward

    def __call__(self, signum: int, _frame: object) -> None:
        if not self.signum and self.forward is not None:
            self.forward(signum)
        self.signum = self.signum or signum

    def agreed(self, env: DistEnv) -> bool:
        """Whether any rank was signalled, so that all ranks stop at the same step."""
        return mean_over_ranks(float(self.signum > 0)) > 0 if env.world_size > 1 else self.signum > 0


@contextlib.contextmanager
def stop_requests(forward: Callable[[int], None] | None = None) -> Iterator[StopRequest]:
    """Catches SIGINT and SIGTERM in the block (off the main thread, signals keep their handlers).

    Args:
        forward: called with the first signal, e.g. to pass it on to child processes.
    """
    request = StopRequest(forward)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.signal(signum, request) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def torch_settings(config: TrainSection) -> Iterator[None]:
    """Pins threads and deterministic kernels for the run, restoring the caller's settings after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        # cuBLAS is deterministic only with a fixed workspace (PyTorch's reproducibility notes); this
        # takes effect if set before the first CUDA matrix product of the process, and is harmless on a CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(config.deterministic, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch, so initialization is a function of the seed alone."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def micro_batches(batch: B, env: DistEnv, accum_steps: int) -> list[B]:
    """This rank's share of each accumulation micro-batch of the global batch.

    The global batch is cut into `accum_steps` micro-batches first and each is then split over ranks,
    so a micro-batch holds the same samples (and negatives) whatever the number of processes. A batch
    that does not divide evenly (real data with skipped samples) loses its last few samples.
    """
    micro = len(batch) // (env.world_size * accum_steps) * env.world_size
    share = micro // env.world_size
    starts = [i * micro + env.rank * share for i in range(accum_steps)]
    return [batch.rows(start, start + share) for start in starts]


def backward_step(task: Task[Any, B], batch: B, env: DistEnv, accum_steps: int) -> float:
    """Forward and backward over this rank's micro-batches; returns the loss of the global batch."""
    total = 0.0
    for micro in micro_batches(batch, env, accum_steps):
        loss = task.loss(micro) / accum_steps
        loss.backward()
        total += float(loss.item())
    return mean_over_ranks(total)


class BestSelector:
    """Keeps the best-scoring model in ``run_dir/best`` and counts evaluations without improvement."""

    def __init__(self, run_dir: Path, config: EvalSection, provenance: dict[str, Any]) -> None:
        self.run_dir, self.config, self.provenance = run_dir, config, provenance
        self.best, self.stale = -math.inf, 0
        saved = run_dir / "best" / "config.json"
        if saved.is_file():  # resuming: the best so far survives the interruption
            extra = json.loads(saved.read_text())["extra"]
            self.best, self.stale = float(extra["score"]), int(extra["stale"])

    def update(self, model: Model, step: int, score: float, metrics: dict[str, Any]) -> None:
        if score > self.best:
            self.best, self.stale = score, 0
            extra = {**self.provenance, "step": step, "score": score, "stale": 0, "metrics": metrics}
            save_final(self.run_dir, model, extra, "best")
        else:
            self.stale += 1

    @property
    def should_stop(self) -> bool:
        return self.config.patience > 0 and self.stale >= self.config.patience


@dataclass
class Trainer(Generic[M, B]):
    """The objects of one run, and the single optimizer step that advances them."""

    config: TrainRunConfig
    task: Task[M, B]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    env: DistEnv
    device: torch.device

    @property
    def model(self) -> M:
        return self.task.model

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def step(self) -> float:
        """One optimizer step on the next global batch; returns its loss."""
        cfg = self.config.train
        batch = self.task.batches.next_batch().to(self.device)
        loss = backward_step(self.task, batch, self.env, cfg.accum_steps)
        params = self.parameters()
        average_gradients(params)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def state(self, step: int, elapsed_s: float) -> TrainingState:
        return TrainingState(
            step,
            self.optimizer.state_dict(),
            self.scheduler.state_dict(),
            self.task.batches.state_dict(),
            elapsed_s,
        )

    def restore(self, checkpoint: Path) -> TrainingState:
        state = load_checkpoint(checkpoint, self.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.task.batches.load_state_dict(state.data)
        return state


def build_trainer(config: TrainRunConfig, env: DistEnv, say: Say) -> Trainer[Any, Any]:
    """Seeds, then builds the task (model, batches), the optimizer and the schedule, in a fixed order.

    Raises:
        ConfigError: the device is not available, or is CUDA in a multi-process run.
    """
    device = resolve_device(config.train.device)
    if device.type != "cpu" and env.world_size > 1:
        raise ConfigError("train.device: multi-process (torchrun) training runs on the CPU only")
    seed_everything(config.train.seed)
    task = build_task(config, say)
    task.model.to(device)
    optimizer = build_optimizer([task.model], config.train)
    scheduler = build_scheduler(optimizer, config.train)
    return Trainer(config, task, optimizer, scheduler, env, device)


def run_eval(hook: EvalHook[M], model: M, step: int) -> dict[str, Any]:
    """Calls the hook in eval mode without disturbing the training RNG stream."""
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        metrics = hook(model, step)
    model.train()
    return metrics


def train(
    config: TrainRunConfig,
    out_dir: str | Path,
    resume: bool = False,
    on_eval: EvalHook[Any] | None = None,
    say: Say = to_stderr,
) -> TrainResult:
    """Trains a model as `config` says, writing the run folder `out_dir`.

    Args:
        config: the resolved run config (on resume: the run's saved config, see `load_run_config`).
        out_dir: the run folder; created for a fresh run, continued from its newest checkpoint on resume.
        resume: continue an existing run instead of starting one.
        on_eval: called as ``on_eval(model, step) -> metrics`` every `eval.every` steps and at the end;
            defaults to the task's evaluation (held-out retrieval recall for contrastive models).
        say: receives progress lines (feature extraction, one line per evaluation) on the main rank.
    """
    run_dir = Path(out_dir)
    env = init_from_env()
    with torch_settings(config.train):
        try:
            return _train(config, run_dir, resume, on_eval, say if env.is_main else quiet, env)
        finally:
            shutdown(env)


def _train(
    config: TrainRunConfig, run_dir: Path, resume: bool, on_eval: EvalHook[Any] | None, say: Say, env: DistEnv
) -> TrainResult:
    resolve_device(config.train.device)  # a missing GPU fails before the run folder is made
    if resume:
        check_run_dir(run_dir)
    elif env.is_main:
        prepare_run_dir(run_dir, config)
    if env.is_main:
        remove_stale_temps(run_dir)
    trainer = build_trainer(config, env, say)
    hook = on_eval or (trainer.task.evaluator() if env.is_main else None)
    checkpoints = list_checkpoints(run_dir) if resume else []
    start, elapsed = 0, 0.0
    if checkpoints:
        state = trainer.restore(checkpoints[-1])
        start, elapsed = state.step, state.elapsed_s
    log = RunLog(run_dir / LOG_NAME, env.is_main, start if resume else None)
    bar = config.train.progress and env.is_main and on_terminal()
    progress = Progress("train", config.train.steps, say, bar=bar, start=start, unit="step", tenths=False)
    with progress as bars, stop_requests() as stop:
        return _run_steps(trainer, run_dir, start, elapsed, hook, log, bars, stop)


def _log_step(
    trainer: Trainer[Any, Any], step: int, loss: float, lr: float, seconds: float, elapsed: float
) -> dict[str, Any]:
    """One `log.jsonl` line: `lr` is the rate the step used; the task adds its fields (e.g. `logit_scale`)."""
    return {
        "step": step,
        "loss": loss,
        "lr": lr,
        "samples_per_s": trainer.config.train.batch_size / max(seconds, 1e-9),
        **trainer.task.log_fields(),
        "elapsed_s": round(elapsed, 3),
    }


def _run_steps(
    trainer: Trainer[Any, Any],
    run_dir: Path,
    start: int,
    elapsed: float,
    hook: EvalHook[Any] | None,
    log: RunLog,
    progress: Progress,
    stop: StopRequest,
) -> TrainResult:
    cfg, env = trainer.config, trainer.env
    loss, rate = math.nan, 0.0
    evals: list[dict[str, Any]] = []
    selector = None
    if cfg.eval.select_best and env.is_main:
        selector = BestSelector(run_dir, cfg.eval, _provenance(trainer))
    if cfg.eval.patience and env.world_size > 1:
        raise ConfigError("eval.patience (early stopping) runs in a single process only")
    began, step = time.perf_counter(), start
    for step in range(start + 1, cfg.train.steps + 1):
        step_began = time.perf_counter()
        lr = float(trainer.scheduler.get_last_lr()[0])
        loss = trainer.step()
        seconds = time.perf_counter() - step_began
        elapsed += seconds
        rate = cfg.train.batch_size / max(seconds, 1e-9)
        progress.update(1, loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.0f}")
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            log.write(_log_step(trainer, step, loss, lr, seconds, elapsed))
        if hook is not None and env.is_main and _eval_due(step, cfg):
            evals.append({"step": step, "eval": run_eval(hook, trainer.model, step)})
            log.write(evals[-1])
            progress.note(_eval_line(step, cfg.train.steps, evals[-1]["eval"], began, start))
            if selector is not None:
                metrics = evals[-1]["eval"]
                selector.update(trainer.model, step, trainer.task.selection_score(metrics), metrics)
        saved = bool(cfg.train.checkpoint_every) and step % cfg.train.checkpoint_every == 0
        if env.is_main and saved:
            save_checkpoint(run_dir, trainer.model, trainer.state(step, elapsed), cfg.train.keep_checkpoints)
        if step < cfg.train.steps and stop.agreed(env):
            _stop(trainer, run_dir, step, elapsed, saved, stop.signum)
        if selector is not None and selector.should_stop:
            log.write({"step": step, "early_stop": True, "best_score": selector.best})
            break
    final = run_dir / "final"
    if selector is not None and (run_dir / "best").is_dir():
        promote(run_dir, "best")
    elif env.is_main:
        save_final(run_dir, trainer.model, _provenance(trainer))
    return TrainResult(run_dir, final, step, loss, rate, evals)


def _stop(
    trainer: Trainer[Any, Any], run_dir: Path, step: int, elapsed: float, saved: bool, signum: int
) -> None:
    """Saves a checkpoint of `step` (unless the step just saved one) and raises Interrupted."""
    train_cfg = trainer.config.train
    checkpoint = run_dir / CHECKPOINTS / checkpoint_name(step)
    if trainer.env.is_main and not saved:
        state = trainer.state(step, elapsed)
        checkpoint = save_checkpoint(run_dir, trainer.model, state, train_cfg.keep_checkpoints)
    raise Interrupted(f"{signal_name(signum)}: stopped at step {step}/{train_cfg.steps}, saved {checkpoint}; "
                      f"resume with: clipforge train --resume {run_dir}", signum)


def signal_name(signum: int) -> str:
    """``SIGINT`` for 2."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _eval_line(step: int, steps: int, metrics: dict[str, Any], began: float, start: int) -> str:
    """``step 100/300: t2i_r1 0.312, i2t_r1 0.298, n 128; 20 s, ~40 s left``."""
    shown = ", ".join(
        f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
        for key, value in metrics.items()
        if isinstance(value, int | float)
    )
    seconds = time.perf_counter() - began
    left = seconds / max(step - start, 1) * (steps - step)
    return f"step {step}/{steps}: {shown or 'evaluated'}; {seconds:.0f} s, ~{left:.0f} s left"


def _eval_due(step: int, config: TrainRunConfig) -> bool:
    every = config.eval.every
    return step == config.train.steps or (every > 0 and step % every == 0)


def _provenance(trainer: Trainer[Any, Any]) -> dict[str, Any]:
    """What `final/config.json` records about the run under ``extra``."""
    return {"train": trainer.config.to_dict()}
