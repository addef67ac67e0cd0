import dataclasses

import numpy as np
import pytest
import torch

import clipforge
from clipforge.dalle.batches import TokenBatch
from clipforge.dalle.sampling import (
    SamplingConfig,
    draw,
    filter_logits,
    next_image_logits,
    sample_images,
    sample_tokens,
)
from clipforge.models.generator import Generator
from clipforge.models.layers import KVCache, Transformer
from clipforge.models.registry import create_any_model
from clipforge.tokenizer import ClipTokenizer
from clipforge.train.dalle_objectives import PriorObjective, prior_loss

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["a red square", "two circles", "a star to the left of a cross"]


@pytest.fixture(scope="module")
def model(sharp_generator) -> Generator:
    return sharp_generator(PROMPTS)


def _text(n: int = 3) -> torch.Tensor:
    return ClipTokenizer(12)((PROMPTS * 2)[:n])

def test_text_ids_give_each_padding_position_its_own_token(model: Generator) -> None:
    ids = model.text_ids(ClipTokenizer(12)(["a red square", ""]))
    pad = model.pad_offset
    assert ids[0, 5:].tolist() == [pad + p for p in range(5, 12)]  # sot a red square eot | pads
    assert ids[1, 2:].tolist() == [pad + p for p in range(2, 12)]
    assert int(ids[0, :5].max()) < pad  # words map into the compact vocabulary
    unknown = model.text_ids(ClipTokenizer(12)(["a zebra"]))
    assert int(unknown[0, 2]) == pad - 1 or int(unknown[0, 3]) == pad - 1  # a word it never saw


def test_forward_is_causal(model: Generator) -> None:
    text, image = _text(1), torch.randint(0, 16, (1, 64))
    changed = image.clone()
    changed[0, 30] = (image[0, 30] + 1) % 16
    with torch.no_grad():
        a, b = model(text, image).image_logits, model(text, changed).image_logits
    # image logits at index j predict token j from tokens < j: token 30 first matters for index 31
    assert torch.allclose(a[:, :31], b[:, :31], atol=1e-6)
    assert not torch.allclose(a[:, 31:], b[:, 31:])


def test_loss_weighting_follows_dalle() -> None:
    model = create_any_model("tiny-generator")
    text, image = _text(), torch.randint(0, 16, (3, 64))
    batch = TokenBatch(text, image)
    loss, parts = prior_loss(model, batch, PriorObjective(text_weight=1.0, image_weight=7.0))
    assert loss.item() == pytest.approx((parts["text_loss"] + 7 * parts["image_loss"]) / 8, rel=1e-5)
    only_image, _ = prior_loss(model, batch, PriorObjective(text_weight=0.0, image_weight=1.0))
    assert only_image.item() == pytest.approx(parts["image_loss"], rel=1e-5)


def test_kv_cache_logits_equal_full_recompute(model: Generator) -> None:
    text, image = _text(), torch.randint(0, 16, (3, 64))
    cache = KVCache.empty(model.config.layers)
    with torch.no_grad():
        for j in (0, 1, 2, 17, 63):
            prefix = image[:, :j]
            full = next_image_logits(model, text, prefix)
            # the cache catches up on every position it has not seen, one call per checked step
            assert torch.allclose(next_image_logits(model, text, prefix, cache), full, atol=1e-5)
            assert cache.length == model.config.text_context + j


def test_cached_transformer_matches_causal_forward() -> None:
    torch.manual_seed(1)
    transformer = Transformer(16, 2, 2).eval()
    x = torch.randn(2, 9, 16)
    cache = KVCache.empty(2)
    with torch.no_grad():
        full = transformer(x, causal=True)
        pieces = [transformer(x[:, :4], causal=True, cache=cache)]  # prefill, then 2 + 1 + 2 positions
        pieces += [transformer(x[:, s:e], causal=True, cache=cache) for s, e in ((4, 6), (6, 7), (7, 9))]
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


