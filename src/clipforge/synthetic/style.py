"""Randomized rendering styles: what may vary in a scene's pixels, in which ranges, and what is held out.

A style changes pixels only. A scene's metadata (objects, boxes, relations) is sampled first, from its
own random stream, and its style from another (``scene_rng(..., "style")``), so the exact truth of a
scene is the same in every style and a style option can never change it.

What varies (`StyleConfig` holds the ranges, `Style` one scene's draw):

- background: a low-saturation colour (saturation <= `background_saturation`, so it never reads as a
  named colour) drawn as one of `BACKGROUNDS`: ``solid``; ``gradient`` (two colours along a random
  direction); ``texture`` (coarse blobs around one colour); ``split`` (a floor/wall horizon between two
  colours at a random height, slightly tilted).
- shade of each object: hue from its colour name's range, saturation and value from `saturation` and
  `value`. The hue ranges (degrees) are disjoint with gaps of 10 degrees or more, so a name never fits
  two colours: red 350-10, orange 22-36, yellow 48-60, green 105-145, blue 212-236, purple 268-292.
- geometry: each object is drawn inside its box, centred, scaled by `scale`; shapes whose name allows it
  are also stretched (up to `aspect`; not circles and squares) and rotated (up to `rotation` degrees;
  triangles, stars and crosses: a square turned part of the way to 45 degrees reads as a diamond).
  Objects whose boxes touch another box keep the plain geometry, so occlusion truth holds.
- pixels: rendered at `supersample` times the image size and box-filtered down (edge softness), then
  box blur, per-channel Gaussian sensor noise and JPEG re-encoding.

Held-out style. Some values are used only by the held-out style splits (``val_style``, ``test_style``):
the background kinds `heldout_backgrounds`, the band `heldout_hue` of every colour's hue range (as a
fraction along it), the noise levels `heldout_noise` and the blur radii `heldout_blur`. A scene of any
other split never draws them; a held-out-style scene draws all of them at once. The scalar bands lie
inside the trained ranges (interpolation); a held-out background kind is new (extrapolation).
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass
from typing import Any

from clipforge.errors import ConfigError
from clipforge.synthetic.render import GRADIENT_STEP, TEXTURES

RGB = tuple[int, int, int]
BACKGROUNDS = ("solid", "gradient", "texture", "split")
HUE_RANGES = {
    "red": (-10.0, 10.0), "orange": (22.0, 36.0), "yellow": (48.0, 60.0),
    "green": (105.0, 145.0), "blue": (212.0, 236.0), "purple": (268.0, 292.0),
}
STRETCHABLE = ("triangle", "diamond", "star", "cross")  # a stretched circle or square is another shape
# A square turned towards 45 degrees becomes a diamond and back: their names fix their orientation.
ROTATABLE = ("triangle", "star", "cross")
HELDOUT_STYLE_SPLITS = ("val_style", "test_style")
_LARGE_OVER_SMALL = 0.34 / 0.22  # box side of a large object over a small one (scene.SIZE_FRACTION)


@dataclass(frozen=True)
class StyleConfig:
    """Ranges of the randomized style; built from keywords and validated on construction.

    Ranges are ``(low, high)``; a held-out band ``(low, high)`` lies inside its range and is drawn only
    by held-out-style scenes (see the module docstring).

    Attributes:
        backgrounds: background kinds drawn, a subset of `BACKGROUNDS`.
        heldout_backgrounds: kinds only held-out-style scenes use (a proper subset of `backgrounds`).
        background_value: HSV value range of background colours.
        background_saturation: largest HSV saturation of a background colour.
        texture: largest amplitude of the ``texture`` blobs and of the ``split`` contrast, as a value.
        saturation: HSV saturation range of object shades.
        value: HSV value range of object shades.
        heldout_hue: band of each colour's hue range (fractions in [0, 1]) held out.
        scale: drawn size of an object over its box size.
        aspect: largest width-to-height ratio (or its inverse) of stretchable shapes.
        rotation: largest rotation in degrees of rotatable shapes.
        supersample: render at one of these multiples of the image size, then resize down.
        blur: box blur radius range in pixels at the image size.
        heldout_blur: blur radii held out.
        noise: standard deviation range of the sensor noise, on the 0-255 scale.
        heldout_noise: noise levels held out.
        jpeg: probability of JPEG re-encoding.
        jpeg_quality: JPEG quality range.
    """

    backgrounds: tuple[str, ...] = BACKGROUNDS
    heldout_backgrounds: tuple[str, ...] = ("split",)
    background_value: tuple[float, ...] = (0.0, 0.9)
    background_saturation: float = 0.2
    texture: float = 0.15
    saturation: tuple[float, ...] = (0.65, 1.0)
    value: tuple[float, ...] = (0.75, 1.0)
    heldout_hue: tuple[float, ...] = (0.4, 0.6)
    scale: tuple[float, ...] = (0.85, 1.0)
    aspect: float = 1.25
    rotation: float = 15.0
    supersample: tuple[int, ...] = (1, 2, 3)
    blur: tuple[float, ...] = (0.0, 1.0)
    heldout_blur: tuple[float, ...] = (0.4, 0.6)
    noise: tuple[float, ...] = (0.0, 10.0)
    heldout_noise: tuple[float, ...] = (4.0, 6.0)
    jpeg: float = 0.2
    jpeg_quality: tuple[int, ...] = (50, 95)

    def __post_init__(self) -> None:
        self._check_backgrounds()
        for name, low, high in (("background_value", 0, 1), ("saturation", 0, 1), ("value", 0, 1),
                                ("scale", 0.5, 1), ("blur", 0, 3), ("noise", 0, 50),
                                ("jpeg_quality", 5, 100)):
            _check_range(name, getattr(self, name), low, high)
        for band, inside in (("heldout_hue", (0.0, 1.0)), ("heldout_blur", self.blur),
                             ("heldout_noise", self.noise)):
            _check_range(band, getattr(self, band), *inside)
            if getattr(self, band)[1] - getattr(self, band)[0] >= inside[1] - inside[0] > 0:
                raise ConfigError(f"style config: {band} {getattr(self, band)} leaves nothing for training")
        self._check_scalars()

    def _check_backgrounds(self) -> None:
        unknown = [k for k in self.backgrounds + self.heldout_backgrounds if k not in BACKGROUNDS]
        if unknown:
            known = ", ".join(BACKGROUNDS)
            raise ConfigError(f"style config: unknown background {unknown[0]!r} (known: {known})")
        if not set(self.heldout_backgrounds) < set(self.backgrounds):
            raise ConfigError("style config: heldout_backgrounds must be a proper subset of backgrounds, "
                              f"got {self.heldout_backgrounds} of {self.backgrounds}")

    def _check_scalars(self) -> None:
        if not 0 <= self.background_saturation <= 0.3:
            raise ConfigError("style config: background_saturation must be in [0, 0.3] (backgrounds must "
                              f"not read as a named colour), got {self.background_saturation}")
        # A square turned 45 degrees is a diamond: rotations stay far from that.
        if not 0 <= self.texture <= 0.5 or not 0 <= self.jpeg <= 1 or not 0 <= self.rotation <= 20:
            raise ConfigError("style config: texture must be in [0, 0.5], jpeg in [0, 1] and rotation in "
                              f"[0, 20], got {self.texture}, {self.jpeg}, {self.rotation}")
        if not 1 <= self.aspect <= 1.5:
            raise ConfigError(f"style config: aspect must be in [1, 1.5], got {self.aspect}")
        if self.scale[0] * _LARGE_OVER_SMALL / self.aspect <= 1:
            raise ConfigError(f"style config: scale {self.scale} with aspect {self.aspect} would draw large "
                              "objects as small as small ones")
        if not self.supersample or any(not 1 <= k <= 4 for k in self.supersample):
            raise ConfigError(f"style config: supersample factors must be in [1, 4], got {self.supersample}")


def _check_range(name: str, pair: tuple[float, ...], low: float, high: float) -> None:
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise ConfigError(f"style config: {name} must be (low, high) with {low} <= low <= high <= {high}, "
                          f"got {pair}")


@dataclass(frozen=True)
class Style:
    """One scene's draw of a `StyleConfig` (plain data; `render.draw_styled` turns it into pixels).

    Attributes:
        background: the background kind.
        background_colors: its two colours (``solid`` and ``texture`` use the first).
        background_param: ``gradient``: (angle in degrees,); ``texture``: (amplitude as a value, index
            of its blob map);
            ``split``: (horizon height as a fraction of the image side, tilt in degrees); ``solid``: ().
        shades: RGB shade per object, in draw order.
        hue_positions: where each shade's hue lies along its colour's hue range (0 to 1).
        geometry: ``(scale, aspect, angle)`` per object; aspect is width over height.
        supersample: render at this multiple of the image size.
        blur: box blur radius in pixels.
        noise: sensor noise standard deviation on the 0-255 scale.
        jpeg_quality: JPEG re-encoding quality, or None.
        noise_offset: where the image's noise starts in the renderer's noise bank.
    """

    background: str
    background_colors: tuple[RGB, RGB]
    background_param: tuple[float, ...]
    shades: tuple[RGB, ...]
    hue_positions: tuple[float, ...]
    geometry: tuple[tuple[float, float, float], ...]
    supersample: int
    blur: float
    noise: float
    jpeg_quality: int | None
    noise_offset: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready description (lists for tuples)."""
        return {
            "background": self.background, "background_colors": [list(c) for c in self.background_colors],
            "background_param": list(self.background_param), "shades": [list(s) for s in self.shades],
            "hue_positions": list(self.hue_positions), "geometry": [list(g) for g in self.geometry],
            "supersample": self.supersample, "blur": self.blur, "noise": self.noise,
            "jpeg_quality": self.jpeg_quality, "noise_offset": self.noise_offset,
        }


