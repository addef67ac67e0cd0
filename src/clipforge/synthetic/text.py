"""Captions, truth, hard negatives and probe items for synthetic scenes, all built from exact metadata.

A caption is structured (`Caption`: phrases + relation + template) and only rendered to text at the
end, so a hard negative is an edit of the structure that is kept only when `is_false` proves it false
for the scene. Semantics:

- relation caption "a A rel a B": true when some object matching A has the labelled relation to some
  other object matching B; false when no such pair could have it even within the margin.
- attribute caption "a A and a B": true when each phrase matches an object; false when one matches none.
- count caption "two A and one B": each phrase matches exactly that many objects (size is not named).

A phrase matches an object of its colour and shape (and size, when it names one).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from clipforge.errors import ConfigError, DataError
from clipforge.synthetic.scene import (
    COLORS,
    OPPOSITE,
    SHAPES,
    SPATIAL_RELATIONS,
    Relation,
    Scene,
    SceneConfig,
    SceneObject,
    fits_split,
    names_heldout,
    relation_plausible,
    scene_rng,
    swap_places,
)

CAPTION_KINDS = ("relation", "attribute", "count")
NEGATIVE_KINDS = ("relation_swap", "argument_swap", "attribute_swap", "object_swap", "count")
RELATION_WORDS = {
    "left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below",
    "in front of": "in front of", "behind": "behind",
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
TEMPLATES = {
    "relation": ("{a} {rel} {b}", "{the_a} is {rel} {the_b}", "a photo of {a} {rel} {b}",
                 "there is {a} {rel} {b}"),
    "attribute": ("{objects}", "a photo of {objects}", "an image with {objects}"),
    "count": ("{objects}", "a picture of {objects}", "an image showing {objects}"),
}


@dataclass(frozen=True)
class Phrase:
    """A noun phrase: "a small red circle" (count None: at least one) or "two red circles" (exactly two)."""

    color: str
    shape: str
    size: str | None = None
    count: int | None = None

    def matches(self, obj: SceneObject) -> bool:
        return obj.color == self.color and obj.shape == self.shape and self.size in (None, obj.size)

    def words(self) -> str:
        """The phrase without its determiner, e.g. "small red circle" or "red crosses"."""
        plural = self.shape + ("es" if self.shape.endswith("s") else "s")
        noun = self.shape if self.count in (None, 1) else plural
        return " ".join(w for w in (self.size, self.color, noun) if w)

    def text(self) -> str:
        if self.count is not None:
            return f"{NUMBER_WORDS[self.count]} {self.words()}"
        words = self.words()
        return ("an " if words[0] in "aeiou" else "a ") + words


@dataclass(frozen=True)
class Caption:
    """A structured caption; `text` renders it with template number `template` of its kind."""

    kind: str
    phrases: tuple[Phrase, ...]
    relation: str | None = None
    template: int = 0

    @cached_property
    def text(self) -> str:
        template = TEMPLATES[self.kind][self.template]
        if self.kind == "relation":
            a, b = self.phrases
            return template.format(a=a.text(), b=b.text(), the_a=f"the {a.words()}", the_b=f"the {b.words()}",
                                   rel=RELATION_WORDS[str(self.relation)])
        return template.format(objects=_join([p.text() for p in self.phrases]))


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _matching(scene: Scene, phrase: Phrase) -> list[int]:
    return [i for i, obj in enumerate(scene.objects) if phrase.matches(obj)]


def _pairs(scene: Scene, caption: Caption) -> list[tuple[int, int]]:
    a, b = caption.phrases
    return [(i, j) for i in _matching(scene, a) for j in _matching(scene, b) if i != j]


def _phrase_holds(scene: Scene, phrase: Phrase) -> bool:
    found = len(_matching(scene, phrase))
    return found >= 1 if phrase.count is None else found == phrase.count


def is_true(scene: Scene, caption: Caption) -> bool:
    """Whether the scene's metadata makes the caption true (see the module docstring)."""
    if caption.kind == "relation":
        relation = str(caption.relation)
        return any(Relation(i, relation, j) in scene.relations for i, j in _pairs(scene, caption))
    return all(_phrase_holds(scene, p) for p in caption.phrases)


def is_false(scene: Scene, caption: Caption) -> bool:
    """Whether the caption is definitely false; a relation inside the margin is neither true nor false."""
    if caption.kind == "relation":
        relation = str(caption.relation)
        return not any(relation_plausible(scene, i, j, relation) for i, j in _pairs(scene, caption))
    return not all(_phrase_holds(scene, p) for p in caption.phrases)


