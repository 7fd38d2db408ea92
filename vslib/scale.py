"""Scale out on Ray Data: embed a large collection into Parquet shards, index the shards, search them.

:func:`embed` lists the images on the driver, then runs one Ray Data pipeline: CPU tasks read,
decode (with :func:`vslib.images.load_image`, so bad files fail the same way as in-process),
hash and preprocess each file; an actor pool holds the encoder (on a GPU when Ray sees one) and
embeds batches; the vectors are written as Parquet shards. A local Ray instance starts in this
process, so the same code runs on a laptop; with ``RAY_ADDRESS`` (or ``address=``) set it runs on
a cluster, whose workers must see the same file paths (a shared file system). An output folder::

    out/
        dataset.json                       # model, dim, vector type, the source folder
        embeddings/run-00000/*.parquet     # path, size, mtime_ns, sha256, model, dim, vector
        skipped/run-00000/*.parquet        # path, reason: the files that could not be embedded
        shards/shard-00000.usearch, ...    # written by build_shard_indexes
        shards/keys.parquet                # key -> path of the shard indexes

Each run writes into a hidden folder and renames it into place when it has finished, so an
interrupted run leaves nothing half-written behind. A re-run embeds only files that are new or
whose bytes changed (SHA-256); the newest row of a path wins. One writer at a time.
:func:`to_image_index` turns the output into an :class:`~vslib.index.ImageIndex`, so
``vslib search`` and ``vslib app`` work on it unchanged. Introduced in chapter 8.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vslib.images import ImageLoadError, load_image, scan_folder
from vslib.index import (
    DEFAULT_CONNECTIVITY,
    DEFAULT_EXPANSION_ADD,
    DEFAULT_EXPANSION_SEARCH,
    ImageIndex,
    SearchHit,
    file_sha256,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "EmbedReport",
    "ShardedIndex",
    "build_shard_indexes",
    "dataset_info",
    "embed",
    "index_folder",
    "read_embeddings",
    "read_skipped",
    "shards_folder",
    "start_ray",
    "to_image_index",
    "vectors_of",
]

DATASET_FILE = "dataset.json"
EMBEDDINGS = "embeddings"
SKIPPED = "skipped"
SHARDS = "shards"
REMOVED_FILE = "removed.json"  # in a run's embeddings folder: files gone from the source folder
_FORMAT = "vslib-embeddings"
_VERSION = 1
#: Vector types a Parquet shard may hold (a fixed-size list of half or single floats).
VECTOR_DTYPES = ("f16", "f32")
_DECODE_CPUS = 0.25  # decoding a batch is light next to encoding it
_INPUT_PREFIX = "x_"  # model-input columns between the decode tasks and the encoder actors


@dataclass
class EmbedReport:
    """What one :func:`embed` run did (paths as stored: relative to the source folder).

    Introduced in chapter 8.
    """

    run: str | None
    embedded: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: ``embedded N, unchanged N, removed N, skipped N in S s`` (chapter 8)."""
        return (f"embedded {self.embedded}, unchanged {self.unchanged}, removed {len(self.removed)}, "
                f"skipped {len(self.skipped)} in {self.seconds:.1f} s")


# -- Ray ------------------------------------------------------------------------------------------


def start_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_mb: int | None = None,
    quiet: bool = True,
) -> dict[str, float]:
    """Connect to the Ray cluster at ``address`` (or ``RAY_ADDRESS``), or start a local one.

    Does nothing when Ray is already running in this process. ``num_cpus`` and
    ``object_store_mb`` size a local instance only. ``quiet`` keeps Ray's log lines and
    progress bars out of the terminal (or notebook). Returns the cluster's resources.
    Introduced in chapter 8.
    """
    if quiet:
        # Read by Ray's C++ core: its log lines (one per actor pool) would reach stderr.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    import ray
    import ray.data

    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet}
        if quiet:
            options["logging_level"] = logging.ERROR
        if address is None and not os.environ.get("RAY_ADDRESS"):
            options["num_cpus"] = num_cpus
            if object_store_mb is not None:
                options["object_store_memory"] = object_store_mb * 1024 * 1024
        for attempt in (1, 2):
            try:
                with _native_stderr_without(_RAY_LEVEL_NOTICE if quiet else None):
                    ray.init(address=address, **options)
                break
            except Exception as error:  # Ray raises a bare Exception for this
                # A local Ray gives its processes 30 s to start; a busy machine can miss that once.
                if attempt == 2 or "timed out during startup" not in str(error):
                    raise
                ray.shutdown()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = not quiet
    if quiet:
        logging.getLogger("ray").setLevel(logging.ERROR)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray.cluster_resources()


