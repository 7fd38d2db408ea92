"""A persistent image index on USearch: HNSW search, metadata per image, safe saves and updates.

:class:`ImageIndex` keeps one embedding per image in a USearch HNSW graph (cosine metric,
storage in ``f32``, ``f16`` or ``i8``) and, beside it, a record per image: its path (relative
to the indexed folder), size, modification time, SHA-256 of its bytes and the model that
embedded it. On disk an index is a folder::

    pictures.index/
        index.json                    # metadata; the commit point of every save
        vectors-<random>.usearch      # the USearch graph and vectors (never changed in place)

A save holds the folder's writer lock (:mod:`vslib.indexlock`), writes a new vectors file and a
new ``index.json`` to temporary files, flushes them to disk, and only then swaps ``index.json``
in with one atomic rename; until that rename, the previous ``index.json`` still names the
previous vectors file, so a crash at any moment leaves the previous index loadable (or, on a
first save, a folder of leftovers that the next save recognises and clears). ``index.json``
records the vectors file's SHA-256 and the model's fingerprint (:mod:`vslib.manifest`); a load
checks both before USearch reads a byte. Introduced in chapter 5.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from usearch.index import BatchMatches, Index, Matches

from vslib.fingerprint import file_sha256
from vslib.images import scan_folder
from vslib.indexlock import writer_lock
from vslib.manifest import MANIFEST, IndexFormatError, dump_manifest, parse_manifest

if TYPE_CHECKING:
    from vslib.encoders import Encoder

__all__ = [
    "DTYPES",
    "ImageIndex",
    "ImageRecord",
    "IndexFormatError",
    "ReadOnlyIndexError",
    "SearchHit",
    "UpdateReport",
    "file_sha256",
]

#: Storage types an index may use; the type is always chosen explicitly, never by USearch.
DTYPES = ("f32", "f16", "i8")
_VECTORS_PREFIX = "vectors-"
_VECTORS_SUFFIX = ".usearch"
_TMP_SUFFIX = ".tmp"
# path, size, mtime_ns, sha256 of a record about to be inserted
_RecordFields = tuple[str, int | None, int | None, str | None]
#: Called with the name of each step of a save (tests use it to kill a save at every step).
SAVE_HOOK: Callable[[str], None] | None = None
SAVE_POINTS = ("locked", "vectors written", "vectors renamed", "manifest written", "committed", "cleaned")
_LOAD_ATTEMPTS = 5


def _save_point(name: str) -> None:
    if SAVE_HOOK is not None:
        SAVE_HOOK(name)


class ReadOnlyIndexError(RuntimeError):
    """Raised when an index opened with ``view=True`` is asked to change.

    Introduced in chapter 5.
    """


@dataclass(frozen=True)
class SearchHit:
    """One search result: the image's stored path, its key, and its cosine similarity.

    Introduced in chapter 5.
    """

    path: str
    key: int
    score: float


@dataclass
class ImageRecord:
    """What the index knows about one image besides its vector.

    ``size``, ``mtime_ns`` and ``sha256`` are ``None`` for vectors added without a file.
    Introduced in chapter 5.
    """

    key: int
    path: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    model: str
    dim: int


@dataclass
class UpdateReport:
    """What :meth:`ImageIndex.update_folder` did, as index paths (relative to the folder).

    ``unchanged`` includes the files whose bytes were unchanged but whose size or
    modification time moved; those are also listed in ``refreshed``. ``skipped`` holds
    ``(path, reason)`` for files that could not be read (an entry an unreadable file had
    before is removed and listed in ``removed`` too). Introduced in chapter 5.
    """

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``added N, updated N, removed N, unchanged N, skipped N`` (chapter 5)."""
        return (
            f"added {len(self.added)}, updated {len(self.updated)}, removed {len(self.removed)}, "
            f"unchanged {len(self.unchanged)}, skipped {len(self.skipped)}"
        )


#: HNSW settings chosen for recall@10 >= 0.99 at this library's scales (see ``ImageIndex``).
DEFAULT_CONNECTIVITY = 32
DEFAULT_EXPANSION_ADD = 128
DEFAULT_EXPANSION_SEARCH = 512

