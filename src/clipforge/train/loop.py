"""The training loop: `train(config, out_dir)` runs, logs, checkpoints and resumes a contrastive run.

One optimizer step takes one global batch from the batch source, cuts it into `accum_steps`
micro-batches, backpropagates this rank's slice of each, averages gradients over ranks, clips and
steps. Everything a step depends on (weights, optimizer, schedule, RNG, data position) is
in the checkpoints, so a resumed run continues bit for bit where the interrupted one stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from clipforge.checkpoint import load_model
from clipforge.errors import ConfigError
from clipforge.models.clip import LOGIT_SCALE_MAX
from clipforge.models.registry import create_model
from clipforge.train.batches import BatchSource, PairBatch
from clipforge.train.config import EvalSection, TrainRunConfig, TrainSection
from clipforge.train.distributed import DistEnv, average_gradients, init_from_env, mean_over_ranks, shutdown
from clipforge.train.lit import apply_locks, trim_padding
from clipforge.train.loss import PairFeatures, build_loss
from clipforge.train.optim import build_optimizer, build_scheduler
from clipforge.train.sources import EvalHook, build_evaluator, build_source
from clipforge.train.state import (
    TrainingState,
    check_run_dir,
    list_checkpoints,
    load_checkpoint,
    prepare_run_dir,
    promote,
    save_checkpoint,
    save_final,
)


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
        """Drops lines an interrupted run wrote after the checkpoint it resumes from."""
        if not self.path.is_file():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


@contextlib.contextmanager
def torch_settings(config: TrainSection) -> Iterator[None]:
    """Pins threads and deterministic kernels for the run, restoring the caller's settings after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    if config.threads:
        torch.set_num_threads(config.threads)
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


def build_model(name: str) -> nn.Module:
    """A registry architecture (random init) or a clipforge model folder to fine-tune."""
    model = load_model(name) if Path(name).is_dir() else create_model(name)
    return model.train()


def encode_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pixels [B, 3, S, S] go through the image tower; cached features [B, F] only through its head."""
    if images.dim() == 2:
        return model.project_image_features(images, normalize=True)  # type: ignore[operator,no-any-return]
    return model.encode_image(images, normalize=True)  # type: ignore[operator,no-any-return]


def encode_texts(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Token ids [B, L] go through the text tower; cached backbone features [B, D] only through its head."""
    if tokens.is_floating_point():
        return model.project_text_features(tokens, normalize=True)  # type: ignore[operator,no-any-return]
    return model.encode_text(trim_padding(tokens), normalize=True)  # type: ignore[operator,no-any-return]


def encode_batch(model: nn.Module, batch: PairBatch) -> PairFeatures:
    """Features of a batch; captions and real hard negatives go through the text tower in one call.

    Padding negatives are not encoded (free-text captions often have no spatial phrase to swap): their
    rows stay zero, and the loss masks them out anyway.
    """
    b, k = batch.negative_mask.shape
    images = encode_images(model, batch.images)
    real = batch.negative_mask.reshape(b * k)  # [B * K]
    width = batch.negative_tokens.shape[-1]
    negatives = batch.negative_tokens.reshape(b * k, width)[real]  # [R, L] ids or [R, D] cached features
    texts = encode_texts(model, torch.cat([batch.tokens, negatives]))
    scale = model.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)  # type: ignore[operator]
    if k == 0:
        return PairFeatures(images, texts, scale)
    negative_features = texts.new_zeros(b * k, texts.shape[1]).index_put((real,), texts[b:])  # [B * K, E]
    return PairFeatures(images, texts[:b], scale, negative_features, batch.negative_mask)


def micro_batches(batch: PairBatch, env: DistEnv, accum_steps: int) -> list[PairBatch]:
    """This rank's share of each accumulation micro-batch of the global batch.

    The global batch is cut into `accum_steps` micro-batches first and each is then split over ranks,
    so a micro-batch holds the same samples (and negatives) whatever the number of processes. A batch
    that does not divide evenly (real data with skipped samples) loses its last few samples.
    """
    micro = len(batch) // (env.world_size * accum_steps) * env.world_size
    share = micro // env.world_size
    starts = [i * micro + env.rank * share for i in range(accum_steps)]
    return [batch.rows(start, start + share) for start in starts]


