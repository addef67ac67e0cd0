"""Typographic attacks: the rendered text is where it is stated, seeded, and fits the centre crop."""

import numpy as np
import pytest
from PIL import Image

from clipforge.data.typographic import COLOURS, HEIGHTS, POSITIONS, TextStyle, sample_style, write_text
from clipforge.errors import ConfigError

GREY = (120, 130, 140)


def _changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    return (np.asarray(before, dtype=int) != np.asarray(after, dtype=int)).any(axis=-1)  # [H, W]


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("size", [(64, 64), (500, 375), (375, 500), (48, 48)])
@pytest.mark.parametrize("word", ["dog", "ball game", "a rather long written label"])
def test_text_changes_pixels_inside_its_box_only(size: tuple[int, int], word: str) -> None:
    rng = np.random.default_rng(1)
    for background in (Image.new("RGB", size, GREY), _noise(size)):
        for _ in range(6):
            after, (left, top, right, bottom) = write_text(background, word, sample_style(rng))
            changed = _changed(background, after)
            assert right > left and bottom > top
            assert changed[top:bottom, left:right].mean() > 0.15  # the box is mostly ink, not empty
            assert changed.sum() == changed[top:bottom, left:right].sum()  # nothing outside it changed
            side = min(size)
            square_x, square_y = (size[0] - side) // 2, (size[1] - side) // 2
            assert square_x <= left and right <= square_x + side  # a center crop keeps the whole word
            assert square_y <= top and bottom <= square_y + side


def test_position_size_and_colour_are_as_stated() -> None:
    image = Image.new("RGB", (300, 200), GREY)
    boxes = {}
    for position in POSITIONS:
        style = TextStyle(0.18, position, 0.0, (255, 0, 0), (255, 255, 255))
        after, boxes[position] = write_text(image, "cat", style)
        pixels = np.asarray(after)[_changed(image, after)]
        assert ((pixels == (255, 0, 0)).all(axis=1)).any() and ((pixels == 255).all(axis=1)).any()
        assert boxes[position][0] == 50  # x = 0: the left edge of the 200-pixel centre square
    assert boxes["top"][1] < boxes["middle"][1] < boxes["bottom"][1]
    small = write_text(image, "cat", TextStyle(0.12, "top", 0, (0, 0, 0), (255, 255, 255)))[1]
    large = write_text(image, "cat", TextStyle(0.25, "top", 0, (0, 0, 0), (255, 255, 255)))[1]
    assert large[3] - large[1] > 1.5 * (small[3] - small[1])


def test_the_same_style_and_word_give_the_same_pixels_and_other_words_do_not() -> None:
    image = _noise((120, 90), seed=3)
    style = sample_style(np.random.default_rng(7))
    assert style == sample_style(np.random.default_rng(7))
    first, second = write_text(image, "shoe", style)[0], write_text(image, "shoe", style)[0]
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert not np.array_equal(np.asarray(first), np.asarray(write_text(image, "lamp", style)[0]))
    assert np.array_equal(np.asarray(image), np.asarray(_noise((120, 90), seed=3)))  # input untouched


def test_sampled_styles_cover_every_option() -> None:
    rng = np.random.default_rng(0)
    styles = [sample_style(rng) for _ in range(300)]
    assert {s.height for s in styles} == set(HEIGHTS)
    assert {s.position for s in styles} == set(POSITIONS)
    assert {(s.fill, s.outline) for s in styles} == set(COLOURS)


def test_bad_text_and_styles_are_refused() -> None:
    with pytest.raises(ConfigError, match="empty text"):
        write_text(Image.new("RGB", (32, 32)), "  ", sample_style(np.random.default_rng(0)))
    with pytest.raises(ConfigError, match="position"):
        TextStyle(0.1, "left", 0.5, (0, 0, 0), (1, 1, 1))
