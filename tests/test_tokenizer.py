"""OpenAI CLIP BPE tokenizer: exact ids against transformers' CLIPTokenizer built from the same merges."""

from __future__ import annotations

import gzip
import html
import json
import random
import string
from pathlib import Path

import ftfy
import pytest
import torch

from clipforge.errors import ClipforgeError, ConfigError
from clipforge.models.config import TokenizerConfig
from clipforge.tokenizer import ClipTokenizer, TokenizerError, bpe, get_tokenizer, tokenize

SOT, EOT = 49406, 49407

WORDS = ["a", "dog", "runs", "through", "the", "grass", "photo", "of", "cat", "Children", "PLAYING",
         "bIcYcLe", "skateboarder", "antidisestablishmentarianism", "xqzjv", "mountain", "beach", "red",
         "jumps", "over"]
CONTRACTIONS = ["it's", "don't", "they're", "we've", "I'm", "you'll", "he'd", "IT'S", "DON'T", "She'LL",
                "rock'n'roll", "'s", "o'clock", "y'all", "'twas"]
PUNCT = list(".,!?;:-()[]{}\"'/\\@#$%^&*_+=~`|<>") + ["...", "?!", "--", "''", "``", "->", ":)"]
NUMBERS = ["0", "7", "42", "2024", "3.14", "1,000,000", "-5", "1st", "22nd", "100%", "$9.99", "٣", "½"]
UNICODE = ["café", "naïve", "résumé", "Ångström", "Über", "São", "ﬁsh", "你好世界", "日本語のテキスト",
           "한국어", "Привет", "Ελλάδα", "مرحبا", "हिन्दी", "🎉", "👍🏽", "❤️", "👨‍👩‍👧", "🐶🐱", "ß",
           "İstanbul", "ǅ",
           "ｆｕｌｌｗｉｄｔｈ", "e\u0301", "\u200bzero", "ⅷ", "℃", "™", "–", "—", "“quoted”", "don’t", "…"]
ENTITIES = ["&amp;", "&quot;", "&#39;", "&lt;", "&gt;", "&nbsp;", "&#x27;", "&amp;amp;", "&copy;", "&eacute;",
            "&#8217;", "&hellip;", "&unknown;", "& amp;", "&amp"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", " \t \n "]


def _random_text(rng: random.Random) -> str:
    pools = [WORDS, WORDS, CONTRACTIONS, PUNCT, NUMBERS, UNICODE, ENTITIES]
    parts = []
    for _ in range(rng.randint(1, 14)):
        parts.append(rng.choice(rng.choice(pools)))
        parts.append(rng.choice(SPACES) if rng.random() < 0.8 else "")
    return "".join(parts)


def _corpus() -> list[str]:
    """2400 seeded strings of every class the brief names, plus fixed edge cases."""
    rng = random.Random(1234)
    texts = [_random_text(rng) for _ in range(2200)]
    texts += [" ".join(rng.choice(WORDS + UNICODE) for _ in range(rng.randint(60, 300))) for _ in range(100)]
    texts += ["".join(rng.choice(PUNCT + NUMBERS) for _ in range(rng.randint(1, 80))) for _ in range(98)]
    texts += ["", "   ", "\t\n", "\u00a0\u3000", "A PHOTO OF A CAT", "a photo of a cat"]
    texts += ["x" * 500, "1234567890" * 9]
    return texts


def _openai_clean(text: str) -> str:
    """OpenAI's basic_clean written out: transformers' CLIPTokenizer runs neither ftfy nor html.unescape
    (its normalizer is only NFC + whitespace + lowercase), so it is fed text that already went through
    them; whitespace collapsing and lowercasing are left to it, so those are still compared."""
    return html.unescape(html.unescape(ftfy.fix_text(text)))


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    """transformers' CLIPTokenizer built from our .gz, the way OpenAI builds its encoder."""
    transformers = pytest.importorskip("transformers")
    path = Path(bpe.__file__).with_name(bpe.VOCAB_FILE)
    merges = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]
    vocab = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    root = tmp_path_factory.mktemp("hf_clip")
    (root / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(str(root))


def _row(ids: list[int], length: int = 77) -> list[int]:
    """OpenAI's rule: start + ids + end, cut so that the last kept id is the end id, zero padded."""
    ids = [SOT, *ids, EOT]
    if len(ids) > length:
        ids = [*ids[: length - 1], EOT]
    return ids + [0] * (length - len(ids))


def test_matches_transformers_on_2000_varied_strings(hf_tokenizer: object) -> None:
    texts = _corpus()
    assert len(texts) >= 2000
    expected = hf_tokenizer([_openai_clean(t) for t in texts], add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    tok = ClipTokenizer()
    mismatches = [t for t, ids in zip(texts, expected, strict=True) if tok.encode(t) != ids]
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:3]!r}"
    rows = tokenize(texts)
    assert rows.dtype == torch.long and rows.shape == (len(texts), 77)
    assert rows.tolist() == [_row(ids) for ids in expected]
    assert sum(len(ids) + 2 > 77 for ids in expected) >= 100  # the truncation rule was really exercised


