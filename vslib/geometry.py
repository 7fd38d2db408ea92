"""Where a model's input pixels come from in the original image: resize, then centre crop.

Encoders resize (and some crop) an image before the model sees it, so a patch of the
model's input is not simply a ``1 / grid`` share of the original picture. DINOv3's and
SigLIP 2's processors squash any image to a fixed square; dino.txt resizes the short side
to 256 and keeps the central 224 x 224. :class:`InputGeometry` records that, and maps a
box on the model input back to the original image. Introduced in chapter 6.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InputGeometry"]

Size = tuple[int, int]  # (width, height), as PIL.Image.size
FloatBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class InputGeometry:
    """An encoder's preprocessing geometry: a resize, then an optional centre crop.

    Attributes:
        resize: ``(width, height)`` to squash every image to that size, or an ``int``
            to resize the short side to it, keeping the aspect ratio (the long side is
            rounded down, as torchvision does).
        crop: ``(width, height)`` of the centre crop taken after resizing, or ``None``.

    Introduced in chapter 6.
    """

    resize: int | Size
    crop: Size | None = None

    def resized_size(self, image_size: Size) -> Size:
        """``(width, height)`` of an image of ``image_size`` after the resize step."""
        width, height = image_size
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {image_size}")
        if not isinstance(self.resize, int):
            return int(self.resize[0]), int(self.resize[1])
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.resize * long / short)
        return (self.resize, new_long) if width <= height else (new_long, self.resize)

    def input_size(self, image_size: Size) -> Size:
        """``(width, height)`` of the model input made from an image of ``image_size``."""
        return self.crop if self.crop is not None else self.resized_size(image_size)

    def to_image(self, box: FloatBox, image_size: Size) -> FloatBox:
        """Map a box ``(x0, y0, x1, y1)`` on the model input to pixels of the original image.

        Args:
            box: A box in model-input pixels (e.g. one patch cell).
            image_size: ``(width, height)`` of the original image.

        Returns:
            The box in original-image pixels (floats).
        """
        width, height = image_size
        resized_w, resized_h = self.resized_size(image_size)
        left = top = 0
        if self.crop is not None:
            # torchvision's centre crop: offsets rounded half to even, as round() does.
            left = int(round((resized_w - self.crop[0]) / 2.0))
            top = int(round((resized_h - self.crop[1]) / 2.0))
        sx, sy = width / resized_w, height / resized_h
        x0, y0, x1, y1 = box
        return ((x0 + left) * sx, (y0 + top) * sy, (x1 + left) * sx, (y1 + top) * sy)
