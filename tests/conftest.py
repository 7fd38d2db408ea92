"""Shared pytest configuration."""

from __future__ import annotations

import os

import pytest

# Tests never reach a model hub; set before any test imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VSLIB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and threads spin badly on a busy two-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: The longest files (minutes each: every chapter re-run in bf16, and four in real mode), first.
#: ``.ci/test`` hands each file whole to a pytest-xdist worker in this order, so the long ones
#: start at once and the short ones fill the other workers meanwhile instead of waiting at the end.
LONGEST_FIRST = ("tests/test_real_mode.py", "tests/test_bf16_chapters.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable
