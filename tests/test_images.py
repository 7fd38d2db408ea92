"""Image loading: every PIL mode becomes RGB, EXIF orientation is applied, bad files say why."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vslib.images import ImageLoadError, as_image, load_image, scan_folder, to_rgb


@pytest.mark.parametrize(
    "mode, colour",
    [("RGBA", (255, 0, 0, 255)), ("LA", (128, 255)), ("P", 3), ("CMYK", (0, 255, 255, 0)), ("L", 77), ("1", 1)],
)
def test_every_mode_becomes_rgb(tmp_path: Path, mode, colour):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    source = Image.new(mode, (8, 6), colour)
    if mode == "P":
        source.putpalette([0, 0, 0, 255, 255, 255, 9, 9, 9, 10, 200, 30])  # entry 3 is green
    source.save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (8, 6)
    # The colour each mode stands for, worked out by hand.
    expected = {
        "RGBA": (255, 0, 0),
        "LA": (128, 128, 128),
        "P": (10, 200, 30),
        "CMYK": (255, 0, 0),  # no cyan or black ink, full magenta and yellow: red
        "L": (77, 77, 77),
        "1": (255, 255, 255),
    }[mode]
    pixels = np.asarray(image)
    assert (pixels == expected).all(), f"{mode}: got {pixels[0, 0]}, expected {expected}"


def test_transparent_pixels_are_composited_on_white():
    pixel = to_rgb(Image.new("RGBA", (2, 2), (255, 0, 0, 0))).getpixel((0, 0))
    assert pixel == (255, 255, 255)
    assert to_rgb(Image.new("LA", (2, 2), (40, 0))).getpixel((0, 0)) == (255, 255, 255)
    # Half-transparent dark grey over white: 40 * 0.6 + 255 * 0.4 = 126.
    assert to_rgb(Image.new("LA", (2, 2), (40, 153))).getpixel((0, 0)) == (126, 126, 126)
    palette_alpha = Image.new("PA", (2, 2), (1, 0))
    palette_alpha.putpalette([0, 0, 0, 200, 10, 10])
    assert to_rgb(palette_alpha).getpixel((0, 0)) == (255, 255, 255)


def test_a_colour_key_outside_palette_images_is_ignored_as_for_rgb(tmp_path: Path):
    # PNG's tRNS colour key: only palette entries become see-through; a greyscale key is ignored,
    # as it is for RGB images, so the grey stays grey.
    Image.new("L", (2, 2), 77).save(tmp_path / "key.png", transparency=77)
    with Image.open(tmp_path / "key.png") as stored:
        assert stored.mode == "L" and stored.info["transparency"] == 77
    assert load_image(tmp_path / "key.png").getpixel((0, 0)) == (77, 77, 77)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path: Path):
    values = np.array([[0, 1000], [30000, 60000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    out = np.asarray(load_image(path))[..., 0]
    assert out[0, 0] == 0 and out[1, 1] == 255 and 100 < out[1, 0] < 140  # 30000/60000 of the range


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")])
def test_sixteen_bit_images_of_every_byte_order_are_stretched_to_eight_bits(mode, dtype):
    values = np.array([[0, 1000], [30000, 60000]])
    image = Image.frombytes(mode, (2, 2), values.astype(dtype).tobytes())
    # 255 * v / 60000, rounded: 1000 -> 4.25 -> 4, 30000 -> 127.5 -> 128.
    np.testing.assert_array_equal(np.asarray(to_rgb(image)), np.repeat([[[0], [4]], [[128], [255]]], 3, axis=2))


def test_a_big_endian_sixteen_bit_tiff_loads_by_value(tmp_path: Path):
    path = tmp_path / "deep.tif"
    Image.frombytes("I;16B", (2, 1), np.array([[500, 2500]]).astype(">u2").tobytes()).save(path)
    with Image.open(path) as stored:
        assert stored.mode == "I;16B"
    np.testing.assert_array_equal(np.asarray(load_image(path))[0, :, 0], [0, 255])


def test_narrow_and_flat_greyscale_ranges_stretch_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 on a flat image
        flat = to_rgb(Image.frombytes("I;16", (3, 1), np.full(3, 700).astype("<u2").tobytes()))
        two_levels = to_rgb(Image.frombytes("I;16", (2, 1), np.array([7, 8]).astype("<u2").tobytes()))
        tiny = to_rgb(Image.fromarray(np.array([[0.0, 2.0**-43, 2.0**-42]], dtype=np.float32)))
    assert np.asarray(flat).max() == 0
    np.testing.assert_array_equal(np.asarray(two_levels)[0, :, 0], [0, 255])
    np.testing.assert_array_equal(np.asarray(tiny)[0, :, 0], [0, 128, 255])


def test_a_32_bit_image_spanning_the_whole_integer_range_is_stretched_without_overflow():
    extremes = np.array([[-(2**31), 0, 2**31 - 1]], dtype=np.int32)  # the range itself overflows int32
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(extremes)))[0, :, 0], [0, 128, 255])


@pytest.mark.parametrize("alpha, grey", [(255, 100), (0, 255)])
def test_premultiplied_alpha_modes_are_composited_on_white(alpha, grey):
    # La and RGBa store colour multiplied by alpha: opaque keeps the colour, clear shows white.
    la = Image.new("LA", (2, 2), (100, alpha)).convert("La")
    assert la.mode == "La"
    assert to_rgb(la).getpixel((0, 0)) == (grey, grey, grey)
    rgba = Image.new("RGBA", (2, 2), (100, 50, 0, alpha)).convert("RGBa")
    assert to_rgb(rgba).getpixel((0, 0)) == ((100, 50, 0) if alpha else (255, 255, 255))


def _corner_colours(image: Image.Image) -> dict[str, tuple[int, ...]]:
    """Mean colour of each corner region (a quarter of each side), rounded to 0 or 255."""
    a = np.asarray(image, dtype=np.float32)
    h, w = a.shape[0] // 4, a.shape[1] // 4
    corners = {"top-left": a[:h, :w], "top-right": a[:h, -w:], "bottom-left": a[-h:, :w], "bottom-right": a[-h:, -w:]}
    return {name: tuple(int(v) for v in (region.mean((0, 1)) > 127) * 255) for name, region in corners.items()}


@pytest.mark.parametrize(
    "orientation, size, red_corner",
    [
        (1, (48, 24), "top-left"),
        (3, (48, 24), "bottom-right"),  # stored upside down
        (6, (24, 48), "top-right"),  # rotate 90 degrees clockwise to view
        (8, (24, 48), "bottom-left"),  # rotate 90 degrees anticlockwise to view
    ],
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation, size, red_corner):
    # A blue 48x24 photo with a red marker in its stored top-left corner: after the
    # orientation is applied the marker must sit where the camera saw it.
    pixels = np.zeros((24, 48, 3), dtype=np.uint8)
    pixels[..., 2] = 255
    pixels[:12, :12] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.size == size
    corners = _corner_colours(image)
    assert corners[red_corner] == (255, 0, 0)
    assert [name for name, rgb in corners.items() if rgb != (0, 0, 255)] == [red_corner]


def _exif_with_a_field_past_the_end(orientation: int) -> bytes:
    """EXIF (little-endian TIFF) with an orientation and a 100-byte description that is not there."""
    entries = struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<HHII", 0x010E, 2, 100, 1000)
    return b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 2) + entries + struct.pack("<I", 0)


def test_a_photo_with_damaged_exif_still_loads_upright(tmp_path: Path):
    # Cameras write broken fields (PIL warns "Truncated File Read"): only a decompression bomb
    # warning refuses an image, any other warning lets it through.
    pixels = np.zeros((24, 48, 3), dtype=np.uint8)
    pixels[..., 2] = 255
    pixels[:12, :12] = (255, 0, 0)
    path = tmp_path / "damaged.jpg"
    Image.fromarray(pixels).save(path, exif=_exif_with_a_field_past_the_end(6), quality=95)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = load_image(path)
    assert any("Truncated" in str(w.message) for w in caught)
    assert image.size == (24, 48) and _corner_colours(image)["top-right"] == (255, 0, 0)


def test_a_decompression_bomb_by_pils_own_limit_is_refused(tmp_path: Path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4_000)  # 10,000 pixels: over PIL's warning limit, under twice
    with pytest.raises(ImageLoadError, match="refused as a decompression bomb") as info:
        load_image(tmp_path / "bomb.png", max_pixels=10**9)
    assert info.value.path == str(tmp_path / "bomb.png")


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
    assert str(info.value) == f"{path}: {info.value.reason}" and info.value.reason.startswith(
        {"empty.jpg": "empty file", "text.jpg": "not an image", "half.jpg": "cannot decode: truncated image data",
         "junk.png": "not an image"}[name])


def test_missing_file_and_decompression_bomb(tmp_path: Path):
    with pytest.raises(ImageLoadError, match=r"nope.png: cannot read file \(No such file or directory\)$"):
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
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "zebra.png")  # after the HEIC file: still listed
    scan = scan_folder(tmp_path)
    assert [p.name for p in scan.files] == ["ok.png", "zebra.png"]
    assert sorted((p.name, r) for p, r in scan.skipped) == [
        ("empty.png", "empty file (0 bytes)"), ("phone.heic", "unsupported format (.heic): convert it to JPEG or PNG")]
    with pytest.raises(NotADirectoryError, match="ok.png is not a folder$"):
        scan_folder(tmp_path / "a" / "ok.png")


def test_palette_transparency_and_float_images_convert_by_value(tmp_path: Path):
    palette = Image.new("P", (4, 2), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10])
    palette.info["transparency"] = 1  # palette entry 1 is see-through: white shows
    assert to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)
    # Both are stretched from their own range, 10..61, to 0..255: a factor of 5.
    floats = Image.fromarray(np.array([[10.0, 20.0], [40.0, 61.0]], dtype=np.float32))
    assert floats.mode == "F"
    np.testing.assert_array_equal(np.asarray(to_rgb(floats))[..., 0], [[0, 50], [150, 255]])
    ints = Image.fromarray(np.array([[10, 20], [40, 61]], dtype=np.int32))
    assert ints.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_rgb(ints))[..., 1], [[0, 50], [150, 255]])
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(rgb) is rgb


def test_as_image_takes_images_and_paths_only(tmp_path: Path):
    Image.new("L", (3, 3), 9).save(tmp_path / "grey.png")
    for item in (tmp_path / "grey.png", str(tmp_path / "grey.png"), Image.new("L", (3, 3), 9)):
        image = as_image(item)
        assert image.mode == "RGB" and image.getpixel((1, 1)) == (9, 9, 9)
    with pytest.raises(TypeError, match="expected a PIL image or a path, got int"):
        as_image(3)
    with pytest.raises(ImageLoadError, match=": not a regular file$") as info:
        load_image(tmp_path)
    assert info.value.path == str(tmp_path)


def test_scan_skips_hidden_files_reads_any_suffix_case_and_reports_dangling_links(tmp_path: Path):
    Image.new("RGB", (4, 4)).save(tmp_path / "LOUD.PNG")
    Image.new("RGB", (4, 4)).save(tmp_path / ".hidden.png")
    (tmp_path / ".cache").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / ".cache" / "thumb.png")
    (tmp_path / "b").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / "2.jpg")
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / "1.webp")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    scan = scan_folder(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in scan.files] == ["LOUD.PNG", "b/1.webp", "b/2.jpg"]
    assert [(p.name, reason) for p, reason in scan.skipped] == [("gone.png", "cannot read file (No such file or directory)")]


def _gradient(width: int, height: int) -> np.ndarray:
    """A smooth RGB picture: red grows left to right, green top to bottom, a blue square."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    blue = np.zeros((height, width))
    blue[height // 4: height // 2, width // 4: width // 2] = 255
    return np.stack([x, y, blue], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("suffix, mode", [(".jpg", "RGB"), (".png", "RGBA"), (".png", "RGB"), (".webp", "RGB")])
def test_a_large_image_is_decoded_reduced_but_looks_the_same(tmp_path: Path, suffix, mode):
    pixels = _gradient(1600, 1200)
    picture = Image.fromarray(pixels).convert(mode)
    path = tmp_path / f"big{suffix}"
    picture.save(path, **({"quality": 95} if suffix == ".jpg" else {}))
    full = load_image(path)
    reduced = load_image(path, min_side=128)
    assert full.size == (1600, 1200)
    assert 128 <= min(reduced.size) < 128 * 2 and reduced.size[0] > reduced.size[1]
    expected = np.asarray(full.resize(reduced.size, Image.BOX), dtype=np.float32)
    assert np.abs(np.asarray(reduced, dtype=np.float32) - expected).mean() < 3.0


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_reduced_decoding_keeps_the_exif_orientation(tmp_path: Path, suffix):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = tmp_path / f"rotated{suffix}"
    Image.fromarray(_gradient(800, 400)).save(path, exif=exif)
    upright = load_image(path, min_side=64)
    assert upright.size[0] < upright.size[1] and min(upright.size) >= 64
    assert load_image(path).size == (400, 800)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_an_image_twice_the_needed_side_is_decoded_at_half_size(tmp_path: Path, suffix):
    path = tmp_path / f"double{suffix}"
    Image.fromarray(_gradient(300, 200)).save(path)
    assert load_image(path, min_side=100).size == (150, 100)
    assert load_image(path, min_side=101).size == (300, 200)  # a factor under 2: decoded in full


def test_small_images_decode_exactly_as_before(tmp_path: Path):
    path = tmp_path / "small.png"
    Image.fromarray(_gradient(200, 150)).save(path)
    assert np.array_equal(np.asarray(load_image(path, min_side=128)), np.asarray(load_image(path)))


def test_jpeg_shrinks_in_the_decoder_by_a_power_of_two_other_formats_by_the_whole_factor(tmp_path: Path):
    # 1001x800 with min_side 200: a factor of 4. JPEG's decoder scales by 1/2, 1/4 or 1/8 and
    # keeps both sides at least ceil(side / 4) = (251, 200), so it stops at 1/2; PNG is box-reduced by 4.
    pixels = _gradient(1001, 800)
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    assert load_image(tmp_path / "photo.jpg", min_side=200).size == (501, 400)
    assert load_image(tmp_path / "photo.png", min_side=200).size == (251, 200)
    Image.fromarray(pixels.transpose(1, 0, 2)).save(tmp_path / "portrait.jpg", quality=95)
    assert load_image(tmp_path / "portrait.jpg", min_side=200).size == (400, 501)


def test_an_image_exactly_at_the_pixel_cap_loads(tmp_path: Path):
    Image.new("L", (100, 100)).save(tmp_path / "cap.png")
    assert load_image(tmp_path / "cap.png", max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(tmp_path / "cap.png", max_pixels=9_999)


def test_the_pixel_cap_message_names_the_file_and_both_sizes(tmp_path: Path):
    Image.new("1", (1500, 1000)).save(tmp_path / "a.png")
    with pytest.raises(ImageLoadError, match=r"too large \(1500x1000 = 2 MP > 1 MP\)$") as info:
        load_image(tmp_path / "a.png", max_pixels=1_000_000)
    assert info.value.path == str(tmp_path / "a.png")
    Image.new("1", (2000, 1000)).save(tmp_path / "b.png")
    with pytest.raises(ImageLoadError, match=r"too large \(2000x1000 = 2 MP > 2 MP\)$"):  # 1.5 MP rounds to 2
        load_image(tmp_path / "b.png", max_pixels=1_500_000)


def test_an_error_without_a_message_is_named_by_its_type(tmp_path: Path, monkeypatch):
    import vslib.images

    def fail(image, min_side):
        raise EOFError()

    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    monkeypatch.setattr(vslib.images, "_decode", fail)
    with pytest.raises(ImageLoadError, match=r"x.png: cannot decode: EOFError$"):
        load_image(tmp_path / "x.png")


def test_the_pixel_cap_applies_before_any_decoding(tmp_path: Path):
    path = tmp_path / "wide.png"
    Image.new("1", (9000, 8000)).save(path)  # 72 MP in a few KB
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(path, min_side=64)