def uniform_outside(rng: random.Random, pair: tuple[float, ...], band: tuple[float, ...],
                    heldout: bool) -> float:
    """A uniform draw from `band` when `heldout`, else from `pair` with `band` cut out."""
    if heldout:
        return rng.uniform(band[0], band[1])
    width = band[1] - band[0]
    value = rng.uniform(pair[0], pair[1] - width)
    return value + width if value >= band[0] else value


def shade(config: StyleConfig, color: str, position: float, rng: random.Random) -> RGB:
    """An RGB shade of a named colour, its hue at `position` (0 to 1) along the colour's hue range."""
    low, high = HUE_RANGES[color]
    hue = (low + position * (high - low)) % 360.0
    saturation = rng.uniform(*config.saturation)
    value = rng.uniform(*config.value)
    return _rgb(colorsys.hsv_to_rgb(hue / 360.0, saturation, value))


def _rgb(channels: tuple[float, float, float]) -> RGB:
    red, green, blue = (round(255 * c) for c in channels)
    return red, green, blue


def _background_color(config: StyleConfig, rng: random.Random) -> RGB:
    hue, saturation = rng.random(), rng.uniform(0.0, config.background_saturation)
    return _rgb(colorsys.hsv_to_rgb(hue, saturation, rng.uniform(*config.background_value)))