#: The one line Ray's C++ core prints whatever its log level (it says which level it set).
_RAY_LEVEL_NOTICE = "Set ray log level from environment variable"


@contextmanager
def _native_stderr_without(marker: str | None) -> Iterator[None]:
    """Drop lines containing ``marker`` that native code writes to file descriptor 2."""
    if marker is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if marker not in line]
            if kept:
                sys.stderr.write("".join(kept))


# -- listing and the incremental check -------------------------------------------------------------


def _list_source(
    source: str | os.PathLike | Sequence[str | os.PathLike],
) -> tuple[Path | None, list[tuple[Path, str]], list[tuple[str, str]]]:
    """The source folder (or None), the files as ``(file, stored name)``, and listing-time skips."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        root = Path(source).resolve()
        scan = scan_folder(root)
        files = [(p, p.relative_to(root).as_posix()) for p in scan.files]
        skipped = [(p.relative_to(root).as_posix(), reason) for p, reason in scan.skipped]
        return root, files, skipped
    if isinstance(source, str) and any(char in source for char in "*?["):
        paths = sorted(Path(p) for p in glob.glob(source, recursive=True))
        return None, [(p.resolve(), p.resolve().as_posix()) for p in paths if p.is_file()], []
    if isinstance(source, (str, os.PathLike)):
        raise NotADirectoryError(f"{source} is not a folder (nor a glob pattern or a list of files)")
    files = [Path(p).absolute() for p in source]
    return None, [(p, p.as_posix()) for p in files], []


_Skip = tuple[str, str, "int | None", "int | None"]  # path, reason, size, mtime_ns


def _stat(path: Path) -> tuple[int | None, int | None]:
    try:
        stat = path.stat()
    except OSError:
        return None, None
    return stat.st_size, stat.st_mtime_ns


def _plan(
    files: list[tuple[Path, str]], known: dict[str, tuple[int, int, str]], bad_before: dict[str, _Skip]
) -> tuple[list[tuple[str, str]], int, list[_Skip]]:
    """Files to embed as ``(file, name)``, how many are unchanged, and bad files not touched since.

    A file is unchanged when its size and mtime, or else its bytes, match its newest row. A
    file skipped by the previous run with the same size and mtime is not tried again.
    """
    todo: list[tuple[str, str]] = []
    unchanged = 0
    carried: list[_Skip] = []
    for path, name in files:
        stat = _stat(path)
        record = known.get(name)
        if record is not None and stat[0] is not None:
            try:
                if stat == record[:2] or file_sha256(path) == record[2]:
                    unchanged += 1
                    continue
            except OSError:
                pass  # the decode task reports it
        before = bad_before.get(name)
        if before is not None and stat[0] is not None and stat == before[2:]:
            carried.append(before)
            continue
        todo.append((str(path), name))
    return todo, unchanged, carried


# -- the pipeline ---------------------------------------------------------------------------------


def _decode(batch: dict[str, np.ndarray], preprocess: Callable, skipped_dir: str) -> Iterator[dict[str, np.ndarray]]:
    """Ray task: load, hash and preprocess a batch of files; failures go to a skipped shard."""
    good, images, bad = [], [], []
    for file, name in zip(batch["file"].tolist(), batch["name"].tolist()):
        try:
            image = load_image(file)
            stat = os.stat(file)
            digest = file_sha256(file)
        except ImageLoadError as error:
            bad.append((name, error.reason, *_stat(Path(file))))
            continue
        except OSError as error:
            bad.append((name, f"cannot read file ({error.strerror or error})", *_stat(Path(file))))
            continue
        good.append((name, stat.st_size, stat.st_mtime_ns, digest))
        images.append(image)
    if bad:
        _write_skipped(bad, Path(skipped_dir))
    if not good:
        return
    inputs = preprocess(images)
    out = {
        "path": np.array([g[0] for g in good], dtype=object),
        "size": np.array([g[1] for g in good], dtype=np.int64),
        "mtime_ns": np.array([g[2] for g in good], dtype=np.int64),
        "sha256": np.array([g[3] for g in good], dtype=object),
    }
    for key, value in inputs.items():
        out[_INPUT_PREFIX + key] = value.numpy()
    yield out


def _write_skipped(rows: list[_Skip], folder: Path) -> None:
    """One Parquet file per batch, named by its content, so a retried task overwrites its own."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    digest = hashlib.sha256("\0".join(row[0] for row in rows).encode()).hexdigest()[:24]
    table = pa.table({
        "path": pa.array([row[0] for row in rows], pa.string()),
        "reason": pa.array([row[1] for row in rows], pa.string()),
        "size": pa.array([row[2] for row in rows], pa.int64()),
        "mtime_ns": pa.array([row[3] for row in rows], pa.int64()),
    })
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{digest}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / f"{digest}.parquet")


