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


#: Tests that start a local Ray cluster: one worker runs them, one after another.
_RAY_ITEMS = ("tests/test_scale.py::", "notebooks/08_scaling_out.ipynb::", "[08_scaling_out]")


#: The longest files (minutes each: every chapter re-run in bf16, and four in real mode), first,
#: so that under ``.ci/test`` their tests start at once on all workers and the short ones fill in.
LONGEST_FIRST = ("tests/test_real_mode.py", "tests/test_bf16_chapters.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: plain pytest works without xdist
def pytest_xdist_make_scheduler(config, log):
    """How ``.ci/test`` (pytest-xdist) hands out work: each test on its own, except that a
    notebook's cells share a kernel and go whole to one worker, in order, and so do the Ray tests."""
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksWhole(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if any(key in nodeid for key in _RAY_ITEMS):
                return "ray"
            path = nodeid.split("::", 1)[0]
            return path if path.endswith(".ipynb") else nodeid

    return NotebooksWhole(config, log)
