"""The one model switch that flips every chapter from the bundled tiny models to real checkpoints.

Set the environment variable ``VSLIB_MODELS`` to ``tiny`` (the default: bundled
models trained by the project, synthetic scenes, fully offline) or ``real``
(DINOv3, SigLIP 2 and dino.txt checkpoints from the Hugging Face Hub or a local
cache). ``VSLIB_IMAGES`` optionally points at a folder of the reader's own
images (for example an Imagenette folder) that replaces the synthetic scenes.
"""

from __future__ import annotations

import os
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


def image_folder() -> Path | None:
    """Return the reader's image folder from ``VSLIB_IMAGES``, or ``None`` for synthetic scenes."""
    value = os.environ.get("VSLIB_IMAGES", "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"VSLIB_IMAGES={value!r} is not a folder")
    return path
