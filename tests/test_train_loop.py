"""The training loop end to end: run folder, log, checkpoints, resume, final model, bad input."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from clipforge.cli.main import main
from clipforge.errors import CheckpointError, ConfigError
from clipforge.train import load_config, load_run_config, train
from clipforge.train.batches import PairBatch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic-tiny.toml"
SMALL = ["train.batch_size=8", "data.n_train=32", "data.n_val=16", "train.threads=1", "train.warmup_steps=2"]


def _small(*overrides: str) -> list[str]:
    return [*SMALL, *overrides]


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def test_run_writes_log_checkpoints_and_a_loadable_final_model(tmp_path: Path) -> None:
    config = load_config(TINY, _small("train.steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=1",
                                      "eval.every=2"))
    calls: list[int] = []

    def on_eval(model: torch.nn.Module, step: int) -> dict[str, float]:
        assert not model.training
        calls.append(step)
        return {"score": float(step)}

    result = train(config, tmp_path / "run", on_eval=on_eval)
    run = tmp_path / "run"
    steps = [r for r in _log(run) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert set(steps[0]) >= {"step", "loss", "lr", "samples_per_s", "logit_scale", "elapsed_s"}
    assert steps[0]["lr"] == pytest.approx(1e-3) and steps[1]["lr"] == pytest.approx(2e-3)  # warmup of 2
    assert calls == [2, 4] and [r for r in _log(run) if "eval" in r][0] == {"step": 2, "eval": {"score": 2.0}}
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000004"]
    assert load_run_config(run) == config
    from clipforge.checkpoint import load

    model, preprocess, tokenizer = load(run / "final")
    assert preprocess.config.image_size == 32 and tokenizer.context_length == 16
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, _weights(run)[name])
    assert result.steps == 4 and result.loss == steps[-1]["loss"]


def test_training_lowers_the_loss_with_siglip_and_hard_negatives(tmp_path: Path) -> None:
    config = load_config(TINY, _small("train.steps=12", "loss.kind=siglip", "loss.hard_negatives=2",
                                      "train.lr=5e-3", "data.n_train=8", "eval.every=0"))
    train(config, tmp_path / "run", on_eval=lambda model, step: {})
    losses = [r["loss"] for r in _log(tmp_path / "run") if "loss" in r]
    assert losses[-1] < 0.8 * losses[0]  # one batch seen over and over: the loss must fall
    meta = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert meta["model"]["init_logit_bias"] == -10.0
    assert meta["model"]["init_logit_scale"] == pytest.approx(math.log(10.0))
    assert _weights(tmp_path / "run")["logit_bias"].item() != pytest.approx(-10.0, abs=1e-6)  # it learned
    from clipforge.checkpoint import load_model

    assert load_model(tmp_path / "run" / "final").logit_bias is not None  # final/ keeps the calibration


@pytest.mark.parametrize("extra", [(), ("loss.negative_images=0.5",)])
def test_resume_from_a_checkpoint_continues_bit_for_bit(tmp_path: Path, extra: tuple[str, ...]) -> None:
    overrides = _small("train.steps=6", "train.checkpoint_every=3", "loss.hard_negatives=2", *extra)
    config = load_config(TINY, overrides)
    train(config, tmp_path / "full")
    # Pretend the run was killed writing step 5's log line: the step-3 checkpoint, a log reaching step 4
    # and a torn line survive (resume drops the torn line).
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "full", partial)
    shutil.rmtree(partial / "final")
    shutil.rmtree(partial / "checkpoints" / "step_000006")
    log = partial / "log.jsonl"
    lines = log.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= 4]
    log.write_text("".join(line + "\n" for line in kept) + lines[len(kept)][:17])
    train(load_run_config(partial), partial, resume=True)
    for name, tensor in _weights(tmp_path / "full").items():
        assert torch.equal(tensor, _weights(partial)[name]), name
    def losses(run: Path) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in _log(run) if "loss" in r]

    assert losses(partial) == losses(tmp_path / "full") and len(losses(partial)) == 6


@pytest.mark.slow
def test_sigkill_then_resume_ends_bit_identical(tmp_path: Path, sigkill_run) -> None:
    overrides = ["--set", "train.steps=60", "--set", "train.checkpoint_every=20"]
    sigkill_run([str(TINY), *overrides], tmp_path, kill_at=40)
    expected, got = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert set(expected) == set(got)
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    assert [r["step"] for r in _log(tmp_path / "killed") if "loss" in r] == list(range(1, 61))


def test_bad_input_gives_one_clear_error_each(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write to output folder"):
        train(load_config(TINY, _small("train.steps=1")), blocker / "run")
    with pytest.raises(CheckpointError, match="not a clipforge run folder"):
        load_run_config(tmp_path)
    with pytest.raises(CheckpointError, match="not a clipforge run folder"):
        train(load_config(TINY), tmp_path, resume=True)
    runner = CliRunner()
    fresh = ["train", str(TINY), "--out", str(tmp_path / "a")]
    cases = [
        ([*fresh, "--set", "train.colour=1"], "unknown config key 'colour'"),
        ([*fresh, "--set", "train.steps=-5"], "train.steps must be >= 1"),
        (["train", "--resume", str(tmp_path)], "not a clipforge run folder"),
        (["train", str(TINY), "--out", str(blocker / "run")], "cannot write to output folder"),
        (["train", str(TINY)], "give CONFIG.toml and --out DIR"),
    ]
    for args, message in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert result.output.count("\n") == 1, result.output


def test_a_run_folder_is_not_overwritten(tmp_path: Path) -> None:
    config = load_config(TINY, _small("train.steps=1", "eval.every=0"))
    train(config, tmp_path / "run", on_eval=lambda model, step: {})
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config, tmp_path / "run")


@pytest.mark.flickr8k
def test_flickr8k_run_resumes_bit_for_bit(tmp_path: Path, flickr8k_root: Path) -> None:
    config = load_config(TINY, _small(
        f'data.source="flickr8k:{flickr8k_root}:train"', f'data.eval_source="flickr8k:{flickr8k_root}:test"',
        "train.steps=3", "train.checkpoint_every=2", "loss.hard_negatives=2",
    ))
    train(config, tmp_path / "full")
    evals = [r["eval"] for r in _log(tmp_path / "full") if "eval" in r]
    assert evals[-1]["n"] == 16.0  # data.n_val test images, one caption each
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "full", partial)
    shutil.rmtree(partial / "final")
    train(load_run_config(partial), partial, resume=True)
    for name, tensor in _weights(tmp_path / "full").items():
        assert torch.equal(tensor, _weights(partial)[name]), name


def test_negative_images_are_batched_encoded_and_reach_the_loss() -> None:
    from clipforge.train.contrastive import ContrastiveTask, encode_batch

    config = load_config(TINY, _small("loss.negative_images=1.0", "data.num_workers=0"))
    task = ContrastiveTask(config, say=lambda line: None)
    batch = task.batches.next_batch()
    real = batch.negative_image_mask
    assert batch.negative_images is not None and real is not None and 0 < int(real.sum()) < len(batch)
    assert batch.negative_images.shape == batch.images.shape
    assert batch.rows(2, 5).negative_image_mask is not None and len(batch.rows(2, 5).negative_image_mask) == 3
    with torch.no_grad():
        features = encode_batch(task.encoder, task.model, batch)
        alone = task.encoder.images(batch.negative_images[real])
    assert features.negative_images is not None and not features.negative_images[~real].any()
    assert torch.allclose(features.negative_images[real], alone, atol=1e-6)
    without = PairBatch(batch.images, batch.tokens, batch.negative_tokens, batch.negative_mask)
    with torch.no_grad():
        assert float(task.loss(batch)) > float(task.loss(without))
