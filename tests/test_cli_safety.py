"""The command line against hostile file names, damaged or half-saved indexes, a busy index,
bad devices and empty queries: one clear line on stderr and exit 1, or correct, escaped output."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_cli import ColourEncoder, loaded, photos, run  # noqa: F401  (fixtures)
from vslib import cli
from vslib.index import ImageIndex
from vslib.safetext import json_path, printable_path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fingerprinted(monkeypatch, loaded):  # noqa: F811
    """Like ``loaded``, with each fake model carrying a fingerprint of its name."""
    plain = cli.load_encoder

    def load_encoder(name: str, device: str | None = None) -> ColourEncoder:
        encoder = plain(name, device)
        encoder.fingerprint = f"{name}@sha256:{hashlib.sha256(name.encode()).hexdigest()}"
        return encoder

    monkeypatch.setattr(cli, "load_encoder", load_encoder)
    return loaded


def test_printable_path_escapes_losslessly():
    assert printable_path("holiday/beach.png") == "holiday/beach.png"
    assert printable_path("a\nadded 9.png") == '"a\\nadded 9.png"'
    assert printable_path("\x1b[31mred.png") == '"\\u001b[31mred.png"'
    undecodable = os.fsdecode(b"caf\xe9.png")
    assert printable_path(undecodable) == '"caf\\xe9.png"'
    assert printable_path('"quoted".png') == '"\\"quoted\\".png"'
    assert json_path("plain.png") == {"path": "plain.png"}
    fields = json_path(undecodable)
    assert fields["path"] == "caf\ufffd.png" and base64.b64decode(fields["path_bytes"]) == b"caf\xe9.png"


def test_a_file_name_with_a_newline_cannot_fake_a_summary_line(photos, tmp_path, loaded, capsys):  # noqa: F811
    (photos / "x\nadded 99, updated 0, removed 0, unchanged 0, skipped 0.jpg").write_text("not an image")
    code, out, err = run(capsys, "index", photos, "--model", "fake-colour", "--out", tmp_path / "p.index")
    assert code == 0, err
    assert [line for line in out.splitlines() if line.startswith("added ")] == [
        "added 3, updated 0, removed 0, unchanged 0, skipped 2"]
    assert '\\nadded 99' in out


def test_an_undecodable_file_name_is_indexed_and_printed_escaped_and_in_json(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "red.png")
    raw = os.fsencode(root) + b"/caf\xe9.png"
    Image.new("RGB", (32, 32), (30, 30, 200)).save(raw.decode("utf-8", "surrogateescape"), format="PNG")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    vslib = [sys.executable, "-m", "vslib.cli"]
    out_index = tmp_path / "p.index"
    built = subprocess.run([*vslib, "index", str(root), "--model", "tiny-siglip2", "--out", str(out_index),
                            "--device", "cpu", "--no-progress"], capture_output=True, env=env)
    assert built.returncode == 0, built.stderr.decode()
    assert b"added 2," in built.stdout
    found = subprocess.run([*vslib, "search", str(out_index), "--image", str(root / "red.png"), "--json",
                            "--device", "cpu"], capture_output=True, env=env)
    assert found.returncode == 0, found.stderr.decode()
    rows = json.loads(found.stdout.decode("utf-8"))  # strict UTF-8: valid JSON
    odd = [row for row in rows if "path_bytes" in row]
    assert len(odd) == 1 and base64.b64decode(odd[0]["path_bytes"]) == raw
    table = subprocess.run([*vslib, "search", str(out_index), "--image", str(root / "red.png"), "--device", "cpu"],
                           capture_output=True, env=env)
    assert table.returncode == 0 and b'caf\\xe9.png"' in table.stdout
    table.stdout.decode("utf-8")  # nothing undecodable was written


def test_a_killed_first_save_does_not_block_the_next_run(photos, tmp_path, loaded, capsys):  # noqa: F811
    out_index = tmp_path / "p.index"
    out_index.mkdir()
    (out_index / "vectors-5f1e2d3c4b5a69788796a5b4c3d2e1f0.usearch.tmp").write_bytes(b"half written")
    code, out, err = run(capsys, "search", out_index, "--text", "red")
    assert code == 1 and "run 'vslib index DIR --out" in err and err.count("\n") == 1
    code, out, err = run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index)
    assert code == 0, err
    assert sorted(ImageIndex.load(out_index).paths) == ["blue.png", "more/purple.png", "red.png"]
    assert len(list(out_index.iterdir())) == 2


def test_a_damaged_index_is_one_line_for_search_and_index(photos, tmp_path, loaded, capsys):  # noqa: F811
    out_index = tmp_path / "p.index"
    assert run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index)[0] == 0
    vectors = next(out_index.glob("vectors-*.usearch"))
    data = bytearray(vectors.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])  # overwritten vector bytes
    vectors.write_bytes(bytes(data))
    for argv in (["search", out_index, "--text", "red"], ["index", photos, "--out", out_index]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and "checksum" in err and err.count("\n") == 1 and "Traceback" not in err
    (out_index / "index.json").write_text("[]")
    code, out, err = run(capsys, "search", out_index, "--text", "red")
    assert code == 1 and "damaged" in err and err.count("\n") == 1


def test_a_manifest_edited_to_name_another_model_is_refused(photos, tmp_path, fingerprinted, capsys):
    out_index = tmp_path / "p.index"
    assert run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index)[0] == 0
    assert run(capsys, "search", out_index, "--text", "red")[0] == 0
    manifest = json.loads((out_index / "index.json").read_text())
    manifest["model"] = "fake-other"  # same dimension, another embedding space
    for record in manifest["images"]:
        record["model"] = "fake-other"
    (out_index / "index.json").write_text(json.dumps(manifest))
    code, out, err = run(capsys, "search", out_index, "--text", "red")
    assert code == 1 and "fingerprint" in err and out == ""
    # A fingerprint edited along with the name is caught by the model that is loaded.
    manifest["model_fingerprint"] = "fake-other@sha256:" + "0" * 64
    (out_index / "index.json").write_text(json.dumps(manifest))
    code, out, err = run(capsys, "search", out_index, "--text", "red")
    assert code == 1 and "fingerprint" in err and out == ""


def test_rehash_on_the_command_line(photos, tmp_path, loaded, capsys):  # noqa: F811
    out_index = tmp_path / "p.index"
    assert run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index)[0] == 0
    file = photos / "red.png"
    stat = file.stat()
    Image.new("RGB", (16, 16), (20, 200, 40)).save(file)  # green now, same size
    assert file.stat().st_size == stat.st_size
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "updated 0" in run(capsys, "index", photos, "--out", out_index)[1]
    code, out, err = run(capsys, "index", photos, "--out", out_index, "--rehash")
    assert code == 0 and "added 0, updated 1, removed 0, unchanged 2" in out


_HOLD = """
    import sys, time
    from vslib.indexlock import writer_lock
    with writer_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(30)
