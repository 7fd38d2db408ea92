"""Finding small objects that a whole-image embedding drowns out.

A scene embedding mostly describes the dominant object; a small object barely moves
it. Three probes find the small object again: embed crops around it, embed
overlapping tiles and keep the best, or compare every patch feature with the query
to get a similarity map. Introduced in chapter 6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

if TYPE_CHECKING:
    from vslib.encoders import Encoder


__all__ = [
    "Tile",
    "best_tile",
    "box_coverage",
    "cell_boxes",
    "crop",
    "map_region",
    "patch_boxes",
    "patch_similarity_map",
    "tile_scores",
    "tiles",
    "upsample_map",
]

Box = tuple[int, int, int, int]


@dataclass
class Tile:
    """One tile of an image.

    Introduced in chapter 6.

    Args:
        box: ``(x0, y0, x1, y1)`` in pixels of the source image, ``x1``/``y1`` exclusive.
        image: The cropped tile.
    """

    box: Box
    image: Image.Image


def _spans(length: int, n: int, overlap: float) -> list[tuple[int, int]]:
    # n spans of equal size whose neighbours share `overlap` of a span and which cover [0, length).
    size = length / (n - (n - 1) * overlap)
    step = size * (1 - overlap)
    spans = []
    for j in range(n):
        lo = int(round(j * step))
        hi = length if j == n - 1 else min(length, int(round(j * step + size)))
        spans.append((lo, hi))
    return spans


def tiles(image: Image.Image, grid: tuple[int, int] = (2, 2), overlap: float = 0.25) -> list[Tile]:
    """Cut an image into a grid of overlapping tiles that cover it.

    Neighbouring tiles share ``overlap`` of a tile's width (or height), so an object on
    a border lies whole in at least one tile when it is smaller than the overlap.
    Introduced in chapter 6.

    Args:
        image: The image.
        grid: ``(rows, cols)``.
        overlap: Shared fraction of a tile between neighbours, in ``[0, 1)``.

    Returns:
        ``rows * cols`` tiles in row-major order (left to right, then top to bottom).

    Raises:
        ValueError: If the grid is not positive or ``overlap`` is outside ``[0, 1)``.
    """
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be two positive ints (rows, cols), got {grid!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    width, height = image.size
    if rows > height or cols > width:
        raise ValueError(f"a {rows}x{cols} grid does not fit a {width}x{height} image")
    out = []
    for y0, y1 in _spans(height, rows, overlap):
        for x0, x1 in _spans(width, cols, overlap):
            box = (x0, y0, x1, y1)
            out.append(Tile(box=box, image=image.crop(box)))
    return out


def crop(image: Image.Image, box: Sequence[float], pad: float = 0.1) -> Image.Image:
    """Crop a box widened by ``pad`` of its width and height on each side, kept inside the image.

    Introduced in chapter 6.

    Args:
        image: The image.
        box: ``(x0, y0, x1, y1)`` in pixels.
        pad: Extra margin per side as a fraction of the box's width (height).

    Raises:
        ValueError: If the box is empty or outside the image, or ``pad`` is negative.
    """
    if len(box) != 4:
        raise ValueError(f"box must be (x0, y0, x1, y1), got {box!r}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    x0, y0, x1, y1 = (float(v) for v in box)
    width, height = image.size
    left, top, right, bottom = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    if not (left < right and top < bottom):
        raise ValueError(f"box {tuple(box)} is empty or outside the {width}x{height} image")
    dx, dy = pad * (x1 - x0), pad * (y1 - y0)
    padded = (
        max(0, int(np.floor(x0 - dx))),
        max(0, int(np.floor(y0 - dy))),
        min(width, int(np.ceil(x1 + dx))),
        min(height, int(np.ceil(y1 + dy))),
    )
    return image.crop(padded)


def _query_matrix(encoder: Encoder, query: str | Sequence[str] | np.ndarray) -> tuple[np.ndarray, bool]:
    """Unit query vectors ``(Q, dim)`` and whether a single query was given."""
    if isinstance(query, str):
        return encoder.encode_texts([query]), True
    if isinstance(query, np.ndarray):
        q = np.asarray(query, dtype=np.float32)
        single = q.ndim == 1
        q = np.atleast_2d(q)
        return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12), single
    return encoder.encode_texts(list(query)), False


def tile_scores(
    encoder: Encoder,
    image: Image.Image,
    query: str | Sequence[str] | np.ndarray,
    grid: tuple[int, int] = (2, 2),
    overlap: float = 0.25,
) -> np.ndarray:
    """Cosine score of each tile (see :func:`tiles`) against text or embedding queries.

    Introduced in chapter 6.

    Args:
        encoder: The encoder that embeds the tiles (and texts).
        image: The image to tile.
        query: A text, a list of texts, or query embeddings ``(dim,)`` or ``(Q, dim)``
            (e.g. an image embedding, for image-to-tile search).
        grid: ``(rows, cols)`` of tiles.
        overlap: Shared fraction between neighbouring tiles.

    Returns:
        ``(n_tiles,)`` for one text or a 1-D embedding, else ``(n_tiles, Q)``; tile
        order as in :func:`tiles`.

    Raises:
        ValueError: If the query dimension differs from the encoder's.
    """
    q, single = _query_matrix(encoder, query)
    emb = encoder.encode_images([t.image for t in tiles(image, grid, overlap)])
    if q.shape[1] != emb.shape[1]:
        raise ValueError(f"query has dim {q.shape[1]} but {encoder.name} embeds images in dim {emb.shape[1]}")
    scores = emb @ q.T
    return scores[:, 0] if single else scores


def best_tile(
    encoder: Encoder,
    image: Image.Image,
    query: str | np.ndarray,
    grid: tuple[int, int] = (2, 2),
    overlap: float = 0.25,
) -> tuple[Tile, float]:
    """The tile that scores highest against one query, and its score.

    Introduced in chapter 6.

    Args:
        encoder: The encoder.
        image: The image to tile.
        query: One text or one ``(dim,)`` embedding.
        grid: ``(rows, cols)`` of tiles.
        overlap: Shared fraction between neighbouring tiles.
    """
    if isinstance(query, np.ndarray) and query.ndim != 1:
        raise ValueError("best_tile takes one query; pass a (dim,) embedding")
    if not isinstance(query, (str, np.ndarray)):
        raise TypeError(f"query must be a str or a (dim,) array, got {type(query).__name__}")
    scores = tile_scores(encoder, image, query, grid, overlap)
    i = int(np.argmax(scores))
    return tiles(image, grid, overlap)[i], float(scores[i])


def patch_similarity_map(encoder: Encoder, image: Image.Image, query: str | Image.Image | np.ndarray) -> np.ndarray:
    """Cosine similarity of every patch feature with a query, on the patch grid.

    A text query is embedded with :meth:`~vslib.encoders.Encoder.patch_text_features`
    (the text space of the patch features). An image query (a PIL image, or an
    embedding array) is compared directly, which only makes sense where image
    embeddings and patch features share a space, as for DINOv3's CLS token and patches.
    The map covers what the encoder sees: for a non-square image and a centre-cropping
    preprocessor, only the central square. Introduced in chapter 6.

    Args:
        encoder: An encoder that implements ``patch_features``.
        image: The image to map.
        query: A text, a query image, or a query embedding ``(D,)``.

    Returns:
        ``(rows, cols)`` float32 cosines; upsample with :func:`upsample_map` to overlay.

    Raises:
        NotImplementedError: If the encoder has no patch features (or no patch text space).
        ValueError: If an image query's dimension differs from the patch features'.
    """
    feats = encoder.patch_features([image])[0]
    if isinstance(query, str):
        q = encoder.patch_text_features([query])[0]
    else:
        if isinstance(query, Image.Image):
            q = encoder.encode_images([query])[0]
        else:
            q = np.asarray(query, dtype=np.float32).ravel()
        if q.shape[0] != feats.shape[-1]:
            raise ValueError(
                f"query embedding has dim {q.shape[0]} but patch features dim {feats.shape[-1]}; "
                f"{encoder.name}'s image embeddings and patch features do not share a space"
            )
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    return (feats @ q).astype(np.float32)


def upsample_map(sim_map: ArrayLike, size: int | tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize a patch-grid map to image size for overlays.

    Introduced in chapter 6.

    Args:
        sim_map: ``(rows, cols)`` values.
        size: Image side, or ``(width, height)`` as in ``PIL.Image.size``.
        mode: ``"bilinear"`` (smooth) or ``"nearest"`` (one block per patch).

    Returns:
        ``(height, width)`` float32 array.
    """
    resample = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}.get(mode)
    if resample is None:
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    grid = np.asarray(sim_map, dtype=np.float32)
    if grid.ndim != 2:
        raise ValueError(f"sim_map must be 2-D (rows, cols), got shape {grid.shape}")
    width, height = (size, size) if isinstance(size, (int, np.integer)) else size
    return np.asarray(Image.fromarray(grid).resize((int(width), int(height)), resample), dtype=np.float32)


