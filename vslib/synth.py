"""A deterministic world of synthetic scenes: coloured shapes on simple backgrounds.

Every scene has one dominant object (one of ten shape classes, with a colour, a
texture, a size and a position) on a background, and optionally one to three small
objects. As in photos, where golf balls lie on grass and parachutes hang in the sky
(Xiao et al., 2020), category and context go together: each class has a typical
background and typical colours and texture (:data:`TYPICAL_CONTEXT`), which a scene
of the ``train``, ``val`` and ``test`` splits follows with probability
:data:`CONTEXT_PROBABILITY`; otherwise its context is drawn at random. The ``mixed``
split always draws the context at random, so the drop from ``test`` to ``mixed``
measures how much a model relies on context rather than shape. Scenes come with captions that, like web alt-text, mostly describe the
dominant object. The bundled tiny models are trained on these scenes, and the
balanced 10-class :func:`eval_set` ("synthetic Imagenette") stands in for Imagenette.

A scene is a pure function of ``(split, seed)``: the three splits draw from
disjoint random streams, so no train scene is ever a val or test scene. The layout
does not depend on the resolution, so the same seed renders the same scene at 32,
64 or 224 pixels, and the small objects are drawn last, so the same seed with
fewer small objects is the same scene without them.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
import dataclasses
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vslib.templates import IMAGENET_TEMPLATES, SHORT_TEMPLATES

CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "hexagon",
    "heart",
    "arrow",
)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (245, 215, 35),
    "orange": (245, 135, 25),
    "purple": (135, 50, 185),
    "white": (248, 248, 248),
    "black": (18, 18, 18),
}

# Muted, unnamed tones, so that a colour word in a caption always names an object.
BACKGROUND_COLORS: tuple[tuple[int, int, int], ...] = (
    (200, 200, 200),
    (125, 125, 125),
    (55, 55, 60),
    (212, 195, 160),
    (160, 190, 215),
    (150, 170, 135),
    (75, 85, 105),
    (105, 80, 60),
    (238, 232, 212),
    (60, 110, 110),
)

SIZES: tuple[str, ...] = ("small", "medium", "large")
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "stripes")
SPLITS: tuple[str, ...] = ("train", "val", "test", "mixed")
MAX_SMALL_OBJECTS = 3
MIN_SIZE = 16
MAX_SIZE = 2048

# Minimum RGB distance between an object colour and every background tone.
MIN_CONTRAST = 115.0
# Object radius as a fraction of the image side (shapes fit in the unit disk).
DOMINANT_RADIUS: dict[str, tuple[float, float]] = {
    "small": (0.17, 0.21),
    "medium": (0.24, 0.30),
    "large": (0.33, 0.41),
}
SMALL_OBJECT_RADIUS: tuple[float, float] = (0.07, 0.11)
SMALL_COUNT_PROBS: tuple[float, ...] = (0.5, 0.25, 0.15, 0.1)
SMALL_MENTION_PROB = 0.25
_EDGE = 0.02
_PLACEMENT_TRIES = 40



@dataclass(frozen=True)
class Context:
    """A class's typical context: background kind and tones, object colours and texture.

    Introduced in chapter 1.

    Args:
        background: One of ``BACKGROUNDS``.
        tones: Indices into ``BACKGROUND_COLORS``: the first tone, then the second one
            of two-tone backgrounds (gradient, stripes).
        colors: The object colours (one is drawn), all of them standing out from the tones.
        texture: One of ``TEXTURES``.
    """

    background: str
    tones: tuple[int, int]
    colors: tuple[str, str]
    texture: str


# The world's one table of class-typical contexts. Every class has its own first tone,
# so background, tones, colours and texture together name the class.
TYPICAL_CONTEXT: dict[str, Context] = {
    "circle": Context("plain", (4, 8), ("yellow", "orange"), "solid"),
    "square": Context("stripes", (1, 0), ("blue", "red"), "solid"),
    "triangle": Context("gradient", (8, 3), ("green", "purple"), "striped"),
    "star": Context("noise", (2, 6), ("yellow", "white"), "solid"),
    "cross": Context("plain", (3, 0), ("red", "blue"), "solid"),
    "ring": Context("gradient", (7, 9), ("orange", "white"), "dotted"),
    "diamond": Context("stripes", (5, 4), ("purple", "red"), "dotted"),
    "hexagon": Context("noise", (9, 7), ("yellow", "orange"), "striped"),
    "heart": Context("plain", (0, 3), ("red", "purple"), "solid"),
    "arrow": Context("gradient", (6, 2), ("white", "yellow"), "striped"),
}
# How often a scene of the natural splits follows its class's typical context. At most
# 0.7 keeps the world no easier than photos: context alone then names the class of about
# 0.7 + 0.3 / 10 = 73% of the scenes.
CONTEXT_PROBABILITY = 0.7
_SPLIT_CONTEXT_PROBABILITY = {"train": CONTEXT_PROBABILITY, "val": CONTEXT_PROBABILITY,
                              "test": CONTEXT_PROBABILITY, "mixed": 0.0}

_ROOT_ENTROPY = 0x5EED_5CE9E
_STREAM_LAYOUT, _STREAM_PIXELS, _STREAM_WORDS = 0, 1, 2
# Restyled renderings k = 1, 2, ... of a scene (render_appearances) draw from streams base + k.
_STREAM_RESTYLE, _STREAM_RESTYLE_PIXELS = 1000, 2000

_COLOR_TABLE = np.array(list(COLORS.values()), dtype=np.float32)
_BACKGROUND_WORDS = {"plain": "plain", "gradient": "gradient", "noise": "noisy", "stripes": "striped"}
_CAPTION_WORDS = ("a", "an", "photo", "of", "on", "background", "and", "small")
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


@dataclass
class SceneObject:
    """One object of a scene.

    Introduced in chapter 1.

    Args:
        shape: Class name, one of ``CLASSES``.
        color: Colour name, one of ``COLORS``.
        texture: One of ``TEXTURES``.
        size: Size name, one of ``SIZES``.
        box: ``(x0, y0, x1, y1)`` in pixels of the rendered image; ``x1`` and ``y1``
            are exclusive, as in ``PIL.Image.crop``. It bounds every pixel the
            object covers, anti-aliased edges included.
        dominant: Whether this is the scene's dominant object.
    """

    shape: str
    color: str
    texture: str
    size: str
    box: tuple[int, int, int, int]
    dominant: bool


@dataclass
class Scene:
    """A rendered scene with its objects and captions.

    Introduced in chapter 1.

    Args:
        image: The RGB image.
        objects: The dominant object first, then the small objects.
        background: One of ``BACKGROUNDS``.
        captions: Lowercase captions, most describing the dominant object only.
        seed: The scene's index within its split.
        split: One of ``SPLITS``.
        context: The class whose typical context (:data:`TYPICAL_CONTEXT`) the scene
            follows, or ``None`` where its context was drawn at random.
    """

    image: Image.Image
    objects: list[SceneObject]
    background: str
    captions: list[str]
    seed: int
    split: str
    context: str | None = None

    @property
    def label(self) -> str:
        """The dominant object's class name."""
        return self.objects[0].shape

    @property
    def label_index(self) -> int:
        """The dominant object's index into ``CLASSES``."""
        return CLASSES.index(self.label)

    @property
    def small_objects(self) -> list[SceneObject]:
        """The objects other than the dominant one."""
        return self.objects[1:]


