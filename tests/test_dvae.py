import math

import pytest
import torch

import clipforge
from clipforge.dalle.batches import ImageBatch
from clipforge.errors import CheckpointError, ConfigError
from clipforge.models.dvae import DVAE, DVAEConfig, gumbel_softmax
from clipforge.models.registry import create_any_model, list_models, parse_model_config
from clipforge.train.dalle_objectives import DVAEObjective, code_usage, dvae_loss, kl_to_uniform

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_knows_model_kinds_and_old_jsons_keep_meaning() -> None:
    assert "tiny-dvae" in list_models("dvae") and "tiny-generator" in list_models("generator")
    assert "tiny-vit" in list_models() and "tiny-dvae" not in list_models()  # CLIP kinds by default
    assert "tiny-dvae" in list_models(None)
    clip = clipforge.get_model_config("tiny-vit")
    assert parse_model_config({**clip.to_dict(), "kind": "clip"}) == clip
    with pytest.raises(ConfigError, match="unknown model kind 'gan'"):
        parse_model_config({"kind": "gan"})
    with pytest.raises(ConfigError, match="unknown config key 'codes'"):
        parse_model_config({"kind": "dvae", "codes": 3})
    with pytest.raises(ConfigError, match="not divisible"):
        DVAEConfig(image_size=30, channels=(8, 8))


def test_fine_grid_dvae_draws_a_16x16_grid() -> None:
    model = create_any_model("skills-dvae-32-g16").eval()
    tokens = model.encode(torch.rand(2, 3, 32, 32))
    assert model.config.grid == 16 and tokens.shape == (2, 256) and int(tokens.max()) < 64
    assert model.decode(tokens).shape == (2, 3, 32, 32)


def test_shapes_tokens_and_decode_range() -> None:
    model = create_any_model("tiny-dvae").eval()
    assert isinstance(model, DVAE)
    images = torch.rand(3, 3, 32, 32)
    out = model(images, temperature=0.5)
    assert out.logits.shape == (3, 16, 8, 8) and out.reconstruction.shape == (3, 3, 32, 32)
    tokens = model.encode(images)
    assert tokens.shape == (3, 64) and tokens.dtype == torch.long
    assert torch.equal(tokens, model.logits(images).argmax(dim=1).flatten(1))  # argmax, row-major
    pixels = model.decode(tokens)
    assert pixels.shape == (3, 3, 32, 32) and pixels.min() >= 0 and pixels.max() <= 1


def test_gumbel_softmax_soft_and_straight_through() -> None:
    logits = torch.randn(2, 5, 3, 3, requires_grad=True)
    soft = gumbel_softmax(logits, 1.0, hard=False)
    assert torch.allclose(soft.sum(dim=1), torch.ones(2, 3, 3))
    hard = gumbel_softmax(logits, 1.0, hard=True)
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(hard.sum(1), torch.ones(2, 3, 3))
    (hard * torch.arange(5.0).view(1, 5, 1, 1)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # gradients flow through the soft path


def test_gumbel_noise_matches_the_gumbel_distribution() -> None:
    # argmax(logits + Gumbel noise) is a draw from softmax(logits): the Gumbel-max trick.
    logits = torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1).expand(20000, 3, 1, 1)
    picks = gumbel_softmax(logits, 1e-3, hard=True).argmax(dim=1).flatten()
    freq = torch.bincount(picks, minlength=3).float() / len(picks)
    assert torch.allclose(freq, torch.tensor([0.0, 1.0, 2.0]).softmax(0), atol=0.015)


def test_kl_to_uniform_closed_forms() -> None:
    assert kl_to_uniform(torch.zeros(2, 8, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)
    peaked = torch.full((1, 8, 2, 2), -1e4)
    peaked[:, 3] = 0.0
    assert kl_to_uniform(peaked).item() == pytest.approx(math.log(8), rel=1e-5)
    p = torch.tensor([0.5, 0.25, 0.25, 0.0 + 1e-12])
    expected = float((p * (p / 0.25).log()).sum())
    assert kl_to_uniform(p.log().view(1, 4, 1, 1)).item() == pytest.approx(expected, rel=1e-4)


def test_code_usage_perplexity_and_dead_codes() -> None:
    uniform = code_usage(torch.arange(8).repeat(5), 10)
    assert uniform["perplexity"] == pytest.approx(8.0) and uniform["dead_codes"] == 2
    single = code_usage(torch.full((30,), 4), 10)
    assert single["perplexity"] == pytest.approx(1.0) and single["dead_codes"] == 9


def test_schedules() -> None:
    objective = DVAEObjective(beta=0.5, beta_warmup=10, temperature_start=1.0, temperature_end=1 / 16,
                              anneal_steps=100)
    assert objective.temperature(0) == 1.0
    assert objective.temperature(50) == pytest.approx(0.25)  # geometric midpoint of 1 and 1/16
    assert objective.temperature(100) == objective.temperature(10_000) == pytest.approx(1 / 16)
    assert [objective.beta_at(s) for s in (0, 5, 10, 99)] == [0.0, 0.25, 0.5, 0.5]
    with pytest.raises(ConfigError):
        DVAEObjective(temperature_start=0.1, temperature_end=0.5)


def test_a_few_steps_reduce_reconstruction_error() -> None:
    model = create_any_model("tiny-dvae").train()
    images = torch.zeros(8, 3, 32, 32)
    images[:, 0, 8:20, 8:20] = 1.0  # a red square on black
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    objective = DVAEObjective(beta=1e-3, beta_warmup=0, anneal_steps=0, temperature_end=1.0)
    first = dvae_loss(model, ImageBatch(images, 0), objective)[1]["recon_mse"]
    for step in range(40):
        loss, metrics = dvae_loss(model, ImageBatch(images, step), objective)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert metrics["recon_mse"] < 0.5 * first
    assert set(metrics) >= {"recon_mse", "kl", "perplexity", "dead_codes", "temperature", "beta"}


def test_dvae_folder_round_trip(tmp_path) -> None:
    model = create_any_model("tiny-dvae").eval()
    clipforge.save(model, tmp_path / "dvae")
    loaded = clipforge.load_folder(tmp_path / "dvae")
    assert isinstance(loaded, DVAE) and loaded.config == model.config
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.encode(images), model.encode(images))
    assert loaded.config.preprocess.image_size == 32 and loaded.config.preprocess.std == (1.0, 1.0, 1.0)
    with pytest.raises(CheckpointError, match="holds a DVAE, not a CLIP model"):
        clipforge.load(tmp_path / "dvae")
    with pytest.raises(ConfigError, match="is a dvae, not a CLIP model"):
        clipforge.create_model("tiny-dvae")


def test_held_out_metrics_use_the_hard_path() -> None:
    from clipforge.train.dalle_objectives import dvae_metrics

    model = create_any_model("tiny-dvae").eval()
    images = torch.rand(5, 3, 32, 32)
    metrics = dvae_metrics(model, images, batch_size=2)
    expected = float(((model.decode(model.encode(images)) - images) ** 2).mean())
    assert metrics["recon_mse"] == pytest.approx(expected, rel=1e-5)
    assert metrics == {**metrics, **code_usage(model.encode(images), 16)}
