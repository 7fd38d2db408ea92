"""Helpers shared by the benchmark scripts: machine description, result files, test data, exact k-NN.

The scripts in this folder import it as a sibling module (``python benchmarks/<script>.py`` puts
this folder on ``sys.path``); ``tests/test_benchmarks.py`` loads it by path.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: CPU flags that decide how fast low-precision arithmetic is (reported when present).
_INTERESTING_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni",
                      "amx_bf16", "amx_tile", "asimd", "sve")


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The vector-arithmetic flags of :data:`_INTERESTING_FLAGS` that this CPU reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                have = set(line.split(":", 1)[1].split())
                return [flag for flag in _INTERESTING_FLAGS if flag in have]
    except OSError:
        pass
    return []


def _version(module: str) -> str | None:
    try:
        imported = __import__(module)
    except Exception:  # an optional library may be missing or broken
        return None
    return str(getattr(imported, "__version__", "unknown"))


def machine_info(extra_modules: Sequence[str] = ()) -> dict:
    """Where a benchmark ran: OS, CPU, core count, thread settings and library versions."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    modules = ("numpy", "torch", "transformers", "usearch", "PIL", *extra_modules)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "usable_cores": cores,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                       if k in os.environ},
        "versions": {m if m != "PIL" else "pillow": _version(m) for m in modules},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def load_average() -> float | None:
    """The one-minute load average (other work running beside a benchmark shows up here)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def command_line() -> str:
    """The command that started this script, as a reader would type it."""
    return " ".join([Path(sys.executable).name, *sys.argv])


def write_result(name: str, result: dict, out_dir: Path = RESULTS_DIR) -> Path:
    """Write ``<out_dir>/<name>.json`` (sorted keys, 2-space indent) with a UTC timestamp and the command."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "created_utc": utc_now(),
        "command": command_line(),
        **result,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


def print_table(rows: Iterable[Sequence], header: Sequence[str]) -> str:
    """Print (and return) rows as a plain, right-aligned text table."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


class Stopwatch:
    """``with Stopwatch() as t: ...`` then ``t.seconds`` (wall clock, ``time.perf_counter``)."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


# -- data for the index benchmark ----------------------------------------------------------------


def clustered_unit_vectors(
    n: int,
    dim: int,
    centres: np.ndarray,
    spread: np.ndarray,
    weights: np.ndarray,
    rng: np.random.Generator,
    chunk: int = 20_000,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 unit vectors from a Gaussian mixture on the sphere, and their component ids.

    Each vector is ``centre + spread[c] * N(0, I)`` for a component ``c`` drawn with ``weights``,
    normalised to unit length. Generated in chunks to keep the float64 intermediates small.
    """
    centres = np.asarray(centres, dtype=np.float32)
    if centres.shape[1] != dim:
        raise ValueError(f"centres have dimension {centres.shape[1]}, expected {dim}")
    labels = rng.choice(len(centres), size=n, p=weights)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        part = labels[start : start + chunk]
        noise = rng.standard_normal((len(part), dim), dtype=np.float32)
        block = centres[part] + noise * spread[part, None].astype(np.float32)
        out[start : start + len(part)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, labels


def gaussian_mixture(n_components: int, dim: int, rng: np.random.Generator, cosine_to_centre: float = 0.7):
    """Centres (unit vectors), per-component noise scales and weights of a mixture on the sphere.

    The noise scale is set so that a vector's cosine with its own centre is about
    ``cosine_to_centre`` (varied by up to 30% per component, so clusters differ in tightness);
    the weights are drawn from a flat Dirichlet, so cluster sizes differ too.
    """
    centres = rng.standard_normal((n_components, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # |noise|^2 ~ dim * s^2 and cos = 1 / sqrt(1 + dim * s^2)
    base = np.sqrt((1.0 / cosine_to_centre**2 - 1.0) / dim)
    spread = base * rng.uniform(0.7, 1.3, size=n_components)
    weights = rng.dirichlet(np.ones(n_components))
    return centres.astype(np.float32), spread, weights


def exact_topk(queries: np.ndarray, data: np.ndarray, k: int, chunk: int = 25_000) -> np.ndarray:
    """Indices of the ``k`` largest inner products of each query with ``data``, best first.

    A matrix product per chunk of ``data`` rows, ``argpartition`` for each chunk's top ``k``,
    then a merge: memory stays at ``len(queries) * chunk`` scores. For unit vectors this is
    exact cosine search.
    """
    queries = np.atleast_2d(queries)
    k = min(k, len(data))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(data), chunk):
        scores = queries @ data[start : start + chunk].T
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        best_ids = np.concatenate([best_ids, part + start], axis=1)
        if best_scores.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
            best_ids = np.take_along_axis(best_ids, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1)


def recall_at_k(found: Sequence[Sequence[int]] | np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of each query's true top ``k`` that appears in its first ``k`` results."""
    hits = [len(set(np.asarray(f[:k]).tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]
    return float(np.mean(hits))