@pytest.mark.parametrize(
    "config",
    [SamplingConfig(), SamplingConfig(temperature=0.7, top_k=5), SamplingConfig(top_p=0.8),
     SamplingConfig(cond_scale=3.0, top_k=8), SamplingConfig(temperature=0.0)],
    ids=["plain", "top-k", "top-p", "guided", "greedy"],
)
def test_cached_sampling_equals_uncached_token_for_token(model: Generator, config: SamplingConfig) -> None:
    seeds = [11, 12, 13]
    cached = sample_tokens(model, _text(), seeds, config)
    uncached = sample_tokens(model, _text(), seeds, dataclasses.replace(config, use_cache=False))
    assert cached.shape == (3, 64)
    assert torch.equal(cached, uncached)
    assert len(cached.unique()) > 1 or config.temperature == 0.0


def test_an_image_depends_on_its_prompt_and_seed_only(model: Generator) -> None:
    config = SamplingConfig(batch_size=2)
    batch = sample_tokens(model, _text(), [5, 6, 7], config)
    alone = sample_tokens(model, _text(3)[2:], [7], config)
    assert torch.equal(batch[2:], alone)
    assert not torch.equal(sample_tokens(model, _text(1), [8], config), batch[:1])
    pixels = sample_images(model, _text(), [5, 6, 7], config)  # two batches: 2 + 1 rows
    assert pixels.shape == (3, 3, 32, 32) and torch.equal(pixels[2:], model.decode(alone))


def test_filter_logits_matches_a_plain_reference() -> None:
    torch.manual_seed(3)
    logits = torch.randn(4, 20)
    kept = torch.isfinite(filter_logits(logits, 5, 1.0))
    assert kept.sum(dim=1).tolist() == [5] * 4
    for top_p in (0.3, 0.9):
        nucleus = torch.isfinite(filter_logits(logits, 0, top_p))
        for row in range(4):
            probs = logits[row].softmax(0).numpy()
            order = np.argsort(-probs)
            size = int(np.searchsorted(np.cumsum(probs[order]), top_p) + 1)  # smallest set reaching p
            assert set(np.nonzero(nucleus[row].numpy())[0]) == set(order[:size])


def test_draw_inverts_the_cdf() -> None:
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    logits = probs.log().expand(5, 4)
    uniforms = torch.tensor([0.05, 0.15, 0.31, 0.65, 0.999])
    assert draw(logits, uniforms, SamplingConfig()).tolist() == [0, 1, 2, 3, 3]
    grid = torch.rand(20000)
    counts = torch.bincount(draw(probs.log().expand(20000, 4), grid, SamplingConfig()), minlength=4)
    assert torch.allclose(counts / 20000.0, probs[0], atol=0.015)


def test_guidance_extrapolates_from_the_unconditional_logits(model: Generator) -> None:
    text = _text(1)
    empty = ClipTokenizer(12)([""])
    with torch.no_grad():
        cond = next_image_logits(model, text, torch.zeros(1, 0, dtype=torch.long))
        uncond = next_image_logits(model, empty, torch.zeros(1, 0, dtype=torch.long))
    greedy = SamplingConfig(temperature=0.0, cond_scale=2.5)
    first = sample_tokens(model, text, [0], greedy)[0, 0]
    assert int(first) == int((uncond + 2.5 * (cond - uncond)).argmax())


def test_generator_folder_round_trip(tmp_path, model: Generator) -> None:
    clipforge.save(model, tmp_path / "gen")
    loaded = clipforge.load_folder(tmp_path / "gen")
    assert isinstance(loaded, Generator) and loaded.config.tokenizer.context_length == 12
    assert loaded.config == model.config
    config = SamplingConfig()
    assert torch.equal(sample_tokens(loaded, _text(), [1, 2, 3], config),
                       sample_tokens(model, _text(), [1, 2, 3], config))
    assert torch.equal(loaded.dvae.codebook.weight, model.dvae.codebook.weight)  # the dVAE travels inside


def test_held_out_prior_metrics_average_over_batches(model: Generator) -> None:
    from clipforge.dalle.batches import TokenPairs
    from clipforge.train.dalle_objectives import prior_metrics

    pairs = TokenPairs(_text(3), torch.randint(0, 16, (3, 64)))
    whole = prior_loss(model, TokenBatch(pairs.text, pairs.image), PriorObjective())[1]
    split = prior_metrics(model, pairs, batch_size=2)  # batches of 2 and 1, weighted by size
    assert split["image_loss"] == pytest.approx(whole["image_loss"], rel=1e-5)
    assert split["text_loss"] == pytest.approx(whole["text_loss"], rel=1e-5)