def test_plain_ascii_needs_no_cleaning_to_match_transformers(hf_tokenizer: object) -> None:
    texts = [t for t in _corpus() if t.isascii() and "&" not in t][:500]
    assert len(texts) >= 200
    expected = hf_tokenizer(texts, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    assert [ClipTokenizer().encode(t) for t in texts] == expected


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("fish &amp; chips", "fish & chips"),
        ("rock &amp;amp; roll", "rock & roll"),  # double-escaped scrape: OpenAI unescapes twice
        ("it&#39;s a &quot;dog&quot;", 'it\'s a "dog"'),
        ("1 &lt; 2 &gt; 0", "1 < 2 > 0"),
        ("don’t “quote” me", "don't \"quote\" me"),  # ftfy uncurls quotes
        ("cafÃ© au lait", "café au lait"),  # ftfy repairs UTF-8 read as Latin-1
        ("ｆｕｌｌ ﬁsh", "full fish"),  # ftfy undoes full width and ligatures
    ],
)
def test_openai_cleaning_that_transformers_skips(hf_tokenizer: object, raw: str, clean: str) -> None:
    # transformers' CLIPTokenizer does not run ftfy/html.unescape, so for these the reference is the
    # hand-cleaned text, and transformers on the raw text must indeed differ.
    expected = hf_tokenizer(clean, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    assert ClipTokenizer().encode(raw) == expected
    assert hf_tokenizer(raw, add_special_tokens=False)["input_ids"] != expected  # type: ignore[operator]


def test_ascii_fast_path_matches_full_cleaning() -> None:
    # clean_text skips ftfy for printable ASCII without "&"; check that against always running it.
    rng = random.Random(7)
    alphabet = string.printable + "&amp;&#39;\x0b\x0c\x1b\x00"
    texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(3000)]
    texts += ["A dog &amp; a cat", "tab\there", "caf\u00e9"]
    assert [bpe.clean_text(t) for t in texts] == [" ".join(_openai_clean(t).split()).lower() for t in texts]


def test_photo_of_a_cat_exact() -> None:
    row = tokenize("a photo of a cat")
    assert row.shape == (1, 77)
    assert row[0, :9].tolist() == [SOT, 320, 1125, 539, 320, 2368, EOT, 0, 0]
    assert int(row[0, 7:].abs().sum()) == 0


def test_vocabulary_layout() -> None:
    tok = ClipTokenizer()
    assert (tok.vocab_size, tok.sot_token_id, tok.eot_token_id, tok.context_length) == (49408, SOT, EOT, 77)
    assert len(bpe.read_merges()) == 48894
    assert tok.encode("!") == [256]  # first byte symbol with the word end
    assert tok.encode("") == [] and tok.encode(" \t\n ") == []


def test_truncation_keeps_end_id_last() -> None:
    tok = ClipTokenizer()
    text = " ".join(["dog"] * 75)
    assert len(tok.encode(text)) == 75
    fits = tok(text, truncate=False)
    assert fits[0, -1].item() == EOT and fits[0, -2].item() == tok.encode("dog")[0]
    long = tok(text + " cat", truncate=True)
    assert long[0, 0].item() == SOT and long[0, -1].item() == EOT
    assert long[0, 1:-1].tolist() == tok.encode(text)[:75]


def test_truncate_false_raises_naming_text_and_count() -> None:
    text = "cat " * 100
    with pytest.raises(TokenizerError, match=r"'cat cat .*\.\.\.' has 102 tokens .* context_length 77"):
        tokenize(["ok", text], truncate=False)
    assert issubclass(TokenizerError, ClipforgeError) and issubclass(TokenizerError, ValueError)


def test_batch_shapes_and_custom_context() -> None:
    assert tokenize([]).shape == (0, 77)
    assert tokenize([], context_length=16).shape == (0, 16)
    assert tokenize("").tolist() == [[SOT, EOT] + [0] * 75]
    rows = ClipTokenizer(context_length=8)(["a photo of a cat", "a dog"])
    assert rows.tolist() == [[SOT, 320, 1125, 539, 320, 2368, EOT, 0], [SOT, 320, 1929, EOT, 0, 0, 0, 0]]
    assert tokenize(("a", "b"), context_length=2).tolist() == [[SOT, EOT], [SOT, EOT]]
    with pytest.raises(ConfigError, match="context_length"):
        ClipTokenizer(context_length=1)


def test_literal_special_tokens_become_special_ids() -> None:
    # OpenAI's word pattern lists the specials first and the text is lowercased before splitting, so
    # a literal "<|endoftext|>" in any case is one special id (pretrained models saw exactly this).
    tok = ClipTokenizer()
    assert tok.encode("a <|endoftext|> b") == [320, EOT, 321]
    assert tok.encode("<|StartOfText|>") == [SOT]


def test_decode_round_trip() -> None:
    tok = ClipTokenizer()
    assert tok.decode(tokenize("A  Photo of a CAT!")[0].tolist()) == "a photo of a cat !"
    text = "héllo wörld 你好 🎉 </w> it's 3.14"
    # "</" is one punctuation run, so the literal "</w>" comes back spaced out.
    assert tok.decode(tok.encode(text)) == "héllo wörld 你好 🎉 </ w > it 's 3 . 1 4"


def test_bounded_cache_gives_same_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _corpus()[:300]
    expected = ClipTokenizer()(texts)
    monkeypatch.setattr(bpe, "MAX_CACHED_WORDS", 7)
    small = ClipTokenizer()
    assert torch.equal(small(texts), expected)
    assert torch.equal(small(texts), expected)
    assert len(small._cache) <= 7


def test_get_tokenizer() -> None:
    tok = get_tokenizer(TokenizerConfig(type="clip-bpe", context_length=32))
    assert isinstance(tok, ClipTokenizer) and tok("a cat").shape == (1, 32)
    with pytest.raises(ConfigError, match="'bogus'"):
        get_tokenizer(TokenizerConfig(type="bogus"))


def test_get_tokenizer_wordpiece() -> None:
    pytest.importorskip("clipforge.tokenizer.wordpiece")
    tok = get_tokenizer(TokenizerConfig(type="wordpiece", context_length=16))
    assert tok.context_length == 16
