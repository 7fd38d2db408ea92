"""Vector-index speed and recall: USearch (through vslib.ImageIndex), NumPy and FAISS on 200k x 768.

    python benchmarks/index_speed.py            # full run: 200,000 vectors, 1,000 queries, 14-minute budget
    python benchmarks/index_speed.py --quick    # smoke run: 20,000 vectors, results in a temporary folder

The data stands in for image embeddings: unit vectors drawn from a seeded Gaussian mixture of
300 centres on the sphere (each vector's cosine with its centre is about 0.7; clusters differ
in size and tightness). The 1,000 queries come from the same mixture but are not in the index.

Methods, all with k = 10 and cosine similarity (inner product of unit vectors):

- ``numpy-exact``: a float32 matrix product in chunks of 25,000 rows and ``argpartition``; its
  result is the ground truth every recall is measured against.
- ``usearch-f16`` / ``usearch-i8`` / ``usearch-f32``: HNSW graphs built with
  ``vslib.ImageIndex.add_vectors`` and searched with ``ImageIndex.search``, with vslib's defaults
  (connectivity 32, expansion_add 128, expansion_search 512); expansion_search is also swept
  (32 to 512) on the batch of queries.
- ``usearch-exact-<dtype>``: ``ImageIndex.search(..., exact=True)``, brute force over the same
  stored vectors; timed on the first 200 queries (batch) and 50 (one by one), as it is slow.
- ``faiss-flat``, ``faiss-hnsw`` and ``faiss-hnsw-sq16`` (``IndexFlatIP``; ``IndexHNSWFlat`` with
  M 32, efConstruction 128, efSearch 512 and the same sweep; ``IndexHNSWSQ`` with
  ``ScalarQuantizer.QT_fp16``, FAISS's HNSW over fp16 vectors, the counterpart of usearch-f16,
  with the same settings), when ``faiss-cpu`` is installed (``pip install -e .[bench]``);
  otherwise they are skipped with the reason, and the rest is measured.

For each: build time, queries/s for the batch of queries and for single queries one by one
(1,000 for graphs, 50 for exact methods), recall@10 against the exact top 10, and bytes per
vector of the saved file (for vslib, the USearch file; its metadata file is reported apart).

Building a 200k x 768 HNSW graph with these settings takes minutes on 2 cores, so the script
keeps to a time budget (``--budget-min``, 0 for none): NumPy and usearch-f16 always run, then
faiss-flat, usearch-i8, faiss-hnsw and usearch-f32 in that order, each only if its estimated
time (scaled from usearch-f16's) still fits, then faiss-hnsw-sq16; what is left out is
recorded with the reason.
On a 2-core machine the full set takes two runs of under 15 minutes each:

    python benchmarks/index_speed.py                                          # numpy, f16, faiss-flat, i8
    python benchmarks/index_speed.py --methods usearch-f32,faiss-hnsw --merge # the rest

``--methods`` runs exactly the named methods (NumPy always runs, as the ground truth);
``--merge`` keeps the other methods' rows from the existing result file when it was made from
the same data, and lists every run that contributed under ``runs``. ``--name`` writes a result
of its own instead; the fp16 comparison of USearch and FAISS in the book's appendix is

    python benchmarks/index_speed.py --vectors 50000 --queries 500 --name index_fp16 \
        --methods usearch-f16,faiss-hnsw,faiss-hnsw-sq16

Target: usearch-f16 with recall@10 >= 0.99 at >= 10x the queries/s of numpy-exact.

Writes ``benchmarks/results/index_speed.json`` and ``index_speed.png`` (``<name>.json`` and
``<name>.png`` with ``--name``).
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import (
    RESULTS_DIR,
    Stopwatch,
    clustered_unit_vectors,
    command_line,
    exact_topk,
    gaussian_mixture,
    load_average,
    machine_info,
    print_table,
    recall_at_k,
    utc_now,
    write_result,
)
from vslib.index import DEFAULT_CONNECTIVITY, DEFAULT_EXPANSION_ADD, DEFAULT_EXPANSION_SEARCH, ImageIndex

NAME = "index_speed"
K = 10
DIM = 768
CLUSTERS = 300
SWEEP = (32, 64, 128, 256, 512)
TARGET_RECALL = 0.99
TARGET_SPEEDUP = 10.0
TARGET_METHOD = "usearch-f16"


def make_data(n: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indexed vectors and held-out queries from one seeded mixture (separate random streams)."""
    mixture = gaussian_mixture(CLUSTERS, DIM, np.random.default_rng([seed, 0]))
    data, _ = clustered_unit_vectors(n, DIM, *mixture, rng=np.random.default_rng([seed, 1]))
    queries, _ = clustered_unit_vectors(n_queries, DIM, *mixture, rng=np.random.default_rng([seed, 2]))
    return data, queries