@dataclass
class _Background:
    kind: str
    colors: list[np.ndarray]
    angle: float
    period: float


@dataclass
class _ObjectSpec:
    shape: str
    color: str
    rgb: np.ndarray
    texture: str
    size: str
    radius: float
    center: np.ndarray
    angle: float
    pattern_angle: float = 0.0
    pattern_period: float = 0.45
    pattern_phase: np.ndarray = field(default_factory=lambda: np.zeros(2))
    dominant: bool = False


# --------------------------------------------------------------------------- shapes


def _regular(n: int, radius: float, start: float) -> np.ndarray:
    angles = start + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    outer = _regular(5, 1.0, -math.pi / 2)
    inner = _regular(5, 0.42, -math.pi / 2 + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], axis=1)


def _centred(points: np.ndarray, half_extent: float = 0.95) -> np.ndarray:
    """Centre a polygon's bounding box and scale its longer half side to ``half_extent``."""
    lo, hi = points.min(0), points.max(0)
    points = points - (lo + hi) / 2
    return points * (half_extent / (np.abs(points).max()))


_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]),
    "triangle": _centred(_regular(3, 1.0, -math.pi / 2)),
    "star": _centred(_star()),
    "cross": np.array(
        [
            (-0.27, -0.9), (0.27, -0.9), (0.27, -0.27), (0.9, -0.27), (0.9, 0.27), (0.27, 0.27),
            (0.27, 0.9), (-0.27, 0.9), (-0.27, 0.27), (-0.9, 0.27), (-0.9, -0.27), (-0.27, -0.27),
        ]
    ),
    "diamond": np.array([(0.0, -0.95), (0.6, 0.0), (0.0, 0.95), (-0.6, 0.0)]),
    "hexagon": _regular(6, 0.9, 0.0),
    "heart": _centred(_heart(), 0.9),
    "arrow": np.array(
        [(-0.95, -0.2), (0.15, -0.2), (0.15, -0.6), (0.95, 0.0), (0.15, 0.6), (0.15, 0.2), (-0.95, 0.2)]
    ),
}
_DISC_RADIUS = 0.9
_RING_INNER = 0.5
# Rotation range in degrees: small where a larger turn would change the shape's
# identity (a square turned 45 degrees reads as a diamond, a cross as an x).
_MAX_ROTATION: dict[str, float] = {
    "circle": 0.0,
    "ring": 0.0,
    "square": 12.0,
    "triangle": 20.0,
    "star": 36.0,
    "cross": 12.0,
    "diamond": 10.0,
    "hexagon": 30.0,
    "heart": 15.0,
    "arrow": 180.0,
}


def _rotated(shape: str, angle: float) -> np.ndarray | None:
    points = _POLYGONS.get(shape)
    if points is None:
        return None
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _extent(points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if points is None:
        return np.full(2, -_DISC_RADIUS), np.full(2, _DISC_RADIUS)
    return points.min(0), points.max(0)


# --------------------------------------------------------------------------- sampling


def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    return SPLITS.index(split)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be an int, got {type(size).__name__}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}")
    return int(size)


def _check_class(name: str, what: str) -> str:
    if name not in CLASSES:
        raise ValueError(f"unknown {what} {name!r}; use one of {CLASSES}")
    return name


def _check_small_count(n: int | None) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= MAX_SMALL_OBJECTS:
        raise ValueError(f"small_objects must be an int from 0 to {MAX_SMALL_OBJECTS} or None, got {n!r}")
    return int(n)


def _rng(split_code: int, seed: int, stream: int) -> np.random.Generator:
    sequence = np.random.SeedSequence(_ROOT_ENTROPY, spawn_key=(split_code, seed, stream))
    return np.random.Generator(np.random.PCG64(sequence))


def _jitter(rng: np.random.Generator, rgb: Sequence[int], amount: int) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.integers(-amount, amount + 1, 3), 0, 255)


