"""Shared pytest configuration."""

from __future__ import annotations

import os

# Tests never reach a model hub; set before any test imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VSLIB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
