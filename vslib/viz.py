"""Small, labelled matplotlib figures for the book's chapters.

Every function returns its :class:`~matplotlib.figure.Figure` and never shows it, so
a notebook displays it and a script can save it. Introduced in chapter 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import ArrayLike
from PIL import Image

from vslib.calibration import ReliabilityStats

__all__ = [
    "confusion_matrix_plot",
    "heatmap_overlay",
    "image_grid",
    "patch_grid_views",
    "reliability_diagram",
    "results_grid",
    "score_histograms",
]

_PANEL = 2.0  # inches per image panel
_TITLE_SIZE = 9


def _panels(n: int, cols: int, figsize: tuple[float, float] | None) -> tuple[Figure, list]:
    """A figure with ``n`` image axes on a grid of ``cols`` columns (unused cells removed)."""
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=figsize or (_PANEL * cols, _PANEL * rows + 0.3), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    for ax in flat[:n]:
        ax.set_axis_off()
    return fig, flat[:n]


def image_grid(
    images: Sequence[Image.Image | ArrayLike],
    titles: Sequence[str] | None = None,
    cols: int = 5,
    figsize: tuple[float, float] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Images on a grid, one titled panel each.

    Introduced in chapter 1.

    Args:
        images: PIL images or arrays.
        titles: One title per image.
        cols: Panels per row.
        figsize: Figure size in inches (default: 2 inches per panel).
        suptitle: Title of the whole figure.

    Returns:
        The figure; ``fig.axes`` holds one axis per image.
    """
    images = list(images)
    if not images:
        raise ValueError("no images to show")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    fig, axes = _panels(len(images), cols, figsize)
    for i, (ax, im) in enumerate(zip(axes, images)):
        ax.imshow(im)
        if titles is not None:
            ax.set_title(titles[i], fontsize=_TITLE_SIZE)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def patch_grid_views(
    views: Sequence[Image.Image | ArrayLike],
    patch_size: int,
    titles: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Model inputs side by side at one pixel scale, with their patch grids drawn on top.

    Every panel spans the largest width and height among the views, so a view's size on
    the page is its size in pixels. Introduced in chapter 2.

    Args:
        views: What the model reads (e.g. :meth:`~vslib.encoders.SiglipEncoder.input_views`).
        patch_size: Grid spacing in pixels.
        titles: One title per view.
        figsize: Figure size in inches.
        suptitle: Title of the whole figure.

    Returns:
        The figure; ``fig.axes`` holds one axis per view.
    """
    arrays = [np.asarray(v) for v in views]
    if not arrays:
        raise ValueError("no views to show")
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"{len(titles)} titles for {len(arrays)} views")
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    width = max(a.shape[1] for a in arrays)
    height = max(a.shape[0] for a in arrays)
    fig, axes = _panels(len(arrays), len(arrays), figsize)
    for i, (ax, a) in enumerate(zip(axes, arrays)):
        h, w = a.shape[:2]
        ax.imshow(a, extent=(0, w, h, 0), interpolation="nearest")
        for x in range(0, w + 1, patch_size):
            ax.plot([x, x], [0, h], color="white", lw=0.8)
        for y in range(0, h + 1, patch_size):
            ax.plot([0, w], [y, y], color="white", lw=0.8)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        if titles is not None:
            ax.set_title(titles[i], fontsize=_TITLE_SIZE)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def results_grid(
    query: str | Image.Image,
    results: Sequence[tuple[Image.Image, float]],
    captions: Sequence[str] | None = None,
    correct: Sequence[bool] | None = None,
    cols: int = 6,
    figsize: tuple[float, float] | None = None,
    title: str | None = None,
) -> Figure:
    """A query (image or text) followed by its ranked results with their scores.

    Introduced in chapter 1.

    Args:
        query: The query image, or a query text (shown in a text panel).
        results: ``(image, score)`` pairs, best first.
        captions: Optional extra line per result (e.g. its label).
        correct: Optional flag per result; the panel gets a green (true) or red frame.
        cols: Panels per row, query included.
        figsize: Figure size in inches.
        title: Title of the whole figure.

    Returns:
        The figure; ``fig.axes[0]`` is the query, then one axis per result.
    """
    results = list(results)
    for name, extra in (("captions", captions), ("correct", correct)):
        if extra is not None and len(extra) != len(results):
            raise ValueError(f"{len(extra)} {name} for {len(results)} results")
    fig, axes = _panels(1 + len(results), cols, figsize)
    q_ax = axes[0]
    if isinstance(query, str):
        q_ax.text(0.5, 0.5, f"\u201c{query}\u201d", ha="center", va="center", wrap=True, fontsize=10)
        q_ax.set_title("query (text)", fontsize=_TITLE_SIZE)
    else:
        q_ax.imshow(query)
        q_ax.set_title("query", fontsize=_TITLE_SIZE)
    for rank, (ax, (image, score)) in enumerate(zip(axes[1:], results), start=1):
        ax.imshow(image)
        label = f"#{rank}  {score:.3f}"
        if captions is not None:
            label += f"\n{captions[rank - 1]}"
        ax.set_title(label, fontsize=_TITLE_SIZE)
        if correct is not None:
            h, w = np.asarray(image).shape[:2]
            color = "tab:green" if correct[rank - 1] else "tab:red"
            ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=color, linewidth=4))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def heatmap_overlay(
    image: Image.Image,
    sim_map: ArrayLike,
    title: str | None = None,
    alpha: float = 0.55,
    cmap: str = "magma",
    boxes: Sequence[Sequence[float]] = (),
    interpolation: str = "bilinear",
    figsize: tuple[float, float] = (4.2, 3.6),
    region: Sequence[float] | None = None,
) -> Figure:
    """A patch similarity map laid over the image, with a colour bar.

    The map is stretched over ``region``, by default the whole image; pass
    :func:`vslib.probes.map_region` for an encoder that crops. Introduced in chapter 6.

    Args:
        image: The image.
        sim_map: ``(rows, cols)`` similarities, e.g. from
            :func:`vslib.probes.patch_similarity_map`.
        title: Axis title.
        alpha: Opacity of the map.
        cmap: Colour map.
        boxes: ``(x0, y0, x1, y1)`` boxes to outline, e.g. the true object.
        interpolation: ``"bilinear"`` (smooth) or ``"nearest"`` (one block per patch).
        figsize: Figure size in inches.
        region: ``(x0, y0, x1, y1)`` of the image that the map covers.

    Returns:
        The figure; ``fig.axes`` is ``[overlay, colour bar]``.
    """
    grid = np.asarray(sim_map, dtype=np.float32)
    if grid.ndim != 2:
        raise ValueError(f"sim_map must be 2-D (rows, cols), got shape {grid.shape}")
    width, height = image.size
    fig, ax = plt.subplots(figsize=figsize)
    ax.imshow(image)
    x0, y0, x1, y1 = region if region is not None else (0, 0, width, height)
    shown = ax.imshow(grid, cmap=cmap, alpha=alpha, extent=(x0, x1, y1, y0), interpolation=interpolation)
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="cyan", linewidth=1.5))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    ax.set_title(title or "patch similarity", fontsize=10)
    fig.colorbar(shown, ax=ax, label="cosine similarity")
    fig.tight_layout()
    return fig


def score_histograms(
    groups: Mapping[str, ArrayLike],
    bins: int = 40,
    title: str = "Score distributions",
    xlabel: str = "cosine similarity",
    figsize: tuple[float, float] = (5.5, 3.2),
) -> Figure:
    """Overlaid, normalised histograms of score groups (e.g. image-image vs image-text).

    Each legend entry names the group with its mean, which makes the modality gap
    visible as shifted bumps. Introduced in chapter 4.

    Args:
        groups: Name to scores.
        bins: Number of bins, shared by all groups.
        title: Axis title.
        xlabel: X axis label.
        figsize: Figure size in inches.

    Returns:
        The figure with one axis.
    """
    if not groups:
        raise ValueError("no score groups to plot")
    arrays = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in groups.items()}
    values = np.concatenate(list(arrays.values()))
    lo, hi = float(values.min()), float(values.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    fig, ax = plt.subplots(figsize=figsize)
    for name, v in arrays.items():
        ax.hist(v, bins=edges, density=True, alpha=0.5, label=f"{name} (mean {v.mean():.3f})")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def reliability_diagram(
    stats: ReliabilityStats | Mapping[str, ReliabilityStats],
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Observed match rate against confidence, per bin, with the diagonal of perfect calibration.

    Pass a mapping to compare calibrations side by side. Introduced in chapter 4.

    Args:
        stats: From :func:`vslib.calibration.reliability`, or name to stats.
        title: Title of the whole figure (each panel is titled with its ECE).
        figsize: Figure size in inches.

    Returns:
        The figure; one axis per stats.
    """
    named = {"": stats} if isinstance(stats, ReliabilityStats) else dict(stats)
    if not named:
        raise ValueError("no reliability stats to plot")
    n = len(named)
    fig, axes = plt.subplots(1, n, figsize=figsize or (3.4 * n, 3.4), squeeze=False)
    for ax, (name, s) in zip(axes[0], named.items()):
        centres = (s.bin_edges[:-1] + s.bin_edges[1:]) / 2
        widths = np.diff(s.bin_edges)
        filled = s.bin_counts > 0
        ax.bar(centres[filled], s.bin_accuracy[filled], width=widths[filled] * 0.9, color="tab:blue",
               edgecolor="white", label="observed match rate")
        ax.scatter(s.bin_confidence[filled], s.bin_confidence[filled], color="tab:orange", s=12, zorder=3,
                   label="mean confidence")
        ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("fraction of matches")
        head = f"{name}: " if name else ""
        ax.set_title(f"{head}ECE = {s.ece:.3f}", fontsize=10)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix_plot(
    cm: ArrayLike,
    class_names: Sequence[str],
    normalize: bool = False,
    title: str = "Confusion matrix",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted) with its counts written in.

    Introduced in chapter 3.

    Args:
        cm: ``(C, C)`` counts, e.g. from :func:`vslib.zeroshot.confusion_matrix`.
        class_names: The C class names.
        normalize: Colour and label each row as fractions of its true class.
        title: Axis title.
        figsize: Figure size in inches.

    Returns:
        The figure; ``fig.axes`` is ``[matrix, colour bar]``.
    """
    m = np.asarray(cm, dtype=np.float64)
    names = list(class_names)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(names):
        raise ValueError(f"cm must be ({len(names)}, {len(names)}) for {len(names)} classes, got {m.shape}")
    if normalize:
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    c = len(names)
    side = max(3.5, 0.45 * c + 1.5)
    fig, ax = plt.subplots(figsize=figsize or (side + 0.8, side))
    shown = ax.imshow(m, cmap="Blues", vmin=0)
    ax.set_xticks(range(c), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(c), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    if c <= 20:
        top = m.max() if m.size else 0
        for t in range(c):
            for p in range(c):
                text = f"{m[t, p]:.2f}" if normalize else f"{int(m[t, p])}"
                color = "white" if top and m[t, p] > top / 2 else "black"
                ax.text(p, t, text, ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(shown, ax=ax, label="fraction of true class" if normalize else "count")
    fig.tight_layout()
    return fig
