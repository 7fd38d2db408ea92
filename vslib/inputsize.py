"""Input size, patch grids and token counts: what an image processor does to an image's shape.

A vision transformer sees an image as a grid of patches, one token each, and its cost grows
with the number of tokens. A fixed-resolution processor (DINOv3's, SigLIP 2's
``patch16-224``) squashes every image to one square; the patch convolution then covers
``side // patch_size`` patches per axis and never sees the last ``side % patch_size``
pixels. SigLIP 2's NaFlex processor resizes each image keeping its aspect ratio, with
sides rounded to whole patches, so that its grid holds at most ``max_num_patches``
patches; it pads the token sequence to that length and marks the real patches in
``pixel_attention_mask``. Introduced in chapter 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PatchGrid", "naflex_grid", "square_grid", "unpatchify"]


@dataclass(frozen=True)
class PatchGrid:
    """How one image enters a vision transformer: its size after resizing and its patch grid.

    Attributes:
        width: Width of the resized image the model reads, in pixels.
        height: Its height.
        rows: Patch rows.
        cols: Patch columns.
        patch_size: Side of a square patch in pixels.
        sequence_length: Patch-token slots the model runs on: ``rows * cols`` for a
            fixed-size input, ``max_num_patches`` for NaFlex (the rest is padding).

    Introduced in chapter 2.
    """

    width: int
    height: int
    rows: int
    cols: int
    patch_size: int
    sequence_length: int

    @property
    def patches(self) -> int:
        """Real patches, ``rows * cols``."""
        return self.rows * self.cols

    @property
    def padding(self) -> int:
        """Padded token slots (masked out of attention)."""
        return self.sequence_length - self.patches

    @property
    def ignored_pixels(self) -> tuple[int, int]:
        """Pixel columns and rows at the right and bottom edges that no patch covers."""
        return self.width - self.cols * self.patch_size, self.height - self.rows * self.patch_size

    @property
    def aspect(self) -> float:
        """Width over height of the patch grid (``cols / rows``)."""
        return self.cols / self.rows


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def square_grid(side: int, patch_size: int) -> PatchGrid:
    """The patch grid of a fixed-square processor: every image squashed to ``side x side``.

    The patch convolution (kernel and stride ``patch_size``) covers ``side // patch_size``
    patches per axis; a side that is not a multiple of the patch size leaves pixels at the
    right and bottom edges that no patch sees (:attr:`PatchGrid.ignored_pixels`).

    Raises:
        ValueError: If ``side`` or ``patch_size`` is not positive, or ``side`` is smaller
            than one patch.

    Introduced in chapter 2.
    """
    side, patch_size = _positive("side", side), _positive("patch_size", patch_size)
    if side < patch_size:
        raise ValueError(f"a {side} px side holds no {patch_size} px patch")
    n = side // patch_size
    return PatchGrid(side, side, n, n, patch_size, n * n)


def naflex_grid(image_size: tuple[int, int], patch_size: int = 16, max_num_patches: int = 256) -> PatchGrid:
    """The patch grid SigLIP 2's NaFlex processor gives an image of ``image_size`` (width, height).

    Runs transformers' ``Siglip2ImageProcessor`` with these settings (the defaults are the
    released checkpoints': patch 16, 256 patches) on a blank image of that size and reads
    its ``spatial_shapes`` and ``pixel_attention_mask``.

    Raises:
        ValueError: If a size or setting is not a positive whole number.

    Introduced in chapter 2.
    """
    from PIL import Image
    from transformers import Siglip2ImageProcessor

    if len(image_size) != 2:
        raise ValueError(f"image_size must be (width, height), got {image_size!r}")
    width, height = (_positive(name, v) for name, v in zip(("width", "height"), image_size))
    patch_size = _positive("patch_size", patch_size)
    max_num_patches = _positive("max_num_patches", max_num_patches)
    processor = Siglip2ImageProcessor(patch_size=patch_size, max_num_patches=max_num_patches)
    out = processor(images=[Image.new("RGB", (width, height))], return_tensors="np")
    rows, cols = (int(v) for v in out["spatial_shapes"][0])
    mask = out["pixel_attention_mask"][0]
    if int(mask.sum()) != rows * cols:
        raise RuntimeError(f"the processor's mask marks {int(mask.sum())} patches for a {rows}x{cols} grid")
    return PatchGrid(cols * patch_size, rows * patch_size, rows, cols, patch_size, int(mask.shape[0]))


def unpatchify(patches: np.ndarray, rows: int, cols: int, patch_size: int) -> np.ndarray:
    """Reassemble NaFlex's flattened patches ``(>= rows * cols, p * p * C)`` into an ``(H, W, C)`` image.

    The inverse of ``Siglip2ImageProcessor``'s flattening: patches row by row, each patch
    flattened by (row in the patch, column in the patch, channel). Padding rows after the
    first ``rows * cols`` are dropped.

    Raises:
        ValueError: If the array is too short or its width is not ``p * p * C``.

    Introduced in chapter 2.
    """
    patches = np.asarray(patches)
    n = rows * cols
    if patches.ndim != 2 or patches.shape[0] < n or patches.shape[1] % (patch_size * patch_size):
        raise ValueError(f"expected at least {n} flattened {patch_size}x{patch_size} patches, got {patches.shape}")
    channels = patches.shape[1] // (patch_size * patch_size)
    grid = patches[:n].reshape(rows, cols, patch_size, patch_size, channels)
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * patch_size, cols * patch_size, channels)
