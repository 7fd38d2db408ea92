"""The bundled model zoo: tiny DINOv3, SigLIP 2 and dino.txt models trained on synthetic scenes.

The checkpoints live in ``vslib/zoo/checkpoints/<name>/``; ``python -m vslib.zoo.train NAME``
reproduces each one from scratch. ``tiny-siglip2-naflex`` is not trained: it is
``tiny-siglip2`` converted to SigLIP 2's NaFlex form (:mod:`vslib.zoo.naflex`).
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
BUNDLED = ("tiny-dinov3", "tiny-siglip2", "tiny-dinotxt", "tiny-siglip2-naflex")
#: Bundled models made from another bundled model rather than trained: name -> source.
CONVERTED = {"tiny-siglip2-naflex": "tiny-siglip2"}


def checkpoint_path(name: str) -> Path:
    """Return the directory of a bundled checkpoint (it may not exist yet)."""
    if name not in BUNDLED:
        raise KeyError(f"{name!r} is not a bundled model; bundled models are {', '.join(BUNDLED)}")
    return CHECKPOINT_DIR / name
