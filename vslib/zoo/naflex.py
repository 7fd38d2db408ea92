"""Convert ``tiny-siglip2`` into ``tiny-siglip2-naflex``: the same weights in SigLIP 2's NaFlex form.

``tiny-siglip2`` is a transformers ``SiglipModel``, the architecture of the fixed-resolution
SigLIP 2 checkpoints: every image is squashed to one square and cut into patches by a
convolution. The NaFlex checkpoints (``google/siglip2-base-patch16-naflex``) are a
``Siglip2Model``: the image processor resizes each image keeping its aspect ratio so that its
patch grid holds at most ``max_num_patches`` patches, flattens the patches itself and pads the
sequence (``pixel_attention_mask``), and the model embeds each flattened patch with a linear
layer and resizes its square grid of position embeddings to each image's ``spatial_shapes``.

Nothing is trained here. Every weight is copied; only the patch embedding changes form, from a
convolution kernel ``(D, C, p, p)`` to a linear weight ``(D, p * p * C)`` whose input order is
the processor's (row in the patch, column in the patch, channel), and the fixed model's
``g x g`` position embeddings become the NaFlex grid (``num_patches = g * g``). For a square
image at the native size the two models compute the same thing, which :func:`verify` measures.
Introduced in chapter 2; ``python -m vslib.zoo.train tiny-siglip2-naflex`` reproduces it.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["NaflexRecipe", "convert", "naflex_config", "patch_embedding_as_linear", "verify"]

#: Files of the source checkpoint copied unchanged (the text side does not change).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class NaflexRecipe:
    """What the conversion reads and checks (recorded in ``training.json`` and the model card).

    Introduced in chapter 2.
    """

    source: str = "tiny-siglip2"
    verify_split: str = "test"
    verify_per_class: int = 20
    # Square scenes at this side are resized by both processors to the native size.
    verify_large_side: int = 160


def patch_embedding_as_linear(conv_weight: torch.Tensor) -> torch.Tensor:
    """A patch-embedding convolution kernel ``(D, C, p, p)`` as NaFlex's linear weight ``(D, p * p * C)``.

    transformers' ``Siglip2ImageProcessor`` flattens each patch in the order (row within
    the patch, column within the patch, channel), channels fastest; the kernel is stored
    channels first, so its axes move before flattening.

    Raises:
        ValueError: If the kernel is not ``(D, C, p, p)``.

    Introduced in chapter 2.
    """
    if conv_weight.ndim != 4 or conv_weight.shape[-1] != conv_weight.shape[-2]:
        raise ValueError(f"expected a square convolution kernel (D, C, p, p), got {tuple(conv_weight.shape)}")
    return conv_weight.permute(0, 2, 3, 1).reshape(conv_weight.shape[0], -1).contiguous()


def naflex_config(fixed_config):
    """The ``Siglip2Config`` of a fixed-resolution ``SiglipConfig``: same towers, a NaFlex vision side.

    The vision config loses ``image_size`` and gains ``num_patches``, the size of the square
    grid of position embeddings (``(image_size / patch_size) ** 2``).

    Raises:
        ValueError: If the image side is not a whole number of patches.

    Introduced in chapter 2.
    """
    from transformers import Siglip2Config

    vision = fixed_config.vision_config.to_dict()
    side, patch = vision.pop("image_size"), vision["patch_size"]
    if side % patch:
        raise ValueError(f"image_size {side} is not a multiple of patch_size {patch}")
    vision["num_patches"] = (side // patch) ** 2
    text = fixed_config.text_config.to_dict()
    for part in (vision, text):
        for key in ("model_type", "transformers_version", "architectures", "_name_or_path", "dtype"):
            part.pop(key, None)
    config = Siglip2Config(text_config=text, vision_config=vision)
    config.architectures = ["Siglip2Model"]
    return config


def _fixed_model(source: Path):
    import json

    from transformers import SiglipModel

    model_type = json.loads((source / "config.json").read_text()).get("model_type")
    if model_type != "siglip":
        raise ValueError(f"{source} holds a {model_type!r} model, not a fixed-resolution SiglipModel")
    return SiglipModel.from_pretrained(source, dtype=torch.float32).eval()


def _naflex_model(fixed):
    """A ``Siglip2Model`` holding ``fixed``'s weights, the patch embedding made linear."""
    from transformers import Siglip2Model

    model = Siglip2Model(naflex_config(fixed.config)).eval()
    state = dict(fixed.state_dict())
    key = "vision_model.embeddings.patch_embedding.weight"
    state[key] = patch_embedding_as_linear(state[key])
    missing, unexpected = model.load_state_dict(state, strict=False)
    # position_ids buffers are not persistent; anything else missing would stay random.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weights do not map one to one: missing {missing}, unexpected {unexpected}")
    return model


