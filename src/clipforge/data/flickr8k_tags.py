"""`flickr8k-tags`: a 10-class image classification task mined from Flickr8k's five captions per image.

The rule. Each caption is lower-cased and split into words (a-z runs). Keyword groups come in two tiers:
*topics* (dog, water, ball game, snow, bicycle, and four more) and *people* (man, woman, boy, girl, crowd).
A group is *mentioned* by a caption when the caption contains one of its words.

1. An image takes topic T when T is mentioned by at least 4 of its 5 captions and every other topic by at
   most 1 caption.
2. An image with no topic mentioned by 2 or more captions takes person group P under the same rule among the
   person groups.
3. Otherwise it is left out, as are the images of the four topics kept only to exclude their images
   (skateboard, climbing, horse, motorcycle: fewer than 20 test images each).

Counts on the standard splits (train / dev / test images): dog 910/160/136, water 449/84/101,
man 442/53/69, ball game 264/42/47, girl 265/42/46, boy 194/25/36, snow 200/31/31, bicycle 206/44/31,
woman 224/33/29, crowd 136/26/22 (3290/540/548 in all). The classes overlap in meaning (a boy is
also a child in the water); the task measures what the captions agree on, not a clean taxonomy.
"""

from __future__ import annotations

import re
from pathlib import Path

from clipforge.data.labelled import ClassificationData, LabelledImage
from clipforge.data.readers import Flickr8kData

TOPICS = {
    "dog": "dog dogs puppy puppies",
    "water": "water beach ocean sea lake river pool swimming swims swim surf surfer surfing surfboard "
             "waves wave splashing splashes",
    "ball game": "soccer football basketball baseball hockey tennis volleyball rugby lacrosse",
    "snow": "snow snowy ski skis skier skiers skiing snowboard snowboarder snowboarders snowboarding "
            "sled sledding",
    "bicycle": "bike bikes bicycle bicycles biker bikers bicyclist bicyclists cyclist cyclists bmx",
    "skateboard": "skateboard skateboards skateboarder skateboarders skateboarding",
    "climbing": "climber climbers climbing climbs",
    "horse": "horse horses pony ponies",
    "motorcycle": "motorcycle motorcycles motorbike motorbikes motorcyclist",
}
PEOPLE = {
    "man": "man men guy guys",
    "woman": "woman women lady ladies",
    "boy": "boy boys",
    "girl": "girl girls",
    "crowd": "crowd people",
}
CLASSES = ("dog", "water", "man", "ball game", "girl", "boy", "snow", "bicycle", "woman", "crowd")
MIN_CAPTIONS = 4  # a group must be mentioned by this many captions ...
MAX_OTHER = 1  # ... and every other group of its tier by at most this many
_WORD = re.compile(r"[a-z]+")
_TOPIC_WORDS = {group: frozenset(words.split()) for group, words in TOPICS.items()}
_PEOPLE_WORDS = {group: frozenset(words.split()) for group, words in PEOPLE.items()}


def _mentions(groups: dict[str, frozenset[str]], captions: list[set[str]]) -> dict[str, int]:
    return {group: sum(bool(words & caption) for caption in captions) for group, words in groups.items()}


def _unique(mentions: dict[str, int]) -> str | None:
    strong = [group for group, n in mentions.items() if n >= MIN_CAPTIONS]
    if len(strong) != 1:
        return None
    return strong[0] if all(n <= MAX_OTHER for g, n in mentions.items() if g != strong[0]) else None


def tag(captions: tuple[str, ...] | list[str]) -> str | None:
    """The group the rule in the module docstring gives an image with these captions, or None."""
    words = [set(_WORD.findall(caption.lower())) for caption in captions]
    topics = _mentions(_TOPIC_WORDS, words)
    topic = _unique(topics)
    if topic is not None:
        return topic
    if max(topics.values()) > MAX_OTHER:
        return None
    return _unique(_mentions(_PEOPLE_WORDS, words))


def flickr8k_tags(name: str, root: Path, split: str | None) -> ClassificationData:
    """The tagged images of a Flickr8k split (all splits when `split` is None), labelled by `CLASSES`."""
    source = Flickr8kData(name, root, split)
    items = []
    for record in source.records():
        group = tag(record.captions)
        if group in CLASSES:
            items.append(LabelledImage(record.key, CLASSES.index(group), record.source))
    data = ClassificationData(name, CLASSES, items)
    data.bad = source.bad
    return data

