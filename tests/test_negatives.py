import random

import pytest

from clipforge.data.negatives import spatial_swaps, swap_all, text_hard_negatives


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a dog runs into the water", "a dog runs out of the water"),
        ("A dog jumps out of the pool", "A dog jumps into the pool"),
        ("the cat is to the left of the car", "the cat is to the right of the car"),
        ("a man stands in front of a building", "a man stands behind a building"),
        ("Behind the fence a horse grazes", "In front of the fence a horse grazes"),
        ("a cat sleeping on  top of the car", "a cat sleeping underneath the car"),
        ("a boy climbs up the stairs", "a boy climbs down the stairs"),
        ("a skier going downhill", "a skier going uphill"),
        ("a ball in his left hand", "a ball in his right hand"),
        ("a lamp above the table", "a lamp below the table"),
        ("a child inside a tent", "a child outside a tent"),
    ],
)
def test_single_swaps(caption: str, expected: str) -> None:
    swaps = spatial_swaps(caption)
    assert swaps and swaps[0].text == expected


def test_tricky_non_spatial_words_are_left_alone() -> None:
    assert spatial_swaps("she left the room") == []
    assert spatial_swaps("that is right") == []
    assert spatial_swaps("a group of people at a wedding") == []  # "up" inside "group" must not match
    assert spatial_swaps("a downtown street with topiary") == []  # nor "down"/"top" inside words
    assert swap_all("a dog on the grass") is None
    assert spatial_swaps("a boy picks up a ball") == []  # particle, not a direction
    assert spatial_swaps("a man bends over") == []
    assert spatial_swaps("a woman on an outside bench") == []
    assert spatial_swaps("a girl in a tank top") == []
    assert [s.text for s in spatial_swaps("a dog at the top of the hill")] == [
        "a dog at the bottom of the hill"
    ]


def test_multiple_phrases() -> None:
    caption = "a dog runs up the hill toward the man"
    swaps = spatial_swaps(caption)
    assert [s.tag for s in swaps] == ["up", "toward"]
    assert swaps[0].text == "a dog runs down the hill toward the man"
    assert swap_all(caption) == "a dog runs down the hill away from the man"


def test_hard_negatives_are_distinct_and_false() -> None:
    caption = "a cat under a table next to a dog"
    negatives = text_hard_negatives(caption, 5, random.Random(0))
    assert len(negatives) == len(set(negatives)) == 3
    assert caption not in negatives
    assert text_hard_negatives("two dogs play", 3, random.Random(0)) == []
