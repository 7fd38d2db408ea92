"""The output folder of vslib.scale without Ray: which rows are current across runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="needs the scale extra: pip install -e '.[scale]'")
import pyarrow.parquet as pq  # noqa: E402

from vslib import scale  # noqa: E402


def _shard(folder: Path, name: str, rows: dict[str, float]) -> None:
    """A shard with one 2-d vector per path, (value, 1 - value) so the rows can be told apart."""
    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.array([[v, 1 - v] for v in rows.values()], dtype=np.float16)
    n = len(rows)
    pq.write_table(pa.table({
        "path": list(rows), "size": [1] * n, "mtime_ns": [1] * n, "sha256": ["x"] * n,
        "model": ["m"] * n, "dim": pa.array([2] * n, pa.int32()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 2),
    }), folder / f"{name}.parquet")


def test_the_newest_row_wins_and_removed_files_leave_until_they_come_back(tmp_path: Path):
    runs = tmp_path / scale.EMBEDDINGS
    _shard(runs / "run-00000", "b", {"a.png": 0.0, "b.png": 0.0})
    _shard(runs / "run-00000", "a", {"c.png": 0.0})
    _shard(runs / "run-00001", "a", {"b.png": 1.0})  # b changed
    (runs / "run-00002").mkdir()
    (runs / "run-00002" / scale.REMOVED_FILE).write_text(json.dumps({"removed": ["a.png", "c.png"]}))
    _shard(runs / "run-00003", "a", {"c.png": 0.5})  # c came back
    (runs / ".run-00004.tmp").mkdir()  # an interrupted run is ignored
    _shard(runs / ".run-00004.tmp", "a", {"a.png": 0.25})

    table = scale.read_embeddings(tmp_path)
    got = dict(zip(table.column("path").to_pylist(), scale.vectors_of(table)[:, 0].tolist()))
    assert got == {"b.png": 1.0, "c.png": 0.5}
    assert scale.read_embeddings(tmp_path, columns=["path"]).column_names == ["path"]


def test_an_empty_output_and_a_missing_dataset_say_so(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="holds no embeddings"):
        scale.read_embeddings(tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        scale.dataset_info(tmp_path)
    assert scale.read_skipped(tmp_path) == []
