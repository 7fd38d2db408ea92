"""One writer at a time per index folder: an operating-system file lock (``filelock``).

The lock is the hidden file ``.<folder name>.lock`` beside the index folder (so it exists
before the folder does, and the folder holds only the index's own files). The operating
system releases it when its holder exits or is killed, so a crashed writer never leaves a
stale lock. Readers take no lock: saves replace ``index.json`` atomically and never change a
vectors file in place. Introduced in chapter 5.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["IndexLockedError", "lock_path", "writer_lock"]


class IndexLockedError(RuntimeError):
    """Another process is writing to the index folder (raised only when not waiting). Chapter 5."""


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of an index folder: ``.<name>.lock`` in the folder's parent (chapter 5)."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.lock"


def _say_waiting(folder: Path) -> None:
    print(f"waiting for another process that is writing to {folder} ...", file=sys.stderr, flush=True)


@contextmanager
def writer_lock(
    folder: str | os.PathLike,
    *,
    wait: bool = True,
    on_wait: Callable[[Path], None] | None = _say_waiting,
) -> Iterator[None]:
    """Hold the writer lock of ``folder`` for the body of a ``with`` block.

    With ``wait=True`` a second writer blocks until the first one is done (``on_wait`` is
    called once, first; by default it prints a line on stderr); with ``wait=False`` it raises
    :class:`IndexLockedError` at once. The lock is re-entrant within a thread, so a save
    inside a locked update does not deadlock. Introduced in chapter 5.

    Raises:
        IndexLockedError: If ``wait`` is false and another process holds the lock.
    """
    folder = Path(folder)
    target = lock_path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(target, is_singleton=True)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        if not wait:
            raise IndexLockedError(
                f"another process is writing to {folder} (it holds {target}); "
                "try again when it has finished"
            ) from None
        if on_wait is not None:
            on_wait(folder)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
