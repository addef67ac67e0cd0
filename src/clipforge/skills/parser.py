"""An exact scene parser for images in the synthetic renderer's domain: objects, shapes, colours, centres.

The renderer draws flat palette-coloured shapes that fill their bbox on a plain background, so a picture
can be read back by analysis by synthesis:

1. Background: the median colour of the image border. Foreground strength: the distance of each pixel's
   colour from it, after a light Gaussian smoothing of the colour difference (which removes most
   pixel noise without biasing the strength upwards), in units of the palette's weakest contrast.
2. Objects: connected regions above `low` strength; each region is cut at half its own peak strength
   (the half-maximum edge of a blurred shape sits where the sharp edge was, and a blurred bridge
   between two bright objects falls below it); pieces smaller than `min_area` of the image are noise.
3. Shape: the renderer's own drawing of every shape, in boxes from the piece's half-maximum box to
   `GROW` pixels larger on each side (blur rounds pointed tips off) and blurred like the observation
   could be, is compared with the observed luma contrast by cosine similarity (so contrast does not
   matter; luma, because JPEG and many generators keep it sharper than chroma). The best fit names the
   shape when it reaches `min_fit` and its box is about square (the renderer draws every shape in a
   square box), else the object has no shape. The fit is the parser's confidence.
4. Colour: the mean colour difference of the piece's core, named by the palette colour of the nearest
   hue (the difference without its grey part: blur and fading scale a colour difference and JPEG's
   coarse chroma mixes grey into it, but neither turns its hue); none when too grey or too far.
5. Centre: the centre of the fitted box, as the renderer defines an object's centre.

An image with no object-like region is "unparseable" (`Reading.parseable` is False): the parser says so
rather than guess.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from clipforge.data.transforms import to_rgb
from clipforge.errors import ImageError
from clipforge.synthetic.render import BACKGROUND, PALETTE, SHAPES, Box, draw_shape

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity: thin star tips stay attached


@dataclass(frozen=True)
class ParserConfig:
    """Thresholds of the parser (defaults tuned on renders of seeds other than the reported ones).

    Attributes:
        smooth: Gaussian sigma in pixels applied to colour differences before thresholding.
        low: strength that makes a pixel candidate foreground (1.0 = the palette's weakest contrast).
        min_area: smallest object, as a fraction of the image area.
        min_fit: cosine similarity a shape template must reach for the shape to be named.
        min_color_cos: cosine between hues (colour differences without their grey part) needed to
            name a palette colour.
        min_saturation: share of a colour difference's length that must be hue for it to have a colour.
        blurs: extra blur sigmas (pixels) tried for the templates, for blurry images.
    """

    smooth: float = 0.8
    low: float = 0.3
    min_area: float = 0.003
    min_fit: float = 0.9
    min_color_cos: float = 0.9
    min_saturation: float = 0.15
    blurs: tuple[float, ...] = (0.0, 1.0, 2.0)


@dataclass(frozen=True)
class DetectedObject:
    """One object the parser found.

    Attributes:
        shape: best-fitting shape, None when no template fits well enough.
        color: nearest palette colour, None when the colour is far from every palette colour.
        bbox: fitted box ``(x0, y0, x1, y1)`` in pixels, x1 and y1 exclusive.
        area: pixels of the object's half-maximum region.
        fit: cosine similarity of the best template (the parser's confidence).
    """

    shape: str | None
    color: str | None
    bbox: Box
    area: int
    fit: float

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return (x0 + x1) / 2, (y0 + y1) / 2

    def to_json(self) -> dict[str, object]:
        return {"shape": self.shape, "color": self.color, "bbox": list(self.bbox), "area": self.area,
                "fit": round(self.fit, 4)}


@dataclass(frozen=True)
class Reading:
    """What the parser read from one image: its objects, most confident first."""

    objects: tuple[DetectedObject, ...] = field(default_factory=tuple)

    @property
    def parseable(self) -> bool:
        return bool(self.objects)

    def ranked(self) -> Reading:
        """The same objects, most confident (best fit, then largest) first."""
        return Reading(tuple(sorted(self.objects, key=lambda o: (-o.fit, -o.area))))

    def to_json(self) -> dict[str, object]:
        return {"parseable": self.parseable, "objects": [o.to_json() for o in self.objects]}


def _chroma(diffs: np.ndarray) -> np.ndarray:
    """The part of colour differences [..., 3] orthogonal to grey (1, 1, 1)."""
    return diffs - diffs.mean(axis=-1, keepdims=True)


_COLOR_NAMES = list(PALETTE)
_COLOR_DIFFS = np.array([PALETTE[n] for n in _COLOR_NAMES], dtype=np.float64) - np.array(BACKGROUND)  # [C, 3]
_HUES = _chroma(_COLOR_DIFFS) / np.linalg.norm(_chroma(_COLOR_DIFFS), axis=1, keepdims=True)  # [C, 3]
_CONTRAST = float(np.linalg.norm(_COLOR_DIFFS, axis=1).min()) / 255.0
# Shapes are fitted on luma (ITU-R BT.601 weights): JPEG, and many generators, keep it sharper than chroma.
_LUMA = np.array([0.299, 0.587, 0.114])
_LUMA_CONTRAST = float(np.abs(_COLOR_DIFFS @ _LUMA).min()) / 255.0


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Float RGB [H, W, 3] in [0, 1] from a PIL image, a uint8 array or a float array in [0, 1].

    Raises:
        ImageError: an array that is not [H, W, 3].
    """
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image), dtype=np.float64) / 255.0
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"the parser reads RGB images [H, W, 3], got an array of shape {array.shape}")
    return array / 255.0 if np.issubdtype(array.dtype, np.integer) else array.astype(np.float64)


