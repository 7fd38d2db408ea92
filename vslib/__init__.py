"""vslib: multimodal visual search with DINOv3, SigLIP 2 and dino.txt.

The library behind the *Visual Search* book. Heavy submodules (torch,
transformers) are imported lazily, so ``import vslib`` stays fast.
"""

from __future__ import annotations

import ctypes
import importlib
import sys
from typing import Any

if sys.platform.startswith("linux"):
    # usearch's compiled module carries its own copy of libstdc++'s locale ids (GNU unique
    # symbols); loaded before the system libstdc++, it breaks std::regex in libraries loaded
    # later (Ray aborts with std::regex_error when it starts). Loading libstdc++ first keeps
    # one copy; torch loads the same library anyway.
    try:
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass

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
