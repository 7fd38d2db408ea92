"""Real mode, offline: chapters 1, 3, 4 and 6 with ``VSLIB_MODELS=real`` on random-weight checkpoints.

This proves code paths, not numbers. The checkpoints are made here, with the real
configurations and file layouts and random weights: DINOv3 ViT-S+/16 (its real
config) and SigLIP 2 base patch16-224 (its real config, a Gemma tokenizer of the real
class, built offline with a small vocabulary) in a Hugging Face cache snapshot, and
dino.txt as the official file set (head + text ``.pth``, CLIP-format BPE merges, an
official-layout DINOv3 backbone ``.pth``) at a reduced size through
``dinotxt_config.json``. ``VSLIB_IMAGES`` points at a small labelled folder (one
sub-folder per class, one unreadable file). Each chapter must run to the end without
an error; what it prints about random models means nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from nbrun import execute_notebook
from PIL import Image
from test_encoders import _snapshot

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ["01_encoders", "03_dinotxt_zero_shot", "04_cosine_calibration", "06_dominant_objects"]
CLASSES = ["golf_ball", "tench", "church", "parachute", "chain_saw"]


def _save_dinov3_vits16plus(path: Path) -> None:
    """facebook/dinov3-vits16plus-pretrain-lvd1689m: its config and processor, random weights."""
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    config = DINOv3ViTConfig(
        patch_size=16, image_size=224, hidden_size=384, intermediate_size=1536, num_hidden_layers=12,
        num_attention_heads=6, use_gated_mlp=True, hidden_act="silu", num_register_tokens=4,
        layerscale_value=1.0, rope_theta=100.0, query_bias=True, key_bias=False, value_bias=True,
        proj_bias=True, mlp_bias=True, layer_norm_eps=1e-5,
    )
    DINOv3ViTModel(config).save_pretrained(path)
    DINOv3ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(path)


def _gemma_tokenizer():
    """A GemmaTokenizer (SigLIP 2's tokenizer class) over characters and a few words, made offline."""
    from transformers import GemmaTokenizer

    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,'-!?:;\"()"))
    pieces = ["\u2581" + c for c in chars] + chars + ["\u2581"]
    vocab = {token: i for i, token in enumerate(special + pieces)}
    return GemmaTokenizer(vocab=vocab, merges=[], model_max_length=64)


def _save_siglip2_base(path: Path) -> None:
    """google/siglip2-base-patch16-224: its config (SiglipModel, 375M parameters), random weights."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    text = dict(vocab_size=256000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=64, projection_size=768,
                pad_token_id=0, eos_token_id=1, bos_token_id=2, hidden_act="gelu_pytorch_tanh")
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  patch_size=16, image_size=224, hidden_act="gelu_pytorch_tanh")
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(path)
    SiglipImageProcessor(size={"height": 224, "width": 224}, resample=Image.Resampling.BILINEAR,
                         image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    _gemma_tokenizer().save_pretrained(path)


def _save_dinotxt_official(folder: Path) -> None:
    """The official dino.txt file set at a reduced size, described by dinotxt_config.json."""
    from test_dinotxt import official_backbone_state_dict, random_official_state_dict
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    from vslib import registry
    from vslib.bpe import train_bpe_merges, write_bpe_vocab
    from vslib.dinotxt import DinoTxtConfig
    from vslib.templates import IMAGENET_TEMPLATES

    folder.mkdir()
    # The ViT-L/16 layout (plain GELU MLP, 4 registers, patch 16), narrower and shallower.
    backbone = DINOv3ViTModel(DINOv3ViTConfig(
        patch_size=16, image_size=224, hidden_size=384, intermediate_size=1536, num_hidden_layers=4,
        num_attention_heads=6, num_register_tokens=4, layerscale_value=1.0,
    ))
    torch.save(official_backbone_state_dict(backbone), folder / registry.DINOTXT_FILES["backbone"])
    corpus = [t.format(c.replace("_", " ")) for t in IMAGENET_TEMPLATES for c in CLASSES]
    merges = train_bpe_merges(corpus, 200)
    write_bpe_vocab(merges, folder / registry.DINOTXT_FILES["bpe_vocab"])
    # Released sizes where they do not cost CI time: context 77, 224 crop of a 256 resize,
    # an embedding twice the backbone width (so no head projection, as for ViT-L).
    config = DinoTxtConfig(embed_dim=768, backbone_hidden_size=384, head_blocks=2, head_heads=6,
                           text_vocab_size=514 + len(merges), text_width=256, text_layers=2, text_heads=4)
    config.to_json(folder / registry.DINOTXT_CONFIG_FILE)
    torch.save(random_official_state_dict(config), folder / registry.DINOTXT_FILES["weights"])


def _labelled_folder(folder: Path) -> None:
    """Five classes of JPEGs of assorted sizes (four per split), and one unreadable file."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(8):
            size = (int(rng.integers(120, 260)), int(rng.integers(120, 260)))
            pixels = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8) + np.uint8(30 * k)
            Image.fromarray(pixels).save(folder / name / f"{i}.jpg", quality=90)
    (folder / CLASSES[0] / "9.jpg").write_text("not a JPEG")


