"""Training runs survive a full disk, a damaged log and Ctrl-C / SIGTERM (issue 9, items 6-8).

A torn last log line is covered by test_train_loop's bit-exact resume test."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from clipforge.checkpoint import native
from clipforge.cli.main import main
from clipforge.errors import CheckpointError, DiskFullError
from clipforge.train import load_config, load_run_config, train

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic-tiny.toml"
SMALL = ["train.batch_size=8", "data.n_train=32", "data.n_val=16", "train.threads=1", "train.warmup_steps=2",
         "eval.every=0"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def _assert_same_weights(expected_run: Path, run: Path) -> None:
    expected, got = _weights(expected_run), _weights(run)
    assert set(expected) == set(got)
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name


def _temps(run: Path) -> list[Path]:
    return [*run.glob(".tmp_*"), *run.glob("checkpoints/.tmp_*")]


def _disk_full(path: str | Path, data: bytes) -> Path:
    """A writer on a full disk: part of the file lands, then ENOSPC."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_a_full_disk_is_one_line_and_leaves_no_temporary_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native, "write_bytes_atomic", _disk_full)
    run = tmp_path / "run"
    config = load_config(TINY, [*SMALL, "train.steps=4", "train.checkpoint_every=2"])
    with pytest.raises(DiskFullError, match=r"^no space left on .*checkpoints \(needs ~\d+ MB\)$"):
        train(config, run)
    assert _temps(run) == [] and not (run / "checkpoints" / "step_000002").exists()
    # the final model (no checkpoints asked for) and the CLI: one line, exit status 1
    result = CliRunner().invoke(main, ["train", str(TINY), "--out", str(tmp_path / "cli"),
                                       *[a for s in [*SMALL, "train.steps=2"] for a in ("--set", s)]])
    error = result.output.splitlines()[-1]
    assert result.exit_code == 1 and error.startswith(f"Error: no space left on {tmp_path / 'cli'} (needs ~")
    assert _temps(tmp_path / "cli") == []


def test_resume_deletes_temporary_folders_a_killed_run_left(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_config(TINY, [*SMALL, "train.steps=2", "train.checkpoint_every=1"]), run)
    shutil.rmtree(run / "final")
    for stale in (run / "checkpoints" / ".tmp_step_000003_999", run / ".tmp_final_999"):
        (stale / "model").mkdir(parents=True)
        (stale / "model" / "model.safetensors").write_bytes(b"x" * 1000)
    train(load_run_config(run, ["train.steps=3"]), run, resume=True)
    assert _temps(run) == [] and (run / "checkpoints" / "step_000003").is_dir()


def test_a_damaged_log_line_before_the_last_is_one_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_config(TINY, [*SMALL, "train.steps=3", "train.checkpoint_every=3"]), run)
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(CheckpointError, match=r"log\.jsonl: line 2 is not JSON"):
        train(load_run_config(run), run, resume=True)


def _cli(*args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "clipforge.cli.main", "train", *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _descendants(pid: int) -> set[int]:
    """Process ids below `pid` (Linux /proc)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            children = {int(c) for c in task.read_text().split()} - found
            found |= children
            frontier.extend(children)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _logged_steps(run: Path) -> int:
    log = run / "log.jsonl"
    return sum('"loss"' in line for line in log.read_text().splitlines()) if log.is_file() else 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_stops_workers_and_the_resumed_run_matches(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # 64-scene steps (~0.1 s each) with a DataLoader worker; checkpoints only at the end unless stopped
    overrides = [a for s in ["train.steps=25", "train.checkpoint_every=25", "data.num_workers=1",
                             "eval.every=0", "train.progress=false"] for a in ("--set", s)]
    full = _cli(str(TINY), "--out", str(tmp_path / "full"), *overrides)
    run = tmp_path / "stopped"
    stopped = _cli(str(TINY), "--out", str(run), *overrides)
    deadline = time.monotonic() + 120
    while _logged_steps(run) < 3:
        assert stopped.poll() is None and time.monotonic() < deadline, "run ended before step 3"
        time.sleep(0.02)
    children = _descendants(stopped.pid)
    assert children, "the run should have a DataLoader worker"
    stopped.send_signal(signum)
    _, err = stopped.communicate(timeout=120)
    message = err.decode()
    assert stopped.returncode == 128 + signum, message
    assert f"resume with: clipforge train --resume {run}" in message
    assert message.strip().count("\n") == 0, message
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(checkpoints) == 1 and 3 <= int(checkpoints[0][5:]) < 25, checkpoints
    assert not (run / "final").exists()
    time.sleep(0.2)
    assert [pid for pid in children if _alive(pid)] == []
    resumed = _cli("--resume", str(run))
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read() if resumed.stderr else ""
    assert full.wait(timeout=120) == 0, full.stderr.read() if full.stderr else ""
    _assert_same_weights(tmp_path / "full", run)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 26))
    assert "step_000025" in os.listdir(run / "checkpoints")


QUICKSTART = """
import sys
from clipforge.errors import Interrupted
from clipforge.quickstart import QuickstartConfig, run_quickstart
from clipforge.quickstart.generation import GenerationConfig
generation = GenerationConfig(dvae="tiny-dvae", generator="tiny-generator", dvae_steps=4, dvae_batch_size=8,
                              steps=60, batch_size=8, early_step=30, n_train=64, n_prompts=2, candidates=2)
config = QuickstartConfig(model="tiny-convnet", steps=150, batch_size=16, warmup_steps=2, n_train=200,
                          n_val=32, n_test=40, n_zeroshot=24, eval_every=75, n_examples=2,
                          generation=generation)
try:
    run_quickstart(config, sys.argv[1], say=lambda line: None)
except Interrupted as err:
    print(f"Error: {err}", file=sys.stderr)
    sys.exit(err.exit_code)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_sigterm_stops_both_quickstart_runs_without_orphans_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    parent = subprocess.Popen([sys.executable, "-c", QUICKSTART, str(out)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while min(_logged_steps(out / "plain"), _logged_steps(out / "hardneg")) < 2:
        assert parent.poll() is None and time.monotonic() < deadline, "quickstart ended before step 2"
        time.sleep(0.02)
    children = _descendants(parent.pid)
    assert len(children) >= 3, children  # the three training processes (and multiprocessing's helpers)
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=120)
    assert parent.returncode == 143, err.decode()
    assert f"resume with: clipforge quickstart --resume {out}" in err.decode()
    time.sleep(0.2)
    assert [pid for pid in children if _alive(pid)] == []
    for name in ("plain", "hardneg"):
        assert (out / name / "final").is_dir() or list((out / name / "checkpoints").glob("step_*")), name
    assert not (out / "report.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "clipforge.cli.main", "quickstart", "--resume", str(out)],
                             cwd=REPO, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["steps"] == 150
    for name in ("plain", "hardneg"):  # every test split is written again on resume and scored
        assert report["models"][name]["heldout_combinations"]["probe"]["relation_swap"]["n"] > 0
    splits = [json.loads(line)["split"] for line in (out / "data" / "scenes.jsonl").read_text().splitlines()]
    assert splits == ["test"] * 40 + ["test_style"] * 40 + ["test_heldout"] * 40
    for name in ("plain", "hardneg"):
        assert report["training"][name]["curve"]["step"] == list(range(1, 151))
    curve = report["generation"]["training"]["generator_curve"]
    assert [point["step"] for point in curve] == [30, 60]
