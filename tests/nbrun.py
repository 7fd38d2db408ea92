"""Execute a notebook in a fresh kernel under extra environment variables (for the slow tests)."""

from __future__ import annotations

import os
from pathlib import Path


def execute_notebook(path: Path, env: dict[str, str], timeout: int = 900) -> None:
    """Run every cell of ``path`` in a new kernel whose environment adds ``env``.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell; the
    notebook file is not changed.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