def backward_step(
    model: nn.Module, loss_fn: nn.Module, batch: PairBatch, env: DistEnv, accum_steps: int
) -> float:
    """Forward and backward over this rank's micro-batches; returns the loss of the global batch."""
    total = 0.0
    for micro in micro_batches(batch, env, accum_steps):
        loss = loss_fn(encode_batch(model, micro)) / accum_steps
        loss.backward()
        total += float(loss.item())
    return mean_over_ranks(total)


def selection_score(metrics: dict[str, Any]) -> float:
    """The number model selection maximizes: the mean of the retrieval R@1s an evaluation reports."""
    keys = [k for k in ("t2i_r1", "i2t_r1", "text_to_image_r1", "image_to_text_r1") if k in metrics]
    if not keys:
        raise ConfigError(f"eval.select_best needs R@1 metrics; the evaluation reported {sorted(metrics)}")
    return sum(float(metrics[k]) for k in keys) / len(keys)


class BestSelector:
    """Keeps the best-scoring model in ``run_dir/best`` and counts evaluations without improvement."""

    def __init__(self, run_dir: Path, config: EvalSection, provenance: dict[str, Any]) -> None:
        self.run_dir, self.config, self.provenance = run_dir, config, provenance
        self.best, self.stale = -math.inf, 0
        saved = run_dir / "best" / "config.json"
        if saved.is_file():  # resuming: the best so far survives the interruption
            extra = json.loads(saved.read_text())["extra"]
            self.best, self.stale = float(extra["score"]), int(extra["stale"])

    def update(self, model: nn.Module, step: int, metrics: dict[str, Any]) -> None:
        score = selection_score(metrics)
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
class Trainer:
    """The objects of one run, and the single optimizer step that advances them."""

    config: TrainRunConfig
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    source: BatchSource
    env: DistEnv

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.model, self.loss_fn) for p in m.parameters() if p.requires_grad]

    def step(self) -> float:
        """One optimizer step on the next global batch; returns its loss."""
        cfg = self.config.train
        loss = backward_step(self.model, self.loss_fn, self.source.next_batch(), self.env, cfg.accum_steps)
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
            self.loss_fn.state_dict(),
            self.source.state_dict(),
            elapsed_s,
        )

    def restore(self, checkpoint: Path) -> TrainingState:
        state = load_checkpoint(checkpoint, self.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.loss_fn.load_state_dict(state.loss)
        self.source.load_state_dict(state.data)
        return state


def build_trainer(config: TrainRunConfig, env: DistEnv) -> Trainer:
    """Seeds, then builds model, loss, optimizer, schedule and data in a fixed order."""
    seed_everything(config.train.seed)
    model = build_model(config.model.name)
    apply_locks(model, config.model)
    loss_fn = build_loss(config.loss)
    optimizer = build_optimizer([model, loss_fn], config.train)
    scheduler = build_scheduler(optimizer, config.train)
    source = build_source(config, model, env)
    return Trainer(config, model, loss_fn, optimizer, scheduler, source, env)


def run_eval(hook: EvalHook, model: nn.Module, step: int) -> dict[str, Any]:
    """Calls the hook in eval mode without disturbing the training RNG stream."""
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        metrics = hook(model, step)
    model.train()
    return metrics


def train(
    config: TrainRunConfig, out_dir: str | Path, resume: bool = False, on_eval: EvalHook | None = None
) -> TrainResult:
    """Trains a model as `config` says, writing the run folder `out_dir`.

    Args:
        config: the resolved run config (on resume: the run's saved config, see `load_run_config`).
        out_dir: the run folder; created for a fresh run, continued from its newest checkpoint on resume.
        resume: continue an existing run instead of starting one.
        on_eval: called as ``on_eval(model, step) -> metrics`` every `eval.every` steps and at the end;
            defaults to retrieval recall on held-out data when the data has a held-out split.
    """
    run_dir = Path(out_dir)
    env = init_from_env()
    with torch_settings(config.train):
        try:
            return _train(config, run_dir, resume, on_eval, env)
        finally:
            shutdown(env)


def _train(
    config: TrainRunConfig, run_dir: Path, resume: bool, on_eval: EvalHook | None, env: DistEnv
) -> TrainResult:
    if resume:
        check_run_dir(run_dir)
    elif env.is_main:
        prepare_run_dir(run_dir, config)
    trainer = build_trainer(config, env)
    hook = on_eval or (build_evaluator(config, trainer.model) if env.is_main else None)
    checkpoints = list_checkpoints(run_dir) if resume else []
    start, elapsed = 0, 0.0
    if checkpoints:
        state = trainer.restore(checkpoints[-1])
        start, elapsed = state.step, state.elapsed_s
    log = RunLog(run_dir / "log.jsonl", env.is_main, start if resume else None)
    return _run_steps(trainer, run_dir, start, elapsed, hook, log)


def _log_step(
    trainer: Trainer, step: int, loss: float, lr: float, seconds: float, elapsed: float
) -> dict[str, Any]:
    """One `log.jsonl` line: `lr` is the rate the step used, `logit_scale` the temperature the loss uses."""
    scale = trainer.model.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)  # type: ignore[operator]
    if hasattr(trainer.loss_fn, "logit_bias"):
        scale = trainer.loss_fn.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)  # type: ignore[operator]
    return {
        "step": step,
        "loss": loss,
        "lr": lr,
        "samples_per_s": trainer.config.train.batch_size / max(seconds, 1e-9),
        "logit_scale": float(scale.detach()),
        "elapsed_s": round(elapsed, 3),
    }


