"""ImageIndex: bad files, incremental updates, crash-safe saves, views, recall and duplicates.

A small deterministic encoder stands in for a real model: it embeds the colours of a 2x2
thumbnail through a fixed random projection and counts the images it embeds.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vslib import index as index_module
from vslib.encoders import Encoder
from vslib.index import ImageIndex, ReadOnlyIndexError

RED, GREEN, BLUE, YELLOW, PURPLE = (230, 20, 20), (20, 200, 40), (30, 40, 230), (240, 220, 10), (200, 30, 210)


class FakeEncoder(Encoder):
    """Mean colours of the four quadrants, centred, through a random projection fixed by the name."""

    family = "fake"

    def __init__(self, name: str = "fake-colour", dim: int = 16) -> None:
        self.name, self.dim = name, dim
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.projection = torch.from_numpy(rng.normal(size=(12, dim)).astype(np.float32))
        self.images_embedded = 0

    def preprocess(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        thumbs = [np.asarray(im.resize((2, 2), Image.BILINEAR), dtype=np.float32).ravel() / 255 - 0.5 for im in images]
        return {"features": torch.from_numpy(np.stack(thumbs))}

    def _embed_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.images_embedded += len(inputs["features"])
        return inputs["features"] @ self.projection


def make_image(path: Path, colour: tuple[int, int, int], noise: float = 0.0, seed: int = 0) -> Path:
    """A 32x32 image of one colour, optionally with Gaussian noise; format from the suffix."""
    pixels = np.full((32, 32, 3), colour, dtype=np.float32)
    if noise:
        pixels += np.random.default_rng(seed).normal(0, noise, pixels.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    make_image(root / "red.png", RED)
    make_image(root / "green.jpg", GREEN)
    make_image(root / "nested" / "blue.png", BLUE)
    return root


def built(root: Path, encoder: FakeEncoder, dtype: str = "f16") -> ImageIndex:
    index = ImageIndex(encoder.dim, encoder.name, dtype=dtype)
    index.update_folder(root, encoder)
    return index


def top_path(index: ImageIndex, encoder: FakeEncoder, colour: tuple[int, int, int]) -> str:
    query = encoder.encode_images([Image.new("RGB", (32, 32), colour)])[0]
    return index.search(query, k=1)[0].path


# -- building from a folder ----------------------------------------------------------------------


def test_every_kind_of_bad_file_is_skipped_with_a_reason_and_the_rest_indexed(photos, encoder):
    (photos / "empty.jpg").write_bytes(b"")
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "JPEG")
    (photos / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (photos / "notes.jpg").write_text("shopping list: milk, eggs")
    # An iPhone HEIC photo renamed to .jpg: a format PIL cannot open.
    (photos / "iphone.jpg").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))

    index = ImageIndex(encoder.dim, encoder.name)
    report = index.update_folder(photos, encoder)

    reasons = dict(report.skipped)
    assert set(reasons) == {"empty.jpg", "truncated.jpg", "notes.jpg", "iphone.jpg"}
    assert "empty" in reasons["empty.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["notes.jpg"]
    assert "unsupported format" in reasons["iphone.jpg"]
    assert sorted(report.added) == ["green.jpg", "nested/blue.png", "red.png"]
    assert sorted(index.paths) == sorted(report.added)
    assert len(index) == 3
    assert top_path(index, encoder, BLUE) == "nested/blue.png"
    assert report.summary() == "added 3, updated 0, removed 0, unchanged 0, skipped 4"


def test_records_hold_relative_path_size_mtime_hash_and_model(photos, encoder):
    index = built(photos, encoder)
    record = index.record("nested/blue.png")
    file = photos / "nested" / "blue.png"
    assert record.size == file.stat().st_size
    assert record.mtime_ns == file.stat().st_mtime_ns
    assert record.sha256 == index_module.file_sha256(file)
    assert (record.model, record.dim) == (encoder.name, encoder.dim)
    assert index.resolve(record.path) == file.resolve()
    assert file.resolve() in index and "nested/blue.png" in index and "blue.png" not in index


def test_update_encodes_only_new_and_changed_files(photos, encoder):
    index = built(photos, encoder)
    assert encoder.images_embedded == 3

    make_image(photos / "green.jpg", YELLOW)  # changed bytes
    (photos / "nested" / "blue.png").unlink()  # deleted
    make_image(photos / "new" / "purple.png", PURPLE)  # new
    red = photos / "red.png"
    later = red.stat().st_mtime_ns + 5_000_000_000
    os.utime(red, ns=(later, later))  # touched: same bytes, new mtime

    before = encoder.images_embedded
    report = index.update_folder(photos, encoder)
    assert encoder.images_embedded - before == 2

    assert report.added == ["new/purple.png"]
    assert report.updated == ["green.jpg"]
    assert report.removed == ["nested/blue.png"]
    assert report.unchanged == ["red.png"] and report.refreshed == ["red.png"]
    assert report.skipped == []
    assert index.record("red.png").mtime_ns == later
    assert sorted(index.paths) == ["green.jpg", "new/purple.png", "red.png"]
    assert top_path(index, encoder, YELLOW) == "green.jpg"
    assert all(hit.path != "nested/blue.png" for hit in index.search(encoder.encode_images(
        [Image.new("RGB", (32, 32), BLUE)])[0], k=10))

    before = encoder.images_embedded
    again = index.update_folder(photos, encoder)
    assert again.summary() == "added 0, updated 0, removed 0, unchanged 3, skipped 0"
    assert encoder.images_embedded == before


def test_a_file_that_turns_bad_leaves_the_index(photos, encoder):
    index = built(photos, encoder)
    (photos / "red.png").write_bytes(b"not a png any more")
    report = index.update_folder(photos, encoder)
    assert "red.png" not in index
    assert report.removed == ["red.png"]
    assert [path for path, _ in report.skipped] == ["red.png"]


def test_a_moved_folder_updates_without_re_encoding(photos, encoder, tmp_path):
    index = built(photos, encoder)
    moved = tmp_path / "moved"
    shutil.copytree(photos, moved)  # copy2 keeps the modification times
    report = index.update_folder(moved, encoder)
    assert sorted(report.unchanged) == sorted(index.paths) and not report.added and not report.removed
    assert encoder.images_embedded == 3
    assert index.resolve("red.png") == (moved / "red.png").resolve()


# -- model and dimension checks ------------------------------------------------------------------


def test_another_model_or_dimension_is_refused_with_both_names(photos, encoder):
    index = built(photos, encoder)
    other = FakeEncoder("fake-other", dim=encoder.dim)
    with pytest.raises(ValueError, match="fake-colour.*fake-other|fake-other.*fake-colour"):
        index.update_folder(photos, other)
    with pytest.raises(ValueError, match="fake-other"):
        index.add([photos / "red.png"], np.ones((1, encoder.dim)), model="fake-other")

    with pytest.raises(ValueError, match=r"dimension 8\b.*dimension 16\b"):
        index.add_vectors(np.ones((2, 8)))
    with pytest.raises(ValueError, match=r"dimension 8\b.*dimension 16\b"):
        index.search(np.ones(8))
    wide = FakeEncoder(encoder.name, dim=24)
    with pytest.raises(ValueError, match=r"24.*16"):
        index.update_folder(photos, wide)
    assert len(index) == 3 and encoder.images_embedded == 3 and wide.images_embedded == 0


def test_bad_vectors_and_settings_are_refused():
    with pytest.raises(ValueError, match="f32, f16, i8"):
        ImageIndex(4, "m", dtype="f64")
    index = ImageIndex(4, "m")
    with pytest.raises(ValueError, match="zero vector"):
        index.add_vectors(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        index.add_vectors(np.array([[1.0, np.nan, 0, 0]]))
    with pytest.raises(ValueError, match="2 paths but 1 vectors"):
        index.add(["a.png", "b.png"], np.ones((1, 4)))
    assert len(index) == 0


def test_constructor_checks_and_what_an_index_reports():
    with pytest.raises(ValueError, match="dim must be positive, got 0"):
        ImageIndex(0, "m")
    with pytest.raises(ValueError, match="needs the name of the model"):
        ImageIndex(4, "")
    index = ImageIndex(4, "m", dtype="f32", connectivity=6, expansion_add=20, expansion_search=30)
    assert (index.connectivity, index.expansion_add, index.expansion_search) == (6, 20, 30)
    index.expansion_search = 45
    assert index.expansion_search == 45
    keys = index.add_vectors(np.eye(4), paths=["a", "b", "c", "d"])
    assert keys == [0, 1, 2, 3] and index.add_vectors(np.eye(4)[:1]) == [4]
    assert index.paths == ["a", "b", "c", "d", "vector-4"]
    assert repr(index) == "ImageIndex(5 images, model='m', dim=4, dtype=f32)"
    assert "a" in index and 3 not in index and "z" not in index
    with pytest.raises(KeyError, match="z is not in the index"):
        index.record("z")
    with pytest.raises(KeyError, match=r"not in the index: u, v, w, x, y \.\.\."):
        index.remove(["u", "v", "w", "x", "y", "z"])
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        index.search(np.eye(4)[0], k=0)
    with pytest.raises(ValueError, match="^the same path appears more than once in one add$"):
        index.add_vectors(np.eye(4)[:2], paths=["e", "e"])
    assert len(index) == 5


# -- searching -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, tolerance", [("f32", 1e-6), ("f16", 2e-3), ("i8", 2e-2)])
def test_stored_vectors_and_scores_match_cosine_similarity(dtype, tolerance):
    rng = np.random.default_rng(1)
    vectors = unit_rows(rng.normal(size=(200, 32)))
    index = ImageIndex(32, "m", dtype=dtype)
    index.add_vectors(vectors, paths=[f"v{i}" for i in range(200)])
    stored = index.vectors()
    assert stored.dtype == np.float32 and stored.shape == (200, 32)
    assert np.abs(stored - vectors).max() < tolerance * 4

    query = unit_rows(rng.normal(size=(1, 32)))[0]
    hits = index.search(query, k=5, exact=True)
    cosine = unit_rows(stored) @ query
    assert [hit.path for hit in hits] == [f"v{i}" for i in np.argsort(-cosine)[:5]]
    assert np.allclose([hit.score for hit in hits], np.sort(cosine)[::-1][:5], atol=tolerance)


@pytest.mark.parametrize("dtype, tolerance", [("f32", 1e-6), ("f16", 2e-3)])
def test_vectors_of_any_length_are_stored_as_unit_vectors(tmp_path, dtype, tolerance):
    rng = np.random.default_rng(6)
    long = rng.normal(size=(12, 16)) * 15  # norms around 60, as raw model outputs can be
    index = ImageIndex(16, "m", dtype=dtype)
    index.add_vectors(long[:6], paths=[f"v{i}" for i in range(6)])
    index.add([f"w{i}.png" for i in range(6)], long[6:], model="m")
    stored = index.vectors()
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=tolerance)
    np.testing.assert_allclose(stored, unit_rows(long), atol=tolerance)
    np.testing.assert_allclose(index.vectors(["w2.png"]), unit_rows(long[8:9]), atol=tolerance)
    # A long query scores like its direction: the cosine with itself is 1.
    hit = index.search(long[3] * 7, k=1, exact=True)[0]
    assert hit.path == "v3" and hit.score == pytest.approx(1.0, abs=tolerance)
    index.save(tmp_path / "long.index")
    np.testing.assert_allclose(ImageIndex.load(tmp_path / "long.index").vectors(), stored)


def test_batch_search_drops_the_padding_of_short_result_lists():
    index = ImageIndex(8, "m")
    vectors = unit_rows(np.random.default_rng(2).normal(size=(3, 8)))
    index.add_vectors(vectors, paths=["a", "b", "c"])
    rows = index.search(vectors, k=10)
    assert len(rows) == 3
    for row, expected in zip(rows, ["a", "b", "c"]):
        assert len(row) == 3 and len({hit.key for hit in row}) == 3
        assert row[0].path == expected and row[0].score == pytest.approx(1.0, abs=1e-3)
        assert [hit.score for hit in row] == sorted((hit.score for hit in row), reverse=True)
    one_row = index.search(vectors[:1], k=2)
    assert len(one_row) == 1 and [hit.path for hit in one_row[0]] == ["a", rows[0][1].path]
    assert ImageIndex(8, "m").search(vectors[0]) == []


def test_removed_images_are_never_returned_and_can_come_back():
    index = ImageIndex(8, "m")
    vectors = unit_rows(np.random.default_rng(3).normal(size=(20, 8)))
    keys = index.add_vectors(vectors, paths=[f"v{i}" for i in range(20)])
    assert index.remove(["v3", "v7"]) == 2
    assert len(index) == 18
    found = {hit.path for row in index.search(vectors, k=20, exact=True) for hit in row}
    assert found == {f"v{i}" for i in range(20)} - {"v3", "v7"}
    with pytest.raises(KeyError, match="v3"):
        index.remove(["v3", "v4"])
    assert len(index) == 18
    new_key = index.add_vectors(vectors[3:4], paths=["v3"])[0]
    assert new_key not in keys and index.search(vectors[3], k=1)[0].path == "v3"


def test_f16_hnsw_recall_against_exact_search():
    rng = np.random.default_rng(4)
    centres = unit_rows(rng.normal(size=(40, 64)))
    vectors = unit_rows(centres[rng.integers(0, 40, 3000)] + rng.normal(0, 0.08, (3000, 64)))
    index = ImageIndex(64, "m", dtype="f16")
    index.add_vectors(vectors)
    queries = unit_rows(centres[rng.integers(0, 40, 200)] + rng.normal(0, 0.08, (200, 64)))
    assert index.recall_at_k(queries, k=10) >= 0.95
    assert index.recall_at_k(k=10, sample=200) >= 0.95


# -- duplicates ----------------------------------------------------------------------------------


def test_exact_and_near_duplicates(tmp_path, encoder):
    root = tmp_path / "dupes"
    make_image(root / "red.png", RED)
    (root / "copies").mkdir()
    shutil.copy(root / "red.png", root / "copies" / "red-copy.png")
    make_image(root / "red-noisy.png", (220, 30, 25), noise=6.0)
    make_image(root / "blue.png", BLUE)
    make_image(root / "green.png", GREEN)
    index = built(root, encoder)

    assert index.exact_duplicates() == [["copies/red-copy.png", "red.png"]]
    pairs = index.near_duplicates(threshold=0.95)
    names = {(a, b) for a, b, _ in pairs}
    assert names == {("copies/red-copy.png", "red.png"), ("red-noisy.png", "red.png"),
                     ("copies/red-copy.png", "red-noisy.png")}
    assert all(score >= 0.95 for _, _, score in pairs)
    assert [score for _, _, score in pairs] == sorted((score for _, _, score in pairs), reverse=True)
    assert pairs[0][:2] == ("copies/red-copy.png", "red.png")


# -- saving, loading, views ----------------------------------------------------------------------


def test_save_and_load_keep_vectors_metadata_and_settings(photos, encoder, tmp_path):
    index = ImageIndex(encoder.dim, encoder.name, dtype="i8", connectivity=8, expansion_add=40, expansion_search=24)
    index.update_folder(photos, encoder)
    index.save(tmp_path / "photos.index")
    loaded = ImageIndex.load(tmp_path / "photos.index")

    assert (loaded.model, loaded.dim, loaded.dtype) == (encoder.name, encoder.dim, "i8")
    assert (loaded.connectivity, loaded.expansion_add, loaded.expansion_search) == (8, 40, 24)
    assert loaded.records == index.records and loaded.root == photos.resolve()
    assert np.array_equal(loaded.vectors(), index.vectors())
    report = loaded.update_folder(photos, encoder)
    assert len(report.unchanged) == 3 and encoder.images_embedded == 3
    new_keys = loaded.add_vectors(np.ones((1, encoder.dim)))
    assert min(new_keys) > max(r.key for r in index.records)


def _snapshot(index: ImageIndex) -> tuple:
    return sorted(index.paths), index.vectors(sorted(index.paths)).round(3).tolist()


@pytest.mark.parametrize("failing_step", ["vectors file", "fsync", "manifest rename"])
def test_an_interrupted_save_leaves_the_previous_index_intact(photos, encoder, tmp_path, monkeypatch, failing_step):
    path = tmp_path / "photos.index"
    index = built(photos, encoder)
    index.save(path)
    before = _snapshot(ImageIndex.load(path))
    files_before = sorted(p.name for p in path.iterdir())

    make_image(photos / "yellow.png", YELLOW)
    index.update_folder(photos, encoder)
    index.remove(["red.png"])

    def boom(*args, **kwargs):
        raise OSError(f"disk full during {failing_step}")

    if failing_step == "vectors file":
        monkeypatch.setattr(index._index, "save", boom)
    elif failing_step == "fsync":
        monkeypatch.setattr(index_module, "_fsync", boom)
    else:
        real_replace = os.replace

        def replace(src, dst):
            if Path(dst).name == index_module.MANIFEST:
                boom()
            real_replace(src, dst)

        monkeypatch.setattr(index_module.os, "replace", replace)

    with pytest.raises(OSError, match="disk full"):
        index.save(path)
    monkeypatch.undo()

    assert sorted(p.name for p in path.iterdir()) == files_before
    reloaded = ImageIndex.load(path)
    assert _snapshot(reloaded) == before
    assert "yellow.png" not in reloaded and "red.png" in reloaded

    index.save(path)
    assert sorted(ImageIndex.load(path).paths) == ["green.jpg", "nested/blue.png", "yellow.png"]


def test_leftovers_of_a_killed_save_are_ignored_then_cleaned(photos, encoder, tmp_path):
    path = tmp_path / "photos.index"
    index = built(photos, encoder)
    index.save(path)
    (path / "vectors-0123abcd.usearch").write_bytes(b"half written")
    (path / "vectors-4567.usearch.tmp").write_bytes(b"half written")
    (path / f".{index_module.MANIFEST}.xyz.tmp").write_text("{")
    assert sorted(ImageIndex.load(path).paths) == sorted(index.paths)
    index.save(path)
    assert len(list(path.iterdir())) == 2


def test_save_refuses_to_overwrite_something_that_is_not_an_index(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    index = ImageIndex(4, "m")
    with pytest.raises(FileExistsError, match="not an image index"):
        index.save(tmp_path / "notes")
    (tmp_path / "file.index").write_text("x")
    with pytest.raises(FileExistsError):
        index.save(tmp_path / "file.index")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError):
        ImageIndex.load(tmp_path / "notes")


def test_view_searches_like_a_loaded_index_and_refuses_changes(photos, encoder, tmp_path):
    path = tmp_path / "photos.index"
    built(photos, encoder).save(path)
    loaded, view = ImageIndex.load(path), ImageIndex.load(path, view=True)
    assert view.read_only and not loaded.read_only
    query = encoder.encode_images([Image.new("RGB", (32, 32), GREEN)])[0]
    assert view.search(query, k=3) == loaded.search(query, k=3)

    with pytest.raises(ReadOnlyIndexError, match="view=True"):
        view.add_vectors(np.ones((1, encoder.dim)))
    with pytest.raises(ReadOnlyIndexError):
        view.add([photos / "red.png"], np.ones((1, encoder.dim)))
    with pytest.raises(ReadOnlyIndexError):
        view.remove(["red.png"])
    with pytest.raises(ReadOnlyIndexError):
        view.update_folder(photos, encoder)
    assert len(view) == 3 and view.search(query, k=3) == loaded.search(query, k=3)


def test_default_parameters_reach_recall_099_on_uniform_random_vectors():
    # Uniform random unit vectors are the hardest case for HNSW (no cluster structure).
    rng = np.random.default_rng(0)
    vectors = unit_rows(rng.normal(size=(10_000, 128)))
    queries = unit_rows(rng.normal(size=(200, 128)))
    index = ImageIndex(128, "m")
    assert index.dtype == "f16"
    index.add_vectors(vectors)
    assert index.recall_at_k(queries, k=10) >= 0.99


def test_single_threaded_builds_give_the_same_graph_every_time():
    rng = np.random.default_rng(5)
    vectors = unit_rows(rng.normal(size=(3000, 32)))
    queries = unit_rows(rng.normal(size=(100, 32)))

    def build_and_search() -> list[list[int]]:
        index = ImageIndex(32, "m", connectivity=4, expansion_add=8, expansion_search=8)
        index.add_vectors(vectors, threads=1)
        return [[hit.key for hit in row] for row in index.search(queries, k=10)]

    first = build_and_search()
    assert all(len(row) == 10 for row in first)
    assert build_and_search() == first


def test_add_vectors_passes_threads_to_usearch(monkeypatch):
    index = ImageIndex(8, "m")
    seen = []
    real_add = index._index.add
    monkeypatch.setattr(index._index, "add", lambda *args, **kwargs: seen.append(kwargs.get("threads")) or real_add(*args, **kwargs))
    index.add_vectors(unit_rows(np.ones((2, 8))), threads=1)
    index.add_vectors(unit_rows(np.ones((2, 8))))
    index.add(["a.png"], unit_rows(np.ones((1, 8))))  # files use every core too
    assert seen == [1, 0, 0] and len(index) == 5


# -- what a save and a load promise, step by step ---------------------------------------------------


def test_a_save_passes_every_save_point_in_order_and_syncs_the_folder(tmp_path, monkeypatch):
    seen, synced_folders, synced_files = [], [], []
    monkeypatch.setattr(index_module, "SAVE_HOOK", seen.append)
    real_fsync = os.fsync

    def fsync(descriptor):
        if stat.S_ISDIR(os.fstat(descriptor).st_mode):
            synced_folders.append(descriptor)
        elif os.name == "posix":  # files are synced through a descriptor open for writing (Windows needs one)
            import fcntl

            synced_files.append(fcntl.fcntl(descriptor, fcntl.F_GETFL) & os.O_ACCMODE)
        real_fsync(descriptor)

    monkeypatch.setattr(index_module.os, "fsync", fsync)
    index = ImageIndex(4, "m", dtype="f32")
    index.add_vectors(np.eye(4))
    index.save(tmp_path / "x.index")
    assert seen == list(index_module.SAVE_POINTS)
    assert len(synced_folders) == 1  # the renames are made durable (POSIX)
    if os.name == "posix":  # the vectors file and the manifest
        assert len(synced_files) == 2 and os.O_RDONLY not in synced_files


def test_an_empty_index_has_no_vectors_and_refuses_recall():
    index = ImageIndex(4, "m")
    assert index.vectors().shape == (0, 4) and index.vectors().dtype == np.float32
    with pytest.raises(ValueError, match="^recall needs at least one query and one indexed vector$"):
        index.recall_at_k(np.eye(4))


def test_errors_name_what_was_wrong_vectors_or_queries():
    index = ImageIndex(4, "m")
    with pytest.raises(ValueError, match="^vectors contain NaN or infinite values$"):
        index.add(["a.png"], np.array([[np.inf, 0, 0, 0]]))
    with pytest.raises(ValueError, match="^vectors contain a zero vector"):
        index.add_vectors(np.zeros((1, 4)))
    index.add_vectors(np.eye(4))
    with pytest.raises(ValueError, match="^queries contain a zero vector"):
        index.recall_at_k(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="^query contain NaN"):
        index.search(np.array([np.nan, 0, 0, 0]))


def test_half_precision_input_is_normalised_in_float32():
    rng = np.random.default_rng(8)
    halves = (rng.normal(size=(20, 16)) * 3).astype(np.float16)
    index = ImageIndex(16, "m", dtype="f32")
    index.add_vectors(halves)
    # Normalising in float16 would leave errors near 1e-3; float32 is exact to about 1e-7.
    np.testing.assert_allclose(index.vectors(), unit_rows(halves.astype(np.float32)), atol=1e-6)


def test_a_pair_exactly_at_the_threshold_is_a_near_duplicate():
    index = ImageIndex(8, "m", dtype="f32")
    a = unit_rows(np.random.default_rng(9).normal(size=(1, 8)))[0]
    b = unit_rows((a + 0.15 * np.eye(8)[0])[None, :])[0]
    index.add_vectors(np.stack([a, b, -a]), paths=["a", "b", "far"])
    [(first, second, score)] = index.near_duplicates(threshold=0.5)
    assert (first, second) == ("a", "b") and 0.5 < score < 1.0
    assert index.near_duplicates(threshold=score) == [("a", "b", score)]  # >= threshold, not >


def test_recall_measures_the_graph_against_exact_search():
    rng = np.random.default_rng(0)
    vectors = unit_rows(rng.normal(size=(3000, 16)))
    poor = ImageIndex(16, "m", dtype="f32", connectivity=2, expansion_add=2, expansion_search=1)
    poor.add_vectors(vectors, threads=1)
    assert poor.recall_at_k(unit_rows(rng.normal(size=(50, 16))), k=10) < 0.9


def test_a_view_maps_the_file_instead_of_reading_it(tmp_path):
    index = ImageIndex(64, "m", dtype="f32")
    index.add_vectors(unit_rows(np.random.default_rng(10).normal(size=(2000, 64))), threads=1)
    index.save(tmp_path / "v.index")
    loaded, view = ImageIndex.load(tmp_path / "v.index"), ImageIndex.load(tmp_path / "v.index", view=True)
    # A loaded index holds its 2000 x 64 float32 vectors (512 KB) in memory; a view does not.
    assert loaded._index.memory_usage > 2000 * 64 * 4 > 10 * view._index.memory_usage


def test_a_damaged_or_missing_vectors_file_is_a_clear_error_naming_the_folder(tmp_path):
    folder = tmp_path / "d.index"
    index = ImageIndex(4, "m", dtype="f32")
    index.add_vectors(np.eye(4))
    index.save(folder)
    vectors_file = next(folder.glob("vectors-*.usearch"))
    size = vectors_file.stat().st_size
    vectors_file.write_bytes(vectors_file.read_bytes()[:-10])
    with pytest.raises(index_module.IndexFormatError, match=rf"{vectors_file.name} has {size - 10} bytes, its index.json says {size}$"):
        ImageIndex.load(folder)
    vectors_file.write_bytes(bytes(size))  # the recorded size, but not a USearch file
    with pytest.raises(index_module.IndexFormatError,
                       match=rf"^{folder} is damaged: USearch cannot read {vectors_file.name} \(.+\)$"):
        ImageIndex.load(folder, verify=False)
    vectors_file.unlink()
    with pytest.raises(index_module.IndexFormatError, match="the vectors file its index.json names is missing"):
        ImageIndex.load(folder)
    (folder / index_module.MANIFEST).write_text("{")
    with pytest.raises(index_module.IndexFormatError, match=rf"^{folder} is damaged: index.json is not valid JSON"):
        ImageIndex.load(folder)


def test_save_refuses_a_file_in_the_way_with_a_message(tmp_path):
    (tmp_path / "file.index").write_text("x")
    with pytest.raises(FileExistsError, match="is a file; an index is saved as a folder"):
        ImageIndex(4, "m").save(tmp_path / "file.index")


def test_an_encoder_with_another_fingerprint_is_refused_and_the_first_is_kept(photos):
    encoder = FakeEncoder()
    encoder.fingerprint = "fake-colour@sha256:" + "a" * 64
    index = built(photos, encoder)
    assert index.model_fingerprint == encoder.fingerprint
    retrained = FakeEncoder()
    retrained.fingerprint = "fake-colour@sha256:" + "b" * 64
    with pytest.raises(ValueError, match="fingerprint is fake-colour@sha256:a+, but the loaded 'fake-colour' is "
                                         "fake-colour@sha256:b+: other weights"):
        index.update_folder(photos, retrained)


def test_rehash_finds_changed_bytes_behind_the_same_size_and_mtime(photos, encoder):
    index = built(photos, encoder)
    red = photos / "red.png"
    before = red.stat()
    make_image(red, (231, 20, 20))  # other bytes, and (PNG of a flat colour) the same size
    os.utime(red, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert red.stat().st_size == before.st_size
    assert index.update_folder(photos, encoder).updated == []  # size and mtime say unchanged
    report = index.update_folder(photos, encoder, rehash=True)
    assert report.updated == ["red.png"] and sorted(report.unchanged) == ["green.jpg", "nested/blue.png"]


def test_a_file_that_cannot_be_read_while_updating_is_skipped_and_the_rest_goes_on(photos, encoder, monkeypatch):
    index = built(photos, encoder)
    for path in ("green.jpg", "red.png"):
        make_image(photos / path, YELLOW if path == "red.png" else PURPLE)
    real_sha256 = index_module.file_sha256

    def sha256(path):
        if Path(path).name == "green.jpg":
            raise PermissionError(13, "Permission denied")
        return real_sha256(path)

    monkeypatch.setattr(index_module, "file_sha256", sha256)
    report = index.update_folder(photos, encoder)
    assert report.skipped == [("green.jpg", "cannot read file (Permission denied)")]
    assert report.removed == ["green.jpg"] and "green.jpg" not in index
    assert report.updated == ["red.png"]  # the file after it was still looked at
    assert report.unchanged == ["nested/blue.png"]


# -- what the mutation run (benchmarks/mutation_score.py) showed the tests above missed -----------


def _poor_graph(n: int = 3000, dim: int = 16) -> tuple[ImageIndex, np.ndarray]:
    """A deliberately sparse graph (one-wide search) whose approximate answers miss neighbours."""
    vectors = unit_rows(np.random.default_rng(11).normal(size=(n, dim)))
    index = ImageIndex(dim, "m", dtype="f32", connectivity=2, expansion_add=2, expansion_search=1)
    index.add_vectors(vectors, threads=1)
    return index, vectors


def test_an_index_of_one_dimension_is_allowed_and_a_new_index_is_writable():
    index = ImageIndex(1, "m", dtype="f32")
    index.add_vectors(np.array([[2.0], [-3.0]]), paths=["up", "down"])
    assert [hit.path for hit in index.search(np.array([5.0]), k=2)] == ["up", "down"]
    assert index.read_only is False


def test_a_view_says_so_in_its_repr(tmp_path):
    index = ImageIndex(4, "m", dtype="f32")
    index.add_vectors(np.eye(4))
    index.save(tmp_path / "r.index")
    assert repr(ImageIndex.load(tmp_path / "r.index", view=True)).endswith("dtype=f32, view)")
    assert repr(ImageIndex.load(tmp_path / "r.index")).endswith("dtype=f32)")


def test_a_wrong_dimension_names_the_query_or_the_encoder(photos, encoder):
    index = built(photos, encoder)
    with pytest.raises(ValueError, match=r"^query has dimension 8\b"):
        index.search(np.ones(8))
    with pytest.raises(ValueError, match=r"^encoder 'fake-colour' has dimension 24\b"):
        index.check_encoder(FakeEncoder(encoder.name, dim=24))


class PlainEncoder:
    """An encoder by duck typing: a name, a dimension and encode_files, but no fingerprint."""

    def __init__(self) -> None:
        self._inner = FakeEncoder()
        self.name, self.dim = self._inner.name, self._inner.dim

    def encode_files(self, paths, **options):
        return self._inner.encode_files(paths, **options)


def test_an_encoder_without_a_fingerprint_attribute_is_accepted(photos):
    index = ImageIndex(16, "fake-colour")
    report = index.update_folder(photos, PlainEncoder())
    assert len(report.added) == 3 and index.model_fingerprint is None
    index.check_encoder(PlainEncoder())


class RecordingEncoder(FakeEncoder):
    """Records the options update_folder passes on to encode_files."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[tuple] = []

    def encode_files(self, paths, batch_size=32, progress=None, num_workers=None):
        self.options.append((batch_size, progress, num_workers))
        return super().encode_files(paths, batch_size=batch_size, progress=progress, num_workers=num_workers)


