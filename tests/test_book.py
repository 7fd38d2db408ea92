"""The book's structure and a strict (warnings-as-errors) build of the committed outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        files += [c["file"] for c in part["chapters"]]
    return files


def test_toc_lists_every_notebook_and_every_entry_exists():
    files = _toc_files()
    notebooks = sorted(p.relative_to(ROOT).with_suffix("").as_posix() for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    assert set(notebooks) <= set(files), f"notebooks missing from _toc.yml: {set(notebooks) - set(files)}"
    for f in files:
        assert (ROOT / f).with_suffix(".md").exists() or (ROOT / f).with_suffix(".ipynb").exists(), f


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_executed(path: Path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cell"
    counts = [c["execution_count"] for c in code]
    assert all(isinstance(n, int) for n in counts), f"{path.name} has unexecuted cells"
    assert counts == sorted(counts), f"{path.name} was not executed top to bottom"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"


@pytest.mark.slow
def test_book_builds_with_warnings_as_errors(tmp_path: Path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"  # build from the committed outputs
    cfg_path = tmp_path / "_config.yml"
    cfg_path.write_text(yaml.safe_dump(config))
    jb = Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run(
        [str(jb), "build", str(ROOT), "--config", str(cfg_path), "--path-output", str(tmp_path), "-W", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    intro = (html / "book" / "intro.html").read_text()
    chapter_links = set(re.findall(r'href="\.\./(notebooks/\d\d_[a-z_]+)\.html"', intro))
    chapters = {f for f in _toc_files() if f.startswith("notebooks/")}
    assert chapter_links == chapters, sorted(chapter_links ^ chapters)
    assert (html / "book" / "api.html").exists()
    # Every chapter page opens its own notebook on Binder and on Colab, from the repository
    # and branch that _config.yml names (the theme writes `&` in a URL as `&amp;` in HTML).
    repo = config["repository"]["url"].removeprefix("https://github.com/")
    branch = config["repository"].get("branch", "main")
    for chapter in sorted(chapters):
        page = (html / f"{chapter}.html").read_text()
        binder = f"https://mybinder.org/v2/gh/{repo}/{branch}?urlpath=lab/tree/{chapter}.ipynb"
        colab = f"https://colab.research.google.com/github/{repo}/blob/{branch}/{chapter}.ipynb"
        assert f'href="{binder}"' in page, f"{chapter}: no Binder launch link {binder}"
        assert f'href="{colab}"' in page, f"{chapter}: no Colab launch link {colab}"