# Fault injection for the fault-tolerance test: when this variable names a file that does
# not exist yet, the first encoder actor to get a batch creates the file and dies at once
# (as a worker killed by the OOM killer or a lost node would), exactly once per file.
CRASH_ONCE_ENV = "VSLIB_SCALE_CRASH_ONCE"


def _crash_once(marker: str | None) -> None:
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


class _EncodeActor:
    """Ray actor: holds one encoder and embeds preprocessed batches into Arrow tables."""

    def __init__(self, model: str, device: str | None, vector_dtype: str, crash_once: str | None = None) -> None:
        from vslib.encoders import load_encoder

        self.encoder = load_encoder(model, device=device)
        self.vector_type = np.float16 if vector_dtype == "f16" else np.float32
        self.crash_once = crash_once

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        import pyarrow as pa
        import torch

        _crash_once(self.crash_once)

        inputs = {key[len(_INPUT_PREFIX):]: torch.from_numpy(np.ascontiguousarray(value))
                  for key, value in batch.items() if key.startswith(_INPUT_PREFIX)}
        vectors = self.encoder.encode_inputs(inputs).astype(self.vector_type)
        n, dim = vectors.shape
        return pa.table({
            "path": pa.array(batch["path"].tolist(), pa.string()),
            "size": pa.array(batch["size"], pa.int64()),
            "mtime_ns": pa.array(batch["mtime_ns"], pa.int64()),
            "sha256": pa.array(batch["sha256"].tolist(), pa.string()),
            "model": pa.array([self.encoder.name] * n, pa.string()),
            "dim": pa.array([dim] * n, pa.int32()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        })


def embed(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    model: str,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    actors: int = 1,
    address: str | None = None,
    vector_dtype: str = "f16",
    device: str | None = None,
    rows_per_shard: int = 100_000,
) -> EmbedReport:
    """Embed every image of ``source`` with ``model`` on Ray Data and write Parquet shards to ``out``.

    ``source`` is a folder (searched recursively, paths stored relative to it), a glob
    pattern or a list of files (paths stored absolute). Files are decoded, hashed and
    preprocessed in Ray tasks, and embedded by ``actors`` encoder actors, ``batch_size``
    images at a time, on a GPU each when the cluster has them (``device`` forces one).
    Unreadable files are written to the ``skipped`` table with the reason; the job never
    stops for them. Re-running on the same ``out`` embeds only new or changed files.
    A killed actor is restarted by Ray and its batch retried, so each file is embedded once.

    Raises:
        ValueError: If ``out`` holds embeddings of another model, or an option is invalid.
        NotADirectoryError: If ``source`` is neither a folder, a pattern nor a list.

    Introduced in chapter 8.
    """
    if vector_dtype not in VECTOR_DTYPES:
        raise ValueError(f"vector_dtype must be one of {', '.join(VECTOR_DTYPES)}, got {vector_dtype!r}")
    if batch_size < 1 or actors < 1 or rows_per_shard < 1:
        raise ValueError("batch_size, actors and rows_per_shard must be at least 1")
    started = time.perf_counter()
    out = Path(out)
    root, files, listed_skips = _list_source(source)

    from vslib.encoders import load_encoder

    # The driver needs the model's name, size and preprocessing; actors load their own copy.
    driver_encoder = load_encoder(model, device="cpu")
    info = _open_output(out, driver_encoder.name, driver_encoder.dim, vector_dtype, root)
    known: dict[str, tuple[int, int, str]] = {}
    if _shard_files(out):
        table = read_embeddings(out, columns=["path", "size", "mtime_ns", "sha256"])
        known = {row["path"]: (row["size"], row["mtime_ns"], row["sha256"]) for row in table.to_pylist()}
    bad_before = {row[0]: row for row in _read_skipped_rows(_latest_skipped_run(out))}
    todo, unchanged, carried = _plan(files, known, bad_before)
    listed = [(name, reason, *_stat(root / name if root else Path(name))) for name, reason in listed_skips]
    report = EmbedReport(run=None, unchanged=unchanged)
    listed_names = {name for _, name in files} | {name for name, _ in listed_skips}
    # Only a folder is a full listing: files gone from it leave the current view.
    removed = sorted(set(known) - listed_names) if root is not None else []
    report.removed = removed
    if not todo and not removed and sorted(listed + carried) == sorted(bad_before.values()):
        report.skipped = sorted((row[0], row[1]) for row in bad_before.values())
        report.seconds = time.perf_counter() - started
        return report  # nothing new: no run is written

    run = f"run-{len(_runs(out)):05d}"
    staging_embeddings = out / EMBEDDINGS / f".{run}.tmp"
    staging_skipped = out / SKIPPED / f".{run}.tmp"
    for folder in (staging_embeddings, staging_skipped):
        shutil.rmtree(folder, ignore_errors=True)
    staging_skipped.mkdir(parents=True)
    staging_embeddings.mkdir(parents=True)
    if listed or carried:
        _write_skipped(listed + carried, staging_skipped)
    if removed:
        _write_removed(removed, staging_embeddings)
    if todo:
        _run_pipeline(todo, driver_encoder, model, staging_embeddings, staging_skipped, batch_size=batch_size,
                      actors=actors, address=address, vector_dtype=vector_dtype, device=device,
                      rows_per_shard=rows_per_shard)
    os.replace(staging_embeddings, out / EMBEDDINGS / run)
    os.replace(staging_skipped, out / SKIPPED / run)
    _write_json(out / DATASET_FILE, info)
    report.run = run
    report.embedded = _count_rows(out / EMBEDDINGS / run)
    report.skipped = [(row[0], row[1]) for row in _read_skipped_rows(out / SKIPPED / run)]
    report.seconds = time.perf_counter() - started
    return report


def _run_pipeline(
    todo: list[tuple[str, str]],
    driver_encoder: Any,
    model: str,
    embeddings_dir: Path,
    skipped_dir: Path,
    *,
    batch_size: int,
    actors: int,
    address: str | None,
    vector_dtype: str,
    device: str | None,
    rows_per_shard: int,
) -> None:
    """The Ray Data job: decode tasks, encoder actors, Parquet shards."""
    import ray.data

    resources = start_ray(address)
    gpus = float(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    # Leave half a CPU for the decode tasks, or a small machine deadlocks with busy actors.
    # Decode tasks and actors must ask for different resources, or Ray Data fuses the
    # decoding into the actors and it no longer runs in parallel tasks.
    actor_cpus = min(1.0, max(2 * _DECODE_CPUS, (cpus - 2 * _DECODE_CPUS) / actors))
    actor_options: dict[str, Any] = {"num_gpus": 1} if gpus >= actors and device is None else {}
    items = [{"file": file, "name": name} for file, name in todo]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // batch_size, 1000)))
    dataset = dataset.map_batches(
        _decode,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs={"preprocess": driver_encoder.image_preprocessor(), "skipped_dir": str(skipped_dir)},
        num_cpus=_DECODE_CPUS,
    )
    dataset = dataset.map_batches(
        _EncodeActor,
        fn_constructor_kwargs={"model": model, "device": device, "vector_dtype": vector_dtype,
                               "crash_once": os.environ.get(CRASH_ONCE_ENV)},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=actor_cpus,
        # Ray Data's actor pools restart a dead actor and retry its batch by default
        # (max_restarts=-1, max_task_retries=-1).
        **actor_options,
    )
    dataset.write_parquet(os.fspath(embeddings_dir), min_rows_per_file=rows_per_shard)


# -- the output folder ----------------------------------------------------------------------------


def _open_output(out: Path, model: str, dim: int, vector_dtype: str, root: Path | None) -> dict:
    """The output's dataset.json contents, checked against this run (refuses another model)."""
    file = out / DATASET_FILE
    if file.is_file():
        info = json.loads(file.read_text(encoding="utf-8"))
        if info.get("format") != _FORMAT:
            raise ValueError(f"{out} is not a vslib embeddings folder")
        if info["model"] != model or info["dim"] != dim:
            raise ValueError(
                f"{out} holds embeddings of model {info['model']!r} (dim {info['dim']}), not {model!r}; "
                "embeddings of different models live in different spaces: write to a new folder"
            )
        if info["vector_dtype"] != vector_dtype:
            raise ValueError(f"{out} stores {info['vector_dtype']} vectors, not {vector_dtype}")
        if (info["root"] is None) != (root is None):
            raise ValueError(f"{out} was embedded from a {'folder' if root is None else 'list of files'}; "
                             "use the same kind of source or a new folder")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not a vslib embeddings folder")
    # Paths are relative to the folder, so a moved folder keeps its rows: the newest root wins.
    return {"format": _FORMAT, "version": _VERSION, "model": model, "dim": dim,
            "vector_dtype": vector_dtype, "root": None if root is None else str(root)}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _runs(out: Path) -> list[Path]:
    """The finished runs' embedding folders, oldest first."""
    folder = Path(out) / EMBEDDINGS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("run-"))


def _shard_files(out: Path) -> list[Path]:
    return [f for run in _runs(out) for f in sorted(run.glob("*.parquet"))]


def _count_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("*.parquet"))


