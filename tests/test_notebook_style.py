"""Notebook code fits the rendered book: ruff's formatter and linter at 80 columns.

The book shows about 80 characters of a code line; ``notebooks/ruff.toml`` and
``book/ruff.toml`` set that width (and the line-length rule) for every notebook.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["notebooks", "book"]

pytest.importorskip("ruff", reason="ruff is in the dev extra: pip install -e '.[dev]'")


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args, *FOLDERS], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("folder", FOLDERS)
def test_notebook_folders_set_80_columns_and_the_line_length_rule(folder):
    config = tomllib.loads((ROOT / folder / "ruff.toml").read_text())
    assert config["line-length"] == 80
    assert "E501" in config["lint"]["extend-select"]
    assert list((ROOT / folder).glob("*.ipynb")), f"no notebooks in {folder}"


def test_notebook_code_is_formatted_at_80_columns():
    result = ruff("format", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_notebook_code_passes_the_linter_with_no_line_over_80_columns():
    result = ruff("check", "--output-format", "concise")
    assert result.returncode == 0, result.stdout + result.stderr
