"""vslib.scale on a real local Ray: the in-process results, incremental re-runs, a killed actor.

Ray starts once for the module (2 CPUs, a small object store, no dashboard) and is shut
down at the end; 300 synthetic scenes and the bad files of tests/test_images.py make the folder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs the scale extra: pip install -e '.[scale]'")

from test_images import BAD_FILES  # noqa: E402  (tests/ is on sys.path under pytest)

from vslib import scale, synth  # noqa: E402
from vslib.cli import main  # noqa: E402
from vslib.encoders import load_encoder  # noqa: E402
from vslib.index import ImageIndex, file_sha256  # noqa: E402

MODEL = "tiny-siglip2"
N_IMAGES = 300


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    scale.start_ray(num_cpus=2, object_store_mb=128)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(N_IMAGES):
        folder = root / f"part{i % 3}"  # nested folders: paths are stored relative to the root
        folder.mkdir(exist_ok=True)
        synth.render_scene(i, 32, split="test").image.save(folder / f"scene-{i:03d}.png")
    for name, content, _ in BAD_FILES:
        (root / name).write_bytes(content)
    (root / "phone.heic").write_bytes(b"....ftypheic")
    return root


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(MODEL, device="cpu")


@pytest.fixture(scope="module")
def in_process(photos, encoder):
    """The default engine's result: an f32 index of the folder and its update report."""
    index = ImageIndex(encoder.dim, encoder.name, dtype="f32")
    report = index.update_folder(photos, encoder, batch_size=32, progress=False, num_workers=0)
    return index, report