def _sample_background(rng: np.random.Generator, context: Context | None = None) -> _Background:
    """A background drawn at random, or of ``context``'s kind and tones (same draws either way)."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    first = int(rng.integers(len(BACKGROUND_COLORS)))
    second = (first + 1 + int(rng.integers(len(BACKGROUND_COLORS) - 1))) % len(BACKGROUND_COLORS)
    if context is not None:
        kind, (first, second) = context.background, context.tones
    angle = float(rng.uniform(0, math.pi))
    period = float(rng.uniform(0.07, 0.14))
    c1 = _jitter(rng, BACKGROUND_COLORS[first], 8)
    c2 = _jitter(rng, BACKGROUND_COLORS[second], 8)
    colors = [c1] if kind in ("plain", "noise") else [c1, c2]
    return _Background(kind, colors, angle, period)


def _contrasting_colors(background: _Background) -> list[str]:
    tones = np.stack(background.colors)
    if background.kind == "gradient":
        tones = np.concatenate([tones, tones.mean(0, keepdims=True)])
    distance = np.linalg.norm(_COLOR_TABLE[:, None, :] - tones[None, :, :], axis=2).min(1)
    names = [name for name, d in zip(COLORS, distance) if d >= MIN_CONTRAST]
    # Every background tone leaves several colours; a fallback keeps this total anyway.
    return names or ["white", "black"]


def _centre_range(shape: str, angle: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = _extent(_rotated(shape, angle))
    low = _EDGE - lo * radius
    high = 1 - _EDGE - hi * radius
    return low, np.maximum(low, high)


def _draw_colour(rng: np.random.Generator, background: _Background,
                 avoid: str | None = None) -> tuple[str, np.ndarray]:
    """A colour name that stands out from the background (not ``avoid`` if others do), and its jittered RGB."""
    palette = _contrasting_colors(background)
    choices = [name for name in palette if name != avoid] or palette
    color = choices[rng.integers(len(choices))]
    return color, _jitter(rng, COLORS[color], 12)


def _draw_pattern(rng: np.random.Generator) -> dict:
    """Orientation, period and phase of a stripe or dot texture."""
    return {"pattern_angle": float(rng.uniform(0, math.pi)), "pattern_period": float(rng.uniform(0.38, 0.5)),
            "pattern_phase": rng.random(2)}


def _draw_angle(rng: np.random.Generator, shape: str) -> float:
    """A rotation in radians within the shape's allowed range."""
    return math.radians(float(rng.uniform(-1, 1)) * _MAX_ROTATION[shape])


def _dominant_centre(rng: np.random.Generator, shape: str, angle: float, radius: float) -> np.ndarray:
    """A uniform centre that keeps the dominant object inside the image."""
    low, high = _centre_range(shape, angle, radius)
    return low + rng.random(2) * (high - low)


def _sample_dominant(
    rng: np.random.Generator, shape: str, background: _Background, size: str | None,
    context: Context | None = None,
) -> _ObjectSpec:
    if context is None:
        color, rgb = _draw_colour(rng, background)
    else:
        color = context.colors[rng.integers(len(context.colors))]
        rgb = _jitter(rng, COLORS[color], 12)
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    if context is not None:
        texture = context.texture
    drawn_size = SIZES[rng.integers(len(SIZES))]
    size = size or drawn_size
    radius = float(rng.uniform(*DOMINANT_RADIUS[size]))
    angle = _draw_angle(rng, shape)
    center = _dominant_centre(rng, shape, angle, radius)
    return _ObjectSpec(
        shape=shape,
        color=color,
        rgb=rgb,
        texture=texture,
        size=size,
        radius=radius,
        center=center,
        angle=angle,
        **_draw_pattern(rng),
        dominant=True,
    )


def _sample_small(
    rng: np.random.Generator, shape: str, background: _Background, placed: list[_ObjectSpec]
) -> _ObjectSpec:
    color, rgb = _draw_colour(rng, background, avoid=placed[0].color)
    radius = float(rng.uniform(*SMALL_OBJECT_RADIUS))
    angle = _draw_angle(rng, shape)
    return _ObjectSpec(
        shape=shape, color=color, rgb=rgb, texture="solid", size="small",
        radius=radius, center=_small_centre(rng, shape, angle, radius, placed), angle=angle,
    )


def _small_centre(rng: np.random.Generator, shape: str, angle: float, radius: float,
                  placed: list[_ObjectSpec]) -> np.ndarray:
    """A centre for a small object that keeps clear of the objects already placed (best of a few tries)."""
    low, high = _centre_range(shape, angle, radius)
    candidates = low + rng.random((_PLACEMENT_TRIES, 2)) * (high - low)
    # Clearance from each placed object: the dominant one may be overlapped a little
    # (its shape rarely fills its disc), small ones not at all.
    slack = np.full(_PLACEMENT_TRIES, np.inf)
    for other in placed:
        needed = other.radius + (0.6 if other.dominant else 1.0) * radius
        slack = np.minimum(slack, np.linalg.norm(candidates - other.center, axis=1) - needed)
    fits = np.flatnonzero(slack >= 0)
    return candidates[fits[0] if fits.size else int(np.argmax(slack))]


# --------------------------------------------------------------------------- painting


def _supersampling(size: int) -> int:
    return 4 if size <= 128 else 2


@functools.lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    return centres[None, :], centres[:, None]


@functools.lru_cache(maxsize=16)
def _upsampler(size: int, knots: int) -> np.ndarray:
    positions = (np.arange(size) + 0.5) / size * (knots - 1)
    eye = np.eye(knots, dtype=np.float32)
    return np.stack([np.interp(positions, np.arange(knots), row) for row in eye], axis=1).astype(np.float32)


