"""Patch cells map back to the right place of the original image, through each encoder's preprocessing.

The ground truth is the encoder's own preprocessing: a white box drawn on a black, wide
image is run through ``encoder.preprocess``, and each patch cell of the model input is as
bright as the share of it the box covers. :func:`vslib.probes.patch_boxes` must predict
that share from the box on the original image.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import vslib
from vslib import probes
from vslib.geometry import InputGeometry

PATCH = 16
# Wide image; the first box lies where a 256-resize + 224-centre-crop cuts it away.
SIZE = (400, 300)
BOXES = [(250, 60, 330, 200), (10, 120, 60, 250)]


def _save_dinov3(path, side=224):
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    config = DINOv3ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=PATCH, image_size=side, num_register_tokens=4)
    DINOv3ViTModel(config).save_pretrained(path)
    DINOv3ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(path)


def _save_siglip(path, side=224):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    from vslib.zoo.siglip import build_tokenizer

    tokenizer = build_tokenizer(16)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  patch_size=PATCH, image_size=side)
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(path)
    SiglipImageProcessor(size={"height": side, "width": side}).save_pretrained(path)
    tokenizer.save_pretrained(path)


def _save_dinotxt(path):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    from vslib.bpe import ClipTokenizer, train_bpe_merges
    from vslib.dinotxt import DinoTxtConfig, DinoTxtModel, save_dinotxt

    backbone = DINOv3ViTModel(DINOv3ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=64, patch_size=PATCH, image_size=224,
                                              num_register_tokens=4))
    backbone.save_pretrained(path / "backbone")
    tokenizer = ClipTokenizer(train_bpe_merges(["a red box"] * 3, 5))
    config = DinoTxtConfig(embed_dim=32, backbone_hidden_size=32, patch_size=PATCH, head_blocks=1, head_heads=2,
                           text_vocab_size=tokenizer.vocab_size, text_width=32, text_layers=1, text_heads=2,
                           image_size=224, resize_size=256)
    save_dinotxt(DinoTxtModel(config, backbone, tokenizer), path / "txt", backbone_ref="../backbone")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("geometry")
    torch.manual_seed(0)
    _save_dinov3(root / "dinov3")
    _save_siglip(root / "siglip")
    _save_dinotxt(root)
    return {name: vslib.load_encoder(root / sub, device="cpu", dtype="fp32")
            for name, sub in [("dinov3", "dinov3"), ("siglip", "siglip"), ("dinotxt", "txt")]}


def _drawing() -> Image.Image:
    image = Image.new("RGB", SIZE)
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in BOXES:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill="white")  # PIL's rectangle includes x1, y1
    return image


def _measured_cover(encoder, image) -> np.ndarray:
    """Brightness of each patch cell of the model input, 0 (black) to 1 (white)."""
    pixels = encoder.preprocess([image])["pixel_values"][0].float()
    lo, hi = pixels.min(), pixels.max()  # black and white after normalisation, per channel alike
    grey = ((pixels[0] - lo) / (hi - lo)).clamp(0, 1)
    rows, cols = grey.shape[0] // PATCH, grey.shape[1] // PATCH
    return grey.reshape(rows, PATCH, cols, PATCH).mean(dim=(1, 3)).numpy()


def _predicted_cover(boxes_of_cells) -> np.ndarray:
    return np.array([sum(probes.box_coverage(cell, box) for box in BOXES) for cell in boxes_of_cells])


@pytest.mark.parametrize("name, geometry", [
    ("dinov3", InputGeometry(resize=(224, 224))),
    ("siglip", InputGeometry(resize=(224, 224))),
    ("dinotxt", InputGeometry(resize=256, crop=(224, 224))),
])
def test_a_box_on_the_image_lands_on_the_right_patches(encoders, name, geometry):
    encoder = encoders[name]
    assert encoder.geometry == geometry
    measured = _measured_cover(encoder, _drawing())
    assert measured.shape == (14, 14)
    predicted = _predicted_cover(probes.patch_boxes(encoder, measured.shape, SIZE)).reshape(measured.shape)
    assert predicted.max() == 1.0 and (predicted == 0).mean() > 0.5  # the box covers whole cells, and few
    np.testing.assert_allclose(predicted, measured, atol=0.12)  # resampling blurs the box edges


def test_the_crop_cuts_away_what_a_stretched_grid_would_show(encoders):
    encoder = encoders["dinotxt"]
    boxes = probes.patch_boxes(encoder, (14, 14), SIZE)
    # 400 x 300 resizes to 341 x 256; the central 224 x 224 starts 58 pixels in and 16 down.
    sx, sy = 400 / 341, 300 / 256
    np.testing.assert_allclose(boxes[0], (58 * sx, 16 * sy, 74 * sx, 32 * sy))
    assert probes.box_coverage(BOXES[1], (boxes[0][0], 0, boxes[-1][2], 300)) == 0.0  # left box cut away
    stretched = _predicted_cover(probes.cell_boxes((14, 14), SIZE))
    assert np.abs(stretched - _measured_cover(encoder, _drawing()).ravel()).max() > 0.5


def test_geometry_arithmetic():
    tall = InputGeometry(resize=256, crop=(224, 224))
    assert tall.resized_size((300, 400)) == (256, 341) and tall.input_size((300, 400)) == (224, 224)
    assert InputGeometry(resize=(224, 224)).to_image((0, 0, 224, 224), (448, 112)) == (0, 0, 448, 112)
    assert replace(tall, crop=None).input_size((300, 400)) == (256, 341)
    with pytest.raises(ValueError):
        tall.resized_size((0, 10))


def test_map_region_and_overlay_extent(encoders):
    from vslib import viz

    region = probes.map_region(encoders["dinotxt"], SIZE)
    np.testing.assert_allclose(region, (58 * 400 / 341, 16 * 300 / 256, 282 * 400 / 341, 240 * 300 / 256))
    assert probes.map_region(encoders["dinov3"], SIZE) == (0, 0, 400, 300)
    fig = viz.heatmap_overlay(_drawing(), np.zeros((14, 14)), region=region)
    np.testing.assert_allclose(fig.axes[0].images[1].get_extent(), (region[0], region[2], region[3], region[1]))
