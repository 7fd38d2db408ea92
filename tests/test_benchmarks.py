"""The reusable parts of the benchmark scripts: test data, exact search, recall, planning."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench(request):
    """Import a benchmark module the way the scripts see each other (their folder on sys.path)."""
    sys.path.insert(0, str(BENCHMARKS))
    request.addfinalizer(lambda: sys.path.remove(str(BENCHMARKS)))
    return importlib.import_module


def test_exact_topk_matches_a_full_sort_across_chunks(bench):
    common = bench("bench_common")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((1000, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    expected = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :5]
    for chunk in (3, 64, 333, 5000):  # chunks smaller than k, uneven, and larger than the data
        np.testing.assert_array_equal(common.exact_topk(queries, data, 5, chunk=chunk), expected)
    assert common.exact_topk(queries[0], data[:3], 10).shape == (1, 3)


def test_recall_at_k_counts_overlap_not_order(bench):
    common = bench("bench_common")
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert common.recall_at_k([[3, 2, 1], [4, 9, 9]], truth, 3) == pytest.approx((1 + 1 / 3) / 2)
    assert common.recall_at_k(np.array([[1, 2, 3, 7], [6, 5, 4, 7]]), truth, 3) == 1.0


def test_clustered_vectors_are_seeded_unit_vectors_near_their_centres(bench):
    common = bench("bench_common")
    centres, spread, weights = common.gaussian_mixture(20, 256, np.random.default_rng(1), cosine_to_centre=0.7)
    assert weights.sum() == pytest.approx(1.0)
    a, labels = common.clustered_unit_vectors(500, 256, centres, spread, weights, np.random.default_rng(2), chunk=64)
    b, _ = common.clustered_unit_vectors(500, 256, centres, spread, weights, np.random.default_rng(2), chunk=64)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (500, 256)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    to_centre = np.sum(a * centres[labels], axis=1)
    assert 0.6 < to_centre.mean() < 0.8
    with pytest.raises(ValueError):
        common.clustered_unit_vectors(5, 128, centres, spread, weights, np.random.default_rng(0))


def test_write_result_adds_the_run_and_keeps_the_fields(bench, tmp_path):
    common = bench("bench_common")
    path = common.write_result("demo", {"value": 1.5}, tmp_path)
    data = json.loads(path.read_text())
    assert path.name == "demo.json" and data["value"] == 1.5 and data["benchmark"] == "demo"
    assert {"created_utc", "command"} <= set(data)
    info = common.machine_info()
    assert info["cpu_count"] >= 1 and "numpy" in info["versions"]


def test_encode_plan_fits_the_budget_and_keeps_batch_32_longest(bench):
    encode = bench("encode_throughput")
    sizes = [1, 8, 32, 64]
    base, batches, _ = encode.choose_plan(0.01, 600, 64, sizes)  # fast machine: everything
    assert (base, batches) == (64, sizes)
    base, batches, _ = encode.choose_plan(1.0, 400, 64, sizes)
    assert encode.planned_images(base, batches, False) * 1.0 <= 400
    assert 32 in batches
    # When batch 32 itself no longer fits, batch 1 with fewer images is what is left.
    base, batches, extra = encode.choose_plan(10.0, 200, 64, sizes)
    assert batches == [1] and not extra


def _index_result(methods: list[str], vectors: int = 1000) -> dict:
    rows = [{"method": m, "batch_qps": 1.0, "single_qps": 1.0} for m in methods]
    return {"settings": {"vectors": vectors, "dim": 8, "queries": 10, "k": 10, "clusters": 3, "seed": 0},
            "methods": rows, "sweep": [{"method": m} for m in methods if "exact" not in m],
            "skipped": [], "wall_seconds": 1.0, "created_utc": "then", "command": "python x"}


def test_index_merge_keeps_other_methods_and_refuses_other_data(bench, tmp_path: Path):
    speed = bench("index_speed")
    old = _index_result(["numpy-exact", "usearch-f16", "usearch-exact-f16", "usearch-f32", "usearch-exact-f32"])
    old["skipped"] = [{"method": "faiss-hnsw", "reason": "time budget"}]
    path = tmp_path / "index_speed.json"
    path.write_text(json.dumps(old))

    new = _index_result(["numpy-exact", "faiss-hnsw", "usearch-f32", "usearch-exact-f32"])
    new["methods"][-1]["batch_qps"] = 99.0
    new["requested_methods"] = ["faiss-hnsw", "usearch-f32"]
    new["runs"] = [{"methods": ["faiss-hnsw"], "created_utc": "now"}]
    merged = speed.merge_previous(json.loads(json.dumps(new)), path)
    methods = [r["method"] for r in merged["methods"]]
    assert methods == ["numpy-exact", "usearch-f16", "usearch-exact-f16", "faiss-hnsw", "usearch-f32",
                      "usearch-exact-f32"]
    assert next(r for r in merged["methods"] if r["method"] == "usearch-exact-f32")["batch_qps"] == 99.0
    assert merged["skipped"] == []  # faiss-hnsw is measured now
    assert [r["method"] for r in merged["sweep"]].count("usearch-f32") == 1
    assert [run["created_utc"] for run in merged["runs"]] == ["then", "now"]

    other = _index_result(["numpy-exact", "faiss-hnsw"], vectors=5)
    other["requested_methods"], other["runs"] = ["faiss-hnsw"], []
    assert speed.merge_previous(json.loads(json.dumps(other)), path)["methods"] == other["methods"]
    with pytest.raises(SystemExit, match="unknown"):
        speed.parse_methods("usearch-f64")


def test_scale_out_cost_model_takes_the_slower_of_gpu_and_decoding(bench):
    pytest.importorskip("ray", reason="benchmarks/scale_out.py needs the scale extra")
    scale_out = bench("scale_out")
    encoding = {"decode_preprocess_ms_per_image": 8.0, "parquet_bytes_per_image": 400.0, "dim": 192,
                "rows": [{"actors": None, "overhead_ms_per_image": None}, {"actors": 1, "overhead_ms_per_image": 2.0}]}
    indexes = {"vectors": 1000, "dim": 384, "rows": [{"build_s": 9.0}, {"build_s": 1.0}]}
    costs = scale_out.cost_model(encoding, indexes, gpu_rate=1000.0, workers=[1, 10], cpus_per_worker=4)
    one, ten = costs["rows"]
    # GPU: 1e8 / 1000 per s = 1e5 s; decoding: 1e8 * 10 ms / 4 cores = 2.5e5 s, the slower one.
    assert one["bound_by"] == "CPU decoding"
    assert one["embed_hours"] == pytest.approx(1e8 * 0.010 / 4 / 3600, rel=1e-3)
    assert ten["embed_hours"] == pytest.approx(one["embed_hours"] / 10, rel=1e-2)
    assert costs["parquet_terabytes_768d_f16"] == pytest.approx(1e8 * 400 * 4 / 1e12, rel=1e-3)
    # 1 s for 1000 vectors on 2 cores = 2 core-ms per vector at 384-d, 4 at 768-d.
    assert costs["index_build_core_seconds_per_vector_768d"] == pytest.approx(0.004)
    fast_decoding = scale_out.cost_model({**encoding, "decode_preprocess_ms_per_image": 0.1,
                                          "rows": [{"actors": 1, "overhead_ms_per_image": 0.0}]},
                                         indexes, gpu_rate=100.0, workers=[1], cpus_per_worker=4)
    assert fast_decoding["rows"][0]["bound_by"] == "GPU"
    assert fast_decoding["rows"][0]["embed_hours"] == pytest.approx(1e8 / 100 / 3600, rel=1e-3)


def test_faiss_hnsw_sq16_stores_fp16_vectors_and_finds_the_neighbours(bench, tmp_path: Path):
    pytest.importorskip("faiss", reason="faiss-cpu comes with the bench extra")
    speed = bench("index_speed")
    common = bench("bench_common")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((400, speed.DIM)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = data[:20] + 0.01 * rng.standard_normal((20, speed.DIM)).astype(np.float32)
    truth = common.exact_topk(queries, data, speed.K)
    rows = {}
    for method in ("faiss-hnsw", "faiss-hnsw-sq16"):
        (row,), sweep = speed.bench_faiss_hnsw(data, queries, truth, 5, tmp_path, (16, 512), method)
        rows[method] = row
        assert [r["method"] for r in sweep] == [method, method]
        assert row["recall_at_10"] > 0.9
    assert rows["faiss-hnsw-sq16"]["dtype"] == "f16" and rows["faiss-hnsw-sq16"]["params"]["index"] == "IndexHNSWSQ"
    # fp16 halves the vectors: 768 * 2 bytes fewer per vector, the graph unchanged.
    saved = rows["faiss-hnsw"]["file_bytes"] - rows["faiss-hnsw-sq16"]["file_bytes"]
    assert saved / len(data) == pytest.approx(speed.DIM * 2, rel=0.02)
    with pytest.raises(ValueError, match="unknown FAISS HNSW method"):
        speed.faiss_hnsw_index("faiss-ivf")


def test_index_benchmark_skips_faiss_with_its_reason_when_faiss_is_missing(tmp_path: Path):
    # `import faiss` fails as on a machine without the bench extra.
    code = (
        "import runpy, sys\n"
        "sys.modules['faiss'] = None\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        f"sys.argv = ['index_speed.py', '--vectors', '600', '--queries', '10', '--out-dir', {str(tmp_path)!r},\n"
        "            '--methods', 'faiss-hnsw-sq16', '--name', 'demo']\n"
        f"runpy.run_path({str(BENCHMARKS / 'index_speed.py')!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "faiss-hnsw-sq16 skipped: FAISS unavailable" in result.stdout
    data = json.loads((tmp_path / "demo.json").read_text())
    assert [r["method"] for r in data["methods"]] == ["numpy-exact"]
    assert data["skipped"][0]["method"] == "faiss-hnsw-sq16"
    assert "pip install" in data["skipped"][0]["reason"] and not data["faiss"]["available"]
    assert (tmp_path / "demo.png").exists()
