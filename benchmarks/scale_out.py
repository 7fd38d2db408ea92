"""Scaling out on Ray: encoding throughput in-process vs Ray, sharded vs single indexes, a cost model.

    python benchmarks/scale_out.py            # full run: 400 images, 200,000 vectors (about 6 min on 2 cores)
    python benchmarks/scale_out.py --quick    # smoke run: 96 images, 20,000 vectors, temporary folder

Three parts, written to ``benchmarks/results/scale_out.json`` and ``scale_out.png``:

1. **Encoding.** The same folder of synthetic 64 px scenes is embedded with ``tiny-siglip2``
   (a) in-process, as ``vslib index`` does (``Encoder.encode_files``, DataLoader workers),
   and (b) through ``vslib.scale.embed`` on a local Ray with 1 and 2 encoder actors. Ray's
   start is timed apart; each figure is the faster of two rounds. On a 2-core machine Ray can
   only add overhead (scheduling, serialising batches, a model per actor): that overhead is
   the honest figure here, reported as seconds per image on top of in-process.
2. **Indexes.** ``--vectors`` unit vectors (a seeded Gaussian mixture, as in index_speed.py,
   ``--dim`` 256 by default to keep the build within minutes) are written as Parquet shards of
   ``--rows-per-shard`` rows; ``vslib.scale.build_shard_indexes`` builds one USearch index per
   shard in parallel Ray tasks (one thread each), and ``ShardedIndex`` searches them together
   (usearch ``Indexes``). The merged alternative is one ``ImageIndex`` over all vectors, built
   with all cores. Both use vslib's HNSW defaults; recall@10 is against exact search.
3. **Cost model.** From the measured per-image costs (decode and preprocess, Parquet bytes,
   index build per vector) and an *assumed* GPU encoding rate (``--gpu-images-per-s``, not
   measured here: this machine has no GPU), the time and storage for 10^8 images on N GPU
   workers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import (
    RESULTS_DIR,
    Stopwatch,
    clustered_unit_vectors,
    exact_topk,
    gaussian_mixture,
    load_average,
    machine_info,
    print_table,
    recall_at_k,
    write_result,
)
from vslib import scale, synth  # vslib first: it loads libstdc++ before usearch (see vslib/__init__.py)
from vslib.encoders import load_encoder
from vslib.images import load_image, scan_folder
from vslib.index import ImageIndex

NAME = "scale_out"
MODEL = "tiny-siglip2"
K = 10
CLUSTERS = 300
TARGET_IMAGES = 10**8


def make_folder(folder: Path, n: int, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        synth.render_scene(i, size, split="test").image.save(folder / f"scene-{i:05d}.png")
    return scan_folder(folder).files


def best_of(rounds: int, fn) -> float:
    times = []
    for _ in range(rounds):
        with Stopwatch() as watch:
            fn()
        times.append(watch.seconds)
    return min(times)


# -- 1. encoding ---------------------------------------------------------------------------------


def bench_encoding(folder: Path, files: list[Path], tmp: Path, rounds: int, batch_size: int) -> dict:
    encoder = load_encoder(MODEL, device="cpu")
    rows = []
    load = load_average()
    seconds = best_of(rounds, lambda: encoder.encode_files(files, batch_size=batch_size, progress=False))
    rows.append({"engine": "in-process", "actors": None, "seconds": round(seconds, 3),
                 "images_per_s": round(len(files) / seconds, 2), "load_average_before": load})

    # Decoding and preprocessing alone: the CPU work a decode task does per image.
    preprocess = encoder.image_preprocessor()
    with Stopwatch() as decode:
        for start in range(0, len(files), batch_size):
            preprocess([load_image(f) for f in files[start : start + batch_size]])
    with Stopwatch() as ray_start:
        resources = scale.start_ray()
    for actors in (1, 2):
        def run(actors=actors):
            out = tmp / f"ray-{actors}"
            shutil.rmtree(out, ignore_errors=True)
            report = scale.embed(folder, MODEL, out, batch_size=batch_size, actors=actors)
            assert report.embedded == len(files), report.summary()

        load = load_average()
        seconds = best_of(rounds, run)
        rows.append({"engine": "ray", "actors": actors, "seconds": round(seconds, 3),
                     "images_per_s": round(len(files) / seconds, 2), "load_average_before": load})
    in_process = rows[0]["seconds"]
    for row in rows[1:]:
        row["overhead_ms_per_image"] = round(1000 * (row["seconds"] - in_process) / len(files), 2)
    shard_bytes = sum(f.stat().st_size for f in (tmp / "ray-1").rglob("*.parquet"))
    return {
        "model": MODEL, "images": len(files), "image_size": 64, "batch_size": batch_size, "rounds": rounds,
        "ray_start_s": round(ray_start.seconds, 2), "ray_cpus": resources.get("CPU"),
        "decode_preprocess_ms_per_image": round(1000 * decode.seconds / len(files), 3),
        "parquet_bytes_per_image": round(shard_bytes / len(files), 1),
        "dim": encoder.dim, "rows": rows,
    }


# -- 2. sharded vs single index ------------------------------------------------------------------


def write_shards(data: np.ndarray, out: Path, rows_per_shard: int, dim: int) -> None:
    """The vectors as an embeddings folder, shaped as vslib.scale.embed writes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = out / scale.EMBEDDINGS / "run-00000"
    run.mkdir(parents=True)
    for i, start in enumerate(range(0, len(data), rows_per_shard)):
        part = data[start : start + rows_per_shard].astype(np.float16)
        n = len(part)
        pq.write_table(pa.table({
            "path": [f"vector-{start + j}" for j in range(n)],
            "size": pa.nulls(n, pa.int64()), "mtime_ns": pa.nulls(n, pa.int64()), "sha256": pa.nulls(n, pa.string()),
            "model": ["benchmark-vectors"] * n, "dim": pa.array([dim] * n, pa.int32()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), dim),
        }), run / f"part-{i:05d}.parquet")
    scale._write_json(out / scale.DATASET_FILE, {"format": "vslib-embeddings", "version": 1,
                                                 "model": "benchmark-vectors", "dim": dim,
                                                 "vector_dtype": "f16", "root": None})