def caption_names_heldout(caption: Caption, config: SceneConfig) -> bool:
    """Whether the caption names a held-out (colour, shape) object or (shape, relation) of `config`."""
    a, *rest = caption.phrases
    relation = None if caption.relation is None else (a.shape, caption.relation, rest[0].shape)
    return names_heldout(config, ((p.color, p.shape) for p in caption.phrases), relation)


def describe(scene: Scene, index: int, with_size: bool) -> Phrase | None:
    """The phrase that names object `index` alone (adding its size if needed); None if none does."""
    obj = scene.objects[index]
    plain = Phrase(obj.color, obj.shape)
    if len(_matching(scene, plain)) == 1:
        return Phrase(obj.color, obj.shape, obj.size) if with_size else plain
    sized = Phrase(obj.color, obj.shape, obj.size)
    return sized if len(_matching(scene, sized)) == 1 else None


def relation_caption(scene: Scene, rng: random.Random, size_prob: float = 0.0,
                     template: int | None = None) -> Caption | None:
    """A relation caption about a random labelled pair whose objects can be named; None if there is none."""
    candidates = []
    for rel in scene.relations:
        a = describe(scene, rel.subject, rng.random() < size_prob)
        b = describe(scene, rel.object, rng.random() < size_prob)
        if a is not None and b is not None:
            candidates.append((a, rel.relation, b))
    if not candidates:
        return None
    a, relation, b = rng.choice(candidates)
    return Caption("relation", (a, b), relation, _template("relation", template, rng))


def attribute_caption(scene: Scene, rng: random.Random, size_prob: float = 0.0,
                      template: int | None = None) -> Caption:
    """Names every distinct kind of object once, in random order: "a red circle and a small blue square"."""
    phrases: list[Phrase] = []
    for obj in scene.objects:
        phrase = Phrase(obj.color, obj.shape, obj.size if rng.random() < size_prob else None)
        if all((p.color, p.shape) != (phrase.color, phrase.shape) for p in phrases):
            phrases.append(phrase)
    rng.shuffle(phrases)
    return Caption("attribute", tuple(phrases), None, _template("attribute", template, rng))


def count_caption(scene: Scene, rng: random.Random, template: int | None = None) -> Caption:
    """Counts objects per colour and shape: "two green triangles and one red circle"."""
    counts = Counter((obj.color, obj.shape) for obj in scene.objects)
    phrases = [Phrase(color, shape, None, n) for (color, shape), n in counts.items()]
    rng.shuffle(phrases)
    return Caption("count", tuple(phrases), None, _template("count", template, rng))


def _template(kind: str, template: int | None, rng: random.Random) -> int:
    return rng.randrange(len(TEMPLATES[kind])) if template is None else template


def sample_caption(scene: Scene, config: SceneConfig, rng: random.Random) -> Caption:
    """A caption drawn with ``config.caption_weights`` among the kinds the scene supports."""
    relation = relation_caption(scene, rng, config.size_in_caption)
    weights = list(config.caption_weights)
    if relation is None:
        weights[0] = 0.0
    if sum(weights) == 0:
        weights = [0.0, 1.0, 0.0]
    kind = rng.choices(CAPTION_KINDS, weights=weights)[0]
    if kind == "relation" and relation is not None:
        return relation
    if kind == "count":
        return count_caption(scene, rng)
    return attribute_caption(scene, rng, config.size_in_caption)


def scene_caption(scene: Scene, config: SceneConfig) -> Caption:
    """The scene's own caption: the one `SyntheticScenes` trains on and ``captions.csv`` lists."""
    return sample_caption(scene, config, scene_rng(scene.seed, scene.split, scene.index, "caption"))


# An edit lists its candidate captions as cheap builders; `hard_negative` builds them one at a time.
Builder = Callable[[], Caption]


def _swap_relation(caption: Caption) -> list[Builder]:
    if caption.kind != "relation":
        return []
    opposite = OPPOSITE[str(caption.relation)]
    return [partial(Caption, caption.kind, caption.phrases, opposite, caption.template)]


def _swap_arguments(caption: Caption) -> list[Builder]:
    if caption.kind != "relation":
        return []
    return [partial(Caption, caption.kind, caption.phrases[::-1], caption.relation, caption.template)]