def test_update_passes_batch_size_progress_and_workers_to_the_encoder(photos):
    import inspect

    encoder = RecordingEncoder()
    ImageIndex(encoder.dim, encoder.name).update_folder(photos, encoder, batch_size=2, progress=False, num_workers=0)
    ImageIndex(encoder.dim, encoder.name).update_folder(photos, encoder)
    # By default it batches like encode_files itself, and leaves the bar and the workers to it.
    default_batch = inspect.signature(Encoder.encode_files).parameters["batch_size"].default
    assert encoder.options == [(2, False, 0), (default_batch, None, None)]


def test_a_file_that_becomes_empty_is_removed_once_and_reported(photos, encoder):
    index = built(photos, encoder)
    (photos / "red.png").write_bytes(b"")
    report = index.update_folder(photos, encoder)
    assert report.removed == ["red.png"]
    assert report.skipped == [("red.png", "empty file (0 bytes)")]
    assert "red.png" not in index and len(index) == 2


# -- paths ---------------------------------------------------------------------------------------


def test_add_reads_size_mtime_and_hash_of_an_existing_file(photos):
    index = ImageIndex(16, "m")
    red = photos / "red.png"
    index.add([red], np.ones((1, 16)))
    record = index.record(red)
    assert (record.size, record.mtime_ns) == (red.stat().st_size, red.stat().st_mtime_ns)
    assert record.sha256 == index_module.file_sha256(red)


