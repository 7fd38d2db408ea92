"""One encoder API for DINOv3, SigLIP 2, dino.txt and the bundled tiny models.

:func:`load_encoder` turns a friendly name (``tiny-siglip2``, ``dinov3-vits16plus``), a Hub id
or a local directory into an :class:`Encoder`. Every encoder returns float32, L2-normalised
NumPy arrays of shape ``(N, dim)``; model quirks (processors, output objects, text padding,
the dino.txt two-half embedding) stay in this module. Nothing downstream imports
transformers. Introduced in chapter 1.
"""

from __future__ import annotations

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
from vslib.images import ImageLoadError, as_image, load_image
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

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Image.Image | str]:
        try:
            return i, load_image(self.paths[i])
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

    Introduced in chapter 1.
    """

    name: str
    dim: int
    family: str
    supports_text: bool = False
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

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
            _FileDataset(paths),
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
        return torch.cat(parts).cpu().numpy().astype(np.float32, copy=False)


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


class _HFEncoder(Encoder):
    """Shared set-up of the transformers-backed encoders."""

    def __init__(self, name: str, path: Path, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.name, self.device, self.dtype = name, device, dtype
        self.model = AutoModel.from_pretrained(path, dtype=dtype).to(device).eval()
        self._preprocess = _ProcessorCall(AutoImageProcessor.from_pretrained(path))

    def preprocess(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        return self._preprocess(images)

    def _collate_preprocessor(self):
        return self._preprocess


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

    def patch_features(self, images: Sequence[ImageLike]) -> np.ndarray:
        inputs = {k: self._to_device(v) for k, v in self.preprocess([as_image(im) for im in images]).items()}
        with torch.inference_mode():
            tokens = self._tokens(inputs).last_hidden_state[:, 1 + self.num_register_tokens :].float()
        rows = inputs["pixel_values"].shape[-2] // self.patch_size
        cols = inputs["pixel_values"].shape[-1] // self.patch_size
        return F.normalize(tokens, dim=-1).reshape(len(tokens), rows, cols, -1).cpu().numpy()


class SiglipEncoder(_HFEncoder):
    """SigLIP / SigLIP 2 image and text embeddings (fixed resolution and NaFlex).

    Texts are lowercased and padded to the checkpoint's text length (64 for SigLIP 2),
    as the models were trained. :attr:`logit_scale` and :attr:`logit_bias` turn a cosine
    into SigLIP's match probability, ``sigmoid(cos * logit_scale + logit_bias)``.
    Introduced in chapter 1.
    """

    family = "siglip"
    supports_text = True

    def __init__(self, name: str, path: Path, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoTokenizer

        super().__init__(name, path, device, dtype)
        config = self.model.config
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.max_length = config.text_config.max_position_embeddings
        self.dim = config.vision_config.hidden_size

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
        return _unwrap(self.model.get_image_features(**inputs))

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
            model = dinotxt.load_dinotxt(files["weights"], backbone=backbone, bpe_vocab=files["bpe_vocab"])
        self.model = model.to(device=device, dtype=dtype).eval()
        config = model.config
        self.dim = config.embed_dim
        self.patch_size = config.patch_size
        self._preprocess = _DinoTxtPreprocess(config.resize_size, config.image_size, config.image_mean,
                                              config.image_std)

    @property
    def logit_scale(self) -> float:
        """The learned inverse temperature of the contrastive loss (chapter 4)."""
        return float(self.model.logit_scale.detach().float().exp())

    def preprocess(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        return self._preprocess(images)

    def _collate_preprocessor(self):
        return self._preprocess

    def _embed_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.encode_image(inputs["pixel_values"])

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.model.tokenize(texts))

    def patch_features(self, images: Sequence[ImageLike]) -> np.ndarray:
        pixels = self._to_device(self.preprocess([as_image(im) for im in images])["pixel_values"])
        with torch.inference_mode():
            feats = self.model.patch_features(pixels).float()
        return F.normalize(feats, dim=-1).cpu().numpy()

    def patch_text_features(self, texts: Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        with torch.inference_mode():
            emb = self._embed_texts(texts).float()
        half = self.dim // 2
        return F.normalize(emb[:, half:], dim=-1).cpu().numpy()


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
        device: ``"cuda"``, ``"mps"``, ``"cpu"`` (default: the best available, see
            :func:`vslib.precision.pick_device`).
        dtype: Weight dtype (default: the safe one for the family and device, see
            :func:`vslib.precision.pick_dtype`; DINOv3 is never fp16 by default).
        **options: Family options, e.g. ``pooling="mean"`` for DINOv3.

    Raises:
        ModelNotAvailableError: The model is not cached and cannot be downloaded (offline).
        KeyError: The name is not a registered model, a directory or a Hub id.

    Introduced in chapter 1.
    """
    from vslib import precision

    resolved = registry.resolve(name_or_path)
    torch_device = torch.device(device) if device is not None else precision.pick_device()
    torch_dtype = precision.as_dtype(dtype) if dtype is not None else precision.pick_dtype(resolved.family, torch_device)
    cls = _FAMILIES[resolved.family]
    with _quiet_loading():
        return cls(resolved.name, resolved.path, torch_device, torch_dtype, **options)