def _swap_attributes(caption: Caption) -> list[Builder]:
    """Exchanges the colours of two phrases; a lone phrase gets another colour instead."""
    phrases = caption.phrases
    if len(phrases) == 1:
        return [partial(_edit, caption, {0: {"color": c}}) for c in COLORS if c != phrases[0].color]
    return [partial(_edit, caption, {i: {"color": phrases[j].color}, j: {"color": phrases[i].color}})
            for i in range(len(phrases)) for j in range(i + 1, len(phrases))
            if phrases[i].color != phrases[j].color]


def _swap_objects(caption: Caption) -> list[Builder]:
    """Replaces the shape of one phrase by another shape."""
    return [partial(_edit, caption, {k: {"shape": shape}})
            for k, phrase in enumerate(caption.phrases) for shape in SHAPES if shape != phrase.shape]


def _change_count(caption: Caption) -> list[Builder]:
    if caption.kind != "count":
        return []
    return [partial(_edit, caption, {k: {"count": n}})
            for k, phrase in enumerate(caption.phrases) for n in range(1, len(NUMBER_WORDS))
            if n != phrase.count]


def _edit(caption: Caption, changes: dict[int, dict[str, Any]]) -> Caption:
    """The caption with phrase k changed by ``changes[k]`` (field -> new value)."""
    phrases = tuple(_changed(p, changes[k]) if k in changes else p for k, p in enumerate(caption.phrases))
    return Caption(caption.kind, phrases, caption.relation, caption.template)


def _changed(phrase: Phrase, change: dict[str, Any]) -> Phrase:
    """`dataclasses.replace` written out: edits are built for every training sample, and it is slow."""
    return Phrase(change.get("color", phrase.color), change.get("shape", phrase.shape),
                  change.get("size", phrase.size), change.get("count", phrase.count))


_EDITS: dict[str, Callable[[Caption], list[Builder]]] = {
    "relation_swap": _swap_relation,
    "argument_swap": _swap_arguments,
    "attribute_swap": _swap_attributes,
    "object_swap": _swap_objects,
    "count": _change_count,
}


def hard_negative(scene: Scene, caption: Caption, kind: str, rng: random.Random,
                  heldout: SceneConfig | None = None) -> Caption | None:
    """A random edit of `kind` that is definitely false for the scene, or None when none is.

    Kinds: ``relation_swap`` (left<->right, above<->below, in front<->behind), ``argument_swap``
    (A rel B -> B rel A), ``attribute_swap`` (colours of two phrases exchanged; a lone phrase is recoloured),
    ``object_swap`` (one shape replaced), ``count`` (one number changed; count captions only).
    With `heldout` given (training), an edit that names one of its held-out combinations is never chosen:
    the pick is uniform among the other false edits (see `caption_names_heldout`).
    """
    if kind not in _EDITS:
        raise ConfigError(f"unknown hard-negative kind {kind!r} (known: {', '.join(NEGATIVE_KINDS)})")
    builders = _EDITS[kind](caption)
    rng.shuffle(builders)
    for build in builders:
        edited = build()
        if is_false(scene, edited) and edited.text != caption.text and not (
                heldout is not None and caption_names_heldout(edited, heldout)):
            return edited
    return None


def hard_negatives(scene: Scene, caption: Caption, kinds: tuple[str, ...] | list[str],
                   rng: random.Random) -> list[str]:
    """Texts of one hard negative per kind in `kinds` that applies to the caption (others are skipped)."""
    found = (hard_negative(scene, caption, kind, rng) for kind in kinds)
    return [negative.text for negative in found if negative is not None]


def padded_negatives(scene: Scene, caption: Caption, kinds: tuple[str, ...] | list[str],
                     rng: random.Random, config: SceneConfig) -> list[str]:
    """Exactly ``len(kinds)`` false training captions: slot k holds a negative of ``kinds[k]`` when that
    kind applies, otherwise the k-th (cyclically) of the spare negatives: those of kinds outside `kinds`
    first, then the other slots'. So an unfit first slot gets a distinct negative rather than a copy of the
    second whenever another kind applies (chosen on validation scenes, RESULTS "quickstart-pad"); with no
    negative at all, a caption naming an object the scene lacks.

    None names a held-out combination of `config` (`hard_negative`'s `heldout`): no training scene
    shows one, so such a negative could only teach that the held-out wording is false.
    """
    slots = [hard_negative(scene, caption, kind, rng, config) for kind in kinds]
    if all(slots):
        return [slot.text for slot in slots if slot is not None]
    others = (hard_negative(scene, caption, k, rng, config) for k in NEGATIVE_KINDS if k not in kinds)
    spare = [n for n in others if n is not None] + [n for n in slots if n is not None]
    spare = spare or [_absent_object(scene, config)]
    return [(slot or spare[k % len(spare)]).text for k, slot in enumerate(slots)]