def _image_processors(source: Path, patch_size: int, max_num_patches: int):
    """The source's fixed processor, and a NaFlex processor with its resampling, mean and std."""
    from transformers import AutoImageProcessor, Siglip2ImageProcessor

    fixed = AutoImageProcessor.from_pretrained(source)
    naflex = Siglip2ImageProcessor(
        patch_size=patch_size,
        max_num_patches=max_num_patches,
        resample=fixed.resample,
        image_mean=list(fixed.image_mean),
        image_std=list(fixed.image_std),
        do_convert_rgb=True,
    )
    return fixed, naflex


@torch.no_grad()
def verify(fixed, fixed_processor, naflex, naflex_processor, images, input_ids) -> dict[str, float]:
    """Cosines between a fixed model's and its NaFlex form's embeddings of the same inputs.

    Each model reads ``images`` through its own processor; both read the same
    ``input_ids``. Returns the ``min`` and ``mean`` image cosines and the ``min`` text
    cosine. Introduced in chapter 2.
    """
    a = fixed.get_image_features(**fixed_processor(images=images, return_tensors="pt")).pooler_output
    inputs = naflex_processor(images=images, return_tensors="pt")
    b = naflex.get_image_features(**inputs).pooler_output
    image_cos = F.cosine_similarity(a, b, dim=-1)
    text_cos = F.cosine_similarity(fixed.get_text_features(input_ids=input_ids).pooler_output,
                                   naflex.get_text_features(input_ids=input_ids).pooler_output, dim=-1)
    return {"min": float(image_cos.min()), "mean": float(image_cos.mean()), "text_min": float(text_cos.min())}


def _tokens(source: Path, model, texts: list[str]) -> torch.Tensor:
    from transformers import AutoTokenizer

    length = model.config.text_config.max_position_embeddings
    tokenizer = AutoTokenizer.from_pretrained(source)
    return tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                     return_tensors="pt")["input_ids"]


def convert(out_dir: Path, recipe: NaflexRecipe | None = None, *, run_eval: bool = True) -> dict:
    """Write the NaFlex form of a bundled fixed-resolution SigLIP checkpoint to ``out_dir``.

    Copies every weight (the patch-embedding kernel made linear), the tokenizer files
    unchanged, and writes a ``Siglip2ImageProcessor`` with the source's resampling,
    mean and std. With ``run_eval`` it first checks on held-out scenes that square images
    embed as the source embeds them (cosine at least 0.999), and returns the cosines as
    the report's metrics.

    Raises:
        ValueError: If a square image at the native size does not embed the same way
            (nothing is written then).

    Introduced in chapter 2.
    """
    from vslib import synth
    from vslib.zoo import checkpoint_path

    r = recipe or NaflexRecipe()
    source = checkpoint_path(r.source)
    with _quiet():
        fixed = _fixed_model(source)
        naflex = _naflex_model(fixed)
    vision = fixed.config.vision_config
    grid = vision.image_size // vision.patch_size
    # The processor's patch budget is the source's own patch count, so that a square image
    # at the native size gets exactly the fixed model's input (load_encoder can change it).
    max_num_patches = grid * grid
    fixed_processor, naflex_processor = _image_processors(source, vision.patch_size, max_num_patches)

    metrics: dict[str, float] = {}
    if run_eval:
        native = synth.eval_set(r.verify_split, per_class=r.verify_per_class, size=vision.image_size)
        ids = _tokens(source, fixed, sorted({caption for scene in native for caption in scene.captions}))
        at_native = verify(fixed, fixed_processor, naflex, naflex_processor, [s.image for s in native], ids)
        large = synth.eval_set(r.verify_split, per_class=r.verify_per_class, size=r.verify_large_side)
        at_large = verify(fixed, fixed_processor, naflex, naflex_processor, [s.image for s in large], ids)
        metrics = {
            "cos_to_source_native_min": at_native["min"],
            "cos_to_source_native_mean": at_native["mean"],
            "cos_to_source_large_square_min": at_large["min"],
            "cos_to_source_text_min": at_native["text_min"],
            "verify_images": len(native),
        }
        if at_native["min"] < 0.999:
            raise ValueError(f"the converted model does not embed square {vision.image_size} px images as "
                             f"{r.source} does (lowest cosine {at_native['min']:.4f} < 0.999)")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _quiet():
        naflex.save_pretrained(out_dir)
    naflex_processor.save_pretrained(out_dir)
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, out_dir / name)

    return {
        "recipe": {**asdict(r), "max_num_patches": max_num_patches, "image_size": vision.image_size,
                   "patch_size": vision.patch_size},
        "converted_from": r.source,
        "source_sha256": _sha256(source / "model.safetensors"),
        "train_seconds": 0.0,
        "parameters": sum(p.numel() for p in naflex.parameters()),
        "position_grid": [grid, grid],
        "metrics": metrics,
    }


def _quiet():
    """transformers' loading notices and progress bars off (the encoders' own switch)."""
    from vslib.encoders import _quiet_loading

    return _quiet_loading()


def _sha256(path: Path) -> str:
    from vslib.zoo.common import sha256_file

    return sha256_file(path)