def test_paths_without_a_root_are_stored_as_normal_posix_strings(tmp_path):
    index = ImageIndex(4, "m")
    absolute = tmp_path / "a.png"
    index.add([absolute, f"{tmp_path}//b.png", Path("sub/c.png"), "sub/./d.png"], np.eye(4))
    # Absolute paths are normalised (one spelling per file); relative strings are labels, kept as given.
    assert index.paths == [absolute.as_posix(), (tmp_path / "b.png").as_posix(), "sub/c.png", "sub/./d.png"]
    assert all(type(path) is str for path in index.paths)
    assert absolute in index and str(tmp_path / "b.png") in index and Path("sub/c.png") in index


def test_vectors_without_paths_are_named_after_their_keys():
    index = ImageIndex(4, "m")
    first = index.add_vectors(np.eye(4)[:2])
    second = index.add_vectors(np.eye(4)[2:])
    assert index.paths == [f"vector-{key}" for key in first + second] == ["vector-0", "vector-1", "vector-2",
                                                                          "vector-3"]


def test_remove_lists_up_to_five_missing_paths_and_marks_only_a_longer_list():
    index = ImageIndex(4, "m")
    with pytest.raises(KeyError) as five:
        index.remove(["a", "b", "c", "d", "e"])
    assert "a, b, c, d, e" in str(five.value) and "..." not in str(five.value) and "XX" not in str(five.value)
    with pytest.raises(KeyError) as one:
        index.remove(["a"])
    assert str(one.value) == "'not in the index: a'"


