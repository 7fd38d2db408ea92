"""The web app's logic without a browser: path safety, index messages, calibration, result rows.

A small encoder stands in for a multimodal model: images embed as their centred mean colour and
colour words as the same colour, through a fixed orthonormal map.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vslib import app, cli
from vslib.calibration import Calibration
from vslib.encoders import Encoder
from vslib.index import ImageIndex, SearchHit

SHADES = {"red": (230, 20, 20), "blue": (30, 40, 230), "purple": (200, 30, 210), "green": (20, 200, 40)}


class ShadeEncoder(Encoder):
    """Mean colour of an image, or the colour words of a text, through a fixed 8-d map."""

    family = "fake"

    def __init__(self, name: str = "fake-shade", supports_text: bool = True) -> None:
        self.name, self.dim, self.supports_text = name, 8, supports_text
        basis = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 3)))[0].T
        self.projection = torch.from_numpy(basis.astype(np.float32))

    def preprocess(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        means = np.stack([np.asarray(im, dtype=np.float32).reshape(-1, 3).mean(0) for im in images])
        return {"colour": torch.from_numpy(means / 255 - 0.5)}

    def _embed_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs["colour"] @ self.projection

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        if not self.supports_text:
            return super()._embed_texts(texts)
        rows = [sum(np.asarray(SHADES[w], np.float32) / 255 - 0.5 for w in t.split() if w in SHADES) for t in texts]
        return torch.from_numpy(np.stack(rows).astype(np.float32)) @ self.projection


class SiglipLike(ShadeEncoder):
    """Carries a SigLIP-style logit scale and bias."""

    family = "siglip"
    logit_scale = 10.0
    logit_bias = -5.0


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "more").mkdir(parents=True)
    for name, rgb in SHADES.items():
        folder = root / "more" if name == "purple" else root
        Image.new("RGB", (20, 12), rgb).save(folder / f"{name}.png")
    return root


def build_index(root: Path, out: Path, encoder: Encoder) -> Path:
    index = ImageIndex(encoder.dim, encoder.name, dtype="f32")
    index.update_folder(root, encoder)
    index.save(out)
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    return {
        p.relative_to(root).as_posix(): (p.lstat().st_size, p.lstat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()
    }


# -- path safety ---------------------------------------------------------------------------------


def test_a_path_inside_the_folder_is_allowed(photos):
    assert app.safe_path(photos, "red.png") == (photos / "red.png").resolve()
    assert app.safe_path(photos, "more/purple.png") == (photos / "more" / "purple.png").resolve()
    assert app.safe_path(photos, "more/../red.png") == (photos / "red.png").resolve()
    assert app.safe_path(photos, "not-there-yet.png").name == "not-there-yet.png"  # existence is checked later


@pytest.mark.parametrize("stored", ["../secret.png", "more/../../secret.png", "/etc/passwd", "..", "", "a\x00b"])
def test_paths_leading_out_of_the_folder_are_refused(photos, stored):
    with pytest.raises(app.UnsafePathError):
        app.safe_path(photos, stored)


def test_symlinks_that_escape_are_refused_and_those_that_stay_are_allowed(photos, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(secret)
    (photos / "escape.png").symlink_to(secret)
    (photos / "escape-dir").symlink_to(tmp_path, target_is_directory=True)
    (photos / "alias.png").symlink_to(photos / "red.png")
    for stored in ("escape.png", "escape-dir/secret.png"):
        with pytest.raises(app.UnsafePathError, match="outside"):
            app.safe_path(photos, stored)
    assert app.safe_path(photos, "alias.png") == (photos / "red.png").resolve()
    # The folder itself may be reached through a link.
    (tmp_path / "photos-link").symlink_to(photos, target_is_directory=True)
    assert app.safe_path(tmp_path / "photos-link", "red.png") == (photos / "red.png").resolve()


# -- the index -----------------------------------------------------------------------------------


def test_a_missing_or_foreign_index_is_a_clear_error(tmp_path):
    with pytest.raises(app.AppError, match="does not exist.*vslib index"):
        app.open_index(tmp_path / "nowhere.index")
    (tmp_path / "folder").mkdir()
    with pytest.raises(app.AppError, match="not a saved image index"):
        app.open_index(tmp_path / "folder")
    vectors_only = ImageIndex(8, "fake-shade")
    vectors_only.add_vectors(np.eye(8, dtype=np.float32)[:2])
    vectors_only.save(tmp_path / "vectors.index")
    with pytest.raises(app.AppError, match="no image folder"):
        app.open_index(tmp_path / "vectors.index")


def test_an_empty_index_and_a_vanished_folder_have_a_message(photos, tmp_path):
    encoder = ShadeEncoder()
    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    empty = app.open_index(build_index(empty_root, tmp_path / "empty.index", encoder))
    assert len(empty) == 0 and "empty" in app.index_message(empty)
    outcome = app.SearchService(empty, encoder).search(text="red")
    assert outcome.rows == [] and "empty" in outcome.message

    full = app.open_index(build_index(photos, tmp_path / "photos.index", encoder))
    assert app.index_message(full) is None and full.read_only
    photos.rename(tmp_path / "moved")
    assert "missing" in app.index_message(full)
    outcome = app.SearchService(full, encoder).search(text="red")
    assert "missing" in outcome.message and all(row.file is None for row in outcome.rows)


# -- calibration ---------------------------------------------------------------------------------


def test_siglip_models_calibrate_text_queries_with_their_scale_and_bias(photos, tmp_path):
    out = build_index(photos, tmp_path / "photos.index", SiglipLike())
    chosen = app.calibrations_for(out, SiglipLike())
    assert chosen.text == Calibration.from_scale_bias(10.0, -5.0) and chosen.image is None
    assert "logit scale and bias" in chosen.describe() and "image queries: none" in chosen.describe()
    plain = app.calibrations_for(out, ShadeEncoder())
    assert plain.text is None and plain.image is None


def test_a_saved_calibration_wins_and_survives_index_updates(photos, tmp_path, monkeypatch):
    out = build_index(photos, tmp_path / "photos.index", SiglipLike())
    app.save_calibration(out, Calibration(0.5, 20.0))
    app.save_calibration(out, Calibration(0.9, 30.0), kind="image")
    assert json.loads((out / app.CALIBRATION_FILE).read_text())["text"] == {"threshold": 0.5, "temperature": 20.0}
    chosen = app.calibrations_for(out, SiglipLike())
    assert (chosen.text, chosen.image) == (Calibration(0.5, 20.0), Calibration(0.9, 30.0))
    assert chosen.sources["text"].startswith("saved")

    Image.new("RGB", (8, 8), (1, 2, 3)).save(photos / "new.png")
    monkeypatch.setattr(cli, "load_encoder", lambda name, device=None: SiglipLike(name))
    assert cli.main(["index", str(photos), "--out", str(out), "--no-progress"]) == 0
    assert ImageIndex.load(out).paths[-1] == "new.png"
    assert app.load_calibrations(out)["text"] == Calibration(0.5, 20.0)

    with pytest.raises(FileNotFoundError):
        app.save_calibration(tmp_path, Calibration(0.5, 1.0))
    (out / app.CALIBRATION_FILE).write_text('{"colour": {}}')
    with pytest.raises(ValueError, match="calibration"):
        app.calibrations_for(out, SiglipLike())


# -- result rows ---------------------------------------------------------------------------------


def test_rows_carry_confidence_and_the_cut_off_hides_low_ones(photos):
    hits = [SearchHit("red.png", 0, 0.9), SearchHit("more/purple.png", 1, 0.5), SearchHit("blue.png", 2, 0.1)]
    calibration = Calibration(threshold=0.5, temperature=10.0)
    rows, hidden = app.result_rows(hits, photos, calibration, min_confidence=0.0)
    assert hidden == 0 and [r.rank for r in rows] == [1, 2, 3]
    assert [round(r.confidence, 3) for r in rows] == [0.982, 0.5, 0.018]
    assert rows[0].file == (photos / "red.png").resolve() and rows[0].problem == ""

    rows, hidden = app.result_rows(hits, photos, calibration, min_confidence=0.5)
    assert hidden == 1 and [(r.rank, r.path) for r in rows] == [(1, "red.png"), (2, "more/purple.png")]
    rows, hidden = app.result_rows(hits, photos, None, min_confidence=0.99)
    assert hidden == 0 and len(rows) == 3 and all(r.confidence is None for r in rows)


def test_rows_for_unsafe_or_missing_files_keep_their_place_without_a_file(photos):
    hits = [SearchHit("../../etc/passwd", 0, 0.9), SearchHit("gone.png", 1, 0.8), SearchHit("red.png", 2, 0.7)]
    rows, _ = app.result_rows(hits, photos)
    assert [(r.rank, r.file is None) for r in rows] == [(1, True), (2, True), (3, False)]
    assert "outside" in rows[0].problem and "missing" in rows[1].problem
    assert app.thumbnail(None).size == (app.THUMBNAIL_SIZE, app.THUMBNAIL_SIZE)
    small = app.thumbnail(rows[2].file, size=10)
    assert small.size == (10, 6) and small.mode == "RGB"


# -- searching -----------------------------------------------------------------------------------


def test_text_image_and_mixed_queries_with_a_negative(photos, tmp_path):
    encoder = SiglipLike()
    index = app.open_index(build_index(photos, tmp_path / "photos.index", encoder))
    service = app.SearchService(index, encoder, app.calibrations_for(tmp_path / "photos.index", encoder))
    before = snapshot(photos)

    text = service.search(text="red", k=3)
    assert text.kind == "text" and text.rows[0].path == "red.png" and len(text.rows) == 3
    assert text.rows[0].confidence is not None and text.message.startswith("3 results (text query)")

    image = service.search(image=photos / "blue.png", k=2)
    assert image.kind == "image" and image.rows[0].path == "blue.png" and image.rows[0].score > 0.999
    assert image.rows[0].confidence is None  # no calibration for image queries

    plain = {r.path: r.score for r in service.search(text="red", k=4).rows}
    pushed = {r.path: r.score for r in service.search(text="red", negative="blue", k=4).rows}
    assert pushed["more/purple.png"] < plain["more/purple.png"]
    mixed = service.search(text="red", image=photos / "blue.png", image_weight=0.5, k=4)
    assert mixed.kind == "image" and mixed.rows[0].path == "red.png"
    assert mixed.rows == service.search(text="red", image=photos / "blue.png", image_weight=0.5, k=4).rows

    strict = service.search(text="red", k=4, min_confidence=0.5)
    assert strict.hidden == 4 - len(strict.rows) > 0 and "hidden below confidence 0.50" in strict.message
    assert "hides nothing" in service.search(image=photos / "blue.png", min_confidence=0.5).message
    assert snapshot(photos) == before  # searching never touches the images


def test_bad_input_becomes_a_message_not_an_error(photos, tmp_path):
    encoder = ShadeEncoder()
    index = app.open_index(build_index(photos, tmp_path / "photos.index", encoder))
    service = app.SearchService(index, encoder)
    assert "Type a text or upload an image" in service.search().message
    assert "Type a text" in service.search(text="red", text_weight=0).message
    assert "cancel" in service.search(text="red", negative="red").message
    (tmp_path / "broken.png").write_text("not a picture")
    assert "cannot be read" in service.search(image=tmp_path / "broken.png").message
    assert service.search(text="red", k=999).rows[-1].rank == len(index)

    image_only = ShadeEncoder(supports_text=False)
    only = app.SearchService(index, image_only)
    assert "image-only" in only.search(text="red").message
    assert "image-only" in only.header()
    with pytest.raises(app.AppError, match="built with"):
        app.SearchService(index, ShadeEncoder(name="other"))


def test_the_page_builds_with_gradio(photos, tmp_path, monkeypatch):
    gradio = pytest.importorskip("gradio")
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)  # restored afterwards
    encoder = SiglipLike()
    index = app.open_index(build_index(photos, tmp_path / "photos.index", encoder))
    page = app.build_app(app.SearchService(index, encoder, app.calibrations_for(tmp_path / "photos.index", encoder)))
    assert isinstance(page, gradio.Blocks)
    private = Path(os.environ["GRADIO_TEMP_DIR"])  # a folder of its own for uploads and thumbnails
    assert private.is_dir() and private.name.startswith("vslib-app-") and not any(private.iterdir())
    # An empty index and a one-image index still make a page (the k slider needs two ends).
    for count in (0, 1):
        folder = tmp_path / f"only-{count}"
        folder.mkdir()
        for name in list(SHADES)[:count]:
            Image.new("RGB", (4, 4), SHADES[name]).save(folder / f"{name}.png")
        small = app.open_index(build_index(folder, tmp_path / f"only-{count}.index", encoder))
        assert isinstance(app.build_app(app.SearchService(small, encoder)), gradio.Blocks)


# -- the command line ----------------------------------------------------------------------------


def test_vslib_app_launches_on_localhost_serving_only_indexed_files(photos, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    out = build_index(photos, tmp_path / "photos.index", SiglipLike())
    launched = {}

    class FakePage:
        def launch(self, **options):
            launched.update(options)

    monkeypatch.setattr(app, "build_app", lambda service: FakePage())
    monkeypatch.setattr(cli, "load_encoder", lambda name, device=None: SiglipLike(name))
    handler = signal.getsignal(signal.SIGTERM)
    assert cli.main(["app", str(out)]) == 0
    assert launched["server_name"] == "127.0.0.1" and launched["server_port"] == 7860
    assert launched["share"] is False and launched["allowed_paths"] == [str(photos.resolve())]
    assert str(out.resolve()) in launched["blocked_paths"]
    assert signal.getsignal(signal.SIGTERM) == handler  # put back after serving
    # In front of Gradio: only the indexed files, only this machine's host names; uploads capped.
    (middleware,) = launched["app_kwargs"]["middleware"]
    assert middleware.cls is app.RequestGuard
    assert middleware.kwargs["files"] == frozenset(str((photos / p).resolve()) for p in
                                                   ("red.png", "blue.png", "green.png", "more/purple.png"))
    assert "127.0.0.1" in middleware.kwargs["hosts"] and "evil.example" not in middleware.kwargs["hosts"]
    assert launched["max_file_size"] == app.MAX_UPLOAD == "20mb"


def test_vslib_app_reports_a_missing_index_and_a_missing_gradio(photos, tmp_path, monkeypatch, capsys):
    code = cli.main(["app", str(tmp_path / "nowhere.index")])
    err = capsys.readouterr().err
    assert code == 1 and "nowhere.index does not exist" in err and "Traceback" not in err

    out = build_index(photos, tmp_path / "photos.index", ShadeEncoder())
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    code = cli.main(["app", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "pip install 'vslib[app]'" in err and err.count("\n") == 1


def test_vslib_imports_without_gradio():
    code = "import sys, vslib.cli, vslib.app; print(sorted(m for m in ('gradio', 'torch') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
