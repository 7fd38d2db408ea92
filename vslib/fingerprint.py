"""Content hashes: of one file, and of a model (its name plus a hash of its config and weights).

An index records the fingerprint of the model that embedded it, so a query encoder that is a
different model under the same name, or a manifest edited to name another model of the same
dimension, is refused instead of returning neighbours from the wrong space. Introduced in
chapter 5.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

__all__ = ["file_sha256", "model_fingerprint"]

# Files of a model folder that do not change what the model computes (cards, training logs).
_IGNORED_SUFFIXES = (".md", ".lock", ".metadata")
_IGNORED_NAMES = frozenset({"training.json"})


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks. Introduced in chapter 5."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _model_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / name for name in sorted(filenames)
                     if not name.startswith(".") and not name.endswith(_IGNORED_SUFFIXES)
                     and name not in _IGNORED_NAMES)
    return files


@lru_cache(maxsize=64)
def _cached(name: str, files: tuple[tuple[str, str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for relative, absolute, size, _mtime in files:
        digest.update(f"{relative}\0{size}\0".encode("utf-8", "surrogateescape"))
        digest.update(bytes.fromhex(file_sha256(absolute)))
    return f"{name}@sha256:{digest.hexdigest()}"


def model_fingerprint(name: str, path: str | os.PathLike) -> str:
    """``"<name>@sha256:<hex>"``: the model's name and a hash of every file it loads from.

    ``path`` is the model's folder (config, weights, tokenizer, processor) or single file.
    Hashes are cached per process by file size and modification time. Reading the bundled
    tiny models takes milliseconds; a checkpoint is read once at disk speed (about 1 s per
    GB with SHA-256 on one core). Introduced in chapter 5.
    """
    root = Path(path)
    entries = []
    for file in _model_files(root):
        stat = file.stat()
        relative = file.name if root.is_file() else file.relative_to(root).as_posix()
        entries.append((relative, str(file), stat.st_size, stat.st_mtime_ns))
    return _cached(str(name), tuple(entries))