def qps(n: int, seconds: float) -> float:
    return round(n / seconds, 2)


def time_single(search, queries: np.ndarray) -> tuple[float, list]:
    """Queries one by one (a Python loop, as an application serving requests would call it)."""
    found = []
    with Stopwatch() as watch:
        for q in queries:
            found.append(search(q))
    return watch.seconds, found


# -- NumPy ---------------------------------------------------------------------------------------


def bench_numpy(data, queries, n_single: int, tmp: Path) -> tuple[dict, np.ndarray]:
    exact_topk(queries[:8], data[:50_000], K)  # warm-up (BLAS threads, page faults)
    load = load_average()
    with Stopwatch() as batch:
        truth = exact_topk(queries, data, K)
    single_s, _ = time_single(lambda q: exact_topk(q[None], data, K)[0], queries[:n_single])
    np.save(tmp / "vectors.npy", data)
    size = (tmp / "vectors.npy").stat().st_size
    (tmp / "vectors.npy").unlink()
    return {
        "method": "numpy-exact", "library": "numpy", "kind": "exact", "dtype": "f32",
        "build_s": 0.0, "batch_qps": qps(len(queries), batch.seconds), "batch_s": round(batch.seconds, 3),
        "batch_queries": len(queries),
        "single_qps": qps(n_single, single_s), "single_queries": n_single, "recall_at_10": 1.0,
        "file_bytes": size, "bytes_per_vector": round(size / len(data), 1), "load_average_before": load,
        "params": {"chunk_rows": 25_000},
    }, truth


# -- USearch through vslib -----------------------------------------------------------------------


def _keys(hits) -> list[int]:
    return [h.key for h in hits]


