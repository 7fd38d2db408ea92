"""An index folder under hostile conditions: kills at every save point, two writers, readers during
saves, hand-corrupted manifests and vectors files, changed files that keep size and mtime, and a
model that is not the one the index was built with.

Writers, readers and killed saves run as real processes (``python -c``), so the lock is the
operating system's and a kill is a real SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from vslib import index as index_module
from vslib.fingerprint import model_fingerprint
from vslib.index import ImageIndex, IndexFormatError
from vslib.indexlock import IndexLockedError, lock_path, writer_lock

REPO = Path(__file__).resolve().parents[1]
DIM = 8


def unit_rows(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    matrix = np.random.default_rng(seed).normal(size=(n, dim))
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def vectors_index(n: int = 50, seed: int = 0, fingerprint: str | None = None) -> ImageIndex:
    index = ImageIndex(DIM, "m", dtype="f32", connectivity=8)
    index.model_fingerprint = fingerprint
    index.add_vectors(unit_rows(n, seed), threads=1)
    return index


def python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def start(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


# -- kills at every save point -------------------------------------------------------------------

_KILLED_SAVE = """
    import os, signal, sys
    import numpy as np
    from vslib import index as index_module
    from vslib.index import ImageIndex
    folder, point, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    index = ImageIndex.load(folder) if ImageIndex.exists(folder) else ImageIndex(8, "m", dtype="f32")
    rng = np.random.default_rng(n)
    index.add_vectors(rng.normal(size=(n, 8)), threads=1)
    def hook(name):
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)
    index_module.SAVE_HOOK = hook
    index.save(folder)
"""


@pytest.mark.parametrize("point", index_module.SAVE_POINTS)
def test_a_save_killed_at_any_point_leaves_a_usable_folder(tmp_path, point):
    folder = tmp_path / "killed.index"
    # A first save killed at this point: the folder is new (leftovers only) or already saved.
    first = python(_KILLED_SAVE, str(folder), point, "5")
    assert first.returncode == -signal.SIGKILL, first.stderr
    state = ImageIndex.folder_state(folder)
    assert state in ("missing", "new", "index")
    if state == "index":  # killed after the commit: the save is complete
        assert len(ImageIndex.load(folder)) == 5
    # The next writer just works, and clears what the killed save left.
    vectors_index(7).save(folder)
    assert len(ImageIndex.load(folder)) == 7
    assert sorted(p.name.split("-")[0] for p in folder.iterdir()) == ["index.json", "vectors"]

    # An update killed at this point keeps the previous index or commits the new one, whole.
    second = python(_KILLED_SAVE, str(folder), point, "3")
    assert second.returncode == -signal.SIGKILL
    assert len(ImageIndex.load(folder)) in (7, 10)
    vectors_index(4).save(folder)
    assert len(ImageIndex.load(folder)) == 4 and len(list(folder.iterdir())) == 2


def test_a_folder_with_only_leftovers_is_new_but_a_foreign_file_is_refused(tmp_path):
    folder = tmp_path / "x.index"
    folder.mkdir()
    (folder / "vectors-0123abcd.usearch.tmp").write_bytes(b"half written")
    assert ImageIndex.folder_state(folder) == "new"
    (folder / "holiday.jpg").write_bytes(b"keep me")
    assert ImageIndex.folder_state(folder) == "foreign"
    with pytest.raises(FileExistsError, match="not an image index"):
        vectors_index().save(folder)
    assert (folder / "holiday.jpg").read_bytes() == b"keep me"


# -- two writers, and readers during saves -------------------------------------------------------

_SAVER = """
    import sys
    import numpy as np
    from vslib.index import ImageIndex
    folder, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for round in range(rounds):
        index = ImageIndex(8, "m", dtype="f32", connectivity=8)
        rng = np.random.default_rng(seed * 1000 + round)
        index.add_vectors(rng.normal(size=(20 + seed, 8)), threads=1)
        index.save(folder)
    print("ok")
"""

_READER = """
    import sys, time
    from vslib.index import ImageIndex
    folder, seconds = sys.argv[1], float(sys.argv[2])
    loads = failures = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            index = ImageIndex.load(folder, view=True)
            assert len(index) in (20, 21)
            loads += 1
        except Exception as error:
            failures += 1
            print(type(error).__name__, error, file=sys.stderr)
    print(loads, failures)