def _background(pixels: np.ndarray) -> np.ndarray:
    """Median colour of the one-pixel border [3]."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])  # [4S, 3]
    return np.median(border, axis=0)


GROW = 2  # pixels a fitted box may reach past the half-maximum box on each side (blur rounds off tips)
_MARGIN = 3  # observed pixels beyond the largest candidate box, for blur tails
_PAD = 6  # template canvas margin around the box
_REACH = GROW + _MARGIN + _PAD  # the observation a fit looks at, around the half-maximum box


@functools.lru_cache(maxsize=2048)
def _templates(width: int, height: int, sigmas: tuple[float, ...]) -> np.ndarray:
    """Unit-norm drawings [len(SHAPES) * len(sigmas), height + 2P, width + 2P] of every shape filling
    a ``width`` x ``height`` box at ``(P, P)``, drawn by the renderer and blurred by each sigma
    (shape-major order)."""
    stack = []
    for shape in SHAPES:
        canvas = Image.new("L", (width + 2 * _PAD, height + 2 * _PAD), 0)
        draw_shape(ImageDraw.Draw(canvas), shape, (_PAD, _PAD, _PAD + width, _PAD + height), 255)
        mask = np.asarray(canvas, dtype=np.float64) / 255.0
        stack += [ndimage.gaussian_filter(mask, sigma) for sigma in sigmas]
    templates = np.stack(stack)  # [K, h + 2P, w + 2P]
    return templates / np.linalg.norm(templates, axis=(1, 2), keepdims=True)


def fit_shape(observed: np.ndarray, box: Box, sigmas: tuple[float, ...]) -> tuple[str, Box, float]:
    """Best (shape, box, cosine similarity) for the object whose half-maximum box is `box`.

    Args:
        observed: the luma contrast around the object, ``_REACH`` pixels past `box` on every side, with
            other objects' pixels and the rim beyond the candidates' margin zeroed.
        box: the half-maximum box; candidates extend it by 0 to `GROW` pixels on each side.
        sigmas: template blurs to try.
    """
    x0, y0, x1, y1 = box
    norm = float(np.linalg.norm(observed)) or 1.0
    best: tuple[str, Box, float] = (SHAPES[0], box, -1.0)
    for ex in range(2 * GROW + 1):
        for ey in range(2 * GROW + 1):
            templates = _templates(x1 - x0 + ex, y1 - y0 + ey, sigmas)  # [K, th, tw]
            # Where a candidate's canvas starts inside `observed`, for each left/top growth it allows.
            xs = (GROW + _MARGIN - min(ex, GROW), GROW + _MARGIN - max(0, ex - GROW))
            ys = (GROW + _MARGIN - min(ey, GROW), GROW + _MARGIN - max(0, ey - GROW))
            views = np.lib.stride_tricks.sliding_window_view(observed, templates.shape[1:])
            views = views[ys[0] : ys[1] + 1, xs[0] : xs[1] + 1]  # [ny, nx, th, tw]
            flat = templates.reshape(len(templates), -1)  # [K, th * tw]
            scores = (flat @ views.reshape(-1, flat.shape[1]).T) / norm  # [K, ny * nx]
            scores = scores.reshape(len(templates), *views.shape[:2])  # [K, ny, nx]
            k, iy, ix = (int(v) for v in np.unravel_index(int(np.argmax(scores)), scores.shape))
            if scores[k, iy, ix] > best[2]:
                left, top = GROW + _MARGIN - (xs[0] + ix), GROW + _MARGIN - (ys[0] + iy)
                fitted = (x0 - left, y0 - top, x1 - left + ex, y1 - top + ey)
                best = (SHAPES[k // len(sigmas)], fitted, float(scores[k, iy, ix]))
    return best


def _name_color(diff: np.ndarray, config: ParserConfig) -> str | None:
    """Palette colour of the nearest hue to the colour difference `diff` [3]; None when the colour is
    too grey or too far from every palette hue."""
    chroma = _chroma(diff)
    length = float(np.linalg.norm(chroma))
    if length < config.min_saturation * float(np.linalg.norm(diff)) or length == 0.0:
        return None
    cosines = _HUES @ (chroma / length)  # [C]
    best = int(np.argmax(cosines))
    return _COLOR_NAMES[best] if cosines[best] >= config.min_color_cos else None


def _squarish(box: Box) -> bool:
    """Whether a box could hold a renderer shape (always drawn in a square box), give or take blur."""
    width, height = box[2] - box[0], box[3] - box[1]
    return abs(width - height) <= max(2.0, 0.2 * max(width, height))


def parse_image(image: Image.Image | np.ndarray, config: ParserConfig | None = None) -> Reading:
    """Reads the objects of one image in the renderer's domain (any size from 32 px up).

    Args:
        image: a PIL image (any mode) or an RGB array [H, W, 3] (uint8, or floats in [0, 1]).
        config: thresholds; the defaults suit the renderer's plain style.
    """
    config = config or ParserConfig()
    maps = _Maps(_as_array(image), config)
    found = []
    for index, region in enumerate(ndimage.find_objects(maps.regions), start=1):
        if region is not None:
            found += maps.objects_of(index)
    return Reading(tuple(found)).ranked()


class _Maps:
    """One image's colour differences, strength maps and candidate regions."""

    def __init__(self, pixels: np.ndarray, config: ParserConfig) -> None:
        self.config = config
        self.diff = pixels - _background(pixels)  # [H, W, 3]
        smoothed = ndimage.gaussian_filter(self.diff, sigma=(config.smooth, config.smooth, 0))  # [H, W, 3]
        self.strength = np.linalg.norm(smoothed, axis=2) / _CONTRAST  # [H, W]
        luma = np.abs(smoothed @ _LUMA) / _LUMA_CONTRAST  # [H, W]
        self.luma = np.pad(luma, _REACH)  # [H + 2R, W + 2R]
        self.regions, _ = ndimage.label(self.strength > config.low, structure=_EIGHT)
        self.min_area = config.min_area * pixels.shape[0] * pixels.shape[1]
        self.sigmas = tuple(float(np.hypot(config.smooth, b)) for b in config.blurs)

    def objects_of(self, index: int) -> list[DetectedObject]:
        """The objects of candidate region `index`: its pieces above half the region's peak strength
        (a blurred bridge between two objects falls below it) that are large enough."""
        inside = self.regions == index  # [H, W]
        if inside.sum() < self.min_area:
            return []
        peak = float(np.quantile(self.strength[inside], 0.95))
        pieces, _ = ndimage.label(inside & (self.strength > peak / 2), structure=_EIGHT)
        objects = []
        for k, piece in enumerate(ndimage.find_objects(pieces), start=1):
            mask = pieces == k
            if piece is not None and mask.sum() >= self.min_area:
                blocked = ((self.regions != index) & (self.regions != 0)) | ((pieces != k) & (pieces != 0))
                box = (piece[1].start, piece[0].start, piece[1].stop, piece[0].stop)
                objects.append(self._read(mask, box, blocked))
        return objects

    def _read(self, mask: np.ndarray, box: Box, blocked: np.ndarray) -> DetectedObject:
        """Shape, colour and fitted box of one piece; `blocked` marks other objects' pixels."""
        x0, y0, x1, y1 = box
        window = (slice(y0, y1 + 2 * _REACH), slice(x0, x1 + 2 * _REACH))  # in padded coordinates
        observed = self.luma[window] * ~np.pad(blocked, _REACH)[window]
        # Only the box and its near margin are compared; the canvas rim beyond stays zero.
        rim = np.ones(observed.shape, dtype=bool)
        rim[_PAD:-_PAD, _PAD:-_PAD] = False
        observed[rim] = 0.0
        shape, fitted, fit = fit_shape(observed, box, self.sigmas)
        core = mask & (self.strength >= 0.75 * float(self.strength[mask].max()))
        color = _name_color(self.diff[core].mean(axis=0), self.config)
        named = fit >= self.config.min_fit and _squarish(fitted)
        return DetectedObject(shape if named else None, color, fitted, int(mask.sum()), fit)