def bench_usearch(dtype: str, data, queries, truth, n_single: int, n_single_exact: int, n_batch_exact: int,
                  tmp: Path, sweep: tuple[int, ...]) -> tuple[list[dict], list[dict]]:
    index = ImageIndex(DIM, model="benchmark-vectors", dtype=dtype)  # vslib's default HNSW settings
    load = load_average()
    with Stopwatch() as build:
        index.add_vectors(data)
    rows, sweep_rows = [], []
    default_hits, default_s = None, None
    for ef in sweep:  # ends with vslib's default, whose batch result is the method's headline figure
        index.expansion_search = ef
        index.search(queries[:8], k=K)  # warm-up at this setting
        with Stopwatch() as watch:
            hits = index.search(queries, k=K)
        single_s, _ = time_single(lambda q: index.search(q, k=K), queries[:n_single])
        sweep_rows.append({"method": f"usearch-{dtype}", "expansion_search": ef,
                           "batch_qps": qps(len(queries), watch.seconds), "single_qps": qps(n_single, single_s),
                           "recall_at_10": round(recall_at_k([_keys(h) for h in hits], truth, K), 4)})
        if ef == DEFAULT_EXPANSION_SEARCH:  # the headline row reuses this setting's timings
            default_hits, default_s, default_single_s = hits, watch.seconds, single_s
    index.expansion_search = DEFAULT_EXPANSION_SEARCH
    recall = recall_at_k([_keys(h) for h in default_hits], truth, K)
    folder = index.save(tmp / f"usearch-{dtype}")
    vectors_file = next(folder.glob("vectors-*.usearch"))
    size, manifest = vectors_file.stat().st_size, (folder / "index.json").stat().st_size
    rows.append({
        "method": f"usearch-{dtype}", "library": "usearch (vslib.ImageIndex)", "kind": "hnsw", "dtype": dtype,
        "build_s": round(build.seconds, 2), "batch_qps": qps(len(queries), default_s),
        "batch_s": round(default_s, 3), "batch_queries": len(queries), "single_qps": qps(n_single, default_single_s),
        "single_queries": n_single, "recall_at_10": round(recall, 4), "file_bytes": size,
        "bytes_per_vector": round(size / len(data), 1),
        "metadata_bytes_per_vector": round(manifest / len(data), 1), "load_average_before": load,
        "params": {"connectivity": index.connectivity, "expansion_add": index.expansion_add,
                   "expansion_search": index.expansion_search},
    })
    # Brute force over the same stored vectors (the ground truth vslib's recall_at_k uses).
    # Brute force without BLAS is slow at this size: a subset of the queries.
    subset = queries[:n_batch_exact]
    with Stopwatch() as exact:
        hits = index.search(subset, k=K, exact=True)
    exact_recall = recall_at_k([_keys(h) for h in hits], truth[:n_batch_exact], K)
    single_s, _ = time_single(lambda q: index.search(q, k=K, exact=True), queries[:n_single_exact])
    rows.append({
        "method": f"usearch-exact-{dtype}", "library": "usearch (vslib.ImageIndex)", "kind": "exact", "dtype": dtype,
        "build_s": None, "batch_qps": qps(len(subset), exact.seconds), "batch_s": round(exact.seconds, 3),
        "batch_queries": len(subset),
        "single_qps": qps(n_single_exact, single_s), "single_queries": n_single_exact,
        "recall_at_10": round(exact_recall, 4), "file_bytes": size, "bytes_per_vector": round(size / len(data), 1),
        "load_average_before": load_average(), "params": {"exact": True},
    })
    del index
    gc.collect()
    return rows, sweep_rows


# -- FAISS ---------------------------------------------------------------------------------------


def faiss_status() -> dict:
    try:
        import faiss
    except Exception as error:  # not installed, or a broken wheel
        return {"available": False, "reason": f"{type(error).__name__}: {error}"}
    return {"available": True, "version": faiss.__version__, "threads": faiss.omp_get_max_threads()}


def bench_faiss_flat(data, queries, truth, n_single_exact: int, tmp: Path) -> tuple[list[dict], list[dict]]:
    """Exact inner product (cosine on unit vectors); batches go through BLAS."""
    import faiss

    rows: list[dict] = []
    flat = faiss.IndexFlatIP(DIM)
    load = load_average()
    with Stopwatch() as build:
        flat.add(data)
    flat.search(queries[:8], K)
    with Stopwatch() as batch:
        _, ids = flat.search(queries, K)
    single_s, _ = time_single(lambda q: flat.search(q[None], K), queries[:n_single_exact])
    faiss.write_index(flat, str(tmp / "flat.faiss"))
    size = (tmp / "flat.faiss").stat().st_size
    rows.append({
        "method": "faiss-flat", "library": "faiss", "kind": "exact", "dtype": "f32",
        "build_s": round(build.seconds, 2), "batch_qps": qps(len(queries), batch.seconds),
        "batch_s": round(batch.seconds, 3), "batch_queries": len(queries), "single_qps": qps(n_single_exact, single_s),
        "single_queries": n_single_exact, "recall_at_10": round(recall_at_k(ids, truth, K), 4),
        "file_bytes": size, "bytes_per_vector": round(size / len(data), 1), "load_average_before": load,
        "params": {"index": "IndexFlatIP"},
    })
    del flat
    (tmp / "flat.faiss").unlink()
    gc.collect()
    return rows, []


#: FAISS HNSW variants: method name -> (stored dtype, index class name).
FAISS_HNSW = {"faiss-hnsw": ("f32", "IndexHNSWFlat"), "faiss-hnsw-sq16": ("f16", "IndexHNSWSQ")}