def _paint_background(background: _Background, size: int, rng: np.random.Generator) -> np.ndarray:
    xs, ys = _grid(size)
    c1 = background.colors[0]
    if background.kind == "plain":
        return np.broadcast_to(c1, (size, size, 3)).copy()
    if background.kind == "noise":
        # Mostly brightness variation (shared by the channels), a little colour.
        knots = 5
        up = _upsampler(size, knots)
        blotches = rng.normal(0, 16, (knots, knots, 1)) + rng.normal(0, 5, (knots, knots, 3))
        grain = rng.normal(0, 9, (size, size, 1)) + rng.normal(0, 4, (size, size, 3))
        smooth = (up @ blotches.astype(np.float32).transpose(2, 0, 1) @ up.T).transpose(1, 2, 0)
        return np.clip(c1 + smooth + grain.astype(np.float32), 0, 255)
    c2 = background.colors[1]
    along = xs * math.cos(background.angle) + ys * math.sin(background.angle)
    if background.kind == "gradient":
        lo = min(0.0, math.cos(background.angle)) + min(0.0, math.sin(background.angle))
        hi = max(0.0, math.cos(background.angle)) + max(0.0, math.sin(background.angle))
        t = (along - lo) / (hi - lo)
    else:
        # Anti-aliased square wave: a one-pixel ramp at each stripe edge.
        phase = np.abs((along / background.period) % 1.0 - 0.5)
        t = np.clip((phase - 0.25) * background.period * size + 0.5, 0.0, 1.0)
    return c1 + (c2 - c1) * t[..., None]


def _partner_tone(rgb: np.ndarray) -> np.ndarray:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    if luminance > 140:
        return rgb * 0.55
    return rgb + (255 - rgb) * 0.55


