"""One encoder API for DINOv3, SigLIP 2, dino.txt and the bundled tiny models.

:func:`load_encoder` turns a friendly name (``tiny-siglip2``, ``dinov3-vits16plus``), a Hub id
or a local directory into an :class:`Encoder`. Every encoder returns float32, L2-normalised
NumPy arrays of shape ``(N, dim)``; model quirks (processors, output objects, text padding,
the dino.txt two-half embedding) stay in this module. Nothing downstream imports
transformers. Introduced in chapter 1.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from vslib import registry
from vslib.geometry import InputGeometry
from vslib.images import ImageLoadError, as_image, load_image
from vslib.inputsize import PatchGrid, unpatchify
from vslib.registry import ModelNotAvailableError

ImageLike = Image.Image | str | os.PathLike

__all__ = [
    "EncodedFiles",
    "Encoder",
    "ModelNotAvailableError",
    "NonFiniteEmbeddingError",
    "TextNotSupportedError",
    "load_encoder",
]


class TextNotSupportedError(TypeError):
    """Raised when an image-only model (DINOv3) is asked to embed text."""


class NonFiniteEmbeddingError(FloatingPointError):
    """Raised instead of returning NaN or infinite embeddings (usually fp16 overflow)."""


@dataclass
class EncodedFiles:
    """Embeddings of the files that loaded, and the files skipped with the reason.

    ``vectors[i]`` belongs to ``paths[i]``; ``skipped`` holds ``(path, reason)`` pairs.
    """

    vectors: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


class _FileDataset(torch.utils.data.Dataset):
    """Loads and preprocesses one file; failures come back as a reason string, not an exception."""

    def __init__(self, paths: Sequence[Path], min_side: int | None = None) -> None:
        self.paths = list(paths)
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Image.Image | str]:
        try:
            return i, load_image(self.paths[i], min_side=self.min_side)
        except ImageLoadError as error:
            return i, error.reason


class _Collate:
    """Turns a list of loaded images into model inputs inside the loader (so workers do it)."""

    def __init__(self, preprocess: Callable[[list[Image.Image]], dict[str, torch.Tensor]]) -> None:
        self.preprocess = preprocess

    def __call__(self, items: list[tuple[int, Image.Image | str]]):
        good = [(i, im) for i, im in items if isinstance(im, Image.Image)]
        bad = [(i, reason) for i, reason in items if isinstance(reason, str)]
        inputs = self.preprocess([im for _, im in good]) if good else None
        return [i for i, _ in good], inputs, bad


class Encoder(ABC):
    """Embeds images (and, for multimodal models, texts) into one normalised space.

    Attributes:
        name: The name the encoder was loaded by.
        dim: Embedding size.
        family: ``"dinov3"``, ``"siglip"`` or ``"dinotxt"``.
        supports_text: Whether :meth:`encode_texts` works.
        device: Torch device the model runs on.
        dtype: Torch dtype of the model weights.
        fingerprint: ``"<name>@sha256:<hex>"`` of the files the model was loaded from
            (:func:`vslib.fingerprint.model_fingerprint`), or ``None``.
        decode_side: Images are decoded at a reduced size whose shorter side stays at least
            this many pixels (twice what the model sees), or in full when ``None``.

    Introduced in chapter 1.
    """

    name: str
    dim: int
    family: str
    supports_text: bool = False
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    fingerprint: str | None = None
    decode_side: int | None = None

    # -- what a model family provides -----------------------------------------------------------

    @abstractmethod
    def preprocess(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """Model inputs (CPU tensors) for a list of RGB images."""

    @abstractmethod
    def _embed_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw (unnormalised) image embeddings for preprocessed inputs."""

    def _collate_preprocessor(self) -> Callable[[list[Image.Image]], dict[str, torch.Tensor]]:
        """What loader workers call to preprocess; override to avoid pickling the model."""
        return self.preprocess

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        raise TextNotSupportedError(
            f"{self.name} is an image-only model ({self.family}); it cannot embed text. "
            "Use a multimodal model such as tiny-siglip2, tiny-dinotxt, siglip2-base-patch16-224 or dinotxt-vitl16."
        )

    # -- public API ------------------------------------------------------------------------------

    def encode_images(
        self,
        images: Sequence[ImageLike],
        batch_size: int = 32,
        progress: bool | None = None,
        num_workers: int | None = None,
    ) -> np.ndarray:
        """Embed images (PIL images or paths) into an ``(N, dim)`` float32 array of unit vectors.

        Paths are decoded and preprocessed by a ``torch`` DataLoader (in worker processes
        when ``num_workers`` > 0), so file reading overlaps the model. A file that cannot
        be read raises :class:`~vslib.images.ImageLoadError` naming it; use
        :meth:`encode_files` to skip and report bad files instead.

        Args:
            images: PIL images or file paths (not mixed with anything else).
            batch_size: Images per forward pass.
            progress: Show a tqdm bar (``None``: only on an interactive terminal).
            num_workers: Loader processes for paths (default: up to 4 when there are
                several batches, else 0).

        Raises:
            NonFiniteEmbeddingError: If the model produced NaN or inf (e.g. fp16 overflow).

        Introduced in chapter 1.
        """
        images = list(images)
        if images and all(isinstance(im, (str, os.PathLike)) for im in images):
            result = self.encode_files(images, batch_size=batch_size, progress=progress, num_workers=num_workers)
            if result.skipped:
                path, reason = result.skipped[0]
                raise ImageLoadError(path, reason)
            return result.vectors
        out = []
        for start in _progress(range(0, len(images), batch_size), progress, len(images), batch_size, self.name):
            batch = [as_image(im) for im in images[start : start + batch_size]]
            out.append(self._forward(self.preprocess(batch)))
        return self._finish(out)

    def encode_files(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int = 32,
        progress: bool | None = None,
        num_workers: int | None = None,
    ) -> EncodedFiles:
        """Embed image files, skipping and reporting the ones that cannot be read.

        A long run never stops because of one bad file: ``skipped`` lists each with
        its reason, and ``vectors``/``paths`` hold the rest in input order.

        Introduced in chapter 1.
        """
        paths = [Path(p) for p in paths]
        if num_workers is None:
            num_workers = min(4, os.cpu_count() or 1) if len(paths) > 2 * batch_size else 0
        loader = torch.utils.data.DataLoader(
            _FileDataset(paths, self.decode_side),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_Collate(self._collate_preprocessor()),
            persistent_workers=False,
        )
        vectors: list[torch.Tensor] = []
        order: list[int] = []
        skipped: list[tuple[int, str]] = []
        for indices, inputs, bad in _progress(loader, progress, len(paths), batch_size, self.name):
            skipped.extend(bad)
            if inputs is not None:
                vectors.append(self._forward(inputs))
                order.extend(indices)
        return EncodedFiles(
            vectors=self._finish(vectors),
            paths=[paths[i] for i in order],
            skipped=[(paths[i], reason) for i, reason in sorted(skipped)],
        )

    def image_preprocessor(self) -> Callable[[list[Image.Image]], dict[str, torch.Tensor]]:
        """A picklable callable that turns RGB images into model inputs, without the model.

        Worker processes (a DataLoader's, or Ray tasks in :mod:`vslib.scale`) preprocess
        with it, and :meth:`encode_inputs` embeds what it returns. Introduced in chapter 8.
        """
        return self._collate_preprocessor()

    def encode_inputs(self, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        """Embed inputs made by :meth:`image_preprocessor` into ``(N, dim)`` unit vectors.

        Introduced in chapter 8.
        """
        return self._finish([self._forward(inputs)])

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64, progress: bool | None = None) -> np.ndarray:
        """Embed texts into an ``(N, dim)`` float32 array of unit vectors.

        Raises:
            TextNotSupportedError: For image-only models, naming the model.
            NonFiniteEmbeddingError: If the model produced NaN or inf.

        Introduced in chapter 1.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not self.supports_text:
            self._embed_texts(texts)  # raises TextNotSupportedError
        out = []
        with torch.inference_mode():
            for start in _progress(range(0, len(texts), batch_size), progress, len(texts), batch_size, self.name):
                out.append(self._check(self._embed_texts(texts[start : start + batch_size]).float()))
        return self._finish(out)

    @property
    def geometry(self) -> InputGeometry:
        """How images are resized and cropped into the model's input (chapter 6)."""
        raise NotImplementedError(f"{self.name} ({self.family}) does not describe its preprocessing geometry")

    def patch_grids(self, images: Sequence[ImageLike]) -> list[PatchGrid]:
        """The patch grid each image gets from this encoder's preprocessing, one per image.

        A fixed-size processor gives every image the same grid; a NaFlex processor
        (SigLIP 2 ``*-naflex``) gives each image its own, with the aspect ratio kept
        and the sequence padded to ``max_num_patches``. Introduced in chapter 2.
        """
        return self._grids(self.preprocess([as_image(im) for im in images]))

    def _grids(self, inputs: dict[str, torch.Tensor]) -> list[PatchGrid]:
        patch = getattr(self, "patch_size", None)
        if patch is None:
            raise NotImplementedError(f"{self.name} ({self.family}) does not say its patch size")
        n, _, height, width = inputs["pixel_values"].shape
        rows, cols = height // patch, width // patch
        return [PatchGrid(width, height, rows, cols, patch, rows * cols)] * n

    def input_views(self, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """Each image as the model reads it: resized (and cropped), ``(H, W, 3)`` floats in [0, 1].

        The preprocessing's normalisation is undone. For NaFlex the real patches are put
        back on their grid and the padding dropped, so a view has the size and aspect
        ratio the model sees. Introduced in chapter 2.
        """
        inputs = self.preprocess([as_image(im) for im in images])
        mean, std = (np.asarray(v, dtype=np.float32) for v in self._normalisation())
        return [np.clip(view * std + mean, 0.0, 1.0) for view in self._pixel_arrays(inputs)]

    def _normalisation(self) -> tuple[Sequence[float], Sequence[float]]:
        """The per-channel mean and std the preprocessing subtracts and divides by."""
        raise NotImplementedError(f"{self.name} ({self.family}) does not say how it normalises images")

    def _pixel_arrays(self, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Normalised model inputs as ``(H, W, 3)`` arrays, one per image."""
        return list(inputs["pixel_values"].float().numpy().transpose(0, 2, 3, 1))

    def raw_embeddings(self, images: Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Image embeddings before L2 normalisation, ``(N, dim)`` float32 on the CPU.

        What the model itself returns (DINOv3's ``pooler_output``, SigLIP's image
        features, dino.txt's two halves); :meth:`encode_images` is this, normalised.

        Introduced in chapter 1.
        """
        images = [as_image(im) for im in images]
        out = []
        for start in range(0, len(images), batch_size):
            inputs = self._inputs(images[start : start + batch_size])
            with torch.inference_mode():
                out.append(self._embed_inputs(inputs).float())
        return _numpy(torch.cat(out)) if out else np.zeros((0, self.dim), dtype=np.float32)

    def patch_features(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Per-patch features on the patch grid, ``(N, rows, cols, D)``, unit vectors.

        Introduced in chapter 6.
        """
        raise NotImplementedError(f"{self.name} ({self.family}) does not expose patch features")

    def patch_text_features(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings in the space of :meth:`patch_features`, ``(N, D)``, unit vectors.

        Introduced in chapter 6.
        """
        raise NotImplementedError(f"{self.name} ({self.family}) has no text space for patch features")

    def __repr__(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device.type}, dtype={dtype})"

    # -- shared machinery ------------------------------------------------------------------------

    def _inputs(self, images: Sequence[ImageLike]) -> dict[str, torch.Tensor]:
        """Preprocessed images, already on the model's device and in its dtype."""
        return {k: self._to_device(v) for k, v in self.preprocess([as_image(im) for im in images]).items()}

    def _forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: self._to_device(v) for k, v in inputs.items()}
        with torch.inference_mode():
            return self._check(self._embed_inputs(inputs).float())

    def _to_device(self, value: torch.Tensor) -> torch.Tensor:
        if value.is_floating_point():
            return value.to(device=self.device, dtype=self.dtype)
        return value.to(device=self.device)

    def _check(self, emb: torch.Tensor) -> torch.Tensor:
        bad = ~torch.isfinite(emb).all(dim=1)
        if bad.any():
            dtype = str(self.dtype).replace("torch.", "")
            raise NonFiniteEmbeddingError(
                f"{self.name} produced non-finite embeddings for {int(bad.sum())} of {len(emb)} inputs in {dtype} "
                f"on {self.device.type}; this is usually overflow in a low-precision dtype: load it with "
                "dtype=torch.float32 or torch.bfloat16 (see vslib.precision.audit_dtypes, chapter 2)"
            )
        return F.normalize(emb, dim=-1)

    def _finish(self, parts: list[torch.Tensor]) -> np.ndarray:
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _numpy(torch.cat(parts))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float32 NumPy copy on the CPU, whatever the tensor's device and dtype."""
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()


def _progress(iterable, progress: bool | None, total_items: int, batch_size: int, name: str):
    steps = -(-total_items // batch_size) if total_items else 0
    disable = None if progress is None else not progress
    if progress is None and steps <= 1:
        disable = True
    return tqdm(iterable, total=steps, desc=f"encoding ({name})", unit="batch", disable=disable, leave=False)


# ---------------------------------------------------------------------------------------------
# Model families
# ---------------------------------------------------------------------------------------------


def _unwrap(output: Any) -> torch.Tensor:
    """transformers 5 returns output objects from ``get_*_features``; older versions a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"expected a tensor or an output with pooler_output, got {type(output).__name__}")
    return pooled


@contextmanager
def _quiet_loading():
    """Silence transformers' per-load progress bar and config notices (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class _ProcessorCall:
    """A picklable image-preprocessing callable around a Hugging Face image processor."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        return dict(self.processor(images=images, return_tensors="pt"))


def _processor_sides(size: Any) -> list[int]:
    """The target sides an image processor's ``size`` names (a dict or transformers' ``SizeDict``)."""
    if size is None:
        return []
    keys = ("shortest_edge", "height", "width")
    values = [size.get(key) if isinstance(size, dict) else getattr(size, key, None) for key in keys]
    return [int(value) for value in values if isinstance(value, int) and value > 0]


class _HFEncoder(Encoder):
    """Shared set-up of the transformers-backed encoders."""

    def __init__(self, name: str, path: Path, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.name, self.device, self.dtype = name, device, dtype
        self.model = AutoModel.from_pretrained(path, dtype=dtype).to(device).eval()
        processor = AutoImageProcessor.from_pretrained(path)
        self._preprocess = _ProcessorCall(processor)
        sides = _processor_sides(getattr(processor, "size", None))
        self.decode_side = 2 * max(sides) if sides else None

    def preprocess(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        return self._preprocess(images)

    def _collate_preprocessor(self):
        return self._preprocess

    def _normalisation(self) -> tuple[Sequence[float], Sequence[float]]:
        processor = self._preprocess.processor
        return processor.image_mean, processor.image_std

    @property
    def geometry(self) -> InputGeometry:
        """The image processor's resize (squash to ``size`` or short side) and centre crop."""
        processor = self._preprocess.processor

        def field(holder: Any, key: str) -> Any:
            return holder.get(key) if isinstance(holder, dict) else getattr(holder, key, None)

        size = getattr(processor, "size", None)
        if getattr(processor, "do_resize", True) is False or size is None:
            raise NotImplementedError(f"{self.name}'s processor does not resize to a fixed size")
        if field(size, "height") and field(size, "width"):
            resize: int | tuple[int, int] = (int(field(size, "width")), int(field(size, "height")))
        elif field(size, "shortest_edge"):
            resize = int(field(size, "shortest_edge"))
        else:
            raise NotImplementedError(
                f"{self.name} resizes each image to its own shape (NaFlex); patch cells have no fixed geometry"
            )
        crop = None
        crop_size = getattr(processor, "crop_size", None)
        if getattr(processor, "do_center_crop", False) and crop_size is not None:
            crop = (int(field(crop_size, "width")), int(field(crop_size, "height")))
        return InputGeometry(resize=resize, crop=crop)


class DinoV3Encoder(_HFEncoder):
    """DINOv3 image embeddings: the CLS token after the final norm (``pooler_output``).

    ``pooling="mean"`` averages the patch tokens instead. Image-only. Introduced in chapter 1.
    """

    family = "dinov3"

    def __init__(self, name: str, path: Path, device: torch.device, dtype: torch.dtype, pooling: str = "cls") -> None:
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        super().__init__(name, path, device, dtype)
        config = self.model.config
        self.pooling = pooling
        self.dim = config.hidden_size
        self.patch_size = config.patch_size
        self.num_register_tokens = config.num_register_tokens

    def _tokens(self, inputs: dict[str, torch.Tensor]):
        return self.model(pixel_values=inputs["pixel_values"])

    def _embed_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self._tokens(inputs)
        if self.pooling == "cls":
            return out.pooler_output
        return out.last_hidden_state[:, 1 + self.num_register_tokens :].mean(dim=1)

    def tokens(self, images: Sequence[ImageLike]) -> np.ndarray:
        """The backbone's output tokens after the final norm, ``(N, 1 + registers + patches, dim)``.

        Token order: CLS, the register tokens, then the patches row by row. Float32 on
        the CPU, not normalised. Introduced in chapter 1.
        """
        inputs = self._inputs(images)
        with torch.inference_mode():
            return _numpy(self._tokens(inputs).last_hidden_state)

    def patch_features(self, images: Sequence[ImageLike]) -> np.ndarray:
        inputs = self._inputs(images)
        with torch.inference_mode():
            tokens = self._tokens(inputs).last_hidden_state[:, 1 + self.num_register_tokens :].float()
        rows = inputs["pixel_values"].shape[-2] // self.patch_size
        cols = inputs["pixel_values"].shape[-1] // self.patch_size
        return _numpy(F.normalize(tokens, dim=-1).reshape(len(tokens), rows, cols, -1))


def _siglip_tokenizer(path: Path):
    """The checkpoint's tokenizer, as its ``tokenizer_config.json`` names it.

    For ``model_type`` ``siglip2`` AutoTokenizer builds its own Gemma-style
    ``Siglip2Tokenizer`` whatever the files say; a checkpoint that saved a plain
    ``tokenizers`` tokenizer (the bundled ``tiny-siglip2-naflex``, a word-level
    vocabulary) is loaded as that instead.
    """
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(path) / "tokenizer_config.json"
    declared = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.is_file() else None
    if declared in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


#: What a NaFlex (``Siglip2Model``) image tower needs besides ``pixel_values``.
_NAFLEX_INPUTS = ("pixel_attention_mask", "spatial_shapes")


class SiglipEncoder(_HFEncoder):
    """SigLIP / SigLIP 2 image and text embeddings (fixed resolution and NaFlex).

    Texts are lowercased and padded to the checkpoint's text length (64 for SigLIP 2),
    as the models were trained. :attr:`logit_scale` and :attr:`logit_bias` turn a cosine
    into SigLIP's match probability, ``sigmoid(cos * logit_scale + logit_bias)``.
    Introduced in chapter 1.

    NaFlex checkpoints (``Siglip2Model``: ``siglip2-base-naflex``, ``tiny-siglip2-naflex``)
    keep each image's aspect ratio: :attr:`naflex` is true, the processor's
    ``pixel_attention_mask`` and ``spatial_shapes`` go to the vision tower with the
    pixels, and ``load_encoder(name, max_num_patches=N)`` sets the patch budget
    (:attr:`max_num_patches`; chapter 2).
    """

    family = "siglip"
    supports_text = True

    def __init__(self, name: str, path: Path, device: torch.device, dtype: torch.dtype,
                 max_num_patches: int | None = None) -> None:
        super().__init__(name, path, device, dtype)
        config = self.model.config
        self.tokenizer = _siglip_tokenizer(path)
        self.max_length = config.text_config.max_position_embeddings
        self.dim = config.vision_config.hidden_size
        self.patch_size = int(config.vision_config.patch_size)
        self.naflex = config.model_type == "siglip2"
        self.max_num_patches = self._patch_budget(max_num_patches)
        if self.naflex:
            # The shorter side of a NaFlex input is at most patch * sqrt(max_num_patches).
            self.decode_side = 2 * self.patch_size * (math.isqrt(self.max_num_patches - 1) + 1)

    def _patch_budget(self, requested: int | None) -> int | None:
        """NaFlex's ``max_num_patches`` (the processor's, or ``requested``); ``None`` for fixed models."""
        processor = self._preprocess.processor
        if not self.naflex:
            if requested is not None:
                side = getattr(self.model.config.vision_config, "image_size", "?")
                raise ValueError(
                    f"max_num_patches applies to NaFlex models only; {self.name} is a fixed-resolution SigLIP "
                    f"model that squashes every image to {side}x{side} (use a NaFlex model such as "
                    "tiny-siglip2-naflex or siglip2-base-naflex)"
                )
            return None
        if getattr(processor, "max_num_patches", None) is None:
            raise ValueError(
                f"{self.name} is a NaFlex model (Siglip2Model) but its image processor, {type(processor).__name__}, "
                "makes no spatial_shapes or pixel_attention_mask; it needs a Siglip2ImageProcessor"
            )
        if requested is not None:
            if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
                raise ValueError(f"max_num_patches must be a positive whole number, got {requested!r}")
            processor.max_num_patches = requested
        return int(processor.max_num_patches)

    @property
    def logit_scale(self) -> float:
        """The learned inverse temperature, ``exp(model.logit_scale)`` (chapter 4)."""
        return float(self.model.logit_scale.detach().float().exp())

    @property
    def logit_bias(self) -> float:
        """The learned bias of the sigmoid loss (chapter 4)."""
        return float(self.model.logit_bias.detach().float())

    def match_probability(self, scores: np.ndarray) -> np.ndarray:
        """SigLIP's own sigmoid of cosine scores (introduced in chapter 4)."""
        return 1.0 / (1.0 + np.exp(-(np.asarray(scores) * self.logit_scale + self.logit_bias)))

    def _embed_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.naflex:
            return _unwrap(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
        missing = [key for key in _NAFLEX_INPUTS if key not in inputs]
        if missing:
            raise ValueError(
                f"{self.name} is a NaFlex model: its inputs need {' and '.join(missing)} (from a "
                f"Siglip2ImageProcessor), got only {', '.join(sorted(inputs))}"
            )
        return _unwrap(self.model.get_image_features(
            pixel_values=inputs["pixel_values"],
            pixel_attention_mask=inputs["pixel_attention_mask"],
            spatial_shapes=inputs["spatial_shapes"],
        ))

    def _grids(self, inputs: dict[str, torch.Tensor]) -> list[PatchGrid]:
        if not self.naflex:
            return super()._grids(inputs)
        length = int(inputs["pixel_values"].shape[1])
        p = self.patch_size
        shapes = inputs["spatial_shapes"].tolist()
        return [PatchGrid(int(c) * p, int(r) * p, int(r), int(c), p, length) for r, c in shapes]

    def _pixel_arrays(self, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
        if not self.naflex:
            return super()._pixel_arrays(inputs)
        pixels = inputs["pixel_values"].float().numpy()
        return [unpatchify(row, grid.rows, grid.cols, self.patch_size)
                for row, grid in zip(pixels, self._grids(inputs))]

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer([t.lower() for t in texts], padding="max_length", max_length=self.max_length,
                                truncation=True, return_tensors="pt")
        keep = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return _unwrap(self.model.get_text_features(**keep))


class _DinoTxtPreprocess:
    """dino.txt's evaluation transform: short side resize (bicubic), centre crop, normalise."""

    def __init__(self, resize: int, crop: int, mean: Sequence[float], std: Sequence[float]) -> None:
        from torchvision.transforms import v2

        self.transform = v2.Compose([
            v2.PILToTensor(),
            v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ])

    def __call__(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([self.transform(im) for im in images])}


class DinoTxtEncoder(Encoder):
    """dino.txt: ``[head CLS | mean head patches]`` image embeddings and text embeddings.

    Introduced in chapter 3.
    """

    family = "dinotxt"
    supports_text = True

    def __init__(self, name: str, path: Path, device: torch.device, dtype: torch.dtype) -> None:
        from vslib import dinotxt

        self.name, self.device, self.dtype = name, device, dtype
        if (path / dinotxt.CONFIG_FILE).is_file():
            model = dinotxt.load_dinotxt(path)
        else:
            files = registry.dinotxt_official_files(path)
            backbone = files["backbone"]
            if isinstance(backbone, str):
                backbone = registry.fetch_hub_snapshot(backbone, name, "tiny-dinotxt")
            config = dinotxt.DinoTxtConfig.from_json(files["config"]) if "config" in files else None
            model = dinotxt.load_dinotxt(files["weights"], backbone=backbone, bpe_vocab=files["bpe_vocab"],
                                         config=config)
        self.model = model.to(device=device, dtype=dtype).eval()
        config = model.config
        self.dim = config.embed_dim
        self.patch_size = config.patch_size
        self._preprocess = _DinoTxtPreprocess(config.resize_size, config.image_size, config.image_mean,
                                              config.image_std)
        self.decode_side = 2 * int(config.resize_size)

    @property
    def logit_scale(self) -> float:
        """The inverse temperature of the contrastive loss, within its cap (chapter 4)."""
        return float(self.model.loss_scale().detach())

    def preprocess(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        return self._preprocess(images)

    def _collate_preprocessor(self):
        return self._preprocess

    def _normalisation(self) -> tuple[Sequence[float], Sequence[float]]:
        return self.model.config.image_mean, self.model.config.image_std

    @property
    def geometry(self) -> InputGeometry:
        """Short side to ``resize_size`` (256 for the release), then a centre crop of ``image_size``."""
        config = self.model.config
        return InputGeometry(resize=config.resize_size, crop=(config.image_size, config.image_size))

    def _embed_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.encode_image(inputs["pixel_values"])

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.model.tokenize(texts))

    def backbone_tokens(self, images: Sequence[ImageLike]) -> np.ndarray:
        """The frozen backbone's normed tokens (CLS, registers, patches), float32 on the CPU.

        Introduced in chapter 3.
        """
        pixels = self._inputs(images)["pixel_values"]
        with torch.inference_mode():
            return _numpy(self.model.backbone_tokens(pixels))

    def head_outputs(self, images: Sequence[ImageLike]) -> tuple[np.ndarray, np.ndarray]:
        """The vision head's ``(CLS (N, dim/2), patches (N, P, dim/2))`` outputs, float32 on the CPU.

        The image embedding is ``[CLS | mean of patches]`` of these, normalised.
        Introduced in chapter 3.
        """
        pixels = self._inputs(images)["pixel_values"]
        with torch.inference_mode():
            cls, patches = self.model.head_outputs(self.model.backbone_tokens(pixels))
            return _numpy(cls), _numpy(patches)

    def backbone_weights(self) -> dict[str, np.ndarray]:
        """The frozen backbone's weights as the encoder runs them, float32 NumPy on the CPU.

        Introduced in chapter 3.
        """
        from vslib import dinotxt

        return dinotxt.backbone_weights(self.model.backbone)

    def patch_features(self, images: Sequence[ImageLike]) -> np.ndarray:
        pixels = self._inputs(images)["pixel_values"]
        with torch.inference_mode():
            feats = self.model.patch_features(pixels).float()
        return _numpy(F.normalize(feats, dim=-1))

    def patch_text_features(self, texts: Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        with torch.inference_mode():
            emb = self._embed_texts(texts).float()
        half = self.dim // 2
        return _numpy(F.normalize(emb[:, half:], dim=-1))


_FAMILIES: dict[str, type[Encoder]] = {"dinov3": DinoV3Encoder, "siglip": SiglipEncoder, "dinotxt": DinoTxtEncoder}


def load_encoder(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    **options: Any,
) -> Encoder:
    """Load an encoder by friendly name (see ``vslib.registry.MODELS``), Hub id or local directory.

    Args:
        name_or_path: ``tiny-siglip2``, ``dinov3-vits16plus``, ``google/siglip2-base-patch16-224``,
            a model directory, ...
        device: ``"cuda"``, ``"mps"``, ``"cpu"`` (default: ``VSLIB_DEVICE`` if set, else
            the best available, see :func:`vslib.precision.pick_device`).
        dtype: Weight dtype (default: ``VSLIB_DTYPE`` if set, else the safe one for the
            family and device, see :func:`vslib.precision.pick_dtype`; DINOv3 is never
            fp16 by default).
        **options: Family options, e.g. ``pooling="mean"`` for DINOv3.

    Raises:
        ModelNotAvailableError: The model is not cached and cannot be downloaded (offline).
        KeyError: The name is not a registered model, a directory or a Hub id.
        ValueError: ``VSLIB_DEVICE`` / ``VSLIB_DTYPE`` (or the arguments) name an unknown
            or unavailable device or dtype.

    Introduced in chapter 1.
    """
    from vslib import config, precision
    from vslib.fingerprint import model_fingerprint

    device = device if device is not None else config.forced_device()
    dtype = dtype if dtype is not None else config.forced_dtype()
    torch_device = precision.check_device(device) if device is not None else precision.pick_device()
    resolved = registry.resolve(name_or_path)
    torch_dtype = precision.as_dtype(dtype) if dtype is not None else precision.pick_dtype(resolved.family, torch_device)
    cls = _FAMILIES[resolved.family]
    with _quiet_loading():
        encoder = cls(resolved.name, resolved.path, torch_device, torch_dtype, **options)
    encoder.fingerprint = model_fingerprint(resolved.name, resolved.path)
    return encoder