def time_single(search, queries: np.ndarray) -> float:
    with Stopwatch() as watch:
        for q in queries:
            search(q)
    return watch.seconds


def bench_indexes(n: int, dim: int, rows_per_shard: int, n_queries: int, n_single: int, tmp: Path) -> dict:
    mixture = gaussian_mixture(CLUSTERS, dim, np.random.default_rng([0, 0]))
    data, _ = clustered_unit_vectors(n, dim, *mixture, rng=np.random.default_rng([0, 1]))
    queries, _ = clustered_unit_vectors(n_queries, dim, *mixture, rng=np.random.default_rng([0, 2]))
    truth = exact_topk(queries, data, K)
    out = tmp / "vectors"
    write_shards(data, out, rows_per_shard, dim)
    rows = []

    load = load_average()
    with Stopwatch() as build:
        files = scale.build_shard_indexes(out, dtype="f16")
    sharded = scale.ShardedIndex(out)
    key_of = {path: int(path.split("-")[1]) for path in (f"vector-{i}" for i in range(n))}
    with Stopwatch() as batch:
        hits = sharded.search(queries, k=K)
    found = [[key_of[h.path] for h in row] for row in hits]
    single = time_single(lambda q: sharded.search(q, k=K), queries[:n_single])
    rows.append({"method": "sharded", "shards": len(files), "build_s": round(build.seconds, 2),
                 "build": "one Ray task per shard, one thread each",
                 "batch_qps": round(n_queries / batch.seconds, 1), "single_qps": round(n_single / single, 1),
                 "recall_at_10": round(recall_at_k(found, truth, K), 4), "load_average_before": load})
    del sharded

    load = load_average()
    index = ImageIndex(dim, model="benchmark-vectors", dtype="f16")
    with Stopwatch() as build:
        index.add_vectors(data)  # all cores
    with Stopwatch() as batch:
        hits = index.search(queries, k=K)
    found = [[h.key for h in row] for row in hits]
    single = time_single(lambda q: index.search(q, k=K), queries[:n_single])
    rows.append({"method": "single", "shards": 1, "build_s": round(build.seconds, 2),
                 "build": "one ImageIndex, all cores",
                 "batch_qps": round(n_queries / batch.seconds, 1), "single_qps": round(n_single / single, 1),
                 "recall_at_10": round(recall_at_k(found, truth, K), 4), "load_average_before": load})
    return {"vectors": n, "dim": dim, "rows_per_shard": rows_per_shard, "queries": n_queries,
            "single_queries": n_single, "k": K, "clusters": CLUSTERS, "dtype": "f16", "rows": rows,
            "build_s_per_million_vectors": round(rows[1]["build_s"] / n * 1e6, 1)}


# -- 3. cost model -------------------------------------------------------------------------------


