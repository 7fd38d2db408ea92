"""What ImageIndex.load(verify=True) costs: the SHA-256 of the vectors file, per 100k vectors.

Builds an index of random unit vectors (dimension 768 by default), saves it, then times
``ImageIndex.load`` with and without ``verify`` (best of a few alternating runs, file in the
page cache) and the hash alone.

    python benchmarks/index_verify.py                  # 100k vectors, dim 768, f16
    python benchmarks/index_verify.py --n 20000 --dtype f32

Writes ``results/index_verify.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import bench_common
from vslib.fingerprint import file_sha256
from vslib.index import ImageIndex


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--dtype", default="f16", choices=["f32", "f16", "i8"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    index = ImageIndex(args.dim, "random", dtype=args.dtype, connectivity=16, expansion_add=32)
    started = time.perf_counter()
    index.add_vectors(vectors)
    build_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        folder = index.save(Path(tmp) / "bench.index")
        vectors_file = next(folder.glob("vectors-*.usearch"))
        size_mb = vectors_file.stat().st_size / 2**20
        rows = []
        for view in (False, True):
            timings = {}
            for _ in range(args.repeats):  # alternate, so background load hits both alike
                for verify in (True, False):
                    t = best_of(1, lambda: ImageIndex.load(folder, view=view, verify=verify))
                    timings[verify] = min(timings.get(verify, t), t)
            rows.append({"view": view, "load_verify_s": timings[True], "load_no_verify_s": timings[False],
                         "verify_cost_s": timings[True] - timings[False]})
        hash_s = best_of(args.repeats, lambda: file_sha256(vectors_file))
    per_100k = hash_s * 100_000 / args.n
    bench_common.print_table(
        [[r["view"], round(r["load_verify_s"], 3), round(r["load_no_verify_s"], 3), round(r["verify_cost_s"], 3)]
         for r in rows],
        ["view", "load verify=True s", "load verify=False s", "difference s"])
    print(f"vectors file {size_mb:.1f} MiB ({args.n} x {args.dim} {args.dtype}); SHA-256 alone {hash_s:.3f} s "
          f"= {per_100k:.3f} s per 100k vectors ({size_mb / hash_s:.0f} MiB/s)")
    path = bench_common.write_result("index_verify", {
        "machine": bench_common.machine_info(["usearch"]), "n": args.n, "dim": args.dim, "dtype": args.dtype,
        "build_s": build_s, "file_mib": size_mb, "sha256_s": hash_s, "sha256_s_per_100k": per_100k,
        "load_avg": bench_common.load_average(), "rows": rows})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