# -- searching and recall ------------------------------------------------------------------------


def test_search_defaults_to_ten_hits_from_the_graph_and_exact_search_is_exact():
    index, vectors = _poor_graph()
    queries = unit_rows(np.random.default_rng(12).normal(size=(50, 16)))
    default = index.search(queries)
    assert all(len(row) == 10 for row in default)
    assert default == index.search(queries, k=10, exact=False)
    exact = index.search(queries, k=10, exact=True)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert [{hit.key for hit in row} for row in exact] == [set(row) for row in truth.tolist()]
    assert default != exact  # this graph misses neighbours, so the default did not search exactly


def test_scores_are_cosines_within_minus_one_and_one():
    # In i8 a vector and its opposite can come out a hair beyond distance 2: this one does.
    vector = unit_rows(np.random.default_rng(0).normal(size=(100, 16)))[28]
    index = ImageIndex(16, "m", dtype="i8")
    index.add_vectors(np.stack([vector, -vector]), paths=["it", "opposite"])
    assert index._index.search(vector, 2, exact=True).distances.max() > 2.0
    hits = index.search(vector, k=2, exact=True)
    assert [hit.path for hit in hits] == ["it", "opposite"] and hits[1].score == -1.0
    assert index.near_duplicates(threshold=-2.0) == [("it", "opposite", -1.0)]