def _geometry(config: StyleConfig, shape: str, rng: random.Random) -> tuple[float, float, float]:
    scale = rng.uniform(*config.scale)
    aspect = config.aspect ** rng.uniform(-1.0, 1.0) if shape in STRETCHABLE else 1.0
    angle = rng.uniform(-config.rotation, config.rotation) if shape in ROTATABLE else 0.0
    return scale, aspect, angle


def _background(config: StyleConfig, rng: random.Random, heldout: bool
                ) -> tuple[str, tuple[RGB, RGB], tuple[float, ...]]:
    kinds = config.heldout_backgrounds if heldout else tuple(
        k for k in config.backgrounds if k not in config.heldout_backgrounds)
    kind = rng.choice(kinds)
    colors = (_background_color(config, rng), _background_color(config, rng))
    # Every kind's parameters are drawn, so the draws after them do not depend on the kind.
    params = {"solid": (), "gradient": (GRADIENT_STEP * rng.randrange(360 // GRADIENT_STEP),),
              "texture": (rng.uniform(0.5, 1.0) * config.texture, rng.randrange(TEXTURES)),
              "split": (rng.uniform(0.35, 0.65), rng.uniform(-8.0, 8.0))}
    return kind, colors, params[kind]


def sample_style(config: StyleConfig, objects: list[tuple[str, str]], rng: random.Random,
                 heldout: bool) -> Style:
    """One scene's style; `objects` are ``(colour, shape)`` in draw order.

    A held-out draw takes every held-out value of `config`; any other draw takes none of them.
    """
    background, colors, param = _background(config, rng, heldout)
    positions = tuple(uniform_outside(rng, (0.0, 1.0), config.heldout_hue, heldout) for _ in objects)
    shades = tuple(shade(config, color, p, rng) for (color, _), p in zip(objects, positions, strict=True))
    geometry = tuple(_geometry(config, shape, rng) for _, shape in objects)
    blur = uniform_outside(rng, config.blur, config.heldout_blur, heldout)
    noise = uniform_outside(rng, config.noise, config.heldout_noise, heldout)
    quality = rng.randint(*config.jpeg_quality) if rng.random() < config.jpeg else None
    return Style(background, colors, param, shades, positions, geometry, rng.choice(config.supersample),
                 blur, noise, quality, rng.getrandbits(31))