def _run_steps(
    trainer: Trainer, run_dir: Path, start: int, elapsed: float, hook: EvalHook | None, log: RunLog
) -> TrainResult:
    cfg, env = trainer.config, trainer.env
    show = cfg.train.progress and env.is_main and sys.stderr.isatty()
    bar = tqdm(total=cfg.train.steps, initial=start, disable=not show, unit="step")
    loss, rate = math.nan, 0.0
    evals: list[dict[str, Any]] = []
    selector = None
    if cfg.eval.select_best and env.is_main:
        selector = BestSelector(run_dir, cfg.eval, _provenance(trainer))
    if cfg.eval.patience and env.world_size > 1:
        raise ConfigError("eval.patience (early stopping) runs in a single process only")
    step = start
    for step in range(start + 1, cfg.train.steps + 1):
        began = time.perf_counter()
        lr = float(trainer.scheduler.get_last_lr()[0])
        loss = trainer.step()
        seconds = time.perf_counter() - began
        elapsed += seconds
        rate = cfg.train.batch_size / max(seconds, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.0f}")
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            log.write(_log_step(trainer, step, loss, lr, seconds, elapsed))
        if hook is not None and env.is_main and _eval_due(step, cfg):
            evals.append({"step": step, "eval": run_eval(hook, trainer.model, step)})
            log.write(evals[-1])
            if selector is not None:
                selector.update(trainer.model, step, evals[-1]["eval"])
        if env.is_main and cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
            save_checkpoint(run_dir, trainer.model, trainer.state(step, elapsed), cfg.train.keep_checkpoints)
        if selector is not None and selector.should_stop:
            log.write({"step": step, "early_stop": True, "best_score": selector.best})
            break
    bar.close()
    final = run_dir / "final"
    if selector is not None and (run_dir / "best").is_dir():
        promote(run_dir, "best")
    elif env.is_main:
        save_final(run_dir, trainer.model, _provenance(trainer))
    return TrainResult(run_dir, final, step, loss, rate, evals)


def _eval_due(step: int, config: TrainRunConfig) -> bool:
    every = config.eval.every
    return step == config.train.steps or (every > 0 and step % every == 0)


def _provenance(trainer: Trainer) -> dict[str, Any]:
    """What `final/config.json` records about the run under ``extra``."""
    extra: dict[str, Any] = {"train": trainer.config.to_dict()}
    if hasattr(trainer.loss_fn, "logit_bias"):
        loss_fn: Any = trainer.loss_fn
        extra["siglip"] = {"logit_scale": loss_fn.logit_scale.item(), "logit_bias": loss_fn.logit_bias.item()}
    return extra