class ImageIndex:
    """Image embeddings in a USearch HNSW index, with a metadata record per image.

    Args:
        dim: Embedding size (the encoder's ``dim``).
        model: Name of the model whose embeddings the index holds; other models are refused.
        dtype: Vector storage: ``"f32"``, ``"f16"`` (the default, half the memory of f32) or
            ``"i8"`` (a quarter of it, with coarser scores: each component is rounded on a
            fixed [-1, 1] scale, and the small components of high-dimensional unit vectors
            share few levels; recall@10 was 0.79 at 768-d in the benchmarks appendix, so
            prefer f16 when recall matters).
        connectivity: HNSW edges per node (``M``), default 32.
        expansion_add: Candidate list size while inserting (``efConstruction``), default 128.
        expansion_search: Candidate list size while searching (``ef``), default 512; can be
            changed later.

    The defaults trade build time for recall: USearch's own (16, 128, 64) reach a
    recall@10 of only about 0.5 to 0.8 on 10k uniformly random 64- to 256-d unit vectors,
    these about 0.997 (the hardest case; clustered embeddings are easier).

    Keys are integers handed out in increasing order and never reused, so a re-encoded
    image gets a new key. ``len(index)`` is the number of images. Introduced in chapter 5.
    """

    def __init__(
        self,
        dim: int,
        model: str,
        dtype: str = "f16",
        connectivity: int | None = DEFAULT_CONNECTIVITY,
        expansion_add: int | None = DEFAULT_EXPANSION_ADD,
        expansion_search: int | None = DEFAULT_EXPANSION_SEARCH,
    ) -> None:
        if int(dim) <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if not model:
            raise ValueError("an index needs the name of the model that embeds its images")
        self.dim = int(dim)
        self.model = str(model)
        self.dtype = dtype
        options = {"connectivity": connectivity, "expansion_add": expansion_add, "expansion_search": expansion_search}
        options = {name: value for name, value in options.items() if value is not None}
        self._index = Index(ndim=self.dim, metric="cos", dtype=dtype, **options)
        #: The folder that stored paths are relative to, or ``None``.
        self.root: Path | None = None
        self._records: dict[int, ImageRecord] = {}
        self._by_path: dict[str, int] = {}
        self._next_key = 0
        self._view = False
        #: ``"<model>@sha256:<hex>"`` of the model that embedded the images, or ``None``.
        self.model_fingerprint: str | None = None

    # -- basic properties ----------------------------------------------------------------------

    @property
    def connectivity(self) -> int:
        """HNSW edges per node, fixed when the index is created (chapter 5)."""
        return int(self._index.connectivity)

    @property
    def expansion_add(self) -> int:
        """Candidate list size used while inserting (chapter 5)."""
        return int(self._index.expansion_add)

    @property
    def expansion_search(self) -> int:
        """Candidate list size used while searching: larger is slower and finds more (chapter 5)."""
        return int(self._index.expansion_search)

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        self._index.expansion_search = int(value)

    @property
    def read_only(self) -> bool:
        """Whether the index was opened with ``view=True`` (chapter 5)."""
        return self._view

    @property
    def paths(self) -> list[str]:
        """Stored paths, in the order the images were added (chapter 5)."""
        return [record.path for record in self._records.values()]

    @property
    def records(self) -> list[ImageRecord]:
        """The metadata records, in the order the images were added (chapter 5)."""
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, (str, os.PathLike)):
            return False
        return self._stored_path(path) in self._by_path

    def __repr__(self) -> str:
        mode = ", view" if self._view else ""
        return f"ImageIndex({len(self)} images, model={self.model!r}, dim={self.dim}, dtype={self.dtype}{mode})"

    def record(self, path: str | os.PathLike) -> ImageRecord:
        """The metadata record of one image (``KeyError`` if it is not indexed). Chapter 5."""
        stored = self._stored_path(path)
        if stored not in self._by_path:
            raise KeyError(f"{stored} is not in the index")
        return self._records[self._by_path[stored]]

    def _stored_path(self, path: str | os.PathLike) -> str:
        """The key a path is stored under: relative to :attr:`root` when it lies inside it."""
        candidate = Path(path)
        if self.root is not None and candidate.is_absolute():
            for form in (candidate, candidate.resolve()):
                try:
                    return form.relative_to(self.root).as_posix()
                except ValueError:
                    pass
        if isinstance(path, str) and not candidate.is_absolute():
            return path
        return candidate.as_posix()

    def resolve(self, path: str) -> Path:
        """The file a stored path points to (joined to :attr:`root` when there is one). Chapter 5."""
        return self.root / path if self.root is not None else Path(path)

    # -- adding and removing ---------------------------------------------------------------------

    def add(
        self, paths: Sequence[str | os.PathLike], vectors: np.ndarray, *, model: str | None = None
    ) -> list[int]:
        """Add (or replace) images by path; size, mtime and hash are read from the files.

        Paths under :attr:`root` are stored relative to it. A path already in the index is
        replaced. Returns the new keys.

        Raises:
            ValueError: If ``model`` is not the index's model, the vectors do not have the
                index's dimension, or they are not finite and non-zero.

        Introduced in chapter 5.
        """
        self._check_writable()
        if model is not None:
            self._check_model(model)
        records = []
        for path in paths:
            file = self.resolve(self._stored_path(path))
            size = mtime = digest = None
            if file.is_file():
                stat = file.stat()
                size, mtime, digest = stat.st_size, stat.st_mtime_ns, file_sha256(file)
            records.append((self._stored_path(path), size, mtime, digest))
        return self._insert(vectors, records)

    def add_vectors(
        self, vectors: np.ndarray, paths: Sequence[str] | None = None, *, threads: int = 0
    ) -> list[int]:
        """Add vectors that have no file behind them (experiments, other sources).

        ``paths`` are labels stored as they are (default: ``vector-<key>``). Returns the keys.
        ``threads`` is how many threads insert into the graph (0: all cores). Several threads
        insert in a varying order, so the graph, and the recall it reaches, changes a little
        from run to run; ``threads=1`` builds the same graph from the same vectors every time.
        Introduced in chapter 5.
        """
        self._check_writable()
        matrix = self._as_matrix(vectors, "vectors")
        if paths is None:
            paths = [f"vector-{self._next_key + i}" for i in range(len(matrix))]
        return self._insert(matrix, [(str(p), None, None, None) for p in paths], threads=threads)

    def remove(self, paths: Iterable[str | os.PathLike]) -> int:
        """Remove images by path; returns how many were removed.

        Raises:
            KeyError: If a path is not in the index (nothing is removed then).

        Introduced in chapter 5.
        """
        self._check_writable()
        stored = [self._stored_path(p) for p in paths]
        missing = [p for p in stored if p not in self._by_path]
        if missing:
            raise KeyError(f"not in the index: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        return self._remove_stored(stored)

    def _remove_stored(self, stored: Iterable[str]) -> int:
        keys = [self._by_path.pop(p) for p in dict.fromkeys(stored)]
        if keys:
            # USearch only marks removed nodes; they stay in the graph (and the file) but are
            # never returned and do not count in len().
            self._index.remove(np.asarray(keys, dtype=np.uint64))
            for key in keys:
                del self._records[key]
        return len(keys)

    def _insert(self, vectors: np.ndarray, records: Sequence[_RecordFields], threads: int = 0) -> list[int]:
        matrix = self._as_matrix(vectors, "vectors")
        if len(matrix) != len(records):
            raise ValueError(f"got {len(records)} paths but {len(matrix)} vectors")
        stored = [r[0] for r in records]
        if len(set(stored)) != len(stored):
            raise ValueError("the same path appears more than once in one add")
        self._remove_stored([p for p in stored if p in self._by_path])
        if not records:
            return []
        keys = list(range(self._next_key, self._next_key + len(records)))
        self._index.add(np.asarray(keys, dtype=np.uint64), matrix, threads=threads)
        self._next_key += len(records)
        for key, (path, size, mtime, digest) in zip(keys, records):
            self._records[key] = ImageRecord(key, path, size, mtime, digest, self.model, self.dim)
            self._by_path[path] = key
        return keys

    # -- keeping a folder in step ----------------------------------------------------------------

    def update_folder(
        self,
        root: str | os.PathLike,
        encoder: Encoder,
        batch_size: int = 32,
        progress: bool | None = None,
        num_workers: int | None = None,
        rehash: bool = False,
    ) -> UpdateReport:
        """Make the index mirror the images under ``root``, encoding only what changed.

        New files are added; files whose size or mtime changed are hashed and re-encoded
        only if their bytes changed (otherwise their metadata is refreshed); files gone from
        the folder are removed; files that cannot be read are skipped and reported, never
        stopping the update. Paths are stored relative to ``root``, so a moved folder
        updates without re-encoding anything. A file whose size and mtime did not change is
        taken as unchanged without reading it, unless ``rehash=True``: then every file is
        hashed and re-encoded if its bytes differ (slower: every byte is read).

        Raises:
            ValueError: If ``encoder`` is not the model the index was built with (name,
                dimension or fingerprint, see :meth:`check_encoder`).
            NotADirectoryError: If ``root`` is not a folder.

        Introduced in chapter 5.
        """
        self._check_writable()
        self.check_encoder(encoder)
        if self.model_fingerprint is None:
            self.model_fingerprint = getattr(encoder, "fingerprint", None)
        root = Path(root)
        scan = scan_folder(root)
        report = UpdateReport()

        def rel(path: Path) -> str:
            return path.relative_to(root).as_posix()

        seen: set[str] = set()
        gone_bad: list[str] = []
        for path, reason in scan.skipped:
            seen.add(rel(path))
            report.skipped.append((rel(path), reason))
            if rel(path) in self._by_path:
                gone_bad.append(rel(path))

        todo: dict[Path, tuple[str, int, int, str]] = {}
        for path in scan.files:
            name = rel(path)
            seen.add(name)
            key = self._by_path.get(name)
            record = self._records[key] if key is not None else None
            try:
                stat = path.stat()
                same_stat = record is not None and (record.size, record.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
                if same_stat and not rehash:
                    report.unchanged.append(name)
                    continue
                digest = file_sha256(path)
            except OSError as error:
                report.skipped.append((name, f"cannot read file ({error.strerror or error})"))
                if record is not None:
                    gone_bad.append(name)
                continue
            if record is not None and record.sha256 == digest:
                report.unchanged.append(name)
                if not same_stat:
                    record.size, record.mtime_ns = stat.st_size, stat.st_mtime_ns
                    report.refreshed.append(name)
            else:
                todo[path] = (name, stat.st_size, stat.st_mtime_ns, digest)

        vectors = np.zeros((0, self.dim), dtype=np.float32)
        encoded_paths: list[Path] = []
        if todo:
            encoded = encoder.encode_files(
                list(todo), batch_size=batch_size, progress=progress, num_workers=num_workers
            )
            vectors, encoded_paths = encoded.vectors, encoded.paths
            for path, reason in encoded.skipped:
                name = todo[Path(path)][0]
                report.skipped.append((name, reason))
                if name in self._by_path:
                    gone_bad.append(name)
        records = [todo[Path(path)] for path in encoded_paths]
        for name, *_ in records:
            (report.updated if name in self._by_path else report.added).append(name)

        deleted = [p for p in self._by_path if p not in seen]
        report.removed = deleted + gone_bad
        self._remove_stored(report.removed)
        self._insert(vectors, records)
        self.root = root.resolve()
        report.skipped.sort()
        return report

    # -- searching -------------------------------------------------------------------------------

    def search(
        self, query: np.ndarray, k: int = 10, exact: bool = False
    ) -> list[SearchHit] | list[list[SearchHit]]:
        """The ``k`` most similar images to a query vector, best first.

        ``query`` is one vector ``(dim,)`` (returns a list of hits) or a matrix ``(n, dim)``
        (returns one list per row). ``score`` is the cosine similarity, ``1 - distance``.
        ``exact=True`` compares with every stored vector instead of walking the graph: the
        ground truth that recall is measured against.

        Introduced in chapter 5.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        array = np.asarray(query, dtype=np.float32)
        single = array.ndim == 1
        matrix = self._as_matrix(array, "query")
        rows = self._search_rows(matrix, k, exact)
        hits = [
            [SearchHit(self._records[key].path, key, score)
             for key, score in zip(keys.tolist(), np.clip(1.0 - distances, -1.0, 1.0).tolist())
             if key in self._records]
            for keys, distances in rows
        ]
        return hits[0] if single else hits

    def _search_rows(self, matrix: np.ndarray, k: int, exact: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """Keys and distances per query row, without the padding of short result lists."""
        if len(self) == 0 or len(matrix) == 0:
            return [(np.zeros(0, np.uint64), np.zeros(0, np.float32)) for _ in range(len(matrix))]
        result = self._index.search(matrix, min(k, len(self)), exact=exact)
        # A one-row matrix comes back as Matches, not BatchMatches.
        if isinstance(result, Matches):
            return [(result.keys, result.distances)]
        assert isinstance(result, BatchMatches)
        return [(result.keys[i, :n], result.distances[i, :n]) for i, n in enumerate(result.counts)]

    def vectors(self, paths: Sequence[str | os.PathLike] | None = None) -> np.ndarray:
        """Stored vectors as float32 ``(n, dim)``, for ``paths`` or all images (in :attr:`paths` order).

        These are the vectors as stored: rounded to f16, or quantised to i8 (and so not
        exactly unit length). Introduced in chapter 5.
        """
        keys = list(self._records) if paths is None else [self.record(p).key for p in paths]
        return self._get(keys)

    def _get(self, keys: Sequence[int]) -> np.ndarray:
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        found = self._index.get(np.asarray(keys, dtype=np.uint64), dtype="f32")
        return np.stack(found).astype(np.float32, copy=False)

    def recall_at_k(self, queries: np.ndarray | None = None, k: int = 10, sample: int = 1000, seed: int = 0) -> float:
        """Share of the exact top-``k`` that the HNSW search finds, averaged over queries.

        Both searches run on the same stored vectors, so this measures the graph, not the
        storage type. Without ``queries``, up to ``sample`` stored vectors are used.
        Introduced in chapter 5.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if queries is None:
            keys = np.fromiter(self._records, dtype=np.int64)
            if len(keys) > sample:
                keys = np.random.default_rng(seed).choice(keys, size=sample, replace=False)
            queries = self._get(keys.tolist())
        matrix = self._as_matrix(queries, "queries")
        if len(matrix) == 0 or len(self) == 0:
            raise ValueError("recall needs at least one query and one indexed vector")
        approximate = self._search_rows(matrix, k, exact=False)
        truth = self._search_rows(matrix, k, exact=True)
        found = [len(set(a[0].tolist()) & set(t[0].tolist())) / len(t[0]) for a, t in zip(approximate, truth)]
        return float(np.mean(found))

    # -- duplicates ------------------------------------------------------------------------------

    def exact_duplicates(self) -> list[list[str]]:
        """Groups of paths with byte-identical files (same SHA-256), sorted. Introduced in chapter 5."""
        groups: dict[str, list[str]] = {}
        for record in self._records.values():
            if record.sha256 is not None:
                groups.setdefault(record.sha256, []).append(record.path)
        return sorted(sorted(paths) for paths in groups.values() if len(paths) > 1)

    def near_duplicates(self, threshold: float = 0.95, k: int = 10) -> list[tuple[str, str, float]]:
        """Pairs of images whose embeddings have cosine similarity ``>= threshold``, most similar first.

        Each image's ``k`` nearest neighbours are checked, so a group of more than ``k + 1``
        near-identical images may not list every pair. Byte-identical files are included.
        Introduced in chapter 5.
        """
        keys = list(self._records)
        rows = self._search_rows(self._get(keys), k + 1, exact=False)
        pairs: dict[tuple[str, str], float] = {}
        for key, (neighbours, distances) in zip(keys, rows):
            for other, distance in zip(neighbours.tolist(), distances.tolist()):
                score = 1.0 - distance
                if other == key or other not in self._records or score < threshold:
                    continue
                a, b = sorted((self._records[key].path, self._records[other].path))
                pairs[(a, b)] = max(pairs.get((a, b), -1.0), min(score, 1.0))
        return sorted(((a, b, s) for (a, b), s in pairs.items()), key=lambda t: (-t[2], t[0], t[1]))

    # -- saving and loading ----------------------------------------------------------------------

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """Whether ``path`` is a saved index folder. Introduced in chapter 5."""
        return (Path(path) / MANIFEST).is_file()

    @staticmethod
    def folder_state(path: str | os.PathLike) -> str:
        """What ``path`` holds, for deciding whether an index may be written there.

        ``"missing"``; ``"index"`` (a saved index); ``"new"`` (an empty folder, or one holding
        only the leftovers of a save that was killed before its first commit, which the next
        save clears); ``"file"``; or ``"foreign"`` (a folder with other things in it).
        Introduced in chapter 5.
        """
        folder = Path(path)
        if not folder.exists():
            return "missing"
        if not folder.is_dir():
            return "file"
        if (folder / MANIFEST).is_file():
            return "index"
        return "new" if all(_is_own_file(entry.name) for entry in folder.iterdir()) else "foreign"

    def save(self, path: str | os.PathLike, *, wait: bool = True) -> Path:
        """Save to the folder ``path`` (created if needed) atomically; returns the folder.

        The save holds the folder's writer lock (waiting for another writer, or with
        ``wait=False`` raising :class:`~vslib.indexlock.IndexLockedError`). The vectors file
        and ``index.json`` are written to temporary files in the folder and flushed to disk;
        renaming ``index.json`` into place commits the save. If anything fails before that
        rename, the previous save is untouched. Older vectors files and the leftovers of
        killed saves are deleted after the commit.

        Raises:
            FileExistsError: If ``path`` is a file, or a non-empty folder that is not an index.

        Introduced in chapter 5.
        """
        folder = Path(path)
        with writer_lock(folder, wait=wait):
            _save_point("locked")
            state = self.folder_state(folder)
            if state == "file":
                raise FileExistsError(f"{folder} is a file; an index is saved as a folder")
            if state == "foreign":
                raise FileExistsError(f"{folder} is a folder that is not an image index; refusing to write into it")
            folder.mkdir(parents=True, exist_ok=True)
            vectors_name = self._commit(folder)
            _fsync_dir(folder)
            # Only writers delete, and they hold the lock; readers that opened an older vectors
            # file keep it (POSIX keeps an unlinked file alive while it is open or mapped).
            for stale in folder.iterdir():
                if stale.name != vectors_name and _is_own_file(stale.name):
                    _unlink_quietly(stale)
            _save_point("cleaned")
        return folder

    def _commit(self, folder: Path) -> str:
        """Write the vectors file and the manifest, then rename the manifest into place."""
        vectors_name = f"{_VECTORS_PREFIX}{uuid.uuid4().hex}{_VECTORS_SUFFIX}"
        vectors_file = folder / vectors_name
        vectors_tmp = folder / (vectors_name + _TMP_SUFFIX)
        manifest_tmp: Path | None = None
        try:
            self._index.save(os.fspath(vectors_tmp))
            _fsync(vectors_tmp)
            checksum, size = file_sha256(vectors_tmp), vectors_tmp.stat().st_size
            _save_point("vectors written")
            os.replace(vectors_tmp, vectors_file)
            _save_point("vectors renamed")
            manifest_tmp = _write_tmp(folder, MANIFEST, self._manifest(vectors_name, checksum, size))
            _save_point("manifest written")
            os.replace(manifest_tmp, folder / MANIFEST)
        except BaseException:
            for leftover in (vectors_tmp, vectors_file, manifest_tmp):
                if leftover is not None:
                    _unlink_quietly(leftover)
            raise
        _save_point("committed")
        return vectors_name

    def _manifest(self, vectors_name: str, checksum: str, size: int) -> bytes:
        return dump_manifest(
            {
                "vectors_file": vectors_name,
                "vectors_sha256": checksum,
                "vectors_size": size,
                "model": self.model,
                "model_fingerprint": self.model_fingerprint,
                "dim": self.dim,
                "dtype": self.dtype,
                "metric": "cos",
                "connectivity": self.connectivity,
                "expansion_add": self.expansion_add,
                "expansion_search": self.expansion_search,
                "root": None if self.root is None else str(self.root),
                "next_key": self._next_key,
            },
            [asdict(record) for record in self._records.values()],
        )

    @classmethod
    def load(cls, path: str | os.PathLike, view: bool = False, verify: bool = True) -> ImageIndex:
        """Open a saved index folder, checking it before USearch reads it.

        ``view=True`` memory-maps the vectors file read-only instead of reading it: instant
        and shared between processes, but the index cannot change (mutations raise
        :class:`ReadOnlyIndexError`).

        The manifest is always checked field by field (:func:`vslib.manifest.parse_manifest`).
        ``verify=True`` (the default) also checks the vectors file's SHA-256 against the
        manifest, so a damaged file is refused instead of reaching USearch (a damaged graph
        can crash the process). That reads the whole file once: 0.39 s per 100k vectors at
        dimension 768 in f16 (a 161 MiB file at 418 MiB/s, on a busy 2-core machine;
        ``benchmarks/index_verify.py``). ``verify=False`` skips only that hash, for very
        large indexes on trusted storage; the file size is still checked.

        A save that commits while this runs is handled: if the vectors file named by the
        manifest has just been replaced, the new manifest is read.

        Raises:
            FileNotFoundError: If ``path`` is not a saved index.
            IndexFormatError: If the manifest is malformed, or the vectors file is missing,
                damaged or does not match it (a ``ValueError``).

        Introduced in chapter 5.
        """
        folder = Path(path)
        for _ in range(_LOAD_ATTEMPTS):
            data = _read_manifest_bytes(folder)
            manifest = parse_manifest(data, folder)
            vectors_file = folder / manifest["vectors_file"]
            try:
                return cls._open(folder, manifest, vectors_file, view, verify)
            except _VectorsGone:
                if _read_manifest_bytes(folder) == data:
                    break  # the manifest still names it: it is really missing
        raise IndexFormatError(f"{folder} is damaged: the vectors file its {MANIFEST} names is missing")

    @classmethod
    def _open(cls, folder: Path, manifest, vectors_file: Path, view: bool, verify: bool) -> ImageIndex:
        try:
            size = vectors_file.stat().st_size
            if size != manifest["vectors_size"]:
                raise IndexFormatError(
                    f"{folder} is damaged: {vectors_file.name} has {size} bytes, its {MANIFEST} says "
                    f"{manifest['vectors_size']}"
                )
            if verify and file_sha256(vectors_file) != manifest["vectors_sha256"]:
                raise IndexFormatError(
                    f"{folder} is damaged: the bytes of {vectors_file.name} do not match the checksum in "
                    f"its {MANIFEST}; rebuild the index (vslib index DIR --out NEW)"
                )
        except FileNotFoundError:
            raise _VectorsGone from None
        except OSError as error:
            raise IndexFormatError(f"cannot read {vectors_file}: {error.strerror or error}") from None

        self = cls(manifest["dim"], manifest["model"], manifest["dtype"])
        try:
            header = Index.metadata(os.fspath(vectors_file))
            if not header and not vectors_file.exists():
                raise _VectorsGone
            if not header or header["dimensions"] != self.dim or header["kind_scalar"].name.lower() != self.dtype:
                raise IndexFormatError(f"{vectors_file} does not hold {self.dtype} vectors of dimension {self.dim}")
            options = {k: manifest[k] for k in ("connectivity", "expansion_add", "expansion_search")}
            restored = Index.restore(os.fspath(vectors_file), view=view, **options)
        except (IndexFormatError, _VectorsGone):
            raise
        except (RuntimeError, ValueError, OSError, KeyError, AttributeError) as error:
            if not vectors_file.exists():
                raise _VectorsGone from None
            raise IndexFormatError(f"{folder} is damaged: USearch cannot read {vectors_file.name} ({error})") from None
        if restored is None:
            raise _VectorsGone
        self._index = restored
        # A restored index keeps its connectivity but not the expansion settings.
        self._index.expansion_add = options["expansion_add"]
        self._index.expansion_search = options["expansion_search"]
        self._view = view
        self.root = Path(manifest["root"]) if manifest["root"] is not None else None
        self._next_key = manifest["next_key"]
        self.model_fingerprint = manifest["model_fingerprint"]
        for item in manifest.images:
            record = ImageRecord(**item)
            self._records[record.key] = record
            self._by_path[record.path] = record.key
        stored_keys = set(np.asarray(self._index.keys).tolist())
        if stored_keys != set(self._records):
            raise IndexFormatError(
                f"{folder} is damaged: its {len(stored_keys)} vectors do not match "
                f"its {len(self._records)} metadata records"
            )
        return self

    # -- checks ----------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        # Writing into a memory-mapped USearch index crashes the process, so refuse first.
        if self._view:
            raise ReadOnlyIndexError(
                "this index was opened with view=True (read-only, memory-mapped); "
                "open it with ImageIndex.load(path) to change it"
            )

    def check_encoder(self, encoder: Encoder) -> None:
        """Refuse an encoder that is not the model this index holds embeddings of.

        Name and dimension must match; when both the index and the encoder carry a model
        fingerprint (:func:`vslib.fingerprint.model_fingerprint`), so must those: the same
        name with other weights or another config is a different embedding space.

        Raises:
            ValueError: Naming what differs.

        Introduced in chapter 5.
        """
        self._check_model(encoder.name)
        self._check_dim(encoder.dim, f"encoder {encoder.name!r}")
        theirs = getattr(encoder, "fingerprint", None)
        if self.model_fingerprint is not None and theirs is not None and theirs != self.model_fingerprint:
            raise ValueError(
                f"the index was built with model {self.model!r} whose fingerprint is {self.model_fingerprint}, "
                f"but the loaded {encoder.name!r} is {theirs}: other weights or another config give another "
                "embedding space; rebuild the index with this model or load the original one"
            )

    def _check_model(self, model: str) -> None:
        if model != self.model:
            raise ValueError(
                f"this index holds embeddings from model {self.model!r}, not {model!r}; embeddings of "
                "different models live in different spaces: rebuild the index or use the same model"
            )

    def _check_dim(self, dim: int, what: str) -> None:
        if dim != self.dim:
            raise ValueError(
                f"{what} has dimension {dim} but this index (model {self.model!r}) has dimension {self.dim}"
            )

    def _as_matrix(self, vectors: np.ndarray, what: str) -> np.ndarray:
        """A C-contiguous float32 ``(n, dim)`` matrix of unit rows, or a clear error."""
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2:
            raise ValueError(f"{what} must be a vector or a matrix, got shape {matrix.shape}")
        self._check_dim(matrix.shape[1], what)
        if not np.isfinite(matrix).all():
            raise ValueError(f"{what} contain NaN or infinite values")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"{what} contain a zero vector, which has no direction")
        # i8 storage quantises each component in [-1, 1], so vectors must be unit length.
        return np.ascontiguousarray(matrix / norms)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable; directories cannot be opened for syncing on Windows."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_tmp(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new temporary file in ``folder``, flushed to disk; returns its path."""
    # A plain exclusive open (not mkstemp) so the file gets the usual permissions (umask).
    tmp = folder / f".{name}.{uuid.uuid4().hex}{_TMP_SUFFIX}"
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


class _VectorsGone(Exception):
    """The vectors file named by the manifest vanished (a concurrent save replaced it)."""


def _read_manifest_bytes(folder: Path) -> bytes:
    try:
        return (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} is not a saved image index (no {MANIFEST} in it)") from None
    except IsADirectoryError:
        raise IndexFormatError(f"{folder} is damaged: {MANIFEST} is a folder") from None
    except OSError as error:
        raise IndexFormatError(f"cannot read {folder / MANIFEST}: {error.strerror or error}") from None


def _is_own_file(name: str) -> bool:
    """Vectors files and temporary files that a save (possibly an interrupted one) leaves."""
    if name.startswith(_VECTORS_PREFIX) and name.endswith((_VECTORS_SUFFIX, _VECTORS_SUFFIX + _TMP_SUFFIX)):
        return True
    return name.startswith(f".{MANIFEST}.") and name.endswith(_TMP_SUFFIX)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
