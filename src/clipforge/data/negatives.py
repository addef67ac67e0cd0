"""Rule-based hard negatives for free text: swap a spatial phrase for its antonym, grammar kept.

"a dog runs into the water" -> "a dog runs out of the water". The same rules serve training (NegCLIP-style
negative captions) and the probe's preposition-swap suite, so both see exactly the same edits.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache

# (phrase, antonym, tag). Longer phrases come first so "in front of" wins over "front"; the tag names the
# relation the phrase expresses, so per-tag accuracies pool spelling variants.
_RULES: tuple[tuple[str, str, str], ...] = (
    ("to the left of", "to the right of", "left of"),
    ("to the right of", "to the left of", "right of"),
    ("on the left side of", "on the right side of", "left of"),
    ("on the right side of", "on the left side of", "right of"),
    ("in front of", "behind", "in front of"),
    ("on top of", "underneath", "on top of"),
    ("out of", "into", "out of"),
    ("inside of", "outside of", "inside"),
    ("outside of", "inside of", "outside"),
    ("far from", "near", "far from"),
    ("away from", "toward", "away from"),
    ("next to", "far from", "next to"),
    ("underneath", "on top of", "under"),
    ("beneath", "above", "under"),
    ("behind", "in front of", "behind"),
    ("above", "below", "above"),
    ("below", "above", "below"),
    ("under", "over", "under"),
    ("over", "under", "over"),
    ("inside", "outside", "inside"),
    ("outside", "inside", "outside"),
    ("into", "out of", "into"),
    ("onto", "off", "onto"),
    ("towards", "away from", "toward"),
    ("toward", "away from", "toward"),
    ("near", "far from", "near"),
    ("uphill", "downhill", "up"),
    ("downhill", "uphill", "down"),
    ("upstairs", "downstairs", "up"),
    ("downstairs", "upstairs", "down"),
    ("upward", "downward", "up"),
    ("downward", "upward", "down"),
    ("up", "down", "up"),
    ("down", "up", "down"),
    ("top", "bottom", "top"),
    ("bottom", "top", "bottom"),
)
# Bare left/right are swapped only where they are spatial ("his left hand", "on the right"), not the verb
# "left" ("she left the room") or "right" meaning correct.
_SIDE = r"(?:(?<=\bthe )|(?<=\bhis )|(?<=\bher )|(?<=\bits )|(?<=\btheir )|(?<=\bmy ))(left|right)\b"


_DETERMINERS = {"a", "an", "the", "his", "her", "its", "their", "some", "my", "this", "that", "two", "three"}
# Verbs whose "up"/"down"/"over" is a particle, not a direction: "picks up a ball" has no spatial antonym.
_PARTICLE_VERBS = {
    "pick",
    "picks",
    "picked",
    "picking",
    "hold",
    "holds",
    "holding",
    "bend",
    "bends",
    "bending",
    "bent",
    "roll",
    "rolls",
    "rolling",
    "set",
    "sets",
    "setting",
    "give",
    "gives",
    "giving",
    "turn",
    "turns",
    "turning",
    "take",
    "takes",
    "taking",
}


def _is_spatial(caption: str, match: re.Match[str]) -> bool:
    """Filters uses where a phrase is not a spatial relation ("an outside bench", "a tank top")."""
    key = match.group(0).lower()
    before = caption[: match.start()].lower().split()[-1:] or [""]
    after = caption[match.end() :].lower().split()[:1] or [""]
    if key in ("up", "down", "over"):
        return after[0] in _DETERMINERS and before[0] not in _PARTICLE_VERBS
    if key in ("inside", "outside"):
        return before[0] not in ("a", "an", "the")
    if key in ("top", "bottom"):
        return after[0] == "of"
    return True


def _matches(caption: str) -> list[re.Match[str]]:
    return [m for m in _pattern().finditer(caption) if _is_spatial(caption, m)]


@dataclass(frozen=True)
class SpatialSwap:
    """One spatial phrase of a caption replaced by its antonym."""

    phrase: str
    antonym: str
    tag: str
    text: str


@cache
def _pattern() -> re.Pattern[str]:
    phrases = sorted({p for p, _, _ in _RULES}, key=len, reverse=True)
    words = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in phrases)
    return re.compile(rf"\b(?:{words})\b|{_SIDE}", re.IGNORECASE)


def _lookup(matched: str) -> tuple[str, str]:
    key = " ".join(matched.lower().split())
    if key in ("left", "right"):
        return ("right" if key == "left" else "left"), f"{key} of"
    for phrase, antonym, tag in _RULES:
        if phrase == key:
            return antonym, tag
    raise KeyError(key)


def _match_case(source: str, replacement: str) -> str:
    return replacement[:1].upper() + replacement[1:] if source[:1].isupper() else replacement


def spatial_swaps(caption: str) -> list[SpatialSwap]:
    """Every single-phrase swap of `caption`, in reading order (empty when it has no spatial phrase)."""
    swaps = []
    for match in _matches(caption):
        antonym, tag = _lookup(match.group(0))
        replacement = _match_case(match.group(0), antonym)
        text = caption[: match.start()] + replacement + caption[match.end() :]
        swaps.append(SpatialSwap(" ".join(match.group(0).lower().split()), antonym, tag, text))
    return swaps


def swap_all(caption: str) -> str | None:
    """The caption with every spatial phrase swapped at once, or None when it has none."""
    matches = _matches(caption)
    if not matches:
        return None
    pieces, last = [], 0
    for m in matches:
        pieces += [caption[last : m.start()], _match_case(m.group(0), _lookup(m.group(0))[0])]
        last = m.end()
    return "".join(pieces) + caption[last:]


def text_hard_negatives(caption: str, k: int, rng: random.Random) -> list[str]:
    """Up to `k` distinct negative captions made by spatial swaps (fewer if the caption has fewer phrases)."""
    candidates = list(dict.fromkeys(s.text for s in spatial_swaps(caption)))
    every = swap_all(caption)
    if every is not None and every not in candidates:
        candidates.append(every)
    rng.shuffle(candidates)
    return candidates[:k]
