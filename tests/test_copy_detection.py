"""Copy detection: the edit and the recall measure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vslib import copy_detection, synth
from vslib.encoders import Encoder


class ThumbnailEncoder(Encoder):
    """Embeds an image as its centred 4x4 thumbnail: a crude but honest copy detector."""

    family = "fake"

    def __init__(self, constant: bool = False) -> None:
        self.name, self.dim, self.constant = "thumbnail", 48, constant

    def preprocess(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        rows = [np.asarray(im.convert("RGB").resize((4, 4), Image.Resampling.BOX), np.float32).ravel()
                for im in images]
        x = torch.from_numpy(np.stack(rows) / 255)
        return {"x": torch.ones_like(x) if self.constant else x - x.mean(1, keepdim=True)}

    def _embed_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs["x"]


def test_edit_copy_keeps_size_changes_pixels_and_is_reproducible():
    image = synth.render_scene(3, 64).image
    a = copy_detection.edit_copy(image, np.random.default_rng(1))
    b = copy_detection.edit_copy(image, np.random.default_rng(1))
    assert a.size == image.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    diff = np.abs(np.asarray(a, np.float32) - np.asarray(image, np.float32)).mean()
    assert 1.0 < diff < 60.0


def test_recall_counts_the_own_original_and_treats_ties_as_misses():
    images = [s.image for s in synth.make_split("test", 40, 64, small_objects=0)]
    good = copy_detection.copy_detection_recall(ThumbnailEncoder(), images)
    assert good > 0.5
    assert copy_detection.copy_detection_recall(ThumbnailEncoder(), images, k=40) == 1.0
    assert copy_detection.copy_detection_recall(ThumbnailEncoder(constant=True), images) == 0.0
    with pytest.raises(ValueError, match="two"):
        copy_detection.copy_detection_recall(ThumbnailEncoder(), images[:1])