def cost_model(encoding: dict, indexes: dict, gpu_rate: float, workers: list[int], cpus_per_worker: int) -> dict:
    """Hours and bytes for TARGET_IMAGES images on N GPU workers, from the measured costs."""
    decode_s = encoding["decode_preprocess_ms_per_image"] / 1000
    # Ray's measured overhead on this machine, per image (1 actor), counted as CPU work.
    overhead_s = max(0.0, next(r for r in encoding["rows"] if r["actors"] == 1)["overhead_ms_per_image"] / 1000)
    bytes_per_image = encoding["parquet_bytes_per_image"] * 768 / encoding["dim"]  # scaled to 768-d f16 rows
    build_per_vector_s = indexes["rows"][1]["build_s"] / indexes["vectors"] * 2  # 2 cores here: core-seconds
    rows = []
    for n in workers:
        gpu_bound = TARGET_IMAGES / (n * gpu_rate)
        cpu_bound = TARGET_IMAGES * (decode_s + overhead_s) / (n * cpus_per_worker)
        index_hours = TARGET_IMAGES * build_per_vector_s * 768 / indexes["dim"] / (n * cpus_per_worker) / 3600
        rows.append({"workers": n, "embed_hours": round(max(gpu_bound, cpu_bound) / 3600, 2),
                     "bound_by": "GPU" if gpu_bound >= cpu_bound else "CPU decoding",
                     "index_build_hours": round(index_hours, 2)})
    return {
        "images": TARGET_IMAGES, "assumed_gpu_images_per_s": gpu_rate, "cpus_per_worker": cpus_per_worker,
        "decode_preprocess_ms_per_image": encoding["decode_preprocess_ms_per_image"],
        "ray_overhead_ms_per_image": round(overhead_s * 1000, 2),
        "parquet_terabytes_768d_f16": round(TARGET_IMAGES * bytes_per_image / 1e12, 3),
        "index_build_core_seconds_per_vector_768d": round(build_per_vector_s * 768 / indexes["dim"], 6),
        "rows": rows,
        "notes": [
            "The GPU rate is an assumption (this machine has no GPU); the other figures are measured here.",
            "Decoding is measured on 64 px PNG scenes; full-size JPEG photos cost several times more per image.",
            "Index build time is scaled linearly from the measured dimension to 768.",
        ],
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    rows = result["encoding"]["rows"]
    labels = ["in-process" if r["engine"] == "in-process" else f"Ray, {r['actors']} actor(s)" for r in rows]
    left.bar(labels, [r["images_per_s"] for r in rows], color=["tab:blue", "tab:orange", "tab:orange"])
    left.set_ylabel("images / s")
    left.set_title(f"Encoding {result['encoding']['images']} images ({MODEL})", fontsize=10)
    idx = result["indexes"]["rows"]
    width = 0.35
    x = np.arange(2)
    right.bar(x - width / 2, [r["build_s"] for r in idx], width, label="build (s)")
    right.bar(x + width / 2, [1000 / r["single_qps"] for r in idx], width, label="one query (ms)")
    right.set_xticks(x, [f"{r['method']} ({r['shards']} index{'es' if r['shards'] > 1 else ''})" for r in idx])
    right.set_title(f"{result['indexes']['vectors']:,} vectors x {result['indexes']['dim']}", fontsize=10)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    # Ray lowers its workers' priority below the driver's (seen here: niceness 19 under a
    # driver at 10); on a shared machine that would slow Ray's side alone.
    os.environ.setdefault("RAY_worker_niceness", "0")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run, results in a temporary folder")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--rows-per-shard", type=int, default=50_000)
    parser.add_argument("--gpu-images-per-s", type=float, default=1000.0,
                        help="assumed encoding rate of one GPU worker (not measured here)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.vectors, args.rows_per_shard = 96, 20_000, 5_000
    started = time.perf_counter()
    out_dir = Path(tempfile.mkdtemp(prefix="scale-out-results-")) if args.quick else RESULTS_DIR
    tmp = Path(tempfile.mkdtemp(prefix="scale-out-"))
    try:
        files = make_folder(tmp / "scenes", args.images)
        encoding = bench_encoding(tmp / "scenes", files, tmp, rounds=1 if args.quick else 2, batch_size=32)
        print_table([(r["engine"], r["actors"], r["seconds"], r["images_per_s"], r.get("overhead_ms_per_image"))
                     for r in encoding["rows"]], ["engine", "actors", "seconds", "images/s", "overhead ms/image"])
        indexes = bench_indexes(args.vectors, args.dim, args.rows_per_shard, 1000, 200, tmp)
        print_table([(r["method"], r["shards"], r["build_s"], r["batch_qps"], r["single_qps"], r["recall_at_10"])
                     for r in indexes["rows"]], ["index", "shards", "build s", "qps batch", "qps single", "recall@10"])
        sharded, single = indexes["rows"]
        indexes["faster_to_search"] = "sharded" if sharded["single_qps"] > single["single_qps"] else "single"
        indexes["faster_to_build"] = "sharded" if sharded["build_s"] < single["build_s"] else "single"
        costs = cost_model(encoding, indexes, args.gpu_images_per_s, [1, 8, 64], cpus_per_worker=8)
        print_table([(r["workers"], r["embed_hours"], r["bound_by"], r["index_build_hours"]) for r in costs["rows"]],
                    ["GPU workers", "embed hours", "bound by", "index build hours"])
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"machine": machine_info(("ray", "pyarrow")), "ray_worker_niceness": os.environ["RAY_worker_niceness"],
              "encoding": encoding, "indexes": indexes,
              "cost_model": costs, "wall_seconds": round(time.perf_counter() - started, 1), "quick": args.quick}
    path = write_result(NAME, result, out_dir)
    plot(result, out_dir / f"{NAME}.png")
    print(f"wrote {path} and {NAME}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
