"""Robust image loading: folders of real photos contain every kind of bad file.

Every loader here either returns an RGB ``PIL.Image`` or raises :class:`ImageLoadError`
naming the file and the reason; :func:`scan_folder` walks a folder and reports what it
skipped instead of stopping. Introduced in chapter 1 (and used by the index in chapter 5).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

#: File name endings treated as images when walking a folder (lower case).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".jfif", ".avif"}
)
#: Image formats PIL cannot decode here: reported as skipped when walking a folder.
UNSUPPORTED_SUFFIXES = frozenset({".heic", ".heif", ".svg", ".psd", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf"})
#: Images with more pixels than this are refused (a decompression-bomb guard): 64 MP by default.
#: With :func:`load_image`'s ``min_side``, a JPEG decodes at 1/2 to 1/8 scale (DCT scaling) and
#: other formats are reduced right after decoding, before any conversion, so one image costs
#: about 8 bytes per pixel at most (an RGBA PNG: the decoded image and PIL's premultiplied copy
#: while reducing), 0.5 GB at the cap, and a JPEG almost nothing. Measured peak memory growth
#: (``benchmarks/decode_memory.py``, 64 MP): RGBA PNG 1,466 MB decoded in full, 490 MB reduced;
#: RGB JPEG 490 MB in full, 9 MB reduced.
MAX_PIXELS = 64_000_000

# A truncated JPEG must raise, not decode into a half-grey image that silently joins the index.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageLoadError(Exception):
    """A file that could not be read as an image, with the reason.

    Introduced in chapter 1.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (P, RGBA, LA, I;16, CMYK, ...) to 8-bit RGB.

    Transparent pixels are composited on white, 16-bit images are scaled down to 8
    bits (not clipped). Introduced in chapter 1.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        if image.mode == "La":
            image = image.convert("LA")  # PIL converts premultiplied La to LA only
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit integer or float greyscale: stretch the real range to 0..255. Read through
        # NumPy: PIL's getextrema and convert fail or clip on the byte-ordered I;16 modes.
        values = np.asarray(image, dtype=np.float64)
        lo, hi = values.min(), values.max()
        grey = np.rint((values - lo) * (255.0 / (hi - lo))) if hi > lo else np.zeros_like(values)
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Image.Image:
    """Open an image file as RGB, upright (EXIF orientation applied), fully decoded.

    With ``min_side``, a larger image is decoded at a reduced size whose shorter side stays at
    least ``min_side`` pixels: JPEG through PIL's ``draft`` (the decoder scales by 1/2, 1/4 or
    1/8 and never holds the full image), other formats through ``reduce`` (box averaging by a
    whole factor) right after decoding, before any conversion. Encoders pass twice the size
    their model sees, so what the model gets barely changes while memory stays bounded.

    Raises:
        ImageLoadError: If the file is missing, empty, not an image, truncated, too
            large (more than ``max_pixels``), or in a format PIL cannot decode.

    Introduced in chapter 1.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ImageLoadError(path, f"cannot read file ({error.strerror or error})") from None
    if not path.is_file():
        raise ImageLoadError(path, "not a regular file")
    if size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageLoadError(
                        path, f"too large ({width}x{height} = {width * height / 1e6:.0f} MP > {max_pixels / 1e6:.0f} MP)"
                    )
                image = _decode(image, min_side)
                image = ImageOps.exif_transpose(image)
                return to_rgb(image)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageLoadError(path, f"refused as a decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = str(error) or type(error).__name__
        if "truncated" in reason.lower():
            reason = f"truncated image data ({reason})"
        raise ImageLoadError(path, f"cannot decode: {reason}") from None


def _decode(image: Image.Image, min_side: int | None) -> Image.Image:
    """Decode ``image``, reduced so its shorter side stays at least ``min_side`` (if given)."""
    width, height = image.size
    factor = min(width, height) // min_side if min_side else 1
    if factor < 2:
        image.load()
        return image
    if image.format == "JPEG":
        image.draft(None, (-(-width // factor), -(-height // factor)))
        image.load()
        return image
    exif = image.getexif()
    image.load()
    reduced = image.reduce(factor)
    if exif:
        reduced.info["exif"] = exif.tobytes()  # keep the orientation for exif_transpose
    return reduced


def as_image(item: Image.Image | str | Path) -> Image.Image:
    """A PIL image as RGB, or a path loaded with :func:`load_image`."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, (str, os.PathLike)):
        return load_image(item)
    raise TypeError(f"expected a PIL image or a path, got {type(item).__name__}")


@dataclass
class FolderScan:
    """Image files found under a folder, and what was skipped with the reason."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def iter_image_files(root: str | Path, suffixes: frozenset[str] = IMAGE_SUFFIXES) -> Iterator[Path]:
    """Yield image files under ``root`` (recursive, sorted, no symlinked directories).

    Symlinked directories are not followed, so link loops cannot trap the walk;
    symlinked files are yielded. Hidden files and folders (``.name``) are skipped.
    """
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in suffixes:
                yield Path(dirpath) / name


def scan_folder(root: str | Path) -> FolderScan:
    """List the image files of a folder; a missing folder raises, odd files are reported.

    Files with an image suffix that are empty or unreadable, and image formats this
    library cannot decode (HEIC, SVG, camera raw), are put in ``skipped`` with a reason (decoding problems surface later, when the image is loaded).

    Raises:
        NotADirectoryError: If ``root`` is not a folder.

    Introduced in chapter 5.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    scan = FolderScan()
    for path in iter_image_files(root, IMAGE_SUFFIXES | UNSUPPORTED_SUFFIXES):
        if path.suffix.lower() in UNSUPPORTED_SUFFIXES:
            scan.skipped.append((path, f"unsupported format ({path.suffix.lower()}): convert it to JPEG or PNG"))
            continue
        try:
            size = path.stat().st_size
        except OSError as error:
            scan.skipped.append((path, f"cannot read file ({error.strerror or error})"))
            continue
        if size == 0:
            scan.skipped.append((path, "empty file (0 bytes)"))
        else:
            scan.files.append(path)
    return scan