@pytest.fixture(scope="module")
def real_world(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("real-mode")
    started = time.perf_counter()
    torch.manual_seed(0)
    cache = root / "hub"
    _save_dinov3_vits16plus(_snapshot(cache, "facebook/dinov3-vits16plus-pretrain-lvd1689m"))
    _save_siglip2_base(_snapshot(cache, "google/siglip2-base-patch16-224"))
    _save_dinotxt_official(root / "dinotxt")
    _labelled_folder(root / "images")
    print(f"random-weight checkpoints made in {time.perf_counter() - started:.0f} s")
    return {
        "VSLIB_MODELS": "real", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VSLIB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache), "VSLIB_DINOTXT_DIR": str(root / "dinotxt"),
        "VSLIB_IMAGES": str(root / "images"), "VSLIB_PER_CLASS": "2", "MPLBACKEND": "Agg",
    }


def test_the_real_configurations_load_behind_the_encoder_interface(real_world, monkeypatch):
    import vslib
    from vslib import config, encoders

    for key, value in real_world.items():
        monkeypatch.setenv(key, value)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", real_world["HF_HUB_CACHE"])
    names = config.models()
    dino = vslib.load_encoder(names.image, device="cpu")
    siglip = vslib.load_encoder(names.multimodal, device="cpu")
    txt = vslib.load_encoder(names.dinotxt, device="cpu")
    assert isinstance(dino, encoders.DinoV3Encoder) and dino.dim == 384 and dino.num_register_tokens == 4
    assert type(siglip.tokenizer).__name__ == "GemmaTokenizer" and siglip.max_length == 64 and siglip.dim == 768
    assert 370e6 < sum(p.numel() for p in siglip.model.parameters()) < 380e6
    assert isinstance(txt, encoders.DinoTxtEncoder) and txt.dim == 768
    assert txt.geometry.resize == 256 and txt.geometry.crop == (224, 224)
    assert dino.tokens([Image.new("RGB", (300, 200))]).shape == (1, 1 + 4 + 196, 384)


#: Checks on numbers that random weights may fail (and real ones pass): a chapter may stop there.
RANDOM_WEIGHT_GUARDS = {
    # Fitting a calibration refuses scores that do not rise with matches; random towers
    # give either sign.
    "04_cosine_calibration": "higher scores do not mean more matches",
}


#: Fewer images where a chapter encodes many per scene (chapter 6 tiles each scene 13 ways);
#: chapter 4 needs two per class to find repeated phrases.
PER_CLASS = {"06_dominant_objects": "1"}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_in_real_mode(real_world, chapter):
    from nbclient.exceptions import CellExecutionError

    started = time.perf_counter()
    try:
        env = {**real_world, "VSLIB_PER_CLASS": PER_CLASS.get(chapter, real_world["VSLIB_PER_CLASS"])}
        execute_notebook(ROOT / "notebooks" / f"{chapter}.ipynb", env)
    except CellExecutionError as error:
        guard = RANDOM_WEIGHT_GUARDS.get(chapter)
        if guard is None or guard not in str(error):
            raise
        print(f"{chapter}: stopped at the check {guard!r}, which random weights may fail")
    print(f"{chapter} in real mode (random weights): {time.perf_counter() - started:.0f} s")

