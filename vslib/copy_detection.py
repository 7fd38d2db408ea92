"""Copy detection: find the original of an edited copy among many images.

Near-duplicate and copy detection is the task self-supervised image embeddings such as
DINO's are known for: an edited copy (cropped, rescaled, brightened, re-compressed)
should land next to its original, closer than any other image. :func:`edit_copy` makes
such a copy and :func:`copy_detection_recall` measures how often an encoder's nearest
original is the right one.

Introduced in chapter 1.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageEnhance

from vslib.encoders import Encoder

# The edit of the benchmark: keep 75-90% of the area, brightness within +-20%, JPEG quality 60.
CROP_AREA = (0.75, 0.90)
BRIGHTNESS = 0.20
JPEG_QUALITY = 60


def edit_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """An edited copy: a random crop of 75-90% of the area, rescaled back, brightened, saved as JPEG 60.

    Introduced in chapter 1.

    Args:
        image: The original (any mode; the copy is RGB).
        rng: The random stream that draws the crop and the brightness factor.

    Returns:
        The copy, at the original's size.
    """
    image = image.convert("RGB")
    width, height = image.size
    area = rng.uniform(*CROP_AREA)
    aspect = math.exp(rng.uniform(math.log(0.9), math.log(1.1)))
    w = min(width, max(1, round(width * math.sqrt(area * aspect))))
    h = min(height, max(1, round(height * math.sqrt(area / aspect))))
    x0 = int(rng.integers(0, width - w + 1))
    y0 = int(rng.integers(0, height - h + 1))
    copy = image.crop((x0, y0, x0 + w, y0 + h)).resize((width, height), Image.Resampling.BICUBIC)
    copy = ImageEnhance.Brightness(copy).enhance(1 + rng.uniform(-BRIGHTNESS, BRIGHTNESS))
    buffer = io.BytesIO()
    copy.save(buffer, "JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def copy_detection_recall(encoder: Encoder, originals: Sequence[Image.Image], *, seed: int = 0,
                          k: int = 1, progress: bool | None = False) -> float:
    """Recall@k of finding each image's original from its edited copy, among all originals.

    Introduced in chapter 1.

    Args:
        encoder: Any image encoder.
        originals: The gallery; each image also gets one copy made by :func:`edit_copy`.
        seed: Seed of the edits.
        k: How many nearest originals count.
        progress: Show encoding progress bars.

    Returns:
        The fraction of copies whose original is among their ``k`` nearest originals (cosine).

    Raises:
        ValueError: If there are fewer than two originals or ``k`` is not positive.
    """
    if len(originals) < 2:
        raise ValueError(f"copy detection needs at least two originals, got {len(originals)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    copies = [edit_copy(image, rng) for image in originals]
    gallery = encoder.encode_images(list(originals), progress=progress)
    queries = encoder.encode_images(copies, progress=progress)
    scores = queries @ gallery.T
    own = np.diag(scores)
    # Rank of the own original: how many other originals score at least as high (a tie is a miss).
    rank = (scores >= own[:, None]).sum(axis=1) - 1
    return float((rank < k).mean())