def test_recall_defaults_and_the_stored_vectors_it_samples(monkeypatch):
    index, _ = _poor_graph(1500)
    queries = unit_rows(np.random.default_rng(13).normal(size=(40, 16)))
    assert index.recall_at_k(queries) == index.recall_at_k(queries, k=10) != index.recall_at_k(queries, k=11)
    assert index.recall_at_k(queries[:1], k=1) in (0.0, 1.0)  # one query, one neighbour
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        index.recall_at_k(queries, k=0)

    drawn: list[list[int]] = []
    real_get = index._get
    monkeypatch.setattr(index, "_get", lambda keys: drawn.append(list(keys)) or real_get(keys))
    index.recall_at_k()
    index.recall_at_k(sample=1000, seed=0)
    index.recall_at_k(sample=700, seed=5)
    index.recall_at_k(sample=700, seed=5)
    index.recall_at_k(sample=700, seed=6)
    index.recall_at_k(sample=1500, seed=7)
    default, explicit, first, again, other, whole = drawn
    assert len(default) == 1000 and default == explicit  # 1000 queries drawn with seed 0 by default
    assert len(set(first)) == 700 and set(first) <= set(range(1500))  # distinct stored vectors
    assert first == again and first != other  # the seed decides the sample
    assert whole == list(range(1500))  # an index no larger than the sample is queried whole, without a draw


