"""--device and --threads on the commands that train or probe (train, quickstart, probe, skills score)."""

from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from clipforge.cli import quickstart_cmd
from clipforge.cli.main import main
from clipforge.quickstart import QuickstartConfig
from clipforge.synthetic.dataset import write_synthetic

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic-tiny.toml"
SMALL = ["train.batch_size=8", "data.n_train=32", "data.n_val=16", "train.steps=1", "eval.every=0"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")


def _small_train(out: Path, *extra: str) -> list[str]:
    return ["train", str(TINY), "--out", str(out), *[a for s in SMALL for a in ("--set", s)], *extra]


@pytest.fixture
def restore_threads() -> Any:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_records_device_and_threads_and_pins_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_threads: None
) -> None:
    calls: list[int] = []
    original = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), original(n)))
    result = CliRunner().invoke(main, _small_train(tmp_path / "run", "--device", "cpu", "--threads", "3"))
    assert result.exit_code == 0, result.output
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"device": "cpu"' in config and '"threads": 3' in config
    assert calls and calls[0] == 3  # the run pinned 3 threads (and restored the caller's after)


@NO_CUDA
@pytest.mark.parametrize("command", ["train", "quickstart", "probe", "skills", "generate"])
def test_cuda_without_a_gpu_is_one_line_and_writes_nothing(tmp_path: Path, command: str) -> None:
    out = tmp_path / "out"
    if command == "skills":
        skill_set = ["skills", "make", "--out", str(tmp_path / "set"), "--n-per-skill", "1"]
        made = CliRunner().invoke(main, skill_set)
        assert made.exit_code == 0, made.output
    args = {
        "train": _small_train(out, "--device", "cuda"),
        "quickstart": ["quickstart", "--out", str(out), "--quick", "--device", "cuda"],
        "probe": ["probe", "--suite", f"synthetic:{tmp_path}", "--model", "tiny-vit", "--out", str(out),
                  "--device", "cuda"],
        "skills": ["skills", "score", "--skills", str(tmp_path / "set"), "--images", str(tmp_path / "set"),
                   "--clip", "tiny-vit", "--out", str(out), "--device", "cuda"],
        "generate": ["generate", "--model", "tiny-generator", "--prompt", "a red square", "--out", str(out),
                     "--device", "cuda"],
    }[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: device 'cuda' requested, but torch has no CUDA here")
    assert not out.exists()


def test_probe_threads_set_torch_threads(tmp_path: Path, restore_threads: None) -> None:
    write_synthetic(tmp_path / "data", 8, seed=0, split="test")
    torch.set_num_threads(2)
    result = CliRunner().invoke(main, ["probe", "--suite", f"synthetic:{tmp_path / 'data'}", "--model",
                                       "tiny-vit", "--out", str(tmp_path / "out"), "--resamples", "10",
                                       "--threads", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1


def test_quickstart_passes_device_and_threads_and_resume_takes_no_other_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[QuickstartConfig] = []
    monkeypatch.setattr(quickstart_cmd, "run_quickstart", lambda config, out, say: seen.append(config))
    runner = CliRunner()
    assert runner.invoke(main, ["quickstart", "--out", str(tmp_path), "--quick", "--threads", "2",
                                "--device", "auto", "--seed", "3"]).exit_code == 0
    assert runner.invoke(main, ["quickstart", "--out", str(tmp_path)]).exit_code == 0
    assert (seen[0].threads, seen[0].device, seen[0].steps) == (2, "auto", QuickstartConfig.quick().steps)
    assert (seen[1].threads, seen[1].device) == (1, "cpu")
    assert (seen[0].seed, seen[1].seed) == (3, 0)
    for args, message in [
        (["quickstart", "--resume", str(tmp_path), "--quick"], "--resume DIR takes no other option"),
        (["quickstart", "--resume", str(tmp_path), "--seed", "1"], "--resume DIR takes no other option"),
        (["quickstart"], "give --out DIR"),
        (["quickstart", "--resume", str(tmp_path)], "not a quickstart folder (no quickstart.json)"),
    ]:
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1
