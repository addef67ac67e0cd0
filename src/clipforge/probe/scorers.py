"""How a sentence is scored against an image: whole, or as a sum over its relation clauses.

``cosine`` scores the sentence as CLIP does. ``compositional`` follows "Learning to Compose Visual
Relations" (Liu et al., 2021): a description of several relations is a set of relation clauses, each
scored on its own, and the scores are summed (their energies add), so one clause that fits well cannot
hide another that does not.
"""

from __future__ import annotations

import re

from clipforge.errors import ConfigError
from clipforge.probe.spatial import relation_spans

SCORERS = ("cosine", "compositional")

# Clause boundaries: commas, semicolons and the conjunctions that join two relations.
_BOUNDARY = re.compile(r"\s*[,;]\s*(?:and\s+)?|\s+(?:and|while|whereas)\s+", re.IGNORECASE)


def check_scorer(name: str) -> str:
    """Returns `name` when it is a known scorer.

    Raises:
        ConfigError: for an unknown scorer.
    """
    if name not in SCORERS:
        raise ConfigError(f"unknown scorer '{name}' (known: {', '.join(SCORERS)})")
    return name


def sentence_parts(sentence: str, scorer: str) -> list[str]:
    """The texts whose scores add up to the sentence's score under `scorer`."""
    return [sentence] if check_scorer(scorer) == "cosine" else relation_clauses(sentence)


def relation_clauses(sentence: str) -> list[str]:
    """Splits a caption into clauses holding one relation each.

    Pieces between boundaries that hold no relation ("a black" in "a black and white dog left of a
    cat") stay with their neighbour, with the original separator; a clause that starts with its
    relation ("... and above a box") borrows the subject of the clause before it.
    """
    pieces = _split_keeping_separators(sentence)
    clauses: list[str] = []
    pending = ""
    for separator, piece in pieces:
        if not relation_spans(piece):
            # No relation of its own: glue it to the previous clause, or to the next one at the start.
            if clauses:
                clauses[-1] += separator + piece
            else:
                pending += separator + piece
            continue
        piece = (pending + separator + piece).strip() if pending else piece
        pending = ""
        clauses.append(_with_subject(piece, clauses[-1] if clauses else None))
    return clauses or [sentence.strip()]


def _split_keeping_separators(sentence: str) -> list[tuple[str, str]]:
    """``(separator before, piece)`` pairs; the first separator is empty."""
    parts: list[tuple[str, str]] = []
    start, separator = 0, ""
    for match in _BOUNDARY.finditer(sentence):
        parts.append((separator, sentence[start : match.start()]))
        start, separator = match.end(), match.group(0)
    parts.append((separator, sentence[start:]))
    return [(sep, piece) for sep, piece in parts if piece.strip()]


def _with_subject(clause: str, previous: str | None) -> str:
    """Prefixes the previous clause's subject when `clause` starts with its relation."""
    spans = relation_spans(clause)
    if previous is None or spans[0][0] > 0:
        return clause.strip()
    subject = previous[: relation_spans(previous)[0][0]].strip()
    return f"{subject} {clause.strip()}" if subject else clause.strip()