"""


def test_a_second_vslib_index_fails_fast_with_no_wait(photos, tmp_path, loaded, capsys):  # noqa: F811
    out_index = tmp_path / "p.index"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLD), str(out_index)],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, out, err = run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index, "--no-wait")
        assert code == 1 and "another process is writing" in err and err.count("\n") == 1
        assert not ImageIndex.exists(out_index)
    finally:
        holder.kill()
        holder.wait()
    assert run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index, "--no-wait")[0] == 0


@pytest.mark.parametrize("device, message", [("potato", "unknown device 'potato'"), ("cuda", "no CUDA GPU")])
def test_a_bad_device_is_one_clear_line(photos, tmp_path, loaded, capsys, monkeypatch, device, message):  # noqa: F811
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = run(capsys, "index", photos, "--model", "fake-colour", "--out", tmp_path / "p.index",
                         "--device", device)
    assert code == 1 and message in err and err.count("\n") == 1
    assert not ImageIndex.exists(tmp_path / "p.index")


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_text_query_is_refused(photos, tmp_path, loaded, capsys, text):  # noqa: F811
    out_index = tmp_path / "p.index"
    assert run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index)[0] == 0
    code, out, err = run(capsys, "search", out_index, "--text", text)
    assert code == 1 and "empty" in err and out == ""


def test_load_encoder_checks_the_device():
    from vslib.encoders import load_encoder

    with pytest.raises(ValueError, match="unknown device 'potato'"):
        load_encoder("tiny-siglip2", device="potato")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            load_encoder("tiny-siglip2", device="cuda")
    assert np.isfinite(load_encoder("tiny-siglip2", device="cpu").encode_texts(["a red circle"])).all()
