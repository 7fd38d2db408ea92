"""A deterministic world of synthetic scenes: coloured shapes on varied backgrounds.

Every scene has one dominant object and optionally a few small ones, its labels, object
boxes and several captions. Most captions describe only the dominant object, as web
captions do; a few mention the small objects. The bundled tiny models are trained on
the ``train`` split; the chapters evaluate on ``val`` and ``test``. Splits draw from
disjoint random streams, so they never share a scene.

Introduced in chapter 1 (the scenes every chapter searches) and used throughout.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vslib.templates import IMAGENET_TEMPLATES, SHORT_TEMPLATES

CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon", "heart", "arrow",
)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 30),
    "orange": (245, 130, 20),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "beige": (225, 210, 175),
    "navy": (25, 35, 80),
    "teal": (40, 130, 130),
    "pink": (240, 170, 190),
    "olive": (110, 110, 40),
    "brown": (110, 70, 40),
    "lightblue": (170, 200, 235),
}
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "stripes")
SIZES: dict[str, float] = {"small": 0.34, "medium": 0.46, "large": 0.6}  # dominant object, fraction of side
SMALL_OBJECT_SIZE = (0.14, 0.2)
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
_EVAL_STREAM = 7
_MIN_CONTRAST = 110.0


@dataclass
class SceneObject:
    """One drawn object: class, attributes and its box (x0, y0, x1, y1) in pixels."""

    shape: str
    color: str
    texture: str
    size: str
    box: tuple[int, int, int, int]
    dominant: bool

    def phrase(self, *, with_size: bool = False, with_texture: bool = False) -> str:
        words = []
        if with_size:
            words.append(self.size)
        if with_texture and self.texture != "solid":
            words.append(self.texture)
        return " ".join([*words, self.color, self.shape])


@dataclass
class Scene:
    """A rendered scene with its objects (dominant first) and captions."""

    image: Image.Image
    objects: list[SceneObject]
    background: str
    background_color: str
    captions: list[str]
    seed: int
    split: str
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Class name of the dominant object."""
        return self.objects[0].shape

    @property
    def label_index(self) -> int:
        return CLASSES.index(self.label)

    @property
    def dominant(self) -> SceneObject:
        return self.objects[0]

    @property
    def small_objects(self) -> list[SceneObject]:
        return self.objects[1:]


def _rng(split: str, index: int, stream: int = 0) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLITS)}")
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence(entropy=index, spawn_key=(SPLITS[split], stream)))


# ---------------------------------------------------------------- shapes (unit coordinates)

def _regular(n: int, phase: float) -> list[tuple[float, float]]:
    return [(math.cos(phase + 2 * math.pi * k / n), math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _star() -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.42
        a = -math.pi / 2 + math.pi * k / 5
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _heart() -> list[tuple[float, float]]:
    pts = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17, -(y + 2.5) / 17))
    return pts


_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)],
    "star": _star(),
    "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
              (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "diamond": [(0.0, -1.0), (0.65, 0.0), (0.0, 1.0), (-0.65, 0.0)],
    "hexagon": _regular(6, 0.0),
    "heart": _heart(),
    "arrow": [(-1, -0.22), (0.15, -0.22), (0.15, -0.6), (1, 0), (0.15, 0.6), (0.15, 0.22), (-1, 0.22)],
}


def _shape_mask(shape: str, size: int, cx: float, cy: float, radius: float, angle: float) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if shape in ("circle", "ring"):
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
        if shape == "ring":
            r2 = radius * 0.55
            draw.ellipse([cx - r2, cy - r2, cx + r2, cy + r2], fill=0)
        return mask
    ca, sa = math.cos(angle), math.sin(angle)
    pts = [(cx + radius * (x * ca - y * sa), cy + radius * (x * sa + y * ca)) for x, y in _POLYGONS[shape]]
    draw.polygon(pts, fill=255)
    return mask


def _texture_fill(texture: str, rgb: tuple[int, int, int], size: int, period: float, rng) -> Image.Image:
    fill = Image.new("RGB", (size, size), rgb)
    if texture == "solid":
        return fill
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    other = tuple(int(c * 0.35) for c in rgb) if lum > 110 else tuple(int(c + (255 - c) * 0.6) for c in rgb)
    draw = ImageDraw.Draw(fill)
    step = max(3.0, period)
    if texture == "striped":
        width = max(1, int(step * 0.45))
        for k in range(-2 * size, 2 * size, int(step)):
            draw.line([(k, 0), (k + size, size)], fill=other, width=width)
    else:  # dotted
        r = max(1.0, step * 0.22)
        off = rng.uniform(0, step)
        y = off
        while y < size:
            x = off
            while x < size:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=other)
                x += step
            y += step
    return fill