"""


def test_two_writers_saving_at_once_never_damage_the_index_and_readers_never_fail(tmp_path):
    folder = tmp_path / "shared.index"
    vectors_index(20).save(folder)
    reader = start(_READER, str(folder), "12")
    writers = [start(_SAVER, str(folder), str(seed), "40") for seed in (0, 1)]
    for writer in writers:
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0 and out.strip() == "ok", err
    out, err = reader.communicate(timeout=300)
    loads, failures = map(int, out.split())
    assert failures == 0, err
    assert loads > 0
    final = ImageIndex.load(folder)
    assert len(final) in (20, 21) and len(list(folder.iterdir())) == 2


_HOLDER = """
    import sys, time
    from vslib.indexlock import writer_lock
    with writer_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
"""


def test_a_second_writer_waits_or_fails_fast_while_the_first_holds_the_lock(tmp_path):
    folder = tmp_path / "busy.index"
    holder = start(_HOLDER, str(folder), "3")
    assert holder.stdout.readline().strip() == "locked"
    try:
        with pytest.raises(IndexLockedError, match="another process is writing"):
            with writer_lock(folder, wait=False):
                pass
        with pytest.raises(IndexLockedError):
            vectors_index().save(folder, wait=False)
        waited = []
        began = time.monotonic()
        with writer_lock(folder, on_wait=waited.append):
            held_after = time.monotonic() - began
        assert waited == [folder] and held_after > 1.0  # it waited for the holder to let go
    finally:
        holder.kill()
        holder.wait()
    vectors_index().save(folder)  # the lock is free again (and released by the OS on kill)
    assert lock_path(folder).parent == folder.parent


def test_the_lock_is_re_entrant_within_a_process(tmp_path):
    folder = tmp_path / "nested.index"
    with writer_lock(folder, wait=False):
        vectors_index().save(folder, wait=False)  # a save inside a locked update
    assert len(ImageIndex.load(folder)) == 50


# -- hand-made corruption ------------------------------------------------------------------------


def _manifest(folder: Path) -> dict:
    return json.loads((folder / index_module.MANIFEST).read_text())


def _write_manifest(folder: Path, data) -> None:
    (folder / index_module.MANIFEST).write_text(json.dumps(data))


def _edits():
    def extra_record_field(m):
        m["images"][0]["colour"] = "red"

    def missing_images(m):
        del m["images"]

    def string_dim(m):
        m["dim"] = "8"

    def boolean_key(m):
        m["images"][0]["key"] = True

    def repeated_key(m):
        m["images"][1]["key"] = m["images"][0]["key"]

    def escaping_vectors_name(m):
        m["vectors_file"] = "../../etc/passwd"

    def other_model_record(m):
        m["images"][0]["model"] = "other"

    def fingerprint_of_another_model(m):
        m["model"] = "tiny-other"

    return {f.__name__: f for f in (extra_record_field, missing_images, string_dim, boolean_key, repeated_key,
                                    escaping_vectors_name, other_model_record, fingerprint_of_another_model)}


@pytest.mark.parametrize("edit", ["[]", "not json", "{}", "null", *_edits()])
def test_every_malformed_manifest_is_one_clear_error(tmp_path, edit):
    folder = tmp_path / "bad.index"
    index = ImageIndex(DIM, "m", dtype="f32")
    index.model_fingerprint = "m@sha256:" + "0" * 64
    index.add([tmp_path / "a.png", tmp_path / "b.png"], unit_rows(2, 0))
    index.save(folder)
    if edit in ("[]", "not json", "{}", "null"):
        (folder / index_module.MANIFEST).write_text(edit)
    else:
        manifest = _manifest(folder)
        _edits()[edit](manifest)
        _write_manifest(folder, manifest)
    with pytest.raises(IndexFormatError, match=str(folder)) as raised:
        ImageIndex.load(folder)
    assert "\n" not in str(raised.value)


def _corrupt(file: Path, seed: int) -> None:
    data = bytearray(file.read_bytes())
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, len(data) - 64))
    data[start:start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    file.write_bytes(bytes(data))


_OPEN = """
    import sys
    from vslib.index import ImageIndex, IndexFormatError
    try:
        index = ImageIndex.load(sys.argv[1], view=True)
        index.search(index.vectors()[:1], k=5)
        print("loaded")
    except IndexFormatError as error:
        print("refused:", error)