def _latest_skipped_run(out: Path) -> Path | None:
    runs = sorted(p for p in (Path(out) / SKIPPED).glob("run-*") if p.is_dir())
    return runs[-1] if runs else None


def _read_skipped_rows(folder: Path | None) -> list[_Skip]:
    import pyarrow.parquet as pq

    rows: list[_Skip] = []
    for file in [] if folder is None else folder.glob("*.parquet"):
        table = pq.read_table(file, columns=["path", "reason", "size", "mtime_ns"])
        rows.extend(tuple(row.values()) for row in table.to_pylist())
    return sorted(rows)


def dataset_info(out: str | os.PathLike) -> dict:
    """The ``dataset.json`` of an output folder: model, dim, vector type, root (chapter 8)."""
    file = Path(out) / DATASET_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{out} holds no embeddings (no {DATASET_FILE})")
    return json.loads(file.read_text(encoding="utf-8"))


def _write_removed(names: list[str], run_folder: Path) -> None:
    _write_json(run_folder / REMOVED_FILE, {"removed": names})


def _current_rows(out: Path) -> tuple[list[Path], list[list[str]], list[np.ndarray]]:
    """The shard files, their paths, and per shard the rows that are current.

    A row is current when it is its path's newest and no later run saw the file gone.
    """
    import pyarrow.parquet as pq

    runs = _runs(out)
    run_of = {run: i for i, run in enumerate(runs)}
    files = _shard_files(out)
    paths = [pq.read_table(f, columns=["path"]).column("path").to_pylist() for f in files]
    newest: dict[str, tuple[int, int, int]] = {}
    for s, (file, names) in enumerate(zip(files, paths)):
        for r, name in enumerate(names):
            newest[name] = (s, r, run_of[file.parent])
    gone: dict[str, int] = {}
    for run in runs:
        if (run / REMOVED_FILE).is_file():
            for name in json.loads((run / REMOVED_FILE).read_text(encoding="utf-8"))["removed"]:
                gone[name] = run_of[run]
    live: list[list[int]] = [[] for _ in files]
    for name, (s, r, run_index) in newest.items():
        if gone.get(name, -1) < run_index:
            live[s].append(r)
    return files, paths, [np.array(sorted(rows), dtype=np.int64) for rows in live]