def faiss_hnsw_index(method: str, dim: int = DIM):
    """An empty FAISS HNSW index with vslib's graph settings, inner product (cosine on unit vectors).

    ``faiss-hnsw`` stores float32 vectors (``IndexHNSWFlat``); ``faiss-hnsw-sq16`` stores them as
    fp16 through the scalar quantiser (``IndexHNSWSQ`` with ``QT_fp16``), as usearch-f16 does.
    """
    import faiss

    if method == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(dim, DEFAULT_CONNECTIVITY, faiss.METRIC_INNER_PRODUCT)
    elif method == "faiss-hnsw-sq16":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, DEFAULT_CONNECTIVITY,
                                  faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown FAISS HNSW method {method!r}; choose from {', '.join(FAISS_HNSW)}")
    index.hnsw.efConstruction = DEFAULT_EXPANSION_ADD
    return index


def bench_faiss_hnsw(data, queries, truth, n_single: int, tmp: Path, sweep: tuple[int, ...],
                     method: str = "faiss-hnsw") -> tuple[list[dict], list[dict]]:
    """HNSW with vslib's graph settings (M = connectivity; level 0 keeps 2M links in both libraries)."""
    import faiss

    rows, sweep_rows = [], []
    hnsw = faiss_hnsw_index(method, data.shape[1])
    load = load_average()
    with Stopwatch() as build:
        if not hnsw.is_trained:  # fp16 needs no training; other quantisers would
            hnsw.train(data)
        hnsw.add(data)
    for ef in sweep:
        hnsw.hnsw.efSearch = ef
        hnsw.search(queries[:8], K)
        with Stopwatch() as watch:
            _, ids = hnsw.search(queries, K)
        single_s, _ = time_single(lambda q: hnsw.search(q[None], K), queries[:n_single])
        sweep_rows.append({"method": method, "expansion_search": ef,
                           "batch_qps": qps(len(queries), watch.seconds), "single_qps": qps(n_single, single_s),
                           "recall_at_10": round(recall_at_k(ids, truth, K), 4)})
        if ef == DEFAULT_EXPANSION_SEARCH:  # the headline row reuses this setting's timings
            default_ids, default_s, default_single_s = ids, watch.seconds, single_s
    hnsw.hnsw.efSearch = DEFAULT_EXPANSION_SEARCH
    faiss.write_index(hnsw, str(tmp / "hnsw.faiss"))
    size = (tmp / "hnsw.faiss").stat().st_size
    dtype, kind = FAISS_HNSW[method]
    rows.append({
        "method": method, "library": "faiss", "kind": "hnsw", "dtype": dtype,
        "build_s": round(build.seconds, 2), "batch_qps": qps(len(queries), default_s),
        "batch_s": round(default_s, 3), "batch_queries": len(queries), "single_qps": qps(n_single, default_single_s),
        "single_queries": n_single, "recall_at_10": round(recall_at_k(default_ids, truth, K), 4), "file_bytes": size,
        "bytes_per_vector": round(size / len(data), 1), "load_average_before": load,
        "params": {"index": kind, "M": DEFAULT_CONNECTIVITY, "efConstruction": DEFAULT_EXPANSION_ADD,
                   "efSearch": DEFAULT_EXPANSION_SEARCH,
                   **({"quantizer": "QT_fp16"} if kind == "IndexHNSWSQ" else {})},
    })
    del hnsw
    (tmp / "hnsw.faiss").unlink()
    gc.collect()
    return rows, sweep_rows


# -- targets and figure --------------------------------------------------------------------------


