"""Finding relation phrases in a sentence: confusion-table labels and clause boundaries.

The edits themselves (a phrase swapped for its antonym in free text) live in
`clipforge.data.negatives`, shared with training; this module only *finds* relations.
"""

from __future__ import annotations

import re

# Opposites of the prepositions probe formats name (SpatialVOC2K's, What'sUp's); longer phrases first.
ANTONYMS: dict[str, str] = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "left of": "right of",
    "right of": "left of",
    "in front of": "behind",
    "behind": "in front of",
    "on top of": "under",
    "underneath": "on top of",
    "under": "on top of",
    "beneath": "above",
    "above": "below",
    "below": "above",
    "over": "under",
    "inside of": "outside of",
    "outside of": "inside of",
    "inside": "outside",
    "outside": "inside",
    "into": "out of",
    "out of": "into",
    "far from": "near",
    "next to": "far from",
    "near": "far from",
    "towards": "away from",
    "toward": "away from",
    "away from": "towards",
    "up": "down",
    "down": "up",
}
# Relations without a clean antonym that still mark a relation clause.
_CLAUSE_ONLY = ("beside", "between", "on", "in", "at", "by")
# "up", "down" and "over" are relations only before a noun phrase ("climbs up a rock"), not as verb
# particles ("picks up", "bends over").
_NEEDS_OBJECT = ("up", "down", "over")
_OBJECT_AHEAD = r"(?=\s+(?:a|an|the|some|this|that|his|her|their|its)\b)"


def _alternation(phrases: list[str]) -> str:
    parts = []
    for phrase in sorted(phrases, key=len, reverse=True):
        body = r"\s+".join(map(re.escape, phrase.split()))
        parts.append(body + _OBJECT_AHEAD if phrase in _NEEDS_OBJECT else body)
    return r"\b(?:" + "|".join(parts) + r")\b"


_RELATION_RE = re.compile(_alternation(sorted(set(ANTONYMS) | set(_CLAUSE_ONLY))), re.IGNORECASE)
_SIDE_PREFIX = re.compile(r"^(?:to|on) the (left|right)(?: side)? of$")


def relation_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the relation phrases of `text`, in order."""
    return [(m.start(), m.end()) for m in _RELATION_RE.finditer(text)]


def relation_label(sentence: str) -> str | None:
    """The first relation phrase of `sentence`, lower case ("to the left of"), or None."""
    spans = relation_spans(sentence)
    if not spans:
        return None
    start, end = spans[0]
    return " ".join(sentence[start:end].lower().split())


def canonical_relation(label: str) -> str:
    """Folds spellings of one relation together ("to the left of" -> "left of", "in-front" -> "in front")."""
    label = " ".join(label.replace("-", " ").replace("_", " ").lower().split())
    match = _SIDE_PREFIX.match(label)
    return f"{match.group(1)} of" if match else label
