"""OpenAI CLIP's byte-level BPE tokenizer: 49408 ids, start/end-of-text specials, zero padding.

Text is cleaned the way OpenAI cleans it (ftfy, HTML-unescape twice, collapse whitespace, lowercase),
split by CLIP's word pattern, each word mapped to printable unicode stand-ins of its UTF-8 bytes, then
merged pair by pair in merge-rank order. Words repeat a lot in captions, so the ids of every word are
cached and a warm batch costs little more than cleaning and splitting.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass

import ftfy
import regex
import torch

from clipforge.tokenizer.rows import check_context_length, fit, pack

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
NUM_MERGES = 49152 - 256 - 2  # OpenAI keeps this many merges so that the vocab has 49408 entries
WORD_END = "</w>"
# Specials first, so that a literal "<|endoftext|>" in a caption is one token, as in OpenAI's tokenizer.
WORD_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
MAX_CACHED_WORDS = 200_000


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """Maps each of the 256 byte values to a printable character, so BPE never sees whitespace/control.

    Printable Latin-1 bytes stand for themselves; the other bytes borrow code points from 256 upward.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    borrowed = (b for b in range(256) if b not in table)
    for offset, b in enumerate(borrowed):
        table[b] = chr(256 + offset)
    return table  # insertion order (printable bytes first) is the order of the first 256 vocab ids


@dataclass(frozen=True)
class BpeVocab:
    """The merge ranks and the token <-> id tables built from OpenAI's merges file."""

    ranks: dict[tuple[str, str], int]
    encoder: dict[str, int]
    decoder: dict[int, str]


def read_merges() -> list[tuple[str, str]]:
    """Reads the first NUM_MERGES merges of the packaged merges file (package data, so wheels work)."""
    data = importlib.resources.files("clipforge.tokenizer").joinpath(VOCAB_FILE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    # Line 0 is a version header.
    return [(a, b) for a, b in (line.split() for line in lines[1 : NUM_MERGES + 1])]


def build_vocab(merges: list[tuple[str, str]]) -> list[str]:
    """Lists tokens in id order: bytes, bytes ending a word, one token per merge, then the two specials."""
    symbols = list(byte_to_unicode().values())
    return [*symbols, *(s + WORD_END for s in symbols), *("".join(m) for m in merges), SOT, EOT]


@functools.cache
def load_vocab() -> BpeVocab:
    """Loads the packaged vocabulary once; every ClipTokenizer shares it."""
    merges = read_merges()
    encoder = {token: i for i, token in enumerate(build_vocab(merges))}
    return BpeVocab(
        ranks={pair: rank for rank, pair in enumerate(merges)},
        encoder=encoder,
        decoder={i: token for token, i in encoder.items()},
    )


def bpe_merge(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Merges adjacent symbols, best-ranked pair first, until no adjacent pair is a known merge.

    Every occurrence of the chosen pair is merged in one left-to-right pass, as in OpenAI's reference.
    """
    while len(symbols) > 1:
        pairs = zip(symbols, symbols[1:], strict=False)
        best = min(pairs, key=lambda pair: ranks.get(pair, NUM_MERGES))
        if best not in ranks:
            break
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def clean_text(text: str) -> str:
    """OpenAI's cleaning: fix mojibake, unescape HTML twice (for double-escaped scrapes), collapse
    whitespace, lowercase."""
    # ftfy is most of the cost of tokenizing a caption, and it leaves printable ASCII without HTML
    # entities unchanged (nothing to repair, uncurl, widen or normalize), so such text skips it.
    if not (text.isascii() and text.isprintable() and "&" not in text):
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """OpenAI CLIP's BPE tokenizer, with a per-word id cache.

    Args:
        context_length: length of the rows that `__call__` returns (start and end ids included).
    """

    def __init__(self, context_length: int = 77) -> None:
        check_context_length(context_length)
        self.context_length = context_length
        self._vocab = load_vocab()
        self._byte_map = byte_to_unicode()
        self._byte_unmap = {c: b for b, c in self._byte_map.items()}
        self.sot_token_id = self._vocab.encoder[SOT]
        self.eot_token_id = self._vocab.encoder[EOT]
        self.vocab_size = len(self._vocab.encoder)
        self._cache: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str) -> list[int]:
        """Cleans and encodes one text, without start/end ids."""
        ids: list[int] = []
        for word in WORD_PATTERN.findall(clean_text(text)):
            ids.extend(self._word_ids(word))
        return ids

    def _word_ids(self, word: str) -> tuple[int, ...]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if word in (SOT, EOT):
            ids: tuple[int, ...] = (self._vocab.encoder[word],)
        else:
            symbols = [self._byte_map[b] for b in word.encode("utf-8")]
            symbols[-1] += WORD_END
            ids = tuple(self._vocab.encoder[s] for s in bpe_merge(symbols, self._vocab.ranks))
        if len(self._cache) >= MAX_CACHED_WORDS:  # bounded memory on endless streams of novel words
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Turns ids back into (cleaned) text; drops the start id and stops at the first end id, so a
        padded row from `__call__` decodes to its text."""
        data = bytearray()
        for i in ids:
            if i == self.eot_token_id:
                break
            if i == self.sot_token_id:
                continue
            token = self._vocab.decoder[int(i)]
            word_end = token.endswith(WORD_END)
            data.extend(self._byte_unmap[c] for c in (token[: -len(WORD_END)] if word_end else token))
            if word_end:
                data.extend(b" ")
        return data.decode("utf-8", errors="replace").strip()

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None, truncate: bool = True
    ) -> torch.Tensor:
        """Encodes texts into a zero-padded LongTensor [N, context_length] of start + ids + end.

        Args:
            texts: one text or a sequence of texts.
            context_length: row length; the tokenizer's own by default.
            truncate: cut long texts so that the last kept id is the end id; if False, a text that does
                not fit raises TokenizerError.
        """
        length = self.context_length if context_length is None else context_length
        check_context_length(length)
        batch = [texts] if isinstance(texts, str) else texts
        sot, eot = self.sot_token_id, self.eot_token_id
        rows = [fit([sot, *self.encode(text), eot], eot, text, length, truncate, "start/end")
                for text in batch]
        return pack(rows, length)


@functools.cache
def default_tokenizer() -> ClipTokenizer:
    """The shared ClipTokenizer used by `tokenize`; built on first use so importing stays cheap."""
    return ClipTokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = 77, truncate: bool = True) -> torch.Tensor:
    """Tokenizes texts with OpenAI CLIP's BPE into a zero-padded LongTensor [N, context_length].

    This fits OpenAI-layout models (77 tokens). For any loaded model use the tokenizer `clipforge.load`
    returns instead: models trained here may read fewer tokens or WordPiece ids, and their `encode_text`
    refuses rows that do not fit (a one-line ModelInputError).

    Example: ``tokenize("a photo of a cat")[0, :7]`` is ``[49406, 320, 1125, 539, 320, 2368, 49407]``.
    """
    return default_tokenizer()(texts, context_length=context_length, truncate=truncate)