# -- near duplicates -----------------------------------------------------------------------------


def _chain(tmp_count: int = 12, step: float = 0.02) -> np.ndarray:
    """Unit vectors along an arc, ``step`` radians apart: each one's nearest are its neighbours on it."""
    angles = step * np.arange(tmp_count)
    chain = np.zeros((tmp_count, 8))
    chain[:, 0], chain[:, 1] = np.cos(angles), np.sin(angles)
    return chain


def test_near_duplicates_default_threshold_and_neighbour_count():
    index = ImageIndex(8, "m", dtype="f32")
    names = [f"c{i:02d}" for i in range(12)]
    index.add_vectors(_chain(), paths=names)
    apart = np.zeros((2, 8))
    apart[0, 2] = 1.0
    apart[1, 2], apart[1, 3] = 0.94, np.sqrt(1 - 0.94**2)  # cosine 0.94, orthogonal to the chain
    index.add_vectors(apart, paths=["e1", "e2"])
    every_pair = {(a, b) for i, a in enumerate(names) for b in names[i + 1:]}
    # All 66 chain pairs have cosine >= cos(0.22) > 0.975, but with the default k = 10 each image
    # sees 10 others: the two ends of the chain see everything but each other.
    pairs = index.near_duplicates()
    assert {(a, b) for a, b, _ in pairs} == every_pair - {("c00", "c11")}
    assert {(a, b) for a, b, _ in index.near_duplicates(k=11)} == every_pair
    assert ("e1", "e2") in {(a, b) for a, b, _ in index.near_duplicates(threshold=0.9)}


