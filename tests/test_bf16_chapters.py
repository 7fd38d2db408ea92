"""Every chapter runs again with ``VSLIB_DTYPE=bfloat16``, as on a reader's GPU or Mac.

Execution only: bf16 numbers differ from the committed fp32 outputs, so nothing is
compared. What must hold is that no cell raises: a chapter that handles model
tensors itself (``.numpy()`` on a bf16 tensor, CPU inputs to an on-device model)
fails here on a CPU-only machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nbrun import execute_notebook

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_chapter_runs_in_bf16(path):
    started = time.perf_counter()
    execute_notebook(path, {"VSLIB_DTYPE": "bfloat16"})
    print(f"{path.stem} in bf16: {time.perf_counter() - started:.0f} s")
