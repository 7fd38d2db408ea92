"""Tests for vslib.probes with a colour-histogram fake encoder on synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vslib.encoders import Encoder
from vslib.probes import (
    Tile,
    best_tile,
    box_coverage,
    cell_boxes,
    crop,
    patch_similarity_map,
    tile_scores,
    tiles,
    upsample_map,
)
from vslib.synth import COLORS, scene_with_small_object

COLOR_NAMES = list(COLORS)
PALETTE = np.array(list(COLORS.values()), dtype=np.float32)
GRID = 8  # patch grid of the fake encoder


def _color_histogram(pixels: np.ndarray) -> np.ndarray:
    """Fraction of pixels nearest each named colour (within 60 RGB units), plus one 'other' bin."""
    flat = pixels.reshape(-1, 3).astype(np.float32)
    dist = np.linalg.norm(flat[:, None, :] - PALETTE[None], axis=2)
    index = np.where(dist.min(1) < 60, dist.argmin(1), len(COLOR_NAMES))
    return np.bincount(index, minlength=len(COLOR_NAMES) + 1) / len(index)


class ColorEncoder(Encoder):
    """Embeds an image as its colour histogram; a text as the colour names it contains.

    The text "red" points along the red bin, so cosine with an image grows with its
    share of red pixels. Patch features are histograms of an 8x8 grid of cells.
    """

    name, family, supports_text = "colour-histogram", "fake", True
    dim = len(COLOR_NAMES) + 1

    def preprocess(self, images):
        return {"hist": torch.tensor(np.stack([_color_histogram(np.asarray(im.convert("RGB"))) for im in images]))}

    def _embed_inputs(self, inputs):
        return inputs["hist"]

    def _embed_texts(self, texts):
        rows = []
        for text in texts:
            v = np.array([float(c in text.split()) for c in COLOR_NAMES] + [0.0])
            v[-1] = 0.0 if v.any() else 1.0
            rows.append(v)
        return torch.tensor(np.stack(rows), dtype=torch.float32)

    def patch_features(self, images):
        out = []
        for im in images:
            pixels = np.asarray(im.convert("RGB"))
            ys = np.linspace(0, pixels.shape[0], GRID + 1).astype(int)
            xs = np.linspace(0, pixels.shape[1], GRID + 1).astype(int)
            cells = [[_color_histogram(pixels[ys[r]:ys[r + 1], xs[c]:xs[c + 1]]) for c in range(GRID)]
                     for r in range(GRID)]
            out.append(np.array(cells))
        feats = np.stack(out)
        return (feats / np.linalg.norm(feats, axis=-1, keepdims=True)).astype(np.float32)

    def patch_text_features(self, texts):
        return self.encode_texts(texts)


@pytest.fixture(scope="module")
def encoder() -> ColorEncoder:
    return ColorEncoder()


def _scenes():
    """Scenes whose small solid square lies away from the image centre, so tiles can tell."""
    out = []
    for seed in range(40):
        scene = scene_with_small_object(seed, 128, small_shape="square", dominant_size="small")
        x0, y0, x1, y1 = scene.small_objects[0].box
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        if np.abs(centre - 64).min() > 24:
            out.append(scene)
        if len(out) == 3:
            return out
    raise AssertionError("too few off-centre scenes")


def _contains(box, x: float, y: float) -> bool:
    return box[0] <= x < box[2] and box[1] <= y < box[3]


@pytest.mark.parametrize(("size", "grid", "overlap"), [((100, 100), (2, 2), 0.25), ((160, 90), (2, 3), 0.4)])
def test_tiles_cover_the_image_with_the_requested_overlap(size, grid, overlap):
    image = Image.new("RGB", size)
    result = tiles(image, grid, overlap)
    rows, cols = grid
    assert len(result) == rows * cols
    covered = np.zeros(size[::-1], dtype=int)
    for t in result:
        x0, y0, x1, y1 = t.box
        covered[y0:y1, x0:x1] += 1
        assert t.image.size == (x1 - x0, y1 - y0)
    assert (covered >= 1).all()
    tile_w = size[0] / (cols - (cols - 1) * overlap)
    for left, right in zip(result[:cols], result[1:cols]):
        assert left.box[2] - right.box[0] == pytest.approx(overlap * tile_w, abs=1)
    tile_h = size[1] / (rows - (rows - 1) * overlap)
    top, below = result[0], result[cols]
    assert top.box[3] - below.box[1] == pytest.approx(overlap * tile_h, abs=1)


def test_tiles_without_overlap_partition_the_image_and_one_tile_is_the_image():
    image = Image.new("RGB", (90, 60))
    parts = tiles(image, (3, 3), overlap=0.0)
    assert sum((t.box[2] - t.box[0]) * (t.box[3] - t.box[1]) for t in parts) == 90 * 60
    (whole,) = tiles(image, (1, 1))
    assert whole.box == (0, 0, 90, 60)
    with pytest.raises(ValueError, match="overlap"):
        tiles(image, (2, 2), overlap=1.0)


def test_crop_pads_the_box_and_stays_inside_the_image():
    image = Image.new("RGB", (100, 80))
    assert crop(image, (40, 30, 60, 50), pad=0.1).size == (24, 24)
    assert crop(image, (40, 30, 60, 50), pad=0.0).size == (20, 20)
    # Near the corner the padded box is clipped at the border.
    assert crop(image, (0, 0, 20, 10), pad=0.5).size == (30, 15)
    with pytest.raises(ValueError, match="outside"):
        crop(image, (120, 0, 130, 10))


def test_the_tile_holding_the_small_object_scores_highest_for_its_colour(encoder):
    for scene in _scenes():
        small = scene.small_objects[0]
        x0, y0, x1, y1 = small.box
        scores = tile_scores(encoder, scene.image, small.color, grid=(2, 2), overlap=0.25)
        assert scores.shape == (4,)
        tile, score = best_tile(encoder, scene.image, small.color, grid=(2, 2), overlap=0.25)
        assert isinstance(tile, Tile) and score == pytest.approx(scores.max())
        assert _contains(tile.box, (x0 + x1) / 2, (y0 + y1) / 2)
        # The object is a larger share of a tile than of the whole image.
        whole = float(encoder.encode_images([scene.image])[0] @ encoder.encode_texts([small.color])[0])
        assert score > whole


def test_tile_scores_take_several_texts_or_an_embedding(encoder):
    scene = _scenes()[0]
    color = scene.small_objects[0].color
    by_text = tile_scores(encoder, scene.image, [color, "black"])
    assert by_text.shape == (4, 2)
    by_emb = tile_scores(encoder, scene.image, encoder.encode_texts([color])[0])
    np.testing.assert_allclose(by_emb, by_text[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="dim"):
        tile_scores(encoder, scene.image, np.ones(3))


def test_patch_similarity_map_peaks_on_the_small_object(encoder):
    for scene in _scenes():
        small = scene.small_objects[0]
        sim = patch_similarity_map(encoder, scene.image, small.color)
        assert sim.shape == (GRID, GRID)
        r, c = np.unravel_index(np.argmax(sim), sim.shape)
        cell = 128 / GRID
        peak = (c * cell, r * cell, (c + 1) * cell, (r + 1) * cell)
        x0, y0, x1, y1 = small.box
        assert peak[0] < x1 and x0 < peak[2] and peak[1] < y1 and y0 < peak[3]


def test_patch_similarity_map_with_an_image_query(encoder):
    scene = _scenes()[0]
    small = scene.small_objects[0]
    query = crop(scene.image, small.box, pad=0.0)
    sim = patch_similarity_map(encoder, scene.image, query)
    r, c = np.unravel_index(np.argmax(sim), sim.shape)
    cx, cy = (c + 0.5) * 128 / GRID, (r + 0.5) * 128 / GRID
    x0, y0, x1, y1 = small.box
    assert x0 - 8 <= cx <= x1 + 8 and y0 - 8 <= cy <= y1 + 8
    with pytest.raises(ValueError, match="dim"):
        patch_similarity_map(encoder, scene.image, np.ones(4))


def test_patch_similarity_map_needs_patch_features():
    class NoPatches(ColorEncoder):
        patch_features = Encoder.patch_features

    with pytest.raises(NotImplementedError):
        patch_similarity_map(NoPatches(), Image.new("RGB", (16, 16)), "red")


def test_upsample_map_resizes_to_the_image_and_keeps_blocks_with_nearest():
    grid = np.arange(6, dtype=np.float32).reshape(2, 3)
    up = upsample_map(grid, (30, 20), mode="nearest")
    assert up.shape == (20, 30)
    np.testing.assert_array_equal(up[:10, :10], 0.0)
    np.testing.assert_array_equal(up[10:, 20:], 5.0)
    smooth = upsample_map(grid, 60)
    assert smooth.shape == (60, 60)
    assert grid.min() - 1e-5 <= smooth.min() and smooth.max() <= grid.max() + 1e-5
    # Bilinear output varies smoothly along a row: no jump larger than the grid steps.
    assert np.abs(np.diff(smooth, axis=1)).max() < 1.0


def test_box_coverage_is_the_share_of_the_box_inside_the_region():
    assert box_coverage((10, 10, 20, 20), (0, 0, 64, 64)) == 1.0
    assert box_coverage((10, 10, 20, 20), (15, 0, 64, 64)) == pytest.approx(0.5)
    assert box_coverage((10, 10, 20, 20), (15, 15, 64, 64)) == pytest.approx(0.25)
    assert box_coverage((10, 10, 20, 20), (30, 30, 64, 64)) == 0.0
    # A tile of the small object's scene holds it whole iff coverage is 1.
    scene = _scenes()[0]
    box = scene.small_objects[0].box
    holding = [t for t in tiles(scene.image, (2, 2), 0.25) if box_coverage(box, t.box) == 1.0]
    assert holding and all(t.box[0] <= box[0] and box[2] <= t.box[2] for t in holding)
    with pytest.raises(ValueError, match="empty"):
        box_coverage((5, 5, 5, 9), (0, 0, 10, 10))


def test_cell_boxes_tile_the_image_row_major():
    boxes = cell_boxes((2, 4), (100, 50))
    assert len(boxes) == 8
    assert boxes[0] == (0, 0, 25, 25) and boxes[3] == (75, 0, 100, 25) and boxes[4] == (0, 25, 25, 50)
    covered = np.zeros((50, 100), dtype=int)
    for x0, y0, x1, y1 in boxes:
        covered[y0:y1, x0:x1] += 1
    assert (covered == 1).all()
    assert cell_boxes((8, 8), 128)[9] == (16, 16, 32, 32)
