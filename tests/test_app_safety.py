"""The app's defences without a server: the request guard, uploads that Gradio must not decode,
uploads decoded by vslib.images within a memory budget, and several searches at once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from PIL import Image

from test_app import ShadeEncoder, SiglipLike, build_index, photos  # noqa: F401  (fixture)
from vslib import app


def guard(tmp_path: Path, files: list[Path]) -> app.RequestGuard:
    temp = tmp_path / "gradio-temp"
    temp.mkdir(exist_ok=True)
    return app.RequestGuard(None, hosts=frozenset({"127.0.0.1", "localhost"}),
                            files=frozenset(os.path.realpath(f) for f in files), folders=[os.path.realpath(temp)])


def test_the_guard_accepts_only_its_host_names(tmp_path):
    g = guard(tmp_path, [])
    for good in ("127.0.0.1", "127.0.0.1:7860", "localhost:7860", "LOCALHOST"):
        assert g.allows_host(good), good
    for bad in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example", "", "[::1]:7860", "localhost.:80"):
        assert not g.allows_host(bad), bad


def test_the_guard_serves_indexed_files_and_the_temporary_folder_only(photos, tmp_path):  # noqa: F811
    indexed = photos / "red.png"
    (photos / "link.png").symlink_to(indexed)  # another name for an indexed file: same file
    g = guard(tmp_path, [indexed])
    (tmp_path / "gradio-temp" / "thumb.webp").write_bytes(b"x")
    assert g.allows_file(str(indexed)) and g.allows_file(str(photos / "link.png"))
    assert g.allows_file(str(photos / "more" / ".." / "red.png"))
    assert g.allows_file(str(tmp_path / "gradio-temp" / "thumb.webp"))
    for refused in (photos / "blue.png", photos / ".env", photos, tmp_path / "gradio-temp-other" / "x",
                    Path("/etc/passwd")):
        assert not g.allows_file(str(refused)), refused
    assert not g.allows_file("http://169.254.169.254/latest/meta-data")


def test_the_guard_answers_before_gradio_sees_a_refused_request(tmp_path):
    reached, sent = [], []
    g = guard(tmp_path, [])
    g.app = lambda scope, receive, send: reached.append(scope["path"]) or asyncio.sleep(0)

    async def send(message):
        sent.append(message)

    def request(path: str, host: bytes) -> None:
        scope = {"type": "http", "path": path, "headers": [(b"host", host)]}
        asyncio.run(g(scope, None, send))

    request("/", b"evil.example")
    request("/gradio_api/file=/etc/passwd", b"127.0.0.1:7860")
    request("/", b"localhost:7860")
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [400, 403]
    assert reached == ["/"]


def test_gradio_passes_an_upload_on_without_decoding_it(photos, tmp_path, monkeypatch):  # noqa: F811
    pytest.importorskip("gradio")
    from gradio.data_classes import ImageData

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    encoder = SiglipLike()
    index = app.open_index(build_index(photos, tmp_path / "photos.index", encoder))
    page = app.build_app(app.SearchService(index, encoder))
    upload = [block for block in page.blocks.values() if getattr(block, "elem_id", None) == "query-image"][0]
    rgba = tmp_path / "upload.png"
    Image.new("RGBA", (300, 200), (10, 200, 30, 128)).save(rgba)
    assert upload.preprocess(ImageData(path=str(rgba), orig_name="upload.png")) == str(rgba)
    assert page._queue.default_concurrency_limit == app.WORKERS > 1


def test_an_upload_is_decoded_by_vslib_reduced_to_what_the_model_needs(photos, tmp_path, monkeypatch):  # noqa: F811
    encoder = ShadeEncoder()
    encoder.decode_side = 64
    service = app.SearchService(app.open_index(build_index(photos, tmp_path / "photos.index", encoder)), encoder)
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), (30, 40, 230)).save(big)
    decoded = []
    real = app.load_image

    def spy(path, **options):
        image = real(path, **options)
        decoded.append((Path(path).name, options.get("min_side"), image.size))
        return image

    monkeypatch.setattr(app, "load_image", spy)
    outcome = service.search(image=str(big), k=1)
    assert outcome.rows[0].path == "blue.png"
    [(name, min_side, size)] = decoded
    assert (name, min_side) == ("big.png", 64) and 64 <= min(size) < 128 and size[0] > size[1]
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 8000)).save(bomb)  # 72 MP in a few KB
    refused = service.search(image=str(bomb), k=1)
    assert refused.rows == [] and "too large" in refused.message