@pytest.fixture(scope="module")
def embedded(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "photos.parquet"
    report = scale.embed(photos, MODEL, out, batch_size=32, actors=1, vector_dtype="f32", rows_per_shard=100)
    return out, report


def _by_path(out: Path) -> dict[str, np.ndarray]:
    table = scale.read_embeddings(out)
    return dict(zip(table.column("path").to_pylist(), scale.vectors_of(table)))


def test_ray_vectors_and_skips_equal_the_in_process_path(in_process, embedded):
    index, report = in_process
    out, ray_report = embedded
    got = _by_path(out)
    assert len(index) == N_IMAGES and sorted(got) == sorted(index.paths)
    reference = index.vectors(sorted(got))
    cosines = np.sum(np.stack([got[p] for p in sorted(got)]) * reference, axis=1)
    assert cosines.min() >= 0.9999
    assert ray_report.embedded == N_IMAGES and ray_report.unchanged == 0
    assert ray_report.skipped == report.skipped == scale.read_skipped(out)
    assert {p for p, _ in report.skipped} == {name for name, _, _ in BAD_FILES} | {"phone.heic"}


def test_shards_hold_the_file_facts_and_a_fixed_size_vector(embedded, photos, encoder):
    import pyarrow.parquet as pq

    out, _ = embedded
    files = sorted((out / scale.EMBEDDINGS).glob("run-*/*.parquet"))
    assert len(files) >= 2  # 300 rows at 100 rows per shard
    schema = pq.read_schema(files[0])
    assert schema.field("vector").type.list_size == encoder.dim
    table = scale.read_embeddings(out)
    row = next(r for r in table.to_pylist() if r["path"] == "part1/scene-001.png")
    stat = (photos / row["path"]).stat()
    assert (row["size"], row["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    assert row["sha256"] == file_sha256(photos / row["path"])
    assert (row["model"], row["dim"]) == (MODEL, encoder.dim)
    assert json.loads((out / scale.DATASET_FILE).read_text())["root"] == str(photos.resolve())


def test_a_rerun_embeds_nothing_and_then_only_what_changed(embedded, photos, encoder, tmp_path):
    out, _ = embedded
    again = scale.embed(photos, MODEL, out, batch_size=32, vector_dtype="f32")
    assert (again.run, again.embedded, again.unchanged) == (None, 0, N_IMAGES)
    assert [p for p, _ in again.skipped] == [p for p, _ in scale.read_skipped(out)]

    # One file's bytes change, one only gets a new mtime, one file is new.
    changed, touched = photos / "part0/scene-000.png", photos / "part1/scene-001.png"
    synth.render_scene(999, 32, split="test").image.save(changed)
    os.utime(touched, ns=(time.time_ns(), time.time_ns()))
    synth.render_scene(1000, 32, split="test").image.save(photos / "part2/new.png")
    third = scale.embed(photos, MODEL, out, batch_size=32, vector_dtype="f32")
    assert (third.embedded, third.unchanged, third.removed) == (2, N_IMAGES - 1, [])
    got = _by_path(out)
    assert len(got) == N_IMAGES + 1  # the newest row of the changed file, not both
    fresh = encoder.encode_images([changed, photos / "part2/new.png"])
    assert float(got["part0/scene-000.png"] @ fresh[0]) >= 0.9999
    assert float(got["part2/new.png"] @ fresh[1]) >= 0.9999

    # Back to the original folder: the restored file is embedded again, the new one leaves.
    synth.render_scene(0, 32, split="test").image.save(changed)
    (photos / "part2/new.png").unlink()
    fourth = scale.embed(photos, MODEL, out, batch_size=32, vector_dtype="f32")
    assert (fourth.embedded, fourth.removed) == (1, ["part2/new.png"])
    assert sorted(_by_path(out)) == sorted(got.keys() - {"part2/new.png"})


def test_other_models_and_bad_options_are_refused(embedded, photos):
    out, _ = embedded
    with pytest.raises(ValueError, match="different spaces"):
        scale.embed(photos, "tiny-dinov3", out)
    with pytest.raises(ValueError, match="vector_dtype"):
        scale.embed(photos, MODEL, out, vector_dtype="i8")
    with pytest.raises(NotADirectoryError):
        scale.embed(photos / "nope", MODEL, out)


def test_shard_indexes_searched_together_find_the_exact_neighbours(embedded):
    out, _ = embedded
    files = scale.build_shard_indexes(out, dtype="f32")
    assert len(files) >= 2
    sharded = scale.ShardedIndex(out)
    table = scale.read_embeddings(out)
    paths, vectors = table.column("path").to_pylist(), scale.vectors_of(table)
    assert len(sharded) == len(paths)
    for i in (0, 150, 299):
        truth = np.argsort(-(vectors @ vectors[i]), kind="stable")[:5]
        hits = sharded.search(vectors[i], k=5)
        assert [h.path for h in hits][0] == paths[i]
        assert {h.path for h in hits} == {paths[j] for j in truth}
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_an_image_index_from_the_shards_serves_vslib_search(embedded, photos, tmp_path, capsys):
    out, _ = embedded
    index = scale.to_image_index(out)
    assert len(index) == N_IMAGES and index.root == photos.resolve()
    index.save(tmp_path / "photos.index")
    assert main(["search", str(tmp_path / "photos.index"), "--image", str(photos / "part2/scene-005.png"),
                 "-k", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["path"] == str(photos.resolve() / "part2/scene-005.png")
    assert rows[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_vslib_index_engine_ray_writes_shards_and_an_index(photos, tmp_path, capsys):
    small = tmp_path / "small"
    small.mkdir()
    for name in ("part0/scene-000.png", "part1/scene-001.png", "part2/scene-002.png", "text.jpg"):
        (small / Path(name).name).write_bytes((photos / name).read_bytes())
    index_path = tmp_path / "small.index"
    args = ["index", str(small), "--model", MODEL, "--out", str(index_path), "--engine", "ray", "--actors", "1",
            "--batch-size", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"skipped {small / 'text.jpg'}: not an image" in printed
    assert "embedded 3, unchanged 0, removed 0, skipped 1" in printed
    assert scale.shards_folder(index_path) == tmp_path / "small.index.parquet"
    assert sorted(ImageIndex.load(index_path).paths) == ["scene-000.png", "scene-001.png", "scene-002.png"]
    assert main(args[:-4]) == 0  # again, without --actors/--batch-size: nothing to embed
    assert "embedded 0, unchanged 3" in capsys.readouterr().out
    assert main([*args[:3], "tiny-dinov3", *args[4:]]) == 1
    assert "was built with model" in capsys.readouterr().err


@pytest.mark.slow
def test_an_actor_killed_mid_run_still_yields_every_vector_once(photos, tmp_path, monkeypatch):
    out = tmp_path / "killed.parquet"
    marker = tmp_path / "crashed-actor.pid"
    # The first encoder actor to receive a batch dies at once (os._exit): Ray must restart
    # it and retry that batch, and no batch may be written twice.
    monkeypatch.setenv(scale.CRASH_ONCE_ENV, str(marker))
    report = scale.embed(photos, MODEL, out, batch_size=16, actors=1, vector_dtype="f32")
    assert marker.exists(), "no actor crashed: the fault was not injected"
    crashed_pid = int(marker.read_text())
    assert crashed_pid != os.getpid(), "the crash must happen in an actor, not in the driver"
    paths = scale.read_embeddings(out, columns=["path"]).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == N_IMAGES
    assert sorted(paths) == sorted(p.relative_to(photos).as_posix() for p in photos.rglob("scene-*.png"))
    assert report.embedded == N_IMAGES