def test_near_duplicates_with_equal_scores_are_sorted_by_path():
    index = ImageIndex(4, "m", dtype="f32")
    index.add_vectors(np.ones((4, 4)), paths=["d", "c", "b", "a"])  # identical vectors, added in reverse
    pairs = index.near_duplicates()
    assert pairs == [(a, b, 1.0) for a, b in [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]]


def test_near_duplicate_scores_do_not_depend_on_the_order_of_adding():
    # In i8 (and f16) a pair's score seen from one side can differ in the last digits from the
    # other side's; the larger is reported, whichever image came first.
    rng = np.random.default_rng(14)
    centres = rng.normal(size=(6, 32))
    vectors = unit_rows(centres[rng.integers(0, 6, 60)] + rng.normal(0, 0.1, (60, 32)))
    names = [f"v{i:02d}" for i in range(60)]
    found = []
    for order in (range(60), range(59, -1, -1)):
        index = ImageIndex(32, "m", dtype="i8")
        index.add_vectors(vectors[list(order)], paths=[names[i] for i in order], threads=1)
        found.append({(a, b): s for a, b, s in index.near_duplicates(threshold=0.9, k=20)})
    assert len(found[0]) > 50 and found[0] == found[1]


def test_near_duplicates_use_the_graph_like_search():
    index, _ = _poor_graph()
    expected = set()
    for path, row in zip(index.paths, index.search(index.vectors(), k=3)):
        expected |= {tuple(sorted((path, hit.path))) for hit in row if hit.path != path}
    found = {(a, b) for a, b, _ in index.near_duplicates(threshold=-1.0, k=2)}
    assert found == expected


# -- folders, saves and loads --------------------------------------------------------------------


def _saved(folder: Path, n: int = 4, dim: int = 4) -> ImageIndex:
    index = ImageIndex(dim, "m", dtype="f32")
    index.add_vectors(np.eye(dim)[:n], paths=[f"p{i}" for i in range(n)])
    index.save(folder)
    return index


def _edit_manifest(folder: Path, edit) -> None:
    manifest = folder / index_module.MANIFEST
    data = json.loads(manifest.read_text())
    edit(data)
    manifest.write_text(json.dumps(data))


def test_folder_state_and_exists_tell_what_a_path_holds(tmp_path):
    assert ImageIndex.folder_state(tmp_path / "none") == "missing" and not ImageIndex.exists(tmp_path / "none")
    (tmp_path / "file").write_text("x")
    assert ImageIndex.folder_state(tmp_path / "file") == "file" and not ImageIndex.exists(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert ImageIndex.folder_state(tmp_path / "empty") == "new" and not ImageIndex.exists(tmp_path / "empty")
    leftovers = tmp_path / "leftovers"
    leftovers.mkdir()
    for name in ("vectors-ab12.usearch", "vectors-cd34.usearch.tmp", f".{index_module.MANIFEST}.ef56.tmp"):
        (leftovers / name).write_bytes(b"half written")
    assert ImageIndex.folder_state(leftovers) == "new"
    saved = tmp_path / "deep" / "er" / "x.index"  # missing parents are created
    _saved(saved)
    assert ImageIndex.folder_state(saved) == "index" and ImageIndex.exists(saved)
    assert ImageIndex.exists(str(saved))
    # Names that only look like a save's files on one side are someone else's.
    for name in ("vectors-notes.txt", "draft.usearch", "draft.tmp", f".{index_module.MANIFEST}.bak",
                 f"{index_module.MANIFEST}.tmp"):
        folder = tmp_path / f"foreign-{name}"
        folder.mkdir()
        (folder / name).write_text("keep me")
        assert ImageIndex.folder_state(folder) == "foreign", name


def test_a_save_keeps_files_in_the_index_folder_that_it_did_not_write(tmp_path):
    folder = tmp_path / "x.index"
    index = _saved(folder)
    mine = ["vectors-notes.txt", "draft.usearch", "draft.tmp", f".{index_module.MANIFEST}.bak"]
    for name in mine:
        (folder / name).write_text("keep me")
    index.save(folder)
    assert all((folder / name).read_text() == "keep me" for name in mine)
    assert len(list(folder.glob("vectors-*.usearch"))) == 1


def test_a_save_waits_for_another_writer_unless_told_not_to(tmp_path, capsys):
    import threading

    from vslib.indexlock import IndexLockedError, writer_lock

    folder = tmp_path / "w.index"
    index = ImageIndex(4, "m")
    index.add_vectors(np.eye(4))
    held, release = threading.Event(), threading.Event()

    def other_writer():
        with writer_lock(folder):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=other_writer)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(IndexLockedError):
            index.save(folder, wait=False)
        threading.Timer(0.5, release.set).start()
        index.save(folder)  # waits, then saves
    finally:
        release.set()
        thread.join()
    assert "waiting for another process" in capsys.readouterr().err
    assert len(ImageIndex.load(folder)) == 4


