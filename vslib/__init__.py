"""vslib: multimodal visual search with DINOv3, SigLIP 2 and dino.txt.

The library behind the *Visual Search* book. Heavy submodules (torch,
transformers) are imported lazily, so ``import vslib`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_encoder": "vslib.encoders",
    "Encoder": "vslib.encoders",
    "ImageIndex": "vslib.index",
    "models": "vslib.config",
    "model_set": "vslib.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vslib' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
