"""Image loading: every PIL mode becomes RGB, EXIF orientation is applied, bad files say why."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vslib.images import ImageLoadError, load_image, scan_folder, to_rgb


@pytest.mark.parametrize(
    "mode, colour",
    [("RGBA", (255, 0, 0, 255)), ("LA", (128, 255)), ("P", 3), ("CMYK", (0, 255, 255, 0)), ("L", 77), ("1", 1)],
)
def test_every_mode_becomes_rgb(tmp_path: Path, mode, colour):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    Image.new(mode, (8, 6), colour).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (8, 6)


def test_transparent_pixels_are_composited_on_white():
    pixel = to_rgb(Image.new("RGBA", (2, 2), (255, 0, 0, 0))).getpixel((0, 0))
    assert pixel == (255, 255, 255)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path: Path):
    values = np.array([[0, 1000], [30000, 60000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    out = np.asarray(load_image(path))[..., 0]
    assert out[0, 0] == 0 and out[1, 1] == 255 and 100 < out[1, 0] < 140  # 30000/60000 of the range


def test_exif_orientation_is_applied(tmp_path: Path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


#: Files that every loader must refuse: (name, bytes, the reason as a regular expression).
#: tests/test_scale.py runs the same corpus through Ray.
BAD_FILES = [
    ("empty.jpg", b"", r"empty file \(0 bytes\)"),
    ("text.jpg", b"hello, not an image", "not an image"),
    ("half.jpg", _truncated_jpeg(), "truncated"),
    ("junk.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
]


@pytest.mark.parametrize("name, content, reason", BAD_FILES)
def test_bad_files_raise_with_the_file_and_the_reason(tmp_path: Path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_image(path)
    assert info.value.path == str(path)


def test_missing_file_and_decompression_bomb(tmp_path: Path):
    with pytest.raises(ImageLoadError, match="cannot read file"):
        load_image(tmp_path / "nope.png")
    Image.new("L", (300, 300)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(tmp_path / "big.png", max_pixels=10_000)


def test_scan_reports_unsupported_formats_and_skips_symlink_loops(tmp_path: Path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "ok.png")
    (tmp_path / "a" / "phone.heic").write_bytes(b"....ftypheic")
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    scan = scan_folder(tmp_path)
    assert [p.name for p in scan.files] == ["ok.png"]
    assert sorted((p.name, r.split(" (")[0]) for p, r in scan.skipped) == [
        ("empty.png", "empty file"), ("phone.heic", "unsupported format")]
    with pytest.raises(NotADirectoryError):
        scan_folder(tmp_path / "a" / "ok.png")