def _background(kind: str, base: tuple[int, int, int], size: int, rng) -> Image.Image:
    if kind == "plain":
        return Image.new("RGB", (size, size), base)
    b = np.array(base, dtype=np.float32)
    if kind == "gradient":
        other = np.clip(b + rng.uniform(-90, 90, 3), 0, 255)
        t = np.linspace(0, 1, size, dtype=np.float32)
        ramp = t[:, None] if rng.random() < 0.5 else t[None, :]
        arr = b + (other - b) * ramp[..., None]
        arr = np.broadcast_to(arr, (size, size, 3))
    elif kind == "noise":
        cells = max(4, size // 4)
        noise = rng.normal(0, 28, (cells, cells, 3)).astype(np.float32)
        small = Image.fromarray(np.clip(b + noise, 0, 255).astype(np.uint8))
        return small.resize((size, size), Image.Resampling.NEAREST)
    else:  # stripes
        other = np.clip(b * 0.75 + 20, 0, 255)
        period = max(4, int(size * rng.uniform(0.08, 0.16)))
        band = (np.arange(size) // (period // 2)) % 2 == 0
        arr = np.where(band[:, None, None], b, other)
        arr = np.broadcast_to(arr, (size, size, 3)) if rng.random() < 0.5 else np.broadcast_to(
            np.where(band[None, :, None], b, other), (size, size, 3))
    return Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8))


def _pick_color(rng, bg_rgb: tuple[int, int, int], exclude: Sequence[str] = ()) -> str:
    names = [n for n in COLORS if n not in exclude]
    ok = [n for n in names if np.linalg.norm(np.subtract(COLORS[n], bg_rgb)) >= _MIN_CONTRAST]
    return str(rng.choice(ok or names))


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


# ---------------------------------------------------------------- captions

def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _captions(objects: list[SceneObject], background: str, rng, mention_small: bool) -> list[str]:
    d = objects[0]
    color_shape = f"{d.color} {d.shape}"
    caps = [
        _a(color_shape),
        _a(d.shape),
        _a(d.phrase(with_size=True, with_texture=True)),
        f"{_a(d.phrase(with_texture=True))} on {_a(background)} background",
        str(rng.choice(IMAGENET_TEMPLATES)).format(color_shape),
        str(rng.choice(IMAGENET_TEMPLATES)).format(d.shape),
        str(rng.choice(SHORT_TEMPLATES)).format(color_shape),
    ]
    if d.texture != "solid":
        caps.append(_a(f"{d.texture} {d.shape}"))
    if mention_small and len(objects) > 1:
        s = objects[1 + int(rng.integers(len(objects) - 1))]
        caps.append(f"{_a(d.phrase(with_size=True))} and a small {s.color} {s.shape}")
    return caps


_WORD = re.compile(r"\w+|[^\w\s]")


def caption_words(text: str) -> list[str]:
    """Split a caption into the word and punctuation tokens ``caption_vocabulary`` lists."""
    return _WORD.findall(text.lower())


def caption_vocabulary() -> list[str]:
    """Every word or punctuation token any caption (or filled template) can contain, sorted."""
    words: set[str] = set()
    fixed = [*CLASSES, *COLORS, *TEXTURES, *BACKGROUNDS, *SIZES, "a", "an", "and", "on", "background"]
    for w in fixed:
        words.update(caption_words(w))
    for t in (*IMAGENET_TEMPLATES, *SHORT_TEMPLATES):
        words.update(caption_words(t.replace("{}", " ")))
    return sorted(words)


# ---------------------------------------------------------------- rendering

