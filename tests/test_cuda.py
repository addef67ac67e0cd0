"""The CUDA path: the same models, engine and sampler on a GPU, checked against the CPU.

CPU is the target and CI has no GPU, so every test here is skipped where torch sees none; run them with
``pytest -m cuda`` on a machine that has one.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import clipforge
from clipforge.cli.main import main
from clipforge.dalle.sampling import SamplingConfig, sample_tokens
from clipforge.models.generator import Generator
from clipforge.models.registry import create_any_model
from clipforge.tokenizer import ClipTokenizer
from clipforge.train import load_config, load_run_config, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic-tiny.toml"
SMALL = ["train.batch_size=8", "data.n_train=32", "data.n_val=16", "train.threads=1", "train.warmup_steps=2",
         "train.log_every=1"]
PROMPTS = ["a red square", "two circles", "a star to the left of a cross"]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def _resume_after_step(run: Path, copy: Path, step: int, last: int) -> None:
    """Copies `run` as a run that died after `step`, its newest checkpoint being before it; resumes it."""
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "final")
    shutil.rmtree(copy / "checkpoints" / f"step_{last:06d}")
    lines = (copy / "log.jsonl").read_text().splitlines()
    (copy / "log.jsonl").write_text("".join(x + "\n" for x in lines if json.loads(x)["step"] <= step))
    train(load_run_config(copy), copy, resume=True)


def test_clip_encodes_on_cuda_as_on_the_cpu() -> None:
    model = create_any_model("tiny-convnet").eval()
    images, tokens = torch.rand(4, 3, 32, 32), ClipTokenizer(16)(PROMPTS + [""])
    with torch.no_grad():
        cpu = model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)
        model.cuda()
        gpu = model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)
    for a, b in zip(cpu, gpu, strict=True):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, atol=2e-3, rtol=0)  # TF32 convolutions on the GPU


def test_clip_trains_on_cuda_like_on_the_cpu_and_resumes(tmp_path: Path) -> None:
    overrides = [*SMALL, "train.steps=6", "train.checkpoint_every=3", "loss.hard_negatives=2"]
    train(load_config(TINY, overrides), tmp_path / "cpu")
    train(load_config(TINY, [*overrides, "train.device=cuda"]), tmp_path / "gpu")
    torch.testing.assert_close(_losses(tmp_path / "gpu"), _losses(tmp_path / "cpu"), atol=2e-2, rtol=0)
    _resume_after_step(tmp_path / "gpu", tmp_path / "resumed", step=4, last=6)
    gpu, resumed = (load_file(str(r / "final" / "model.safetensors"))
                    for r in (tmp_path / "gpu", tmp_path / "resumed"))
    assert _max_diff(gpu, resumed) < 1e-6, "a resumed CUDA run drifted from the uninterrupted one"
    model, _, _ = clipforge.load(tmp_path / "gpu" / "final")  # a GPU run's folder loads on the CPU
    assert next(model.parameters()).device.type == "cpu"


def test_dvae_and_generator_train_on_cuda_and_the_dvae_resumes_with_its_gumbel_noise(tmp_path: Path) -> None:
    common = [*SMALL[:1], "data.n_val=16", "train.threads=1", "train.warmup_steps=1", "train.log_every=1",
              "train.device=cuda"]
    dvae = load_config(REPO / "configs" / "dvae-skills.toml",
                       ["model.name=tiny-dvae", "train.steps=4", "eval.every=2", "train.checkpoint_every=2",
                        *common])
    train(dvae, tmp_path / "dvae")
    _resume_after_step(tmp_path / "dvae", tmp_path / "dvae-resumed", step=3, last=4)
    full, resumed = (load_file(str(r / "final" / "model.safetensors"))
                     for r in (tmp_path / "dvae", tmp_path / "dvae-resumed"))
    assert _max_diff(full, resumed) < 1e-6, "the resumed dVAE drew other Gumbel noise"
    prior = load_config(REPO / "configs" / "generator-skills.toml",
                        ["model.name=tiny-generator", f"prior.dvae={tmp_path / 'dvae' / 'final'}",
                         f"prior.token_cache={tmp_path / 'cache'}", "data.n_train=40", "train.steps=4",
                         "eval.every=2", *common])
    train(prior, tmp_path / "prior")
    losses = torch.tensor(_losses(tmp_path / "prior"))
    assert len(losses) == 4 and bool(torch.isfinite(losses).all())
    assert isinstance(clipforge.load_folder(tmp_path / "prior" / "final", "cuda"), Generator)


@pytest.fixture(scope="module")
def generator(sharp_generator) -> Generator:
    return sharp_generator(PROMPTS)


@pytest.mark.parametrize("config", [SamplingConfig(temperature=0.7, top_k=5), SamplingConfig(cond_scale=3.0)],
                         ids=["top-k", "guided"])
def test_cached_sampling_on_cuda_equals_uncached_and_mostly_the_cpu(generator: Generator,
                                                                    config: SamplingConfig) -> None:
    text, seeds = ClipTokenizer(12)(PROMPTS), [11, 12, 13]
    cpu = sample_tokens(generator, text, seeds, config)
    model = Generator(generator.config)  # a copy: the fixture stays on the CPU for the other parameter
    model.load_state_dict(generator.state_dict())
    model.eval().cuda()
    cached = sample_tokens(model, text, seeds, config)
    uncached = sample_tokens(model, text, seeds, dataclasses.replace(config, use_cache=False))
    assert cached.device.type == "cuda" and torch.equal(cached, uncached)
    # The seeded uniforms are the CPU's; only float differences near a CDF boundary can change a draw.
    assert (cached.cpu() == cpu).float().mean().item() > 0.9


def test_generate_command_runs_on_cuda(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["generate", "--model", "tiny-generator", "--prompt", "a red square",
                                       "-n", "2", "--device", "cuda", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "generations.json").read_text())
    assert len(report["prompts"][0]["candidates"]) == 2