def targets(rows: list[dict], sweep_rows: list[dict]) -> dict:
    """The target at vslib's default settings, and the fastest swept setting that would meet it."""
    by = {r["method"]: r for r in rows}
    mine, numpy_row = by[TARGET_METHOD], by["numpy-exact"]
    batch_speedup = mine["batch_qps"] / numpy_row["batch_qps"]
    single_speedup = mine["single_qps"] / numpy_row["single_qps"]
    good = [r for r in sweep_rows if r["method"] == TARGET_METHOD and r["recall_at_10"] >= TARGET_RECALL]
    best = max(good, key=lambda r: r["batch_qps"], default=None)
    return {
        "method": TARGET_METHOD, "recall_target": TARGET_RECALL, "speedup_target": TARGET_SPEEDUP,
        "expansion_search": DEFAULT_EXPANSION_SEARCH,
        "recall_at_10": mine["recall_at_10"], "recall_met": mine["recall_at_10"] >= TARGET_RECALL,
        "batch_speedup_over_numpy": round(batch_speedup, 2), "batch_met": batch_speedup >= TARGET_SPEEDUP,
        "single_speedup_over_numpy": round(single_speedup, 2), "single_met": single_speedup >= TARGET_SPEEDUP,
        "met": mine["recall_at_10"] >= TARGET_RECALL and batch_speedup >= TARGET_SPEEDUP
        and single_speedup >= TARGET_SPEEDUP,
        "best_swept": None if best is None else {
            "expansion_search": best["expansion_search"], "recall_at_10": best["recall_at_10"],
            "batch_speedup_over_numpy": round(best["batch_qps"] / numpy_row["batch_qps"], 2),
            "batch_met": best["batch_qps"] / numpy_row["batch_qps"] >= TARGET_SPEEDUP,
            "single_speedup_over_numpy": (round(best["single_qps"] / numpy_row["single_qps"], 2)
                                          if "single_qps" in best else None),
            "single_met": "single_qps" in best and best["single_qps"] / numpy_row["single_qps"] >= TARGET_SPEEDUP,
        },
    }


