"""The one model switch that flips every chapter from the bundled tiny models to real checkpoints.

Set the environment variable ``VSLIB_MODELS`` to ``tiny`` (the default: bundled
models trained by the project, synthetic scenes, fully offline) or ``real``
(DINOv3, SigLIP 2 and dino.txt checkpoints from the Hugging Face Hub or a local
cache). ``VSLIB_IMAGES`` optionally points at a folder of the reader's own
images (for example an Imagenette folder, one sub-folder per class) that replaces
the synthetic gallery and evaluation scenes (see :func:`vslib.folders.eval_set`).
``VSLIB_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) and ``VSLIB_DTYPE``
(``float32``, ``bfloat16``, ``float16`` or fp32 / bf16 / fp16) force the device and
weight dtype of every encoder that :func:`vslib.load_encoder` loads without explicit
``device=`` / ``dtype=`` arguments.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MODEL_SETS: dict[str, dict[str, str]] = {
    "tiny": {
        "image": "tiny-dinov3",
        "multimodal": "tiny-siglip2",
        "dinotxt": "tiny-dinotxt",
    },
    "real": {
        "image": "dinov3-vits16plus",
        "multimodal": "siglip2-base-patch16-224",
        "dinotxt": "dinotxt-vitl16",
    },
}


#: The SigLIP 2 NaFlex model of each set: it keeps each image's aspect ratio (chapter 2).
NAFLEX_MODELS: dict[str, str] = {"tiny": "tiny-siglip2-naflex", "real": "siglip2-base-naflex"}


@dataclass(frozen=True)
class Models:
    """Model names for the current switch setting (introduced in chapter 1)."""

    set_name: str
    image: str
    multimodal: str
    dinotxt: str


def model_set() -> str:
    """Return ``"tiny"`` or ``"real"`` from ``VSLIB_MODELS`` (default ``"tiny"``)."""
    value = os.environ.get("VSLIB_MODELS", "tiny").strip().lower()
    if value not in MODEL_SETS:
        raise ValueError(
            f"VSLIB_MODELS={value!r} is not a known model set; use one of {sorted(MODEL_SETS)}"
        )
    return value


def models(set_name: str | None = None) -> Models:
    """Return the model names of a model set (the current one by default)."""
    name = set_name or model_set()
    if name not in MODEL_SETS:
        raise ValueError(f"unknown model set {name!r}; use one of {sorted(MODEL_SETS)}")
    return Models(set_name=name, **MODEL_SETS[name])


def naflex_model(set_name: str | None = None) -> str:
    """The SigLIP 2 NaFlex model of a model set (the current one by default).

    ``tiny-siglip2-naflex`` (``tiny-siglip2`` converted, offline) or ``siglip2-base-naflex``.
    Introduced in chapter 2.
    """
    name = set_name or model_set()
    if name not in NAFLEX_MODELS:
        raise ValueError(f"unknown model set {name!r}; use one of {sorted(NAFLEX_MODELS)}")
    return NAFLEX_MODELS[name]


def image_folder() -> Path | None:
    """Return the reader's image folder from ``VSLIB_IMAGES``, or ``None`` for synthetic scenes."""
    value = os.environ.get("VSLIB_IMAGES", "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"VSLIB_IMAGES={value!r} is not a folder")
    return path


_DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:[0-9]+)?")
DTYPE_NAMES = ("float32", "bfloat16", "float16", "fp32", "bf16", "fp16")


def forced_device() -> str | None:
    """The device named by ``VSLIB_DEVICE`` (``None`` when unset: pick the best one).

    Raises:
        ValueError: For a value that is not ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.

    Introduced in chapter 2.
    """
    value = os.environ.get("VSLIB_DEVICE", "").strip().lower()
    if not value:
        return None
    if not _DEVICE_PATTERN.fullmatch(value):
        raise ValueError(f"VSLIB_DEVICE={value!r} is not a device; use cpu, cuda, cuda:N or mps")
    return value


def forced_dtype() -> str | None:
    """The weight dtype named by ``VSLIB_DTYPE`` (``None`` when unset: the safe default).

    Raises:
        ValueError: For a value other than float32, bfloat16, float16 (or fp32, bf16, fp16).

    Introduced in chapter 2.
    """
    value = os.environ.get("VSLIB_DTYPE", "").strip().lower().replace("torch.", "")
    if not value:
        return None
    if value not in DTYPE_NAMES:
        raise ValueError(f"VSLIB_DTYPE={value!r} is not a dtype; use one of {', '.join(DTYPE_NAMES)}")
    return value


def per_class_cap() -> int | None:
    """``VSLIB_PER_CLASS``: at most this many evaluation images per class (a quick run).

    Raises:
        ValueError: If it is not a positive whole number.

    Introduced in chapter 1.
    """
    value = os.environ.get("VSLIB_PER_CLASS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"VSLIB_PER_CLASS={value!r} is not a positive whole number")
    return int(value)


def per_class(default: int) -> int:
    """A chapter's images per class, capped by ``VSLIB_PER_CLASS`` (a quick run on real models).

    Introduced in chapter 1.
    """
    cap = per_class_cap()
    return default if cap is None else min(default, cap)