def test_load_checks_the_vectors_checksum_by_default(tmp_path):
    folder = tmp_path / "c.index"
    _saved(folder)
    vectors_file = next(folder.glob("vectors-*.usearch"))
    data = bytearray(vectors_file.read_bytes())
    data[-1] ^= 0xFF  # the same size, other bytes
    vectors_file.write_bytes(bytes(data))
    with pytest.raises(index_module.IndexFormatError, match=rf"{folder} is damaged: .*checksum"):
        ImageIndex.load(folder)


def test_load_refuses_records_that_do_not_match_the_vectors(tmp_path):
    folder = tmp_path / "m.index"
    _saved(folder)
    _edit_manifest(folder, lambda data: data["images"].pop())
    with pytest.raises(index_module.IndexFormatError, match=rf"{folder} is damaged: .*vectors.*metadata records"):
        ImageIndex.load(folder)


@pytest.mark.parametrize("field, value", [("dim", 8), ("dtype", "f16")])
def test_load_refuses_a_vectors_file_of_another_dimension_or_type(tmp_path, field, value):
    folder = tmp_path / "h.index"
    _saved(folder)

    def edit(data):
        data[field] = value
        for record in data["images"]:
            if field in record:
                record[field] = value

    _edit_manifest(folder, edit)
    with pytest.raises(index_module.IndexFormatError, match=r"does not hold f(32|16) vectors of dimension (4|8)"):
        ImageIndex.load(folder)


def test_the_model_fingerprint_and_an_absent_root_survive_a_save(photos, tmp_path):
    encoder = FakeEncoder()
    encoder.fingerprint = "fake-colour@sha256:" + "a" * 64
    built(photos, encoder).save(tmp_path / "f.index")
    loaded = ImageIndex.load(tmp_path / "f.index")
    assert loaded.model_fingerprint == encoder.fingerprint
    retrained = FakeEncoder()
    retrained.fingerprint = "fake-colour@sha256:" + "b" * 64
    with pytest.raises(ValueError, match="other weights"):
        loaded.check_encoder(retrained)
    _saved(tmp_path / "plain.index")
    assert ImageIndex.load(tmp_path / "plain.index").root is None


def test_a_load_that_meets_a_save_reads_the_new_manifest(tmp_path, monkeypatch):
    folder = tmp_path / "race.index"
    _saved(folder)
    newer = ImageIndex(4, "m", dtype="f32")
    newer.add_vectors(np.eye(4)[:2], paths=["x", "y"])
    real_parse = index_module.parse_manifest
    saves = []

    def parse_then_a_save_commits(data, where):
        manifest = real_parse(data, where)
        if not saves:  # another writer commits and deletes the vectors file this manifest names
            saves.append(newer.save(folder))
        return manifest

    monkeypatch.setattr(index_module, "parse_manifest", parse_then_a_save_commits)
    assert ImageIndex.load(folder).paths == ["x", "y"]


def test_a_vectors_file_that_vanishes_while_its_header_is_read_means_a_newer_save(tmp_path, monkeypatch):
    folder = tmp_path / "race.index"
    _saved(folder)
    newer = ImageIndex(4, "m", dtype="f32")
    newer.add_vectors(np.eye(4)[:3], paths=["x", "y", "z"])
    real_metadata = index_module.Index.metadata
    saves = []

    def metadata_after_a_save(path):
        if not saves:  # a save commits between the size check and the header read
            saves.append(newer.save(folder))
        return real_metadata(path)

    monkeypatch.setattr(index_module.Index, "metadata", staticmethod(metadata_after_a_save))
    assert ImageIndex.load(folder).paths == ["x", "y", "z"]


def test_an_unreadable_manifest_is_a_format_error_naming_it(tmp_path):
    folder = tmp_path / "loop.index"
    folder.mkdir()
    (folder / index_module.MANIFEST).symlink_to(index_module.MANIFEST)  # a link to itself
    with pytest.raises(index_module.IndexFormatError, match=rf"cannot read {folder / index_module.MANIFEST}: "):
        ImageIndex.load(folder)


def test_a_failed_manifest_write_raises_its_error_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    folder = tmp_path / "x.index"
    index = _saved(folder)
    before = sorted(p.name for p in folder.iterdir())

    def fail_fsync(descriptor):
        raise OSError(28, "No space left on device")

    def hook(point):
        if point == "vectors renamed":  # the next write is the manifest's
            monkeypatch.setattr(index_module.os, "fsync", fail_fsync)

    monkeypatch.setattr(index_module, "SAVE_HOOK", hook)
    with pytest.raises(OSError, match="No space left"):
        index.save(folder)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == before
    assert ImageIndex.load(folder).paths == index.paths


def test_a_first_save_killed_at_any_point_leaves_a_folder_the_next_save_takes(tmp_path, monkeypatch):
    folder = tmp_path / "k.index"
    snapshots = []

    def snapshot(point):  # what a kill at this point would leave behind
        if folder.is_dir():
            copy = tmp_path / f"killed-{len(snapshots)}"
            shutil.copytree(folder, copy)
            snapshots.append(copy)

    monkeypatch.setattr(index_module, "SAVE_HOOK", snapshot)
    index = ImageIndex(4, "m", dtype="f32")
    index.add_vectors(np.eye(4))
    index.save(folder)
    monkeypatch.undo()
    assert len(snapshots) >= 4
    for copy in snapshots:
        assert ImageIndex.folder_state(copy) in ("new", "index"), sorted(p.name for p in copy.iterdir())
        index.save(copy)
        assert len(list(copy.iterdir())) == 2 and ImageIndex.load(copy).paths == index.paths