def save_figure(rows: list[dict], sweep_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in dict.fromkeys(r["method"] for r in sweep_rows):
        pts = sorted((r["recall_at_10"], r["batch_qps"], r["expansion_search"]) for r in sweep_rows
                     if r["method"] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{method} (ef sweep)")
    for r in rows:
        if r["kind"] == "exact":
            ax.scatter([r["recall_at_10"]], [r["batch_qps"]], marker="s", s=30, label=r["method"])
    ax.set_yscale("log")
    ax.set_xlabel("recall@10 (against exact top 10)")
    ax.set_ylabel("queries / s (batch of queries)")
    ax.axvline(TARGET_RECALL, ls=":", color="grey")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("Recall against speed", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------


#: faiss-hnsw-sq16's build and search time relative to usearch-f16's: 0.4 and 2.5 in two runs of
#: the fp16 comparison (50,000 vectors) on a loaded 2-core machine, so a middle value.
FAISS_SQ16_COST = 1.0
#: Methods after the first two, in the order they run, with their cost relative to usearch-f16
#: (build and search, measured on this kind of data): what is left out first when time runs short.
OPTIONAL = (("faiss-flat", 0.05), ("usearch-i8", 0.8), ("faiss-hnsw", 0.5), ("usearch-f32", 1.1),
            ("faiss-hnsw-sq16", FAISS_SQ16_COST))
METHODS = ("numpy-exact", "usearch-f16", *(name for name, _ in OPTIONAL))
#: Settings that must agree for rows of two runs to sit in one table.
SAME_DATA = ("vectors", "dim", "queries", "k", "clusters", "seed")


def parse_methods(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in METHODS]
    if unknown or not names:
        raise SystemExit(f"--methods: unknown {unknown or 'empty list'}; choose from {', '.join(METHODS)}")
    return names


def merge_previous(result: dict, path: Path) -> dict:
    """Keep the rows of methods this run did not measure from the result file at ``path``.

    Only when that file was made from the same data (``SAME_DATA`` settings); otherwise it is replaced.
    """
    if not path.exists():
        print(f"--merge: no {path.name} yet; writing this run alone", flush=True)
        return result
    old = json.loads(path.read_text())
    differ = [k for k in SAME_DATA if old.get("settings", {}).get(k) != result["settings"][k]]
    if differ:
        print(f"--merge: {path.name} was made from other data ({', '.join(differ)} differ); replacing it", flush=True)
        return result
    measured = {r["method"] for r in result["methods"]}
    if "numpy-exact" not in result["requested_methods"]:
        measured.discard("numpy-exact")  # the reference of this run only; the old row stays
        result["methods"] = [r for r in result["methods"] if r["method"] != "numpy-exact"]
    measured_base = {m.replace("usearch-exact-", "usearch-") for m in measured}
    keep = [r for r in old["methods"] if r["method"].replace("usearch-exact-", "usearch-") not in measured_base]
    result["methods"] = sorted(keep + result["methods"], key=lambda r: _method_order(r["method"]))
    result["sweep"] = [r for r in old["sweep"] if r["method"] not in measured] + result["sweep"]
    result["skipped"] = [r for r in old["skipped"] if r["method"] not in measured_base] + result["skipped"]
    result["runs"] = old.get("runs", [_run_record(old)]) + result["runs"]
    return result


def _method_order(method: str) -> int:
    return METHODS.index(method.replace("usearch-exact-", "usearch-")) * 2 + method.startswith("usearch-exact")


def _run_record(result: dict) -> dict:
    """What one run measured, when, and how long it took."""
    reference = next((r for r in result["methods"] if r["method"] == "numpy-exact"), None)
    return {
        "created_utc": result.get("created_utc"), "command": result.get("command"),
        "wall_seconds": result["wall_seconds"],
        "methods": sorted({r["method"] for r in result["methods"]}, key=_method_order),
        "numpy_exact_batch_qps": reference and reference["batch_qps"],
        "numpy_exact_single_qps": reference and reference["single_qps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 vectors, temporary results folder")
    parser.add_argument("--vectors", type=int, default=None, help="indexed vectors (default 200,000; quick 20,000)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--budget-min", type=float, default=14.0,
                        help="stop starting new methods that would not finish within this many minutes "
                             "(0: no limit, run every method)")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated methods to run, no budget applied ({', '.join(METHODS)}); "
                             "NumPy always runs as the ground truth")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other methods' rows from the existing result file (same data only)")
    parser.add_argument("--name", default=NAME,
                        help=f"result file name without extension (default {NAME}); a separate comparison, "
                             "such as the fp16 one, gets a name of its own")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help=f"where results go (default: {RESULTS_DIR}, or a temporary folder with --quick)")
    args = parser.parse_args()
    requested = parse_methods(args.methods)
    n = args.vectors or (20_000 if args.quick else 200_000)
    out_dir = args.out_dir or (Path(tempfile.gettempdir()) / "vslib-bench-quick" if args.quick else RESULTS_DIR)
    n_single = args.queries
    n_single_exact = min(args.queries, 50)
    n_batch_exact = min(args.queries, 200)
    budget = args.budget_min * 60 if args.budget_min > 0 else float("inf")
    started = time.perf_counter()
    machine = machine_info(extra_modules=("faiss",))

    with Stopwatch() as gen:
        data, queries = make_data(n, args.queries)
    print(f"{n:,} x {DIM} vectors and {len(queries)} queries from a {CLUSTERS}-centre mixture in {gen.seconds:.1f} s",
          flush=True)
    rows: list[dict] = []
    sweep_rows: list[dict] = []
    skipped: list[dict] = []
    status = faiss_status()

    def done(what: str) -> None:
        print(f"  {what} done ({time.perf_counter() - started:.0f} s, load {load_average()})", flush=True)

    with tempfile.TemporaryDirectory(prefix="vslib-index-bench-") as tmp:
        tmp = Path(tmp)
        row, truth = bench_numpy(data, queries, n_single_exact, tmp)
        rows.append(row)
        done("numpy-exact")
        f16_seconds = None
        if requested is None or "usearch-f16" in requested:
            with Stopwatch() as f16_watch:
                more, sweeps = bench_usearch("f16", data, queries, truth, n_single, n_single_exact, n_batch_exact,
                                             tmp, SWEEP)
            f16_seconds = f16_watch.seconds
            rows += more
            sweep_rows += sweeps
            done("usearch-f16")
        for method, relative_cost in OPTIONAL:
            if requested is not None and method not in requested:
                continue
            if method.startswith("faiss") and not status["available"]:
                reason = f"FAISS unavailable ({status['reason']}); pip install -e '.[bench]' to measure it"
                skipped.append({"method": method, "reason": reason})
                print(f"  {method} skipped: {reason}", flush=True)
                continue
            estimate = relative_cost * f16_seconds if f16_seconds else 0.0  # named methods: no budget
            left = budget - (time.perf_counter() - started)
            if requested is None and estimate > left:
                reason = (f"time budget: estimated {estimate:.0f} s (from usearch-f16's {f16_seconds:.0f} s), "
                          f"{max(left, 0):.0f} s of the {args.budget_min:g} min budget left")
                skipped.append({"method": method, "reason": reason})
                print(f"  {method} skipped: {reason}", flush=True)
                continue
            if method == "faiss-flat":
                more, sweeps = bench_faiss_flat(data, queries, truth, n_single_exact, tmp)
            elif method in FAISS_HNSW:
                more, sweeps = bench_faiss_hnsw(data, queries, truth, n_single, tmp, SWEEP, method)
            else:
                more, sweeps = bench_usearch(method.split("-")[1], data, queries, truth, n_single, n_single_exact,
                                             n_batch_exact, tmp, SWEEP)
            rows += more
            sweep_rows += sweeps
            done(method)

    print()
    print_table([(r["method"], r["build_s"], r["batch_qps"], r["single_qps"], r["recall_at_10"], r["bytes_per_vector"])
                 for r in rows], ["method", "build s", "batch q/s", "single q/s", "recall@10", "bytes/vector"])
    print()
    print_table([(r["method"], r["expansion_search"], r["batch_qps"], r.get("single_qps"), r["recall_at_10"])
                 for r in sweep_rows], ["method", "ef", "batch q/s", "single q/s", "recall@10"])
    for item in skipped:
        print(f"skipped {item['method']}: {item['reason']}")
    wall = time.perf_counter() - started
    import usearch

    result = {
        "quick": args.quick,
        "machine": machine,
        "settings": {
            "vectors": n, "dim": DIM, "queries": len(queries), "k": K, "single_queries": n_single,
            "single_queries_exact": n_single_exact, "batch_queries_usearch_exact": n_batch_exact,
            "clusters": CLUSTERS, "cosine_to_centre": 0.7, "seed": 0,
            "data": "unit vectors from a seeded Gaussian mixture on the sphere; queries held out (same mixture)",
            "vslib_defaults": {"connectivity": DEFAULT_CONNECTIVITY, "expansion_add": DEFAULT_EXPANSION_ADD,
                               "expansion_search": DEFAULT_EXPANSION_SEARCH},
            "expansion_search_sweep": list(SWEEP),
            "threads": {"usearch": "all cores (threads=0)", "faiss": status.get("threads"),
                        "numpy": "BLAS default"},
            "usearch_version": usearch.__version__,
            "data_generation_s": round(gen.seconds, 1),
            "budget_minutes": args.budget_min,
        },
        "faiss": status,
        "methods": rows,
        "sweep": sweep_rows,
        "skipped": skipped,
        "requested_methods": requested or list(METHODS),
        "wall_seconds": round(wall, 1),
    }
    result["runs"] = [_run_record(result | {"created_utc": utc_now(), "command": command_line()})]
    if args.merge:
        result = merge_previous(result, out_dir / f"{args.name}.json")
    rows, sweep_rows = result["methods"], result["sweep"]
    if {TARGET_METHOD, "numpy-exact"} <= {r["method"] for r in rows}:
        target = targets(rows, sweep_rows)
        print(f"\ntarget {TARGET_METHOD}: recall@10 {target['recall_at_10']} (>= {TARGET_RECALL}: "
              f"{target['recall_met']}), {target['batch_speedup_over_numpy']}x numpy-exact on the batch, "
              f"{target['single_speedup_over_numpy']}x on single queries (>= {TARGET_SPEEDUP}x: "
              f"{target['batch_met']} / {target['single_met']}); best swept setting: {target['best_swept']}")
    else:
        target = None
        print(f"\ntarget not checked: {TARGET_METHOD} and numpy-exact are not both in the results")
    result["target"] = target
    path = write_result(args.name, result, out_dir)
    save_figure(rows, sweep_rows, out_dir / f"{args.name}.png")
    print(f"wrote {path} and {args.name}.png in {wall:.0f} s")


if __name__ == "__main__":
    main()