"""


def test_random_bytes_in_the_vectors_file_are_refused_before_usearch_reads_them(tmp_path):
    clean = tmp_path / "clean.index"
    vectors_index(300, fingerprint=None).save(clean)
    vectors = next(clean.glob("vectors-*.usearch"))
    outcomes = []
    for seed in range(8):
        folder = tmp_path / f"trial-{seed}.index"
        folder.mkdir()
        for file in clean.iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
        _corrupt(folder / vectors.name, seed)
        result = python(_OPEN, str(folder))  # in a child: a crash of USearch must not end the test run
        outcomes.append((result.returncode, result.stdout.split(":")[0]))
        assert "checksum" in result.stdout, (seed, result.returncode, result.stdout, result.stderr[-500:])
    assert outcomes == [(0, "refused")] * 8


def test_a_truncated_or_missing_vectors_file_is_a_clear_error(tmp_path):
    folder = tmp_path / "cut.index"
    vectors_index().save(folder)
    vectors = next(folder.glob("vectors-*.usearch"))
    vectors.write_bytes(vectors.read_bytes()[:100])
    with pytest.raises(IndexFormatError, match="has 100 bytes"):
        ImageIndex.load(folder)
    with pytest.raises(IndexFormatError, match="has 100 bytes"):
        ImageIndex.load(folder, verify=False)  # the size is checked even without the hash
    vectors.unlink()
    with pytest.raises(IndexFormatError, match="missing"):
        ImageIndex.load(folder)


def test_verify_false_skips_only_the_hash(tmp_path):
    folder = tmp_path / "fast.index"
    vectors_index().save(folder)
    vectors = next(folder.glob("vectors-*.usearch"))
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0x01  # one bit in the last vector's payload: same size, different bytes
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum"):
        ImageIndex.load(folder)
    assert len(ImageIndex.load(folder, verify=False)) == 50


# -- content that changed behind an unchanged size and mtime -------------------------------------


def test_rehash_finds_a_change_that_kept_size_and_mtime(tmp_path):
    from test_index import FakeEncoder, make_image

    root = tmp_path / "photos"
    make_image(root / "a.png", (200, 20, 20))
    make_image(root / "b.png", (20, 20, 200))
    encoder = FakeEncoder()
    index = ImageIndex(encoder.dim, encoder.name)
    index.update_folder(root, encoder)
    file = root / "a.png"
    stat = file.stat()
    data = bytearray(file.read_bytes())
    make_image(file, (20, 200, 20))  # another colour: different bytes
    assert file.stat().st_size == stat.st_size and file.read_bytes() != bytes(data)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert index.update_folder(root, encoder).updated == []  # size and mtime say: unchanged
    report = index.update_folder(root, encoder, rehash=True)
    assert report.updated == ["a.png"] and report.unchanged == ["b.png"] and report.refreshed == []
    assert index.record("a.png").sha256 == index_module.file_sha256(file)


# -- the model fingerprint -----------------------------------------------------------------------


def test_the_fingerprint_covers_config_and_weights_but_not_the_model_card(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(bytes(range(256)))
    (model / "README.md").write_text("a card")
    first = model_fingerprint("m", model)
    assert first.startswith("m@sha256:") and len(first) == len("m@sha256:") + 64
    (model / "README.md").write_text("a longer card")
    assert model_fingerprint("m", model) == first
    (model / "model.safetensors").write_bytes(bytes(range(200)))
    second = model_fingerprint("m", model)
    (model / "config.json").write_text('{"hidden_size": 9}')
    third = model_fingerprint("m", model)
    assert len({first, second, third, model_fingerprint("other", model)}) == 4


def test_an_encoder_with_another_fingerprint_is_refused(tmp_path):
    from test_index import FakeEncoder, make_image

    from vslib.query import search

    root = tmp_path / "photos"
    make_image(root / "a.png", (200, 20, 20))
    built_with = FakeEncoder()
    built_with.fingerprint = "fake-colour@sha256:" + "1" * 64
    index = ImageIndex(built_with.dim, built_with.name)
    index.update_folder(root, built_with)
    index.save(tmp_path / "a.index")
    loaded = ImageIndex.load(tmp_path / "a.index")
    assert loaded.model_fingerprint == built_with.fingerprint
    retrained = FakeEncoder()
    retrained.fingerprint = "fake-colour@sha256:" + "2" * 64
    with pytest.raises(ValueError, match="fingerprint"):
        search(loaded, retrained, np.ones(built_with.dim, np.float32))
    with pytest.raises(ValueError, match="fingerprint"):
        loaded.update_folder(root, retrained)
    assert len(search(loaded, built_with, np.ones(built_with.dim, np.float32), k=1)) == 1


def test_bundled_models_carry_a_fingerprint():
    from vslib.encoders import load_encoder

    encoder = load_encoder("tiny-siglip2", device="cpu")
    assert encoder.fingerprint.startswith("tiny-siglip2@sha256:")
    assert load_encoder("tiny-siglip2", device="cpu").fingerprint == encoder.fingerprint