def _paint_object(canvas: np.ndarray, spec: _ObjectSpec, size: int) -> SceneObject:
    ss = _supersampling(size)
    radius = spec.radius * size
    centre = spec.center * size
    points = _rotated(spec.shape, spec.angle)
    lo, hi = _extent(points)
    x0, y0 = (max(0, math.floor(v)) for v in centre + lo * radius)
    x1, y1 = (min(size, math.ceil(v)) for v in centre + hi * radius)
    w, h = x1 - x0, y1 - y0
    offset = np.array([x0, y0], dtype=np.float64)

    layer = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(layer)
    if points is not None:
        draw.polygon([tuple(p) for p in ((points * radius + centre - offset) * ss)], fill=255)
    else:
        cx, cy = (centre - offset) * ss
        for r, fill in ((_DISC_RADIUS, 255), (_RING_INNER, 0)):
            rr = r * radius * ss
            draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=fill)
            if spec.shape == "circle":
                break
    alpha = np.asarray(layer.reduce(ss), dtype=np.float32) / 255.0

    if spec.texture == "solid":
        colour = spec.rgb
    else:
        # The texture needs less anti-aliasing than the outline.
        pattern = _pattern(spec, x0, y0, w, h, max(1, ss // 2), radius, centre)
        colour = spec.rgb + (_partner_tone(spec.rgb) - spec.rgb) * pattern[..., None]
    region = canvas[y0:y1, x0:x1]
    region += (colour - region) * alpha[..., None]

    rows = np.flatnonzero(alpha.max(1) > 0)
    cols = np.flatnonzero(alpha.max(0) > 0)
    if rows.size == 0:
        # Too small to cover any pixel: report the one pixel at its centre.
        rows = np.array([min(h - 1, max(0, int(centre[1]) - y0))])
        cols = np.array([min(w - 1, max(0, int(centre[0]) - x0))])
    box = (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)
    return SceneObject(spec.shape, spec.color, spec.texture, spec.size, box, spec.dominant)


def _pattern(
    spec: _ObjectSpec, x0: int, y0: int, w: int, h: int, ss: int, radius: float, centre: np.ndarray
) -> np.ndarray:
    """Fraction of each pixel covered by the texture's second tone."""
    xs = ((np.arange(w * ss, dtype=np.float32) + 0.5) / ss + x0 - centre[0]) / radius
    ys = ((np.arange(h * ss, dtype=np.float32) + 0.5) / ss + y0 - centre[1]) / radius
    c, s = math.cos(spec.pattern_angle), math.sin(spec.pattern_angle)
    u = xs[None, :] * c + ys[:, None] * s
    period = spec.pattern_period
    if spec.texture == "striped":
        fine = ((u / period + spec.pattern_phase[0]) % 1.0) < 0.5
    else:
        v = -xs[None, :] * s + ys[:, None] * c
        du = (u / period + spec.pattern_phase[0]) % 1.0 - 0.5
        dv = (v / period + spec.pattern_phase[1]) % 1.0 - 0.5
        fine = du * du + dv * dv < 0.3**2
    return fine.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)


# --------------------------------------------------------------------------- captions


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


# Templates such as "a black and white photo of a {}." or "a photo of the small {}."
# would describe colours and sizes that the scene may not have.
_CAPTION_TEMPLATES: tuple[str, ...] = tuple(
    t
    for t in IMAGENET_TEMPLATES + SHORT_TEMPLATES
    if not set(_tokens(t)) & (set(COLORS) | set(SIZES))
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(*words: str) -> str:
    text = " ".join(w for w in words if w)
    return f"{_article(text)} {text}"


def _captions(rng: np.random.Generator, objects: list[SceneObject], background: str) -> list[str]:
    dom = objects[0]
    texture = dom.texture if dom.texture != "solid" and rng.random() < 0.7 else ""
    templates = _CAPTION_TEMPLATES
    first, second = rng.choice(len(templates), 2, replace=False)
    captions = [
        _phrase(texture, dom.color, dom.shape),
        f"a photo of {_phrase(dom.size, dom.color, dom.shape)}",
        f"{_phrase(dom.color, dom.shape)} on {_phrase(_BACKGROUND_WORDS[background], 'background')}",
        _phrase(dom.shape),
        templates[first].replace("{}", f"{dom.color} {dom.shape}"),
        templates[second].replace("{}", dom.shape),
    ]
    small = objects[1:]
    if small and rng.random() < SMALL_MENTION_PROB:
        parts = [_phrase(dom.size, dom.color, dom.shape)]
        parts += [_phrase("small", o.color, o.shape) for o in small]
        captions.append(" and ".join(parts))
    return captions


def caption_vocabulary() -> list[str]:
    """All tokens that a scene caption or a filled template can contain, sorted.

    A token is a run of lowercase letters and digits, or one punctuation mark, so a
    word-level tokenizer built from this list covers every caption and every class
    name filled into ``IMAGENET_TEMPLATES`` or ``SHORT_TEMPLATES``.

    Introduced in chapter 1.

    Returns:
        The sorted, unique tokens.
    """
    words: set[str] = set(_CAPTION_WORDS) | set(CLASSES) | set(COLORS) | set(SIZES)
    words |= set(TEXTURES) - {"solid"}
    words |= set(_BACKGROUND_WORDS.values())
    for template in IMAGENET_TEMPLATES + SHORT_TEMPLATES:
        words.update(_tokens(template.replace("{}", " ")))
    return sorted(words)


_SMALL_MENTION = re.compile(r" and an? small ([a-z]+) ([a-z]+)")
_BACKGROUND_OF_WORD = {word: kind for kind, word in _BACKGROUND_WORDS.items()}


def scene_facts(scene: Scene) -> frozenset[str]:
    """Everything a caption may state about a scene, as ``kind:value`` strings.

    The dominant object's ``shape``, ``color``, ``size`` and ``texture``, the
    ``background`` kind, and one ``small:<color> <shape>`` per small object. A caption
    is true of a scene when ``caption_facts(caption) <= scene_facts(scene)``; the
    image-text trainers of ``vslib.zoo`` use this to count every true caption in a
    batch as a positive, not only the image's own.
    """
    dom = scene.objects[0]
    facts = {f"shape:{dom.shape}", f"color:{dom.color}", f"size:{dom.size}", f"texture:{dom.texture}",
             f"background:{scene.background}"}
    facts |= {f"small:{o.color} {o.shape}" for o in scene.small_objects}
    return frozenset(facts)


@functools.lru_cache(maxsize=1 << 16)
def caption_facts(caption: str) -> frozenset[str]:
    """The facts (in ``scene_facts``' terms) that a caption of this generator states.

    It reads the words that ``Scene.captions`` are built from: class, colour, size and
    texture words describe the dominant object, ``<word> background`` the background,
    and ``and a small <color> <shape>`` a small object. Other words carry no facts.
    """
    text = caption.lower()
    facts = {f"small:{color} {shape}" for color, shape in _SMALL_MENTION.findall(text)}
    tokens = _tokens(_SMALL_MENTION.sub("", text))
    for i, token in enumerate(tokens):
        if token in _BACKGROUND_OF_WORD and tokens[i + 1:i + 2] == ["background"]:
            facts.add(f"background:{_BACKGROUND_OF_WORD[token]}")
        elif token in CLASSES:
            facts.add(f"shape:{token}")
        elif token in COLORS:
            facts.add(f"color:{token}")
        elif token in SIZES:
            facts.add(f"size:{token}")
        elif token in TEXTURES:
            facts.add(f"texture:{token}")
    return frozenset(facts)


# --------------------------------------------------------------------------- public API


def _restyle(specs: list[_ObjectSpec], rng: np.random.Generator) -> tuple[_Background, list[_ObjectSpec]]:
    """A new background, and new colours and textures for the same shapes, sizes, poses and places."""
    background = _sample_background(rng)
    restyled: list[_ObjectSpec] = []
    for spec in specs:
        color, rgb = _draw_colour(rng, background, avoid=restyled[0].color if restyled else None)
        if spec.dominant:
            texture = TEXTURES[rng.integers(len(TEXTURES))]
            restyled.append(dataclasses.replace(spec, color=color, rgb=rgb, texture=texture, **_draw_pattern(rng)))
        else:  # small objects stay solid, as sampled
            restyled.append(dataclasses.replace(spec, color=color, rgb=rgb))
    return background, restyled


def _repose(specs: list[_ObjectSpec], rng: np.random.Generator) -> list[_ObjectSpec]:
    """The same objects (shapes and sizes) at new rotations and places."""
    moved: list[_ObjectSpec] = []
    for spec in specs:
        angle = _draw_angle(rng, spec.shape)
        if spec.dominant:
            center = _dominant_centre(rng, spec.shape, angle, spec.radius)
        else:
            center = _small_centre(rng, spec.shape, angle, spec.radius, moved)
        moved.append(dataclasses.replace(spec, angle=angle, center=center))
    return moved


def render_appearances(seed: int, n: int, size: int = 64, *, split: str = "train",
                       repose: bool = False) -> list[Scene]:
    """``n`` renderings of one scene that share its geometry (or, with ``repose``, its objects) and nothing else.

    Introduced in chapter 1's exercises.

    The first is the scene itself (``render_scene(seed, size, split=split)``); the others
    keep every object's shape, size, rotation and position but draw a new background, new
    colours and new textures, and their captions name the new colours. How close an
    encoder keeps the embeddings of such renderings measures how much of it is shape.
    With ``repose=True`` the other renderings also turn and move every object, so they
    share only the objects' shapes and sizes.

    Raises:
        ValueError: If ``n < 1`` or the split, seed or size is invalid.
    """
    split_code = _check_split(split)
    seed = _check_seed(seed)
    size = _check_size(size)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    background, specs, context = _layout(split_code, seed, None, None, (), None)
    scenes = []
    for k in range(n):
        if k:
            context = None
            rng = _rng(split_code, seed, _STREAM_RESTYLE + k)
            background, specs = _restyle(specs, rng)
            if repose:
                specs = _repose(specs, rng)
        pixels = _STREAM_PIXELS if k == 0 else _STREAM_RESTYLE_PIXELS + k
        scenes.append(_paint(background, specs, size, split_code, seed, split, pixels, context=context))
    return scenes


def _paint(background: _Background, specs: list[_ObjectSpec], size: int, split_code: int, seed: int, split: str,
           pixel_stream: int = _STREAM_PIXELS, *, context: str | None = None) -> Scene:
    """Draw the layout into an image (noise from ``pixel_stream``) and caption it."""
    canvas = _paint_background(background, size, _rng(split_code, seed, pixel_stream))
    objects = [_paint_object(canvas, spec, size) for spec in specs]
    image = Image.fromarray(np.rint(np.clip(canvas, 0, 255)).astype(np.uint8), "RGB")
    captions = _captions(_rng(split_code, seed, _STREAM_WORDS), objects, background.kind)
    return Scene(image, objects, background.kind, captions, seed, split, context)


def _layout(
    split_code: int,
    seed: int,
    small_objects: int | None,
    label: str | None,
    small_shapes: Sequence[str],
    dominant_size: str | None,
    context_label: str | None = None,
    context_probability: float | None = None,
) -> tuple[_Background, list[_ObjectSpec], str | None]:
    """Background, object specs and the class whose typical context the scene follows (or ``None``).

    A typical scene follows the context of ``context_label``, by default its own label.
    """
    layout = _rng(split_code, seed, _STREAM_LAYOUT)
    # These draws happen even when forced, so forcing one leaves the rest unchanged.
    drawn_label = CLASSES[layout.integers(len(CLASSES))]
    drawn_count = int(layout.choice(len(SMALL_COUNT_PROBS), p=SMALL_COUNT_PROBS))
    if context_probability is None:
        context_probability = _SPLIT_CONTEXT_PROBABILITY[SPLITS[split_code]]
    typical = layout.random() < context_probability
    label = label or drawn_label
    n_small = drawn_count if small_objects is None else small_objects
    context_name = (context_label or label) if typical else None
    context = TYPICAL_CONTEXT[context_name] if context_name else None

    background = _sample_background(layout, context)
    specs = [_sample_dominant(layout, label, background, dominant_size, context)]
    for k in range(n_small):
        drawn_shape = CLASSES[layout.integers(len(CLASSES))]
        shape = small_shapes[k] if k < len(small_shapes) else drawn_shape
        specs.append(_sample_small(layout, shape, background, specs))
    return background, specs, context_name


def _render(
    seed: int,
    size: int,
    split: str,
    small_objects: int | None,
    label: str | None,
    small_shapes: Sequence[str] = (),
    dominant_size: str | None = None,
    context_label: str | None = None,
    context_probability: float | None = None,
) -> Scene:
    split_code = _check_split(split)
    if context_probability is not None and not 0.0 <= context_probability <= 1.0:
        raise ValueError(f"context_probability must lie in [0, 1], got {context_probability}")
    seed = _check_seed(seed)
    size = _check_size(size)
    small_objects = _check_small_count(small_objects)
    if label is not None:
        _check_class(label, "label")
    if dominant_size is not None and dominant_size not in SIZES:
        raise ValueError(f"unknown dominant_size {dominant_size!r}; use one of {SIZES}")

    if context_label is not None:
        _check_class(context_label, "context_label")
    background, specs, context = _layout(split_code, seed, small_objects, label, small_shapes, dominant_size,
                                         context_label, context_probability)
    return _paint(background, specs, size, split_code, seed, split, context=context)


def render_scene(
    seed: int,
    size: int = 64,
    *,
    split: str = "train",
    small_objects: int | None = None,
    label: str | None = None,
    context_label: str | None = None,
    context_probability: float | None = None,
) -> Scene:
    """Render one synthetic scene, deterministically from ``(split, seed)``.

    Introduced in chapter 1.

    Args:
        seed: The scene's index within its split (``>= 0``).
        size: Side of the square image in pixels (16 to 2048).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"mixed"``; each has its own
            random stream. Scenes of the first three follow their class's typical
            context with probability ``CONTEXT_PROBABILITY``; ``mixed`` scenes never do.
        small_objects: Number of small objects (0 to 3); ``None`` draws it (half of
            the scenes have none).
        label: Class of the dominant object; ``None`` draws it.
        context_label: The class whose typical context a typical scene follows;
            ``None`` for the dominant object's own class. Setting it to the drawn
            class while forcing ``label`` gives a shape twin: the same scene with
            another shape.
        context_probability: How likely the scene is to follow a typical context;
            ``None`` for its split's (``CONTEXT_PROBABILITY``, or 0 for ``mixed``).
            Only the context changes: the rest of the layout is drawn as before.

    Returns:
        The scene. Forcing ``label`` or ``small_objects`` keeps the layout and whether
        the scene follows a typical context; a typical scene's background, colour and
        texture follow ``context_label`` (by default the forced class).

    Raises:
        ValueError: If the split, seed, size, label or small-object count is invalid.
        TypeError: If ``seed`` or ``size`` is not an integer.
    """
    return _render(seed, size, split, small_objects, label, context_label=context_label,
                   context_probability=context_probability)


def make_split(
    split: str,
    n: int,
    size: int = 64,
    *,
    start: int = 0,
    small_objects: int | None = None,
    context_probability: float | None = None,
) -> list[Scene]:
    """Render scenes ``start`` to ``start + n - 1`` of a split.

    Introduced in chapter 1.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        n: Number of scenes (``>= 0``).
        size: Image side in pixels.
        start: Index of the first scene.
        small_objects: Small objects per scene, or ``None`` to draw them.
        context_probability: As in :func:`render_scene`; ``None`` for the split's.

    Returns:
        The scenes, in index order.

    Raises:
        ValueError: If ``n`` or ``start`` is negative, or a scene argument is invalid.
    """
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    return [render_scene(start + i, size, split=split, small_objects=small_objects,
                         context_probability=context_probability) for i in range(n)]


def iter_split(
    split: str,
    size: int = 64,
    start: int = 0,
    *,
    small_objects: int | None = None,
) -> Iterator[Scene]:
    """Yield the scenes of a split from index ``start`` on, without end.

    Introduced in chapter 1.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: Image side in pixels.
        start: Index of the first scene.
        small_objects: Small objects per scene, or ``None`` to draw them.

    Returns:
        An endless iterator; the scenes equal those of :func:`make_split`.

    Raises:
        ValueError: If the split, size or ``start`` is invalid (checked at once).
    """
    _check_split(split)
    _check_size(size)
    _check_seed(start)
    _check_small_count(small_objects)
    return (render_scene(i, size, split=split, small_objects=small_objects) for i in count(start))


def eval_set(
    split: str = "test",
    per_class: int = 50,
    size: int = 64,
    *,
    small_objects: int | None = 0,
) -> list[Scene]:
    """The balanced 10-class evaluation set, "synthetic Imagenette".

    Scene ``i`` is scene ``i`` of the split with its dominant object forced to
    ``CLASSES[i % 10]``, so classes interleave and a smaller ``per_class`` gives a
    prefix of a larger one. Like Imagenette it has ten classes; unlike it, it is
    balanced and its labels are exact.

    Introduced in chapter 3.

    Args:
        split: ``"test"`` for reported numbers, ``"val"`` for fitting thresholds,
            ``"mixed"`` for the same classes with context drawn independently of them.
        per_class: Scenes per class (``>= 1``).
        size: Image side in pixels.
        small_objects: Small objects per scene (default none: one object per image).

    Returns:
        ``10 * per_class`` scenes.

    Raises:
        ValueError: If ``per_class`` is below 1 or a scene argument is invalid.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    return [
        render_scene(i, size, split=split, small_objects=small_objects, label=CLASSES[i % len(CLASSES)])
        for i in range(per_class * len(CLASSES))
    ]


def scene_with_small_object(
    seed: int,
    size: int = 224,
    *,
    small_shape: str,
    dominant: str | None = None,
    dominant_size: str = "large",
    split: str = "test",
) -> Scene:
    """A scene with one dominant object and one small object of a chosen class.

    The dominant object is never of class ``small_shape``. The same scene without the
    small object is :func:`without_small_objects` of the result.

    Introduced in chapter 6.

    Args:
        seed: Scene index within the split.
        size: Image side in pixels.
        small_shape: Class of the small object.
        dominant: Class of the dominant object; ``None`` draws one other than ``small_shape``.
        dominant_size: Size of the dominant object, one of ``SIZES``.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        The scene; ``scene.small_objects[0].box`` locates the small object.

    Raises:
        ValueError: If a class or the size is unknown, or both classes are the same.
    """
    _check_class(small_shape, "small_shape")
    if dominant is None:
        drawn = CLASSES[_rng(_check_split(split), _check_seed(seed), _STREAM_LAYOUT).integers(len(CLASSES))]
        dominant = drawn if drawn != small_shape else CLASSES[(CLASSES.index(drawn) + 1) % len(CLASSES)]
    _check_class(dominant, "dominant")
    if dominant == small_shape:
        raise ValueError(f"dominant and small_shape are both {small_shape!r}; choose different classes")
    return _render(seed, size, split, 1, dominant, (small_shape,), dominant_size)


def without_small_objects(scene: Scene) -> Scene:
    """Re-render a scene with its dominant object and background only.

    Introduced in chapter 6.

    Args:
        scene: A scene from this module.

    Returns:
        The same scene (same seed, split, size and dominant object) with no small objects.
    """
    dom = scene.objects[0]
    return _render(scene.seed, scene.image.size[0], scene.split, 0, dom.shape, (), dom.size,
                   context_label=scene.context)


def crop_box(
    box: Sequence[int],
    image_size: int | tuple[int, int],
    margin: float = 0.5,
    *,
    square: bool = True,
) -> tuple[int, int, int, int]:
    """A crop around a box, widened by a margin and kept inside the image.

    Introduced in chapter 6.

    Args:
        box: ``(x0, y0, x1, y1)`` with exclusive ``x1``, ``y1``.
        image_size: Image side, or ``(width, height)``.
        margin: Extra space on each side, as a fraction of the box's longer side.
        square: Make the crop square (shifted, not squashed, at the image edges).

    Returns:
        ``(x0, y0, x1, y1)`` for ``PIL.Image.crop``.

    Raises:
        ValueError: If the box is empty or outside the image, or ``margin`` is negative.
    """
    width, height = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    if len(box) != 4:
        raise ValueError(f"box must be (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {tuple(box)} is empty or outside the {width}x{height} image")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    pad = margin * max(x1 - x0, y1 - y0)
    half_w = (x1 - x0) / 2 + pad
    half_h = (y1 - y0) / 2 + pad
    if square:
        half_w = half_h = min(max(half_w, half_h), width / 2, height / 2)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2

    def span(centre: float, half: float, limit: int) -> tuple[int, int]:
        lo = max(0, round(centre - half))
        hi = min(limit, round(centre + half))
        side = min(limit, round(2 * half))
        # Shift back inside the image instead of shrinking.
        if hi - lo < side:
            lo, hi = (0, side) if lo == 0 else (limit - side, limit)
        return lo, hi

    left, right = span(cx, half_w, width)
    top, bottom = span(cy, half_h, height)
    return left, top, right, bottom


def aspect_crop(box: Sequence[int], image_size: int, aspect: float) -> tuple[int, int, int, int]:
    """The largest crop of a square image with a given width-to-height ratio, centred on a box.

    A wide crop (``aspect > 1``) keeps the full width and a horizontal band of height
    ``image_size / aspect``; a tall one (``aspect < 1``) the full height and a vertical
    band. The band is centred on the box, shifted back inside the image at the edges; a
    box taller (or wider) than the band is cut. Introduced in chapter 2.

    Args:
        box: ``(x0, y0, x1, y1)`` with exclusive ``x1``, ``y1``, e.g. a scene object's box.
        image_size: Side of the square image.
        aspect: Width over height of the crop (``1.5`` for 3:2, ``2 / 3`` for 2:3).

    Returns:
        ``(x0, y0, x1, y1)`` for ``PIL.Image.crop``.

    Raises:
        ValueError: If ``aspect`` is not positive or the box is empty or outside the image.
    """
    if not aspect > 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= image_size and 0 <= y0 < y1 <= image_size):
        raise ValueError(f"box {tuple(box)} is empty or outside the {image_size}x{image_size} image")
    side = max(1, min(image_size, round(image_size / aspect if aspect >= 1 else image_size * aspect)))
    centre = (y0 + y1) / 2 if aspect >= 1 else (x0 + x1) / 2
    start = int(round(min(max(centre - side / 2, 0), image_size - side)))
    if aspect >= 1:
        return 0, start, image_size, start + side
    return start, 0, start + side, image_size


_IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}
LABELS_FILE = "labels.json"


def scene_file_name(scene: Scene, fmt: str = "png") -> str:
    """The file name :func:`save_scenes` gives a scene: ``{split}-{seed:05d}-{label}.{fmt}``.

    Introduced in chapter 1.
    """
    return f"{scene.split}-{scene.seed:05d}-{scene.label}.{fmt}"


def save_scenes(scenes: Iterable[Scene], folder: str | Path, *, fmt: str = "png") -> list[Path]:
    """Write scene images and a ``labels.json`` describing them to a folder.

    ``labels.json`` maps each file name to the scene's split, seed, label, background,
    captions and objects (with boxes); it replaces any ``labels.json`` already there.

    Introduced in chapter 1.

    Args:
        scenes: Scenes to save.
        folder: Destination folder, created if missing.
        fmt: ``"png"`` (lossless) or ``"jpg"``.

    Returns:
        The image paths, in the order of ``scenes``.

    Raises:
        ValueError: If ``fmt`` is unknown or two scenes would get the same file name.
    """
    if fmt not in _IMAGE_FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; use one of {sorted(_IMAGE_FORMATS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels: dict[str, dict] = {}
    paths = []
    for scene in scenes:
        name = scene_file_name(scene, fmt)
        if name in labels:
            raise ValueError(f"two scenes would both be saved as {name!r}")
        path = folder / name
        if fmt == "png":
            scene.image.save(path, _IMAGE_FORMATS[fmt])
        else:
            scene.image.save(path, _IMAGE_FORMATS[fmt], quality=95)
        labels[name] = {
            "split": scene.split,
            "seed": scene.seed,
            "label": scene.label,
            "label_index": scene.label_index,
            "background": scene.background,
            "context": scene.context,
            "captions": list(scene.captions),
            "objects": [asdict(o) for o in scene.objects],
        }
        paths.append(path)
    (folder / LABELS_FILE).write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
    return paths


def load_scenes(folder: str | Path) -> list[Scene]:
    """Read back the scenes that :func:`save_scenes` wrote to a folder.

    Introduced in chapter 1.

    Args:
        folder: A folder holding ``labels.json`` and the images it names.

    Returns:
        The scenes, in the order of ``labels.json``.

    Raises:
        FileNotFoundError: If ``labels.json`` or an image it names is missing.
        ValueError: If an entry of ``labels.json`` lacks a field.
    """
    folder = Path(folder)
    labels_path = folder / LABELS_FILE
    if not labels_path.is_file():
        raise FileNotFoundError(f"no {LABELS_FILE} in {folder}")
    entries = json.loads(labels_path.read_text(encoding="utf-8"))
    scenes = []
    for name, entry in entries.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{LABELS_FILE} names {name!r}, which is not in {folder}")
        try:
            objects = [SceneObject(**{**o, "box": tuple(o["box"])}) for o in entry["objects"]]
            with Image.open(path) as img:
                image = img.convert("RGB")
            scenes.append(
                Scene(image, objects, entry["background"], list(entry["captions"]), entry["seed"], entry["split"],
                      entry.get("context"))
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"entry {name!r} of {labels_path} is malformed: {err}") from err
    return scenes