def _absent_object(scene: Scene, config: SceneConfig) -> Caption:
    present = {(obj.color, obj.shape) for obj in scene.objects}.union(config.heldout_pairs)
    color, shape = next((c, s) for c in COLORS for s in SHAPES if (c, s) not in present)
    return Caption("attribute", (Phrase(color, shape),), None, 0)


def counterfactual_scene(scene: Scene, caption: Caption, config: SceneConfig) -> Scene | None:
    """The scene with the two objects its spatial relation caption names in each other's places: the same
    objects, colours and style draw, and the caption definitely false. A hard-negative *image* for the
    caption, which only where the objects are can tell apart.

    None when the caption states no spatial relation, the swapped objects do not fit (`swap_places`), or
    the new scene would show a combination its split holds out (`fits_split`).
    """
    if caption.kind != "relation" or caption.relation not in SPATIAL_RELATIONS:
        return None
    relation = str(caption.relation)
    pairs = [(i, j) for i, j in _pairs(scene, caption) if Relation(i, relation, j) in scene.relations]
    swapped = swap_places(scene, *pairs[0]) if pairs else None
    if swapped is None or not is_false(swapped, caption) or not fits_split(swapped, config):
        return None
    return swapped


@dataclass(frozen=True)
class ProbeItem:
    """One probe: the model passes when `true` outscores every sentence in `false`.

    Attributes:
        scene: scene id (line number in ``scenes.jsonl``; position in the split in memory).
        image: image path relative to the dataset folder, e.g. ``images/000123.png``.
        tag: the probe kind, one of `NEGATIVE_KINDS`.
        true: a caption true for the scene.
        false: captions definitely false for the scene.
        relation: the relation of the true caption ("left of", ...), None for other captions.
        split: the scene's split (``test``, ``test_heldout``, ``test_style``, ...).
    """

    scene: int
    image: str
    tag: str
    true: str
    false: tuple[str, ...]
    relation: str | None = None
    split: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "true": self.true, "false": list(self.false), "tag": self.tag,
                "relation": self.relation, "scene": self.scene, "split": self.split}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeItem:
        """Parses a ``probes.jsonl`` line.

        Raises:
            DataError: a key is missing or malformed.
        """
        try:
            return cls(int(data["scene"]), str(data["image"]), str(data["tag"]), str(data["true"]),
                       tuple(str(f) for f in data["false"]), data.get("relation"), data.get("split"))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"malformed probe record (bad or missing key {err})") from err


def same_color_pair(caption: str) -> bool:
    """Whether a caption names exactly two objects and both by the same colour ("a red circle above a red
    star"): a relation between them cannot be told by where each colour is, only by telling them apart."""
    colors = [word for word in caption.split() if word in COLORS]
    return len(colors) == 2 and colors[0] == colors[1]


def image_name(scene_id: int) -> str:
    """Where a scene's image lives relative to the dataset folder."""
    return f"images/{scene_id:06d}.png"


def probe_items(scene: Scene, scene_id: int) -> list[ProbeItem]:
    """Probe items of one scene, one per kind that applies, with canonical (template 0) captions.

    Swaps apply to a relation caption of the scene when it has one (else to its attribute caption);
    ``count`` applies to its count caption.
    """
    return [ProbeItem(scene_id, image_name(scene_id), kind, true.text, (false.text,), true.relation,
                      scene.split) for kind, true, false in probe_captions(scene)]


def probe_captions(scene: Scene) -> list[tuple[str, Caption, Caption]]:
    """``(kind, true caption, false caption)`` of each probe item of the scene, in `probe_items` order."""
    rng = scene_rng(scene.seed, scene.split, scene.index, "probe")
    base = relation_caption(scene, rng, template=0) or attribute_caption(scene, rng, template=0)
    bases = {kind: base for kind in NEGATIVE_KINDS}
    bases["count"] = count_caption(scene, rng, template=0)
    captions = []
    for kind in NEGATIVE_KINDS:
        negative = hard_negative(scene, bases[kind], kind, rng)
        if negative is not None:
            captions.append((kind, bases[kind], negative))
    return captions
