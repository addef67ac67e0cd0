"""Data parallelism on CPU (gloo, 2 processes) equals one process on the same global batch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from clipforge.progress import quiet
from clipforge.train.batches import PairBatch
from clipforge.train.config import LossSection, ModelSection, TrainRunConfig
from clipforge.train.contrastive import ContrastiveTask
from clipforge.train.distributed import DistEnv
from clipforge.train.loop import backward_step, seed_everything

REPO = Path(__file__).resolve().parents[1]

# One gradient computation on a fixed global batch of 8 (2 hard negatives each, some padded), under
# `torch.distributed.run`: each rank takes its half, gathers features, averages gradients.
WORKER = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from test_train_ddp import KINDS, global_batch, loss_and_grads
    from clipforge.train.distributed import init_from_env, shutdown
    env = init_from_env()
    torch.set_num_threads(1)
    for kind in KINDS:
        loss, grads = loss_and_grads(kind, global_batch(kind), env, accum_steps=2)
        if env.is_main:
            torch.save({{"loss": loss, "grads": grads}}, {out!r} + "/" + kind + ".pt")
    shutdown(env)
    """
)


# Loss kinds; "infonce-images" is InfoNCE with hard-negative images (samples 0, 2, 5 and 6 have one).
KINDS = ("infonce", "siglip", "infonce-images")


def global_batch(kind: str = "infonce") -> PairBatch:
    """8 samples at 32 px with 2 hard negatives each; sample 3 has only one real negative."""
    g = torch.Generator().manual_seed(5)
    mask = torch.ones(8, 2, dtype=torch.bool)
    mask[3, 1] = False
    batch = PairBatch(
        images=torch.randn(8, 3, 32, 32, generator=g),
        tokens=_tokens(8, g),
        negative_tokens=_tokens(16, g).reshape(8, 2, 16),
        negative_mask=mask,
    )
    if kind == "infonce-images":
        batch.negative_images = torch.randn(8, 3, 32, 32, generator=g)
        batch.negative_image_mask = torch.tensor([True, False, True, False, False, True, True, False])
    return batch


def _tokens(n: int, g: torch.Generator) -> torch.Tensor:
    """Random token ids [n, 16] ending in the end-of-text id (the highest), zero-padded."""
    tokens = torch.zeros(n, 16, dtype=torch.long)
    lengths = torch.randint(3, 15, (n,), generator=g)
    for i, length in enumerate(lengths.tolist()):
        tokens[i, :length] = torch.randint(1, 49000, (length,), generator=g)
        tokens[i, length] = 49407
    return tokens


def loss_and_grads(
    kind: str, batch: PairBatch, env: DistEnv, accum_steps: int
) -> tuple[float, dict[str, torch.Tensor]]:
    """The engine's loss and averaged gradients for `batch` (tiny-vit: no BatchNorm, no dropout)."""
    from clipforge.train.distributed import average_gradients

    seed_everything(0)
    section = LossSection(kind=kind.removesuffix("-images"), hard_negatives=2)
    config = TrainRunConfig(model=ModelSection("tiny-vit"), loss=section)
    task = ContrastiveTask(config, quiet)
    loss = backward_step(task, batch, env, accum_steps)
    named = list(task.model.named_parameters())
    average_gradients([p for _, p in named])
    return loss, {n: p.grad.clone() for n, p in named if p.grad is not None}


def _torchrun(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_processes_match_one_on_loss_and_gradients(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(REPO / "tests"), out=str(tmp_path)))
    _torchrun([str(script)], tmp_path)
    torch.set_num_threads(1)
    for kind in KINDS:
        loss, grads = loss_and_grads(kind, global_batch(kind), DistEnv(), accum_steps=2)
        ddp = torch.load(tmp_path / f"{kind}.pt")
        assert ddp["loss"] == pytest.approx(loss, abs=1e-5)
        assert set(ddp["grads"]) == set(grads) and len(grads) > 10
        for name, grad in grads.items():
            torch.testing.assert_close(ddp["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)
        assert grads["logit_bias" if kind == "siglip" else "logit_scale"].abs().item() > 1e-4


@pytest.mark.slow
def test_torchrun_cli_trains_like_one_process(tmp_path: Path) -> None:
    config = REPO / "configs" / "synthetic-tiny.toml"
    # A large Adam eps: with the default, a gradient entry near 0 whose sign float noise flips moves by ~lr.
    common = ["--set", "train.steps=3", "--set", "train.threads=1", "--set", "train.batch_size=16",
              "--set", "data.n_train=64", "--set", "train.eps=1e-3", "--set", "train.checkpoint_every=0"]
    cli = ["-m", "clipforge.cli.main", "train", str(config)]
    _torchrun([*cli, "--out", str(tmp_path / "ddp"), *common], REPO)
    single = [sys.executable, *cli, "--out", str(tmp_path / "one"), *common]
    subprocess.run(single, cwd=REPO, check=True, capture_output=True, timeout=240)
    from safetensors.torch import load_file

    ddp = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    one = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    for name, tensor in one.items():
        torch.testing.assert_close(ddp[name], tensor, atol=1e-5, rtol=0, msg=name)
    seed_everything(0)
    from clipforge import create_model

    init = create_model("tiny-convnet").state_dict()
    assert (one["text_projection"] - init["text_projection"]).abs().max() > 1e-4  # it did train
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()
               if "loss" in line] for run in ("ddp", "one")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5) and len(losses[0]) == 3
