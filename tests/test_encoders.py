"""The Encoder seam: real model families loaded by their Hub ids from an offline cache.

Tiny random-weight models of each family are built with the libraries' own config
classes and saved as a Hugging Face cache snapshot; the hub stays switched off.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import normalizers

import vslib
from vslib import encoders, registry
from vslib.images import ImageLoadError


def _snapshot(cache: Path, repo_id: str) -> Path:
    """Create the cache layout ``models--org--name/{refs/main, snapshots/<rev>/}`` and return the snapshot."""
    revision = "0" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def _save_dinov3(path: Path) -> None:
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    torch.manual_seed(0)
    config = DINOv3ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             patch_size=8, image_size=32, num_register_tokens=4)
    DINOv3ViTModel(config).save_pretrained(path)
    DINOv3ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)


def _save_siglip(path: Path, naflex: bool) -> None:
    from transformers import (
        Siglip2Config,
        Siglip2ImageProcessor,
        Siglip2Model,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    from vslib.zoo.siglip import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(64)
    # Like SigLIP 2's Gemma tokenizer, keep case: lowercasing is the encoder's job.
    tokenizer.backend_tokenizer.normalizer = normalizers.NFKC()
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=64, projection_size=32)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=8)
    if naflex:
        model = Siglip2Model(Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 16}))
        processor = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config={**vision, "image_size": 32}))
        processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    model.save_pretrained(path)
    processor.save_pretrained(path)
    tokenizer.save_pretrained(path)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("hf-cache")
    _save_dinov3(_snapshot(cache, "facebook/dinov3-vits16plus-pretrain-lvd1689m"))
    _save_siglip(_snapshot(cache, "google/siglip2-base-patch16-naflex"), naflex=True)
    _save_siglip(_snapshot(cache, "google/siglip2-base-patch16-224"), naflex=False)
    return cache


@pytest.fixture()
def offline_hub(hub_cache, monkeypatch) -> Path:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub_cache


def _images(n: int = 3, size: tuple[int, int] = (40, 30)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def _assert_unit_rows(x: np.ndarray, n: int, dim: int) -> None:
    assert x.shape == (n, dim) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_dinov3_loads_by_friendly_name_and_hub_id_offline(offline_hub):
    by_name = vslib.load_encoder("dinov3-vits16plus", device="cpu")
    by_id = vslib.load_encoder("facebook/dinov3-vits16plus-pretrain-lvd1689m", device="cpu")
    assert isinstance(by_name, encoders.DinoV3Encoder) and by_name.dim == 32
    a, b = by_name.encode_images(_images()), by_id.encode_images(_images())
    _assert_unit_rows(a, 3, 32)
    np.testing.assert_allclose(a, b, atol=1e-6)
    # The default pooling is the CLS token after the final norm, not the patch mean.
    mean = vslib.load_encoder("dinov3-vits16plus", device="cpu", pooling="mean").encode_images(_images())
    assert not np.allclose(a, mean, atol=1e-3)


def test_dinov3_pools_cls_or_exactly_the_patch_tokens(offline_hub):
    cls_enc = vslib.load_encoder("dinov3-vits16plus", device="cpu")
    mean_enc = vslib.load_encoder("dinov3-vits16plus", device="cpu", pooling="mean")
    pixels = cls_enc.preprocess(_images())["pixel_values"]
    with torch.no_grad():
        out = cls_enc.model(pixel_values=pixels)
    hidden = out.last_hidden_state.numpy()
    # 32 px images in 8 px patches: 16 patch tokens, after the CLS token and 4 registers.
    assert hidden.shape[1] == 1 + 4 + 16
    cls = hidden[:, 0] / np.linalg.norm(hidden[:, 0], axis=1, keepdims=True)
    patch_mean = hidden[:, -16:].mean(axis=1)
    patch_mean /= np.linalg.norm(patch_mean, axis=1, keepdims=True)
    np.testing.assert_allclose(cls_enc.encode_images(_images()), cls, atol=1e-5)
    np.testing.assert_allclose(mean_enc.encode_images(_images()), patch_mean, atol=1e-5)
    # A register token averaged in would move the mean by more than the tolerance.
    with_register = hidden[:, -17:].mean(axis=1)
    with_register /= np.linalg.norm(with_register, axis=1, keepdims=True)
    assert np.abs(with_register - patch_mean).max() > 1e-3
    with pytest.raises(ValueError, match="pooling must be 'cls' or 'mean', got 'max'"):
        vslib.load_encoder("dinov3-vits16plus", device="cpu", pooling="max")


def test_dinov3_is_image_only_and_says_so(offline_hub):
    enc = vslib.load_encoder("dinov3-vits16plus", device="cpu")
    with pytest.raises(encoders.TextNotSupportedError, match="dinov3-vits16plus is an image-only model"):
        enc.encode_texts(["a dog"])


def test_dinov3_patch_features_lie_on_the_patch_grid(offline_hub):
    enc = vslib.load_encoder("dinov3-vits16plus", device="cpu")
    feats = enc.patch_features(_images(2))
    assert feats.shape == (2, 4, 4, 32)  # 32 px / patch 8
    np.testing.assert_allclose(np.linalg.norm(feats, axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["siglip2-base-naflex", "siglip2-base-patch16-224"])
def test_siglip_families_embed_images_and_texts(offline_hub, name):
    enc = vslib.load_encoder(name, device="cpu")
    assert enc.supports_text and enc.max_length == 64 and enc.dim == 32
    img = enc.encode_images(_images(3, size=(48, 24)))  # not square: NaFlex keeps the aspect
    txt = enc.encode_texts(["a red circle", "A RED CIRCLE", "a blue star"])
    _assert_unit_rows(img, 3, 32)
    _assert_unit_rows(txt, 3, 32)
    np.testing.assert_allclose(txt[0], txt[1], atol=1e-6)  # lowercased, as SigLIP 2 was trained
    assert not np.allclose(txt[0], txt[2], atol=1e-3)
    probability = enc.match_probability(img @ txt.T)
    assert probability.shape == (3, 3) and ((probability > 0) & (probability < 1)).all()


def test_siglip_lowercases_texts_itself_when_the_tokenizer_keeps_case(offline_hub):
    # transformers' Siglip2Tokenizer (NaFlex) lowercases on its own; Gemma's, used by the
    # fixed-resolution checkpoints, keeps case, as does this snapshot's tokenizer.
    enc = vslib.load_encoder("siglip2-base-patch16-224", device="cpu")
    assert enc.tokenizer("A Red CIRCLE")["input_ids"] != enc.tokenizer("a red circle")["input_ids"]
    mixed, lower, other = enc.encode_texts(["A Red CIRCLE", "a red circle", "a blue star"])
    np.testing.assert_allclose(mixed, lower, atol=1e-6)
    assert not np.allclose(lower, other, atol=1e-3)


def test_siglip_match_probability_uses_the_learned_scale_and_bias(offline_hub):
    enc = vslib.load_encoder("siglip2-base-patch16-224", device="cpu")
    with torch.no_grad():
        enc.model.logit_scale.fill_(np.log(10.0))  # SigLIP's initial values: t = log 10, b = -10
        enc.model.logit_bias.fill_(-10.0)
    assert enc.logit_scale == pytest.approx(10.0) and enc.logit_bias == pytest.approx(-10.0)
    cos = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    # sigmoid(10 cos - 10): a perfect cosine of 1 is an even bet, anything less unlikely.
    np.testing.assert_allclose(enc.match_probability(cos), 1 / (1 + np.exp(-(10 * cos - 10))), rtol=1e-6)
    assert enc.match_probability(1.0) == pytest.approx(0.5)
    assert enc.match_probability(0.0) < 1e-4


def test_siglip_text_is_padded_to_the_checkpoint_length(offline_hub, monkeypatch):
    enc = vslib.load_encoder("siglip2-base-patch16-224", device="cpu")
    seen = []
    original = enc.model.get_text_features

    def spy(**kwargs):
        seen.append(kwargs["input_ids"].shape)
        return original(**kwargs)

    monkeypatch.setattr(enc.model, "get_text_features", spy)
    enc.encode_texts(["a dog", "a much longer caption about a dog on a striped background"])
    assert seen == [torch.Size([2, 64])]
    # A tokenizer that also makes an attention mask (and token types) hands the mask on, not the types.
    keys = []
    monkeypatch.setattr(enc.model, "get_text_features", lambda **kwargs: keys.append(sorted(kwargs)) or
                        original(**kwargs))
    monkeypatch.setattr(enc.tokenizer, "model_input_names", ["input_ids", "token_type_ids", "attention_mask"])
    enc.encode_texts(["a dog"])
    assert keys == [["attention_mask", "input_ids"]]


def test_missing_checkpoint_fails_at_once_with_a_useful_message(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(registry.ModelNotAvailableError) as info:
        vslib.load_encoder("siglip2-so400m-patch14-384")
    assert str(info.value) == (
        "Model 'siglip2-so400m-patch14-384' (google/siglip2-so400m-patch14-384) is not cached on this machine "
        "and the Hugging Face Hub is switched off (HF_HUB_OFFLINE=1). Download it once with network access "
        "(for example: hf download google/siglip2-so400m-patch14-384) and load it again. For an offline model "
        "of the same family, use the bundled 'tiny-siglip2'."
    )


def test_dinotxt_without_files_names_the_variable_and_the_bundled_model(monkeypatch):
    monkeypatch.delenv(registry.DINOTXT_ENV, raising=False)
    with pytest.raises(registry.ModelNotAvailableError, match="VSLIB_DINOTXT_DIR.*'tiny-dinotxt'"):
        vslib.load_encoder("dinotxt-vitl16")


def test_unknown_names_and_missing_directories():
    with pytest.raises(KeyError, match="unknown model 'tiny-clip'"):
        vslib.load_encoder("tiny-clip")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vslib.load_encoder("./no/such/model")


def test_local_directory_of_an_unknown_kind_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="type 'bert'"):
        vslib.load_encoder(tmp_path)


def test_dinotxt_directory_loads_behind_the_same_interface(tmp_path):
    from test_dinotxt import tiny_backbone, tiny_config

    from vslib.bpe import ClipTokenizer, train_bpe_merges
    from vslib.dinotxt import DinoTxtModel, save_dinotxt

    backbone_dir = tmp_path / "backbone"
    backbone = tiny_backbone()
    backbone.save_pretrained(backbone_dir)
    tokenizer = ClipTokenizer(train_bpe_merges(["a red circle", "a blue star on a plain background"] * 3, 20))
    model = DinoTxtModel(tiny_config(tokenizer.vocab_size), backbone, tokenizer)
    save_dinotxt(model, tmp_path / "txt", backbone_ref="../backbone")

    enc = vslib.load_encoder(tmp_path / "txt", device="cpu")
    assert isinstance(enc, encoders.DinoTxtEncoder) and enc.dim == 48
    img = enc.encode_images(_images(2))
    txt = enc.encode_texts(["a red circle", "a blue star"])
    _assert_unit_rows(img, 2, 48)
    _assert_unit_rows(txt, 2, 48)
    patches = enc.patch_features(_images(1))
    assert patches.shape == (1, 4, 4, 24)
    np.testing.assert_allclose(np.linalg.norm(patches, axis=-1), 1.0, atol=1e-5)
    texts = ["a red circle", "a blue star"]
    patch_text = enc.patch_text_features(texts)
    assert patch_text.shape == (2, 24)
    # Patch features live in the second (patch) half of the joint space.
    with torch.no_grad():
        full = enc.model.encode_text(enc.model.tokenize(texts)).numpy()
    second = full[:, 24:] / np.linalg.norm(full[:, 24:], axis=1, keepdims=True)
    first = full[:, :24] / np.linalg.norm(full[:, :24], axis=1, keepdims=True)
    np.testing.assert_allclose(patch_text, second, atol=1e-5)
    assert np.abs(first - second).max() > 1e-2
    np.testing.assert_allclose(enc.patch_text_features("a red circle"), second[:1], atol=1e-5)


def test_paths_and_pil_images_give_the_same_vectors_and_bad_files_are_reported(offline_hub, tmp_path):
    enc = vslib.load_encoder("dinov3-vits16plus", device="cpu")
    images = _images(5)
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    from_pil = enc.encode_images(images, batch_size=2)
    from_files = enc.encode_files([*paths[:2], tmp_path / "empty.png", *paths[2:], tmp_path / "text.jpg"],
                                  batch_size=2, num_workers=2)
    np.testing.assert_allclose(from_files.vectors, from_pil, atol=1e-5)
    assert from_files.paths == paths
    assert [(p.name, reason) for p, reason in from_files.skipped] == [
        ("empty.png", "empty file (0 bytes)"),
        ("text.jpg", "not an image (unknown or unsupported format)"),
    ]
    with pytest.raises(ImageLoadError, match="empty.png: empty file"):
        enc.encode_images([paths[0], tmp_path / "empty.png"])


def test_non_finite_embeddings_are_refused(offline_hub):
    enc = vslib.load_encoder("dinov3-vits16plus", device="cpu", dtype="fp16")
    with torch.no_grad():
        enc.model.model.layer[0].mlp.down_proj.weight.mul_(1e6)  # fp16 overflows past 65504
    with pytest.raises(encoders.NonFiniteEmbeddingError,
                       match=r"^dinov3-vits16plus produced non-finite embeddings for 2 of 2 inputs in float16 on cpu"
                             r"; this is usually overflow .* load it with dtype=torch.float32 or torch.bfloat16 "
                             r"\(see vslib.precision.audit_dtypes, chapter 2\)$"):
        enc.encode_images(_images(2))


def test_default_dtype_is_never_fp16_for_dinov3(offline_hub):
    enc = vslib.load_encoder("dinov3-vits16plus")
    assert enc.dtype in (torch.float32, torch.bfloat16)
    assert next(enc.model.parameters()).dtype == enc.dtype


def test_environment_forces_dtype_and_device_unless_arguments_say_otherwise(offline_hub, monkeypatch):
    monkeypatch.setenv("VSLIB_DTYPE", "bfloat16")
    monkeypatch.setenv("VSLIB_DEVICE", "cpu")
    enc = vslib.load_encoder("dinov3-vits16plus")
    assert enc.dtype == torch.bfloat16 and next(enc.model.parameters()).dtype == torch.bfloat16
    assert enc.device == torch.device("cpu")
    assert vslib.load_encoder("dinov3-vits16plus", dtype="fp32").dtype == torch.float32
    monkeypatch.setenv("VSLIB_DTYPE", "int8")
    with pytest.raises(ValueError, match="VSLIB_DTYPE='int8'"):
        vslib.load_encoder("dinov3-vits16plus")
    monkeypatch.delenv("VSLIB_DTYPE")
    if not torch.cuda.is_available():
        monkeypatch.setenv("VSLIB_DEVICE", "cuda")
        with pytest.raises(ValueError, match="device 'cuda': no CUDA GPU is available here"):
            vslib.load_encoder("dinov3-vits16plus")


def test_bf16_encoders_hand_back_float32_numpy(offline_hub, monkeypatch):
    """Everything a chapter takes from inside a model is float32 NumPy, whatever the model runs in."""
    monkeypatch.setenv("VSLIB_DTYPE", "bfloat16")
    dino = vslib.load_encoder("dinov3-vits16plus", device="cpu")
    siglip = vslib.load_encoder("siglip2-base-patch16-224", device="cpu")
    images = _images(2)
    tokens = dino.tokens(images)
    raw = dino.raw_embeddings(images)
    outputs = [tokens, raw, dino.encode_images(images), dino.patch_features(images),
               siglip.raw_embeddings(images), siglip.encode_texts(["a dog"])]
    assert all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in outputs)
    assert tokens.shape == (2, 1 + 4 + 16, 32)
    # pooler_output is the CLS token after the final norm; encode_images normalises it.
    np.testing.assert_array_equal(raw, tokens[:, 0])
    np.testing.assert_allclose(dino.encode_images(images), raw / np.linalg.norm(raw, axis=1, keepdims=True),
                               atol=1e-6)
    norms = np.linalg.norm(siglip.raw_embeddings(images), axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-2)  # not normalised


@pytest.mark.parametrize("name", ["tiny-dinov3", "tiny-siglip2"])
def test_fixed_size_processors_set_a_reduced_decoding_side(offline_hub, name):
    # transformers hands fixed-size processors a SizeDict, not a dict; its sides must still be read,
    # or large photos are decoded at full size for a 64 px model.
    from transformers import AutoImageProcessor

    enc = vslib.load_encoder(name)
    from vslib.zoo import checkpoint_path

    size = AutoImageProcessor.from_pretrained(checkpoint_path(name)).size
    side = max(v for v in (getattr(size, k, None) for k in ("height", "width", "shortest_edge")) if v)
    assert enc.decode_side == 2 * side


def test_dinotxt_preprocessing_matches_a_pil_bicubic_reference():
    """Short side resized (bicubic, antialiased) as PIL does it, centre crop, then ImageNet normalisation."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    rng = np.random.default_rng(0)
    # Fine noise shrunk by 3: aliasing (no antialias) or another filter changes most pixels.
    noise = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    # A coarse mosaic enlarged by 4: bicubic and bilinear differ along every edge.
    mosaic = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    for image, resize, crop in [(noise, 16, 12), (mosaic, 24, 20)]:
        width, height = image.size
        size = (resize * width // height, resize)  # landscape: the height is the short side
        resized = np.asarray(image.resize(size, Image.BICUBIC), dtype=np.float64) / 255
        top, left = round((size[1] - crop) / 2), round((size[0] - crop) / 2)
        expected = ((resized[top : top + crop, left : left + crop] - mean) / std).transpose(2, 0, 1)
        got = encoders._DinoTxtPreprocess(resize, crop, mean, std)([image])["pixel_values"]
        assert got.shape == (1, 3, crop, crop) and got.dtype == torch.float32
        # torchvision and PIL round differently: within two grey levels, not more.
        np.testing.assert_allclose(got[0].numpy(), expected, atol=2 / 255 / min(std), rtol=0)


class _CountingEncoder(encoders.Encoder):
    """Mean colour of each image, recording the batch sizes the model sees (no model files needed)."""

    name, dim, family = "counting", 3, "fake"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def preprocess(self, images):
        return {"rgb": torch.tensor(np.stack([np.asarray(im, np.float32).mean((0, 1)) + 1 for im in images]))}

    def _embed_inputs(self, inputs):
        self.batches.append(len(inputs["rgb"]))
        return inputs["rgb"]


def _image_files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = [folder / f"{i}.png" for i in range(n)]
    for path, image in zip(paths, _images(n, size=(8, 8))):
        image.save(path)
    return paths


def test_files_are_encoded_in_batches_of_32_and_paths_keep_the_batch_size_asked_for(tmp_path):
    paths = _image_files(tmp_path / "files", 40)
    enc = _CountingEncoder()
    enc.encode_files(paths, num_workers=0)
    assert enc.batches == [32, 8]
    enc.batches.clear()
    enc.encode_images(_images(40, size=(4, 4)))  # PIL images: batches of 32 too
    assert enc.batches == [32, 8]
    enc.batches.clear()
    enc.encode_images(paths[:5], batch_size=2, num_workers=0)
    assert enc.batches == [2, 2, 1]


@pytest.mark.parametrize("n, cores, workers", [(65, 8, 4), (65, 2, 2), (65, None, 1), (64, 8, 0)])
def test_loader_workers_default_to_up_to_four_when_there_are_several_batches(tmp_path, monkeypatch, n, cores,
                                                                               workers):
    seen = []
    real_loader = torch.utils.data.DataLoader

    def loader(*args, num_workers, **kwargs):
        seen.append(num_workers)
        return real_loader(*args, num_workers=0, **kwargs)  # the count is what is checked; no processes

    monkeypatch.setattr(torch.utils.data, "DataLoader", loader)
    monkeypatch.setattr(encoders.os, "cpu_count", lambda: cores)
    _CountingEncoder().encode_files(_image_files(tmp_path / "files", n), batch_size=32)
    assert seen == [workers]


def test_files_are_decoded_at_the_encoders_reduced_size(tmp_path, monkeypatch):
    seen = []
    real_load = encoders.load_image
    monkeypatch.setattr(encoders, "load_image", lambda path, min_side=None: seen.append(min_side) or
                        real_load(path, min_side=min_side))
    enc = _CountingEncoder()
    enc.decode_side = 64
    enc.encode_files(_image_files(tmp_path / "files", 2), num_workers=0)
    assert seen == [64, 64]


def test_progress_bars_show_when_asked_with_the_model_name_and_the_batch_count(tmp_path, capsys):
    enc = _CountingEncoder()
    enc.encode_images(_images(5, size=(8, 8)), batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "encoding (counting)" in err and "/3 [" in err  # three batches
    # leave=False: the finished bar is wiped from the terminal (its line is cleared).
    assert err.endswith("\r")
    enc.encode_files(_image_files(tmp_path / "files", 3), batch_size=2, progress=True, num_workers=0)
    err = capsys.readouterr().err
    assert "encoding (counting)" in err and "/2 [" in err
    assert "batch/s" in err  # the bar counts batches
    # Asked for: a bar even for paths, and for a single batch.
    enc.encode_images(_image_files(tmp_path / "more", 1), progress=True, num_workers=0)
    assert "encoding (counting)" in capsys.readouterr().err
    # Not asked: no bar for a single batch (and none off a terminal, as here).
    enc.encode_images(_images(5, size=(8, 8)), batch_size=2)
    enc.encode_images(_images(1, size=(8, 8)), progress=None)
    assert capsys.readouterr().err == ""


def test_text_progress_counts_batches_of_texts(offline_hub, capsys):
    enc = vslib.load_encoder("siglip2-base-patch16-224", device="cpu")
    enc.encode_texts([f"a red circle {i}" for i in range(5)], batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "encoding (siglip2-base-patch16-224)" in err and "/3 [" in err


def test_raw_embeddings_of_no_images_is_an_empty_float32_matrix():
    raw = _CountingEncoder().raw_embeddings([])
    assert raw.shape == (0, 3) and raw.dtype == np.float32


def test_unwrap_takes_tensors_and_pooled_outputs_and_names_anything_else():
    tensor = torch.ones(2, 3)
    assert encoders._unwrap(tensor) is tensor

    class Output:
        pooler_output = tensor

    assert encoders._unwrap(Output()) is tensor
    with pytest.raises(TypeError, match="^expected a tensor or an output with pooler_output, got object$"):
        encoders._unwrap(object())


def test_integer_inputs_go_to_the_device_without_a_dtype_change():
    enc = _CountingEncoder()
    enc.device, enc.dtype = torch.device("meta"), torch.bfloat16
    ids = enc._to_device(torch.ones(2, dtype=torch.long))
    assert ids.device.type == "meta" and ids.dtype == torch.long
    pixels = enc._to_device(torch.ones(2))
    assert pixels.device.type == "meta" and pixels.dtype == torch.bfloat16


def test_an_explicit_device_wins_over_the_environment(offline_hub, monkeypatch):
    monkeypatch.setenv("VSLIB_DEVICE", "potato")
    with pytest.raises(ValueError, match="VSLIB_DEVICE='potato'"):
        vslib.load_encoder("dinov3-vits16plus")
    enc = vslib.load_encoder("dinov3-vits16plus", device="cpu")
    assert enc.device == torch.device("cpu")


def test_a_non_square_dinov3_processor_sets_the_patch_grid_and_the_decode_side(tmp_path):
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    torch.manual_seed(0)
    config = DINOv3ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=8, image_size=32, num_register_tokens=4)
    DINOv3ViTModel(config).save_pretrained(tmp_path)
    # 52 px high: six whole 8 px patches, and 4 px the patch convolution never reads.
    DINOv3ViTImageProcessor(size={"height": 52, "width": 32}).save_pretrained(tmp_path)
    enc = vslib.load_encoder(tmp_path, device="cpu")
    assert enc.decode_side == 2 * 52  # twice the larger side the model sees
    feats = enc.patch_features(_images(1))
    assert feats.shape == (1, 6, 4, 32)  # 52 // 8 rows, 32 / 8 columns
    tokens = enc.tokens(_images(1))[0, 1 + 4 :]
    np.testing.assert_allclose(feats[0].reshape(24, 32), tokens / np.linalg.norm(tokens, axis=1, keepdims=True),
                               atol=1e-5)
    [grid] = enc.patch_grids(_images(1))
    assert (grid.width, grid.height, grid.rows, grid.cols, grid.patches) == (32, 52, 6, 4, 24)
    assert all(type(value) is int for value in (grid.rows, grid.cols, grid.patches))
    view = enc.input_views(_images(1))[0]
    assert view.shape == (52, 32, 3) and view.dtype == np.float32  # float32, as everything chapters get


def test_siglip_loads_under_its_name_on_the_device_and_truncates_long_texts(offline_hub):
    enc = vslib.load_encoder("siglip2-base-patch16-224", device="cpu")
    assert enc.name == "siglip2-base-patch16-224" and enc.device == torch.device("cpu")
    assert repr(enc) == "SiglipEncoder(name='siglip2-base-patch16-224', dim=32, device=cpu, dtype=float32)"
    words = "a red circle on a blue background".split()
    long_text = " ".join(words * 20)  # 140 words, more than the 64 positions
    cut = " ".join((words * 20)[:63])  # 63 words and the end token fill the 64 positions
    np.testing.assert_allclose(enc.encode_texts([long_text]), enc.encode_texts([cut]), atol=1e-6)


def test_siglip_text_length_comes_from_the_model_not_the_tokenizer(offline_hub):
    enc = vslib.load_encoder("siglip2-base-patch16-224", device="cpu")
    before = enc.encode_texts(["a red circle"])
    enc.tokenizer.model_max_length = 128  # many tokenizers carry no (or another) length
    np.testing.assert_allclose(enc.encode_texts(["a red circle"]), before, atol=1e-6)


def test_dinotxt_inputs_and_head_outputs_agree_with_encode_images(tmp_path):
    from test_dinotxt import tiny_backbone, tiny_config

    from vslib.bpe import ClipTokenizer, train_bpe_merges
    from vslib.dinotxt import DinoTxtModel, save_dinotxt

    backbone_dir = tmp_path / "backbone"
    tiny_backbone().save_pretrained(backbone_dir)
    tokenizer = ClipTokenizer(train_bpe_merges(["a red circle", "a blue star"] * 3, 20))
    save_dinotxt(DinoTxtModel(tiny_config(tokenizer.vocab_size), tiny_backbone(), tokenizer), tmp_path / "txt",
                 backbone_ref="../backbone")
    enc = vslib.load_encoder(tmp_path / "txt", device="cpu")
    assert enc.decode_side == 2 * 36  # twice the short side it resizes to
    images = _images(2)
    expected = enc.encode_images(images)
    tokens = enc.backbone_tokens(images)
    with torch.no_grad():
        reference = enc.model.backbone_tokens(enc.preprocess(images)["pixel_values"]).numpy()
    assert tokens.shape == (2, 1 + 4 + 16, 32)  # CLS, 4 registers, 16 patches
    np.testing.assert_allclose(tokens, reference, atol=1e-6)
    bf16 = vslib.load_encoder(tmp_path / "txt", device="cpu", dtype="bf16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    np.testing.assert_allclose(enc.encode_inputs(enc.image_preprocessor()(images)), expected, atol=1e-6)
    cls, patches = enc.head_outputs(images)
    assert cls.shape == (2, 24) and patches.shape == (2, 16, 24)
    joint = np.concatenate([cls, patches.mean(axis=1)], axis=1)
    np.testing.assert_allclose(joint / np.linalg.norm(joint, axis=1, keepdims=True), expected, atol=1e-5)


def _official_dinotxt_folder(folder: Path):
    """The official dino.txt file set (random tiny weights) with a config for its size."""
    from test_dinotxt import official_backbone_state_dict, random_official_state_dict, tiny_backbone, tiny_config

    from vslib.bpe import ClipTokenizer, train_bpe_merges, write_bpe_vocab

    folder.mkdir()
    merges = train_bpe_merges(["a red circle", "a blue star on a plain background"] * 3, 20)
    config = tiny_config(ClipTokenizer(merges).vocab_size)
    torch.save(official_backbone_state_dict(tiny_backbone()), folder / registry.DINOTXT_FILES["backbone"])
    torch.save(random_official_state_dict(config), folder / registry.DINOTXT_FILES["weights"])
    write_bpe_vocab(merges, folder / registry.DINOTXT_FILES["bpe_vocab"])
    config.to_json(folder / registry.DINOTXT_CONFIG_FILE)
    return config


def test_official_dinotxt_files_load_from_the_folder_the_variable_names(tmp_path, offline_hub, monkeypatch):
    from vslib.dinotxt import load_dinotxt

    folder = tmp_path / "dinotxt"
    config = _official_dinotxt_folder(folder)
    monkeypatch.setenv(registry.DINOTXT_ENV, str(folder))
    enc = vslib.load_encoder("dinotxt-vitl16", device="cpu", dtype="fp32")
    assert enc.dim == config.embed_dim == 48
    files = {k: folder / v for k, v in registry.DINOTXT_FILES.items()}
    model = load_dinotxt(files["weights"], backbone=files["backbone"], bpe_vocab=files["bpe_vocab"], config=config)
    with torch.no_grad():
        text = model.encode_text(model.tokenize(["a red circle"])).numpy()
    np.testing.assert_allclose(enc.encode_texts(["a red circle"]), text / np.linalg.norm(text), atol=1e-5)
    # Without the backbone file the Hub snapshot is asked for (offline here): the error names the model.
    files["backbone"].unlink()
    with pytest.raises(registry.ModelNotAvailableError,
                       match=r"^Model 'dinotxt-vitl16' \(facebook/dinov3-vitl16-pretrain-lvd1689m\) is not cached.*"
                             r"use the bundled 'tiny-dinotxt'\.$"):
        vslib.load_encoder("dinotxt-vitl16", device="cpu")


def test_naflex_models_need_a_naflex_processor_and_fixed_models_refuse_a_patch_budget(offline_hub, tmp_path):
    from transformers import Siglip2Config, Siglip2Model, SiglipImageProcessor

    from vslib.zoo.siglip import build_tokenizer

    text = dict(vocab_size=len(build_tokenizer(64)), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=64, projection_size=32)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=8,
                  num_patches=16)
    Siglip2Model(Siglip2Config(text_config=text, vision_config=vision)).save_pretrained(tmp_path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)  # the fixed kind
    build_tokenizer(64).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"^.* is a NaFlex model \(Siglip2Model\) but its image processor, "
                                         r"SiglipImageProcessor, makes no spatial_shapes or pixel_attention_mask; "
                                         r"it needs a Siglip2ImageProcessor$"):
        vslib.load_encoder(tmp_path, device="cpu")
    with pytest.raises(ValueError, match="fixed-resolution SigLIP model that squashes every image to 32x32"):
        vslib.load_encoder("siglip2-base-patch16-224", device="cpu", max_num_patches=64)


# -- what the complete mutation run (benchmarks/mutation_score.py) showed the tests above missed ---


class _TextCountingEncoder(_CountingEncoder):
    """A text-capable counting encoder: records the size of each text batch."""

    supports_text = True

    def __init__(self) -> None:
        super().__init__()
        self.text_batches: list[int] = []

    def _embed_texts(self, texts):
        self.text_batches.append(len(texts))
        return torch.tensor([[len(t) + 1.0, 1.0, 2.0] for t in texts])


def test_texts_go_in_batches_of_64_and_one_string_is_one_text():
    enc = _TextCountingEncoder()
    out = enc.encode_texts([f"text {i}" for i in range(65)])
    assert out.shape == (65, 3) and enc.text_batches == [64, 1]
    one = enc.encode_texts("a dog")
    assert one.shape == (1, 3) and enc.text_batches[-1] == 1
    np.testing.assert_allclose(one, enc.encode_texts(["a dog"]))


def test_raw_embeddings_go_in_batches_of_32():
    enc = _CountingEncoder()
    assert enc.raw_embeddings(_images(40, size=(4, 4))).shape == (40, 3)
    assert enc.batches == [32, 8]


def test_nothing_to_encode_gives_an_empty_float32_matrix(tmp_path):
    enc = _TextCountingEncoder()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    results = [enc.encode_images([]), enc.encode_texts([]), enc.encode_files([tmp_path / "bad.png"]).vectors]
    assert all(x.shape == (0, 3) and x.dtype == np.float32 for x in results)


def test_encode_images_of_paths_passes_the_worker_count_on(tmp_path, monkeypatch):
    seen = []
    real_loader = torch.utils.data.DataLoader

    def loader(*args, num_workers, **kwargs):
        seen.append(num_workers)
        return real_loader(*args, num_workers=0, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", loader)
    monkeypatch.setattr(encoders.os, "cpu_count", lambda: 8)
    paths = _image_files(tmp_path / "files", 65)  # three batches: four workers unless told otherwise
    _CountingEncoder().encode_images(paths, num_workers=1)
    _CountingEncoder().encode_images(paths)
    assert seen == [1, 4]


def test_what_an_encoder_does_not_provide_is_a_clear_error_naming_it():
    enc = _TextCountingEncoder()
    with pytest.raises(NotImplementedError, match=r"^counting \(fake\) does not say its patch size$"):
        enc.patch_grids(_images(1))
    with pytest.raises(NotImplementedError, match=r"^counting \(fake\) does not say how it normalises images$"):
        enc.input_views(_images(1))
    with pytest.raises(NotImplementedError, match=r"^counting \(fake\) does not expose patch features$"):
        enc.patch_features(_images(1))
    with pytest.raises(NotImplementedError, match=r"^counting \(fake\) has no text space for patch features$"):
        enc.patch_text_features(["a dog"])


class _OvershootingEncoder(_CountingEncoder):
    """Inputs whose un-normalised values leave [0, 1], as a resampling filter's overshoot can."""

    def preprocess(self, images):
        return {"pixel_values": torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).repeat(len(images), 3, 1, 1)}

    def _normalisation(self):
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def test_input_views_are_clipped_to_zero_one():
    [view] = _OvershootingEncoder().input_views(_images(1))
    np.testing.assert_array_equal(view[0, :, 0], [0.0, 0.0, 0.5, 1.0, 1.0])


def test_numpy_copies_to_the_cpu_whatever_the_device():
    class OnAnotherDevice:  # a tensor on an accelerator, as far as _numpy can tell
        def __init__(self) -> None:
            self.asked: list[dict] = []

        def detach(self):
            return self

        def to(self, **options):
            self.asked.append(options)
            return torch.ones(2, dtype=torch.float16).to(**options)

    tensor = OnAnotherDevice()
    out = encoders._numpy(tensor)
    assert out.dtype == np.float32 and torch.device(tensor.asked[0]["device"]) == torch.device("cpu")


def test_models_and_text_inputs_go_to_the_device_asked_for(offline_hub):
    # The meta device holds no data: it shows where tensors go without an accelerator.
    from vslib.zoo import checkpoint_path

    meta = torch.device("meta")
    for cls, name in [(encoders.DinoV3Encoder, "tiny-dinov3"), (encoders.SiglipEncoder, "tiny-siglip2"),
                      (encoders.DinoTxtEncoder, "tiny-dinotxt")]:
        enc = cls(name, checkpoint_path(name), meta, torch.float32)
        assert {p.device for p in enc.model.parameters()} == {meta}, name
    siglip = encoders.SiglipEncoder("tiny-siglip2", checkpoint_path("tiny-siglip2"), meta, torch.float32)
    seen = []
    real_features = siglip.model.get_text_features

    def text_features(**inputs):
        seen.append({value.device for value in inputs.values()})
        return real_features(**inputs)

    siglip.model.get_text_features = text_features
    assert siglip._embed_texts(["a dog"]).device == meta and seen == [{meta}]  # the token ids went there too


@pytest.mark.parametrize(
    "size, sides",
    [
        ({"shortest_edge": 224}, [224]),
        ({"height": 32, "width": 48}, [32, 48]),
        ({"height": 0, "width": 1, "shortest_edge": None}, [1]),
        (None, []),
    ],
)
def test_processor_sides_reads_dicts_and_size_dicts(size, sides):
    from transformers.image_processing_utils_fast import SizeDict

    assert encoders._processor_sides(size) == sides
    if size is not None:
        assert encoders._processor_sides(SizeDict(**size)) == sides


def test_a_processor_without_a_size_loads(monkeypatch):
    from transformers import AutoImageProcessor

    real = AutoImageProcessor.from_pretrained

    def without_size(*args, **kwargs):
        processor = real(*args, **kwargs)
        del processor.size
        return processor

    monkeypatch.setattr(AutoImageProcessor, "from_pretrained", without_size)
    enc = vslib.load_encoder("tiny-siglip2-naflex", device="cpu")
    assert enc.decode_side is not None and not hasattr(enc._preprocess.processor, "size")


class _FakeTerminal:
    """stderr as an interactive terminal, which tqdm shows a bar on when not told either way."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("count, shown", [(1, False), (2, False), (3, True), (4, True)])
def test_on_a_terminal_a_bar_shows_by_itself_from_two_batches_on(monkeypatch, count, shown):
    terminal = _FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _CountingEncoder().encode_images(_images(count, size=(4, 4)), batch_size=2)  # 1, 1, 2, 2 batches
    assert ("encoding (counting)" in terminal.text) == shown
    terminal.text = ""
    _CountingEncoder().encode_images(_images(count, size=(4, 4)), batch_size=2, progress=False)
    assert terminal.text == ""


def test_an_empty_bar_counts_no_batches(capsys):
    _CountingEncoder().encode_images([], progress=True)
    err = capsys.readouterr().err
    assert "encoding (counting)" in err and "/1 [" not in err  # no batch to count, not one


def test_the_fingerprint_names_the_model_and_hashes_its_files(offline_hub):
    from vslib.fingerprint import model_fingerprint
    from vslib.zoo import checkpoint_path

    enc = vslib.load_encoder("tiny-dinov3", device="cpu")
    assert enc.fingerprint == model_fingerprint("tiny-dinov3", checkpoint_path("tiny-dinov3"))
    assert enc.fingerprint.startswith("tiny-dinov3@sha256:")


def _naflex_copy(tmp_path: Path, tokenizer_class: str | None) -> Path:
    import json
    import shutil

    from vslib.zoo import checkpoint_path

    folder = tmp_path / "naflex"
    shutil.copytree(checkpoint_path("tiny-siglip2-naflex"), folder)
    config_file = folder / "tokenizer_config.json"
    if tokenizer_class is None:
        config_file.unlink()
    else:
        config = json.loads(config_file.read_text())
        config["tokenizer_class"] = tokenizer_class
        config_file.write_text(json.dumps(config))
    return folder


def test_a_declared_fast_tokenizer_is_loaded_from_the_files(tmp_path):
    from vslib.zoo import checkpoint_path

    bundled = encoders._siglip_tokenizer(checkpoint_path("tiny-siglip2-naflex"))
    declared = encoders._siglip_tokenizer(_naflex_copy(tmp_path, "PreTrainedTokenizerFast"))
    # AutoTokenizer would build SigLIP 2's own Gemma-style tokenizer, which splits these words otherwise.
    assert declared("a red circle")["input_ids"] == bundled("a red circle")["input_ids"]


def test_without_a_tokenizer_config_auto_tokenizer_decides(tmp_path):
    from transformers import AutoTokenizer

    folder = _naflex_copy(tmp_path, None)
    tokenizer = encoders._siglip_tokenizer(folder)
    assert type(tokenizer) is type(AutoTokenizer.from_pretrained(folder))
    assert tokenizer("a red circle")["input_ids"] == AutoTokenizer.from_pretrained(folder)("a red circle")["input_ids"]


def test_official_dinotxt_files_without_a_config_use_the_release_configuration(tmp_path, monkeypatch):
    from vslib import dinotxt

    folder = tmp_path / "dinotxt"
    _official_dinotxt_folder(folder)
    (folder / registry.DINOTXT_CONFIG_FILE).unlink()
    asked = []

    def load(*args, **kwargs):
        asked.append(kwargs.get("config", "missing"))
        raise RuntimeError("stop here")

    monkeypatch.setattr(dinotxt, "load_dinotxt", load)
    with pytest.raises(RuntimeError, match="stop here"):
        encoders.DinoTxtEncoder("dinotxt-vitl16", folder, torch.device("cpu"), torch.float32)
    assert asked == [None]


def test_dinotxt_backbone_weights_are_the_models_own():
    from vslib.zoo import checkpoint_path

    enc = encoders.DinoTxtEncoder("tiny-dinotxt", checkpoint_path("tiny-dinotxt"), torch.device("cpu"),
                                  torch.float32)
    weights = enc.backbone_weights()
    assert weights and all(w.dtype == np.float32 for w in weights.values())
    total = sum(p.numel() for p in enc.model.backbone.parameters())
    assert sum(w.size for w in weights.values()) == total


@pytest.mark.parametrize("budget", [1, 16, 17, 256])
def test_a_naflex_patch_budget_sets_the_decoding_side(budget):
    import math

    enc = vslib.load_encoder("tiny-siglip2-naflex", device="cpu", max_num_patches=budget)
    assert enc.max_num_patches == budget
    # The shorter side of an input is at most patch * ceil(sqrt(budget)) pixels; decode twice that.
    assert enc.decode_side == 2 * enc.patch_size * math.ceil(math.sqrt(budget))


def test_a_patch_budget_must_be_a_whole_number():
    with pytest.raises(ValueError, match="max_num_patches must be a positive whole number, got 2.5"):
        vslib.load_encoder("tiny-siglip2-naflex", device="cpu", max_num_patches=2.5)


def test_dinotxt_logit_scale_reports_the_temperature_the_loss_uses():
    from vslib.zoo import checkpoint_path

    enc = encoders.DinoTxtEncoder("tiny-dinotxt", checkpoint_path("tiny-dinotxt"), torch.device("cpu"),
                                  torch.float32)
    with torch.no_grad():  # the loss clamps the parameter, it does not clip it
        enc.model.logit_scale.fill_(np.log(5000.0))
    enc.model.config.max_logit_scale = np.log(100.0)
    assert enc.logit_scale == pytest.approx(100.0)
    enc.model.config.max_logit_scale = np.log(1000.0)
    assert enc.logit_scale == pytest.approx(1000.0)
    with torch.no_grad():
        enc.model.logit_scale.fill_(np.log(300.0))
    assert enc.logit_scale == pytest.approx(300.0)