def render_scene(
    seed: int,
    size: int = 64,
    *,
    split: str = "train",
    small_objects: int | None = None,
    label: str | None = None,
    small_label: str | None = None,
    _stream: int = 0,
) -> Scene:
    """Render scene number ``seed`` of ``split`` at ``size`` x ``size`` pixels (deterministic).

    Args:
        seed: index of the scene within its split; the same (split, seed) always gives the same scene.
        size: side of the square image in pixels.
        split: ``"train"``, ``"val"`` or ``"test"``; splits use disjoint random streams.
        small_objects: number of small objects (0-3); random (0-3, half the scenes none) if ``None``.
        label: force the dominant object's class.
        small_label: force the class of the first small object (needs ``small_objects >= 1``).
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if label is not None and label not in CLASSES:
        raise ValueError(f"unknown class {label!r}; classes are {', '.join(CLASSES)}")
    if small_label is not None and small_label not in CLASSES:
        raise ValueError(f"unknown class {small_label!r}; classes are {', '.join(CLASSES)}")
    rng = _rng(split, seed, _stream)
    ss = 4 if size <= 96 else 2
    big = size * ss

    bg_kind = str(rng.choice(BACKGROUNDS))
    bg_name = str(rng.choice(list(BACKGROUND_COLORS)))
    bg_rgb = BACKGROUND_COLORS[bg_name]
    canvas = _background(bg_kind, bg_rgb, big, rng)

    n_small = small_objects if small_objects is not None else int(rng.choice([0, 0, 0, 1, 2, 3]))
    if not 0 <= n_small <= 3:
        raise ValueError(f"small_objects must be between 0 and 3, got {n_small}")
    if small_label is not None and n_small < 1:
        raise ValueError("small_label needs small_objects >= 1")

    shape = label or str(rng.choice(CLASSES))
    size_name = str(rng.choice(list(SIZES)))
    radius = SIZES[size_name] * big / 2 * rng.uniform(0.9, 1.1)
    margin = radius * 1.02
    cx = rng.uniform(margin, big - margin)
    cy = rng.uniform(margin, big - margin)
    color = _pick_color(rng, bg_rgb)
    texture = str(rng.choice(TEXTURES, p=[0.5, 0.25, 0.25]))
    angle = math.radians(rng.uniform(-12, 12))
    placed = [(shape, color, texture, size_name, cx, cy, radius, angle, True)]

    dom_box = (cx - radius, cy - radius, cx + radius, cy + radius)
    boxes = [dom_box]
    for k in range(n_small):
        s_shape = small_label if (k == 0 and small_label) else str(rng.choice(CLASSES))
        s_color = _pick_color(rng, bg_rgb)
        s_radius = rng.uniform(*SMALL_OBJECT_SIZE) * big / 2
        for _ in range(30):
            sx = rng.uniform(s_radius, big - s_radius)
            sy = rng.uniform(s_radius, big - s_radius)
            box = (sx - s_radius, sy - s_radius, sx + s_radius, sy + s_radius)
            if all(_overlap(box, b) < 0.05 * (2 * s_radius) ** 2 for b in boxes):
                break
        boxes.append(box)
        placed.append((s_shape, s_color, "solid", "small", sx, sy, s_radius, math.radians(rng.uniform(-12, 12)),
                       False))

    objects = []
    for shp, col, tex, sz, x, y, r, ang, dom in placed:
        mask = _shape_mask(shp, big, x, y, r, ang)
        fill = _texture_fill(tex, COLORS[col], big, r * 0.45, rng)
        canvas.paste(fill, (0, 0), mask)
        box = tuple(int(round(v / ss)) for v in (x - r, y - r, x + r, y + r))
        box = (max(0, box[0]), max(0, box[1]), min(size, box[2]), min(size, box[3]))
        objects.append(SceneObject(shp, col, tex, sz, box, dom))

    image = canvas.resize((size, size), Image.Resampling.BOX) if ss > 1 else canvas
    mention_small = n_small > 0 and rng.random() < 0.25
    captions = _captions(objects, bg_kind if bg_kind != "plain" else bg_name, rng, mention_small)
    return Scene(image, objects, bg_kind, bg_name, captions, seed, split)


def iter_split(split: str, size: int = 64, *, start: int = 0, small_objects: int | None = None) -> Iterator[Scene]:
    """Endless stream of scenes ``start, start + 1, ...`` of a split (for training loops)."""
    i = start
    while True:
        yield render_scene(i, size, split=split, small_objects=small_objects)
        i += 1


def make_split(split: str, n: int, size: int = 64, *, start: int = 0, small_objects: int | None = None) -> list[Scene]:
    """Scenes ``start`` to ``start + n - 1`` of a split (introduced in chapter 1)."""
    return [render_scene(i, size, split=split, small_objects=small_objects) for i in range(start, start + n)]


def eval_set(split: str = "test", per_class: int = 50, size: int = 64, *, small_objects: int = 0) -> list[Scene]:
    """Synthetic Imagenette: a balanced 10-class evaluation set (``per_class`` scenes per class).

    Scenes are ordered class by class; they come from the split's own evaluation stream, so
    they never coincide with ``make_split`` scenes of any split. Introduced in chapter 3.
    """
    scenes = []
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            scenes.append(render_scene(c * 1_000_000 + i, size, split=split, small_objects=small_objects,
                                       label=name, _stream=_EVAL_STREAM))
    return scenes


def scene_with_small_object(seed: int, size: int = 128, *, label: str | None = None, small_label: str = "star",
                            split: str = "test") -> Scene:
    """A scene with one dominant object and exactly one small object of class ``small_label`` (chapter 6)."""
    return render_scene(seed, size, split=split, small_objects=1, label=label, small_label=small_label,
                        _stream=_EVAL_STREAM + 1)


def crop_box(box: tuple[int, int, int, int], image_size: int, margin: float = 0.5) -> tuple[int, int, int, int]:
    """A square crop around ``box`` enlarged by ``margin`` of its side, clipped to the image."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = min(side, image_size)
    left = int(round(min(max(0, cx - side / 2), image_size - side)))
    top = int(round(min(max(0, cy - side / 2), image_size - side)))
    return left, top, left + int(round(side)), top + int(round(side))


def save_scenes(scenes: Sequence[Scene], folder: str | Path, *, fmt: str = "png") -> list[Path]:
    """Write scenes as image files plus ``labels.json`` (file name -> label, captions, objects)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], {}
    for s in scenes:
        name = f"{s.split}-{s.seed:07d}-{s.label}.{fmt}"
        path = folder / name
        s.image.save(path)
        paths.append(path)
        labels[name] = {
            "label": s.label,
            "captions": s.captions,
            "background": s.background,
            "objects": [asdict(o) for o in s.objects],
        }
    (folder / "labels.json").write_text(json.dumps(labels, indent=1))
    return paths