def read_embeddings(out: str | os.PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """The current embeddings of an output folder as one Arrow table, the newest row per path.

    Introduced in chapter 8.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files, _, live = _current_rows(Path(out))
    if not files:
        raise FileNotFoundError(f"{out} holds no embeddings")
    wanted = None if columns is None else list(columns)
    return pa.concat_tables(pq.read_table(f, columns=wanted).take(pa.array(rows)) for f, rows in zip(files, live))


def read_skipped(out: str | os.PathLike) -> list[tuple[str, str]]:
    """``(path, reason)`` of the files the latest run could not embed (chapter 8).

    Bad files are tried again on every run, so the latest run's list is the current one.
    """
    return [(row[0], row[1]) for row in _read_skipped_rows(_latest_skipped_run(Path(out)))]


def vectors_of(table: pa.Table) -> np.ndarray:
    """The ``vector`` column of an embeddings table as a float32 ``(n, dim)`` array (chapter 8)."""
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


def to_image_index(out: str | os.PathLike, dtype: str = "f16") -> ImageIndex:
    """An :class:`~vslib.index.ImageIndex` of an output folder's current embeddings.

    Paths stay relative to the embedded folder, so ``vslib search`` and ``vslib app`` find
    the files. Sizes, times and hashes are read from the files again, as
    :meth:`ImageIndex.add` does. Introduced in chapter 8.
    """
    info = dataset_info(out)
    table = read_embeddings(out, columns=["path", "vector"])
    index = ImageIndex(info["dim"], info["model"], dtype=dtype)
    index.root = None if info["root"] is None else Path(info["root"])
    index.add(table.column("path").to_pylist(), vectors_of(table), model=info["model"])
    return index


def shards_folder(index_path: str | os.PathLike) -> Path:
    """Where ``vslib index --engine ray`` keeps an index's Parquet shards: ``INDEX.parquet`` beside it.

    Introduced in chapter 8.
    """
    path = Path(index_path)
    return path.with_name(path.name + ".parquet")


def index_folder(
    root: str | os.PathLike,
    model: str,
    index_path: str | os.PathLike,
    *,
    dtype: str = "f16",
    batch_size: int = 32,
    actors: int = 1,
    address: str | None = None,
    device: str | None = None,
) -> tuple[EmbedReport, ImageIndex]:
    """``vslib index --engine ray``: embed ``root`` on Ray, then save an ImageIndex of the shards.

    The shards live in :func:`shards_folder`, so a re-run embeds only what changed; the
    index is rebuilt from them and saved to ``index_path``. Introduced in chapter 8.
    """
    out = shards_folder(index_path)
    report = embed(root, model, out, batch_size=batch_size, actors=actors, address=address, device=device)
    index = to_image_index(out, dtype=dtype)
    index.save(index_path)
    return report, index


# -- sharded indexes ------------------------------------------------------------------------------


def _build_shard(file: str, rows: np.ndarray, first_key: int, dtype: str, target: str) -> int:
    """Ray task: one USearch index of some rows of one Parquet shard, saved to ``target``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from usearch.index import Index

    table = pq.read_table(file, columns=["vector"]).take(pa.array(rows))
    vectors = vectors_of(table)
    index = Index(ndim=vectors.shape[1], metric="cos", dtype=dtype, connectivity=DEFAULT_CONNECTIVITY,
                  expansion_add=DEFAULT_EXPANSION_ADD, expansion_search=DEFAULT_EXPANSION_SEARCH)
    keys = np.arange(first_key, first_key + len(vectors), dtype=np.uint64)
    index.add(keys, vectors, threads=1)
    index.save(target)
    return len(vectors)


def build_shard_indexes(out: str | os.PathLike, dtype: str = "f16", address: str | None = None) -> list[Path]:
    """Build one USearch index per Parquet shard, in parallel Ray tasks; returns their files.

    Keys are numbered across shards (``shards/keys.parquet`` maps them to paths), so
    :class:`ShardedIndex` can search all shards together. Rows replaced by a newer run are
    left out. Introduced in chapter 8.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    out = Path(out)
    files, paths, live = _current_rows(out)
    if not files:
        raise FileNotFoundError(f"{out} holds no embeddings")
    folder = out / SHARDS
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start_ray(address)
    build = ray.remote(num_cpus=1)(_build_shard)
    pending, targets, keys, names = [], [], [], []
    next_key = 0
    for i, (file, rows) in enumerate(zip(files, live)):
        if len(rows) == 0:
            continue
        target = folder / f"shard-{i:05d}.usearch"
        pending.append(build.remote(str(file), rows, next_key, dtype, str(target)))
        targets.append(target)
        keys.extend(range(next_key, next_key + len(rows)))
        names.extend(paths[i][r] for r in rows.tolist())
        next_key += len(rows)
    ray.get(pending)
    pq.write_table(pa.table({"key": pa.array(keys, pa.uint64()), "path": names}), folder / "keys.parquet")
    return targets


class ShardedIndex:
    """Several USearch shard indexes searched as one (usearch's multi-index ``Indexes``).

    Opened memory-mapped (``view=True``): instant, shared between processes, read-only.
    Introduced in chapter 8.
    """

    def __init__(self, out: str | os.PathLike, view: bool = True) -> None:
        import pyarrow.parquet as pq
        from usearch.index import Indexes

        folder = Path(out) / SHARDS
        self.files = sorted(folder.glob("shard-*.usearch"))
        if not self.files or not (folder / "keys.parquet").is_file():
            raise FileNotFoundError(f"{out} has no shard indexes: run build_shard_indexes first")
        self.dim = int(dataset_info(out)["dim"])
        keys = pq.read_table(folder / "keys.parquet")
        self._paths = dict(zip(keys.column("key").to_pylist(), keys.column("path").to_pylist()))
        self._indexes = Indexes(paths=[os.fspath(f) for f in self.files], view=view)

    def __len__(self) -> int:
        return len(self._paths)

    def search(self, query: np.ndarray, k: int = 10) -> list[SearchHit] | list[list[SearchHit]]:
        """The ``k`` most similar images over all shards, best first, as :meth:`ImageIndex.search`.

        ``query`` is one vector (returns a list of hits) or a matrix (one list per row).
        """
        from usearch.index import Matches

        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        matrix = np.asarray(query, dtype=np.float32)
        single = matrix.ndim == 1
        matrix = np.atleast_2d(matrix)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"query has shape {np.shape(query)}, the shards hold dimension {self.dim}")
        matrix = np.ascontiguousarray(matrix / np.linalg.norm(matrix, axis=1, keepdims=True))
        result = self._indexes.search(matrix, min(k, len(self)))
        if isinstance(result, Matches):
            rows = [(result.keys, result.distances)]
        else:
            rows = [(result.keys[i, :n], result.distances[i, :n]) for i, n in enumerate(result.counts)]
        hits = [[SearchHit(self._paths[int(key)], int(key), float(np.clip(1.0 - d, -1.0, 1.0)))
                 for key, d in zip(keys.tolist(), distances.tolist())] for keys, distances in rows]
        return hits[0] if single else hits