def box_coverage(box: Sequence[float], region: Sequence[float]) -> float:
    """Fraction of a box's area that lies inside a region.

    ``1.0`` means the region (a tile, a crop) holds the whole box, ``0.0`` that they do
    not overlap; ``> 0`` tells whether a patch cell touches an object. Introduced in
    chapter 6.

    Args:
        box: ``(x0, y0, x1, y1)``, e.g. an object's box.
        region: ``(x0, y0, x1, y1)``, e.g. a :class:`Tile`'s box.

    Raises:
        ValueError: If ``box`` is empty.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    area = (x1 - x0) * (y1 - y0)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {tuple(box)} is empty")
    rx0, ry0, rx1, ry1 = (float(v) for v in region)
    w = max(0.0, min(x1, rx1) - max(x0, rx0))
    h = max(0.0, min(y1, ry1) - max(y0, ry0))
    return w * h / area


def cell_boxes(grid: tuple[int, int], size: int | tuple[int, int]) -> list[Box]:
    """Pixel boxes of the cells of a patch grid stretched over an image, row-major.

    Cell ``r * cols + c`` is where entry ``[r, c]`` of a
    :func:`patch_similarity_map` lands on the image (as :func:`vslib.viz.heatmap_overlay`
    draws it). Introduced in chapter 6.

    Args:
        grid: ``(rows, cols)``, e.g. ``sim_map.shape``.
        size: Image side, or ``(width, height)`` as in ``PIL.Image.size``.

    Returns:
        ``rows * cols`` boxes ``(x0, y0, x1, y1)`` that tile the image exactly.
    """
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be two positive ints (rows, cols), got {grid!r}")
    width, height = (size, size) if isinstance(size, (int, np.integer)) else size
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    return [(int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1])) for r in range(rows) for c in range(cols)]


def patch_boxes(encoder: Encoder, grid: tuple[int, int], size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Boxes on the original image of the patch cells an encoder sees, row-major.

    Unlike :func:`cell_boxes`, which stretches the grid over the whole image, this
    follows the encoder's own resize and crop (:attr:`~vslib.encoders.Encoder.geometry`):
    with dino.txt's short-side resize and centre crop, the cells of a wide image cover
    only its central part. Introduced in chapter 6.

    Args:
        encoder: The encoder whose :func:`patch_similarity_map` the grid came from.
        grid: ``(rows, cols)``, e.g. ``sim_map.shape``.
        size: ``(width, height)`` of the original image, as ``PIL.Image.size``.

    Returns:
        ``rows * cols`` float boxes ``(x0, y0, x1, y1)`` in original-image pixels.
    """
    geometry = encoder.geometry
    size = (int(size[0]), int(size[1]))
    return [geometry.to_image(cell, size) for cell in cell_boxes(grid, geometry.input_size(size))]


def map_region(encoder: Encoder, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The part of an image (``x0, y0, x1, y1``) that an encoder's patch grid covers.

    The whole image for a squashing preprocessor; the central part for a centre crop.
    Pass it to :func:`vslib.viz.heatmap_overlay` as ``region``. Introduced in chapter 6.
    """
    size = (int(size[0]), int(size[1]))
    width, height = encoder.geometry.input_size(size)
    return encoder.geometry.to_image((0, 0, width, height), size)
