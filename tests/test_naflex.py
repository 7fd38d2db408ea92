"""SigLIP 2 NaFlex: the bundled converted model, the conversion, patch grids and the encoder path.

``tiny-siglip2-naflex`` is ``tiny-siglip2`` in transformers' ``Siglip2Model`` form
(``vslib.zoo.naflex``). On a square image at the native size both must embed alike;
on other shapes the NaFlex processor keeps the aspect ratio within a patch budget and
the encoder must hand ``pixel_attention_mask`` and ``spatial_shapes`` to the model.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import vslib
from vslib import inputsize, registry, synth
from vslib.zoo import checkpoint_path, common, naflex

WIDE = (200, 134)  # the proportions of a 2000 x 1335 photo, small


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def fixed():
    return vslib.load_encoder("tiny-siglip2", device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def flex():
    return vslib.load_encoder("tiny-siglip2-naflex", device="cpu", dtype="fp32")


# -- the conversion -------------------------------------------------------------------------------


def test_native_squares_embed_as_the_fixed_model_embeds_them(fixed, flex):
    scenes = synth.eval_set("test", per_class=3, size=64)
    images = [s.image for s in scenes]
    cos = np.sum(fixed.encode_images(images) * flex.encode_images(images), axis=1)
    assert cos.min() >= 0.999, cos.min()
    texts = [s.captions[0] for s in scenes]
    np.testing.assert_allclose(flex.encode_texts(texts), fixed.encode_texts(texts), atol=1e-5)
    assert flex.naflex and not fixed.naflex
    assert (flex.logit_scale, flex.logit_bias) == (fixed.logit_scale, fixed.logit_bias)


def test_patch_embedding_as_linear_reads_patches_in_the_processor_order():
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, kernel_size=4, stride=4)
    image = torch.randn(3, 8, 12)  # a 2 x 3 grid of 4 px patches, not square
    expected = conv(image[None])[0].flatten(1).T  # (patches row by row, 8)
    patches = convert_image_to_patches(image, 4)
    got = patches @ naflex.patch_embedding_as_linear(conv.weight.detach()).T + conv.bias.detach()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Flattening the kernel channels first (its stored order) is the likely bug; it must not pass.
    wrong = patches @ conv.weight.detach().reshape(8, -1).T + conv.bias.detach()
    assert not torch.allclose(wrong, expected, atol=1e-2)
    with pytest.raises(ValueError, match=r"\(D, C, p, p\)"):
        naflex.patch_embedding_as_linear(torch.zeros(8, 48))


def test_the_conversion_reproduces_the_bundled_checkpoint(tmp_path):
    from vslib.zoo import train

    out = tmp_path / "tiny-siglip2-naflex"
    assert train.main(["tiny-siglip2-naflex", "--out", str(out), "--set", "verify_per_class=2"]) == 0
    bundled = checkpoint_path("tiny-siglip2-naflex")
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert common.sha256_file(out / name) == common.sha256_file(bundled / name), name
    for name in ("config.json", "preprocessor_config.json"):  # all but the writer's version
        made, shipped = (json.loads((d / name).read_text()) for d in (out, bundled))
        made.pop("transformers_version", None)
        shipped.pop("transformers_version", None)
        assert made == shipped, name
    report = json.loads((out / "training.json").read_text())
    assert report["converted_from"] == "tiny-siglip2" and report["metrics"]["cos_to_source_native_min"] >= 0.999
    card = (out / "README.md").read_text()
    assert "converted, not trained" in card and "never saw a non-square image" in card
    assert "python -m vslib.zoo.train tiny-siglip2-naflex" in card


def test_the_conversion_check_catches_a_wrong_patch_order(tmp_path, monkeypatch):
    monkeypatch.setattr(naflex, "patch_embedding_as_linear", lambda w: w.reshape(w.shape[0], -1))
    with pytest.raises(ValueError, match="does not embed square 64 px images as tiny-siglip2 does"):
        naflex.convert(tmp_path / "out", naflex.NaflexRecipe(verify_per_class=1))
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_converted_model_cannot_be_trained():
    from vslib.zoo import train

    with pytest.raises(SystemExit, match="converted from tiny-siglip2, not trained"):
        train.main(["tiny-siglip2-naflex", "--steps", "3", "--out", "/nonexistent"])


# -- patch grids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [WIDE, WIDE[::-1]], ids=["wide", "tall"])
def test_a_wide_or_tall_image_keeps_its_aspect_within_the_patch_budget(flex, fixed, size):
    aspect = size[0] / size[1]
    grid = flex.patch_grids([_noise(size)])[0]
    assert grid.patches <= flex.max_num_patches == grid.sequence_length == 16
    assert grid.width % 16 == 0 and grid.height % 16 == 0
    # Closer to the image's aspect than the square the fixed model squashes it to.
    assert abs(math.log(grid.aspect / aspect)) < 0.5 * abs(math.log(aspect))
    assert (grid.cols > grid.rows) == (size[0] > size[1])
    assert fixed.patch_grids([_noise(size)])[0] == inputsize.PatchGrid(64, 64, 4, 4, 16, 16)
    assert inputsize.naflex_grid(size, 16, 16) == grid
    # The released defaults (patch 16, 256 patches) on the full-size photo.
    big = inputsize.naflex_grid((size[0] * 10, size[1] * 10))
    assert big.patches <= 256 == big.sequence_length and big.patches > 0.9 * 256
    assert abs(big.aspect / aspect - 1) < 0.05


def test_the_attention_mask_covers_exactly_the_real_patches(flex):
    images = [_noise(WIDE), _noise((64, 64)), _noise((30, 300))]
    inputs = flex.preprocess(images)
    grids = flex.patch_grids(images)
    mask = inputs["pixel_attention_mask"]
    assert tuple(inputs["pixel_values"].shape) == (3, 16, 16 * 16 * 3)
    for row, pixels, grid in zip(mask, inputs["pixel_values"], grids):
        n = grid.patches
        assert row[:n].all() and not row[n:].any() and int(row.sum()) == n
        assert not pixels[n:].any()  # padding is zeros
    assert [g.padding for g in grids] == [16 - g.patches for g in grids]
    assert grids[1].patches == 16 and grids[0].padding > 0


def test_padding_does_not_reach_the_embedding(flex):
    inputs = flex.preprocess([_noise(WIDE)])
    n = flex.patch_grids([_noise(WIDE)])[0].patches
    assert n < 16
    noisy = {k: v.clone() for k, v in inputs.items()}
    noisy["pixel_values"][0, n:] = torch.randn(16 - n, noisy["pixel_values"].shape[-1]) * 5
    # Without the mask, the padded slots would be attended to and move the embedding.
    np.testing.assert_allclose(flex.encode_inputs(noisy), flex.encode_inputs(inputs), atol=1e-5)
    with pytest.raises(ValueError, match="NaFlex model: its inputs need pixel_attention_mask and spatial_shapes"):
        flex.encode_inputs({"pixel_values": inputs["pixel_values"]})


def test_encoding_any_shape_gives_unit_vectors(flex, tmp_path):
    images = [_noise(WIDE, 1), _noise(WIDE[::-1], 2), _noise((64, 64), 3)]
    vectors = flex.encode_images(images, batch_size=2)
    assert vectors.shape == (3, 96) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    from_files = flex.encode_files(paths, batch_size=2, num_workers=0)
    np.testing.assert_allclose(from_files.vectors, vectors, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)


def test_input_views_put_the_patches_back_on_their_grid(flex, fixed):
    image = _noise((80, 48))  # exactly a 3 x 5 grid: the processor does not resize it
    view = flex.input_views([image])[0]
    assert view.shape == (48, 80, 3)
    np.testing.assert_allclose(view, np.asarray(image) / 255.0, atol=1e-5)
    assert fixed.input_views([image])[0].shape == (64, 64, 3)


def test_max_num_patches_sets_the_budget_of_naflex_models_only(fixed):
    wide = _noise(WIDE)
    more = vslib.load_encoder("tiny-siglip2-naflex", device="cpu", max_num_patches=64)
    grid = more.patch_grids([wide])[0]
    assert more.max_num_patches == grid.sequence_length == 64 and 16 < grid.patches <= 64
    assert more.decode_side >= 2 * min(grid.width, grid.height)
    vector = more.encode_images([wide])
    np.testing.assert_allclose(np.linalg.norm(vector, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="max_num_patches applies to NaFlex models only; tiny-siglip2 is a fixed"):
        vslib.load_encoder("tiny-siglip2", device="cpu", max_num_patches=64)
    with pytest.raises(ValueError, match="max_num_patches must be a positive whole number, got 0"):
        vslib.load_encoder("tiny-siglip2-naflex", device="cpu", max_num_patches=0)


def test_a_misspelt_model_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="unknown model 'tiny-siglip2-naflx'.*tiny-siglip2-naflex"):
        vslib.load_encoder("tiny-siglip2-naflx", device="cpu")


def test_a_missing_real_naflex_model_names_the_bundled_naflex_model(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(registry.ModelNotAvailableError, match="use the bundled 'tiny-siglip2-naflex'"):
        vslib.load_encoder("siglip2-so400m-naflex")


# -- fixed-square grids ---------------------------------------------------------------------------


def test_square_grid_ignores_the_edge_pixels_the_patch_convolution_skips():
    assert inputsize.square_grid(224, 16).patches == 196
    grid = inputsize.square_grid(518, 16)
    assert (grid.rows, grid.cols, grid.ignored_pixels) == (32, 32, (6, 6))
    assert inputsize.square_grid(518, 14).ignored_pixels == (0, 0)  # 37 patches of 14
    dino = vslib.load_encoder("tiny-dinov3", device="cpu", dtype="fp32")
    with torch.no_grad():
        tokens = dino.model(pixel_values=torch.zeros(1, 3, 70, 70)).last_hidden_state
    assert tokens.shape[1] == 1 + dino.num_register_tokens + inputsize.square_grid(70, 16).patches
    with pytest.raises(ValueError, match="a 8 px side holds no 16 px patch"):
        inputsize.square_grid(8, 16)


@pytest.mark.parametrize("bad", [(0, 10), (10, -1), (10.5, 10), (10,)])
def test_naflex_grid_rejects_impossible_sizes(bad):
    with pytest.raises(ValueError, match="width|height|image_size"):
        inputsize.naflex_grid(bad)
    with pytest.raises(ValueError, match="max_num_patches must be a positive whole number"):
        inputsize.naflex_grid((10, 10), max_num_patches=0)


@pytest.mark.parametrize("name", ["tiny-dinov3", "tiny-dinotxt"])
def test_every_family_reports_its_grid_and_what_it_reads(name):
    enc = vslib.load_encoder(name, device="cpu", dtype="fp32")
    wide = _noise(WIDE)
    grid = enc.patch_grids([wide, wide])
    inputs = enc.preprocess([wide])["pixel_values"]
    side = inputs.shape[-1]
    assert grid[0] == grid[1] == inputsize.square_grid(side, enc.patch_size)
    view = enc.input_views([wide])[0]
    assert view.shape == (side, side, 3) and 0.0 <= view.min() and view.max() <= 1.0
    # Undoing the normalisation and normalising again gives the model's input back.
    mean, std = (np.asarray(v, dtype=np.float32) for v in enc._normalisation())
    np.testing.assert_allclose((view - mean) / std, inputs[0].numpy().transpose(1, 2, 0), atol=1e-4)
