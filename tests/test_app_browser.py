"""`vslib app` end to end in a real headless Chromium: search by text and by an uploaded image.

The app runs as `python -m vslib.cli app INDEX --port N` on an index of synthetic scenes built
with the bundled tiny-siglip2. Playwright drives Debian's /usr/bin/chromium (never a browser of
Playwright's own, which would need a download). Screenshots go to $VSLIB_TEST_ARTIFACTS, or to
pytest's temporary folder; their paths are printed.

This test fails when chromium, Playwright or gradio is missing (`bash .ci/setup` installs
them). Outside CI, VSLIB_SKIP_BROWSER=1 skips it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

import pytest

from vslib import cli, synth

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[1]
MODEL = "tiny-siglip2"
SCENES = 24
STARTUP_S = 240
STEP_MS = 90_000

pytestmark = pytest.mark.slow


def _requirements() -> None:
    """Skip on request (never in CI); otherwise fail, saying what to install."""
    if os.environ.get("VSLIB_SKIP_BROWSER") == "1" and not os.environ.get("CI"):
        pytest.skip("VSLIB_SKIP_BROWSER=1")
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium chromium-driver)")
    for module, extra in (("playwright", "dev"), ("gradio", "app")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the Python package {module} (pip install -e '.[{extra}]')")
    if missing:
        pytest.fail("the browser test needs " + "; ".join(missing) + ". `bash .ci/setup` installs them; "
                    "outside CI, VSLIB_SKIP_BROWSER=1 skips this test.", pytrace=False)


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("VSLIB_TEST_ARTIFACTS") or tmp_path / "artifacts").resolve() / "test_app_browser"
    if folder.is_relative_to(REPO):
        pytest.fail(f"VSLIB_TEST_ARTIFACTS must lie outside the repository ({REPO})", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under ``root`` with its size, mtime and content hash (links not followed)."""
    out = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        out[path.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns, digest)
    return out


def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (no ``..`` folding as a browser would)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _wait_until_serving(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vslib app exited with {process.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"vslib app did not answer on {url} within {STARTUP_S} s:\n{log.read_text()[-3000:]}", pytrace=False)


def _start_app(index_dir: Path, port: int, tmp_path: Path) -> subprocess.Popen:
    """`vslib app INDEX --port PORT` in a child process, once it answers (log in tmp_path/app.log)."""
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VSLIB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "vslib.cli", "app", str(index_dir), "--port", str(port), "--device", "cpu"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
    try:
        _wait_until_serving(process, f"http://127.0.0.1:{port}/", log)
    except BaseException:
        _stop(process)
        raise
    return process


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # gradio closes cleanly on Ctrl+C
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def _top(page) -> tuple[str, float]:
    """Path and score of the gallery's first thumbnail, read from its caption."""
    alt = page.locator("#results-gallery .gallery-item img").first.get_attribute("alt")
    match = re.fullmatch(r"#1 (?P<path>.+) · score (?P<score>-?[\d.]+) · conf .+", alt or "")
    assert match, f"unexpected caption {alt!r}"
    return match["path"], float(match["score"])


def test_the_app_in_chromium(tmp_path, capsys):
    _requirements()
    from playwright.sync_api import expect, sync_playwright

    from vslib.encoders import load_encoder
    from vslib.index import ImageIndex
    from vslib.query import search

    started = time.monotonic()
    artifacts = _artifacts(tmp_path)

    # An index of synthetic scenes, and beside the folder a file the app must never serve.
    root = tmp_path / "scenes"
    scenes = synth.make_split("test", SCENES, size=64, small_objects=0)
    files = synth.save_scenes(scenes, root)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the browser\n")
    (root / "link.txt").symlink_to(secret)
    index_dir = tmp_path / "scenes.index"
    assert cli.main(["index", str(root), "--model", MODEL, "--out", str(index_dir), "--no-progress"]) == 0
    capsys.readouterr()
    before = _snapshot(root)

    # What vslib itself ranks first for the text query (with a clear margin over the second).
    query = scenes[0].captions[0]
    index = ImageIndex.load(index_dir, view=True)
    expected = search(index, load_encoder(MODEL, device="cpu"), query, k=2)
    assert expected[0].score - expected[1].score > 0.01, "pick a query with a clear winner"
    target = files[SCENES // 2]

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    process = _start_app(index_dir, port, tmp_path)
    try:
        profile = tmp_path / "chromium-profile"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 1000},
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(STEP_MS)
                page.goto(url)
                expect(page.get_by_text(f"{SCENES} images")).to_be_visible()

                # 1. A text query: the first thumbnail is vslib's own top result.
                page.locator("#query-text textarea").fill(query)
                page.locator("#search").click()
                expect(page.locator("#status")).to_contain_text("(text query)")
                path, score = _top(page)
                assert path == expected[0].path and abs(score - expected[0].score) < 2e-3
                page.screenshot(path=str(artifacts / "text-query.png"), full_page=True)

                # 2. An uploaded image: image-to-image, the image itself comes first.
                page.locator("#query-text textarea").fill("")
                page.locator("#query-image input[type=file]").set_input_files(str(target))
                expect(page.locator("#query-image img")).to_be_visible()
                page.locator("#search").click()
                expect(page.locator("#status")).to_contain_text("(image query)")
                path, score = _top(page)
                assert path == target.name and score > 0.99

                # The table links the original image, served from inside the folder.
                first_row = page.locator("#results-table").get_by_role("row").nth(1)  # after the header
                expect(first_row).to_contain_text(f"1 {target.name}")
                link = first_row.get_by_role("link")
                expect(link).to_have_text(target.name)
                response = page.request.get(urljoin(url, link.get_attribute("href")))
                assert response.status == 200 and response.body() == target.read_bytes()
                page.screenshot(path=str(artifacts / "image-query.png"), full_page=True)

                # 3. Nothing outside the folder comes back, through the browser or byte for byte.
                assert page.request.get(f"{url}gradio_api/file=/etc/passwd").status == 403
                refused = [
                    "/gradio_api/file=/etc/passwd",
                    f"/gradio_api/file={root}/../../../../../../etc/passwd",
                    f"/gradio_api/file={root}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                    f"/gradio_api/file={root}/link.txt",  # a symlink that leads out of the folder
                    f"/gradio_api/file={secret}",
                    f"/gradio_api/file={index_dir}/index.json",
                ]
                for request_target in refused:
                    status, body = _raw_get(port, request_target)
                    assert status == 403, (request_target, status)
                    assert b"root:" not in body and b"not for the browser" not in body
                assert _raw_get(port, f"/gradio_api/file={target}") == (200, target.read_bytes())
            finally:
                browser.close()
    finally:
        _stop(process)
    assert _snapshot(root) == before, "the app changed the indexed folder"
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
    with capsys.disabled():
        print(f"\nbrowser test: {time.monotonic() - started:.1f} s; screenshots in {artifacts}: "
              f"{', '.join(sorted(p.name for p in artifacts.glob('*.png')))}")


def _get(port: int, target: str, host: str | None = None) -> tuple[int, bytes]:
    """GET ``target`` sending ``host`` as the Host header (default: the address itself)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", target, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_app_serves_only_indexed_images_and_only_to_its_own_host_names(tmp_path, capsys):
    """Over plain HTTP (no browser): files under the folder that are not indexed, and a forged Host."""
    pytest.importorskip("gradio")
    root = tmp_path / "scenes"
    files = synth.save_scenes(synth.make_split("test", 4, size=64, small_objects=0), root)
    (root / ".env").write_text("API_KEY=not-for-the-browser\n")  # hidden: never indexed
    (root / "notes.txt").write_text("not for the browser\n")
    (root / "later.png").write_bytes(files[0].read_bytes())  # an image added after indexing
    index_dir = tmp_path / "scenes.index"
    assert cli.main(["index", str(root), "--model", MODEL, "--out", str(index_dir), "--no-progress"]) == 0
    (root / "later2.png").write_bytes(files[0].read_bytes())
    capsys.readouterr()

    port = _free_port()
    process = _start_app(index_dir, port, tmp_path)
    try:
        for name in (".env", "notes.txt", "later2.png"):
            status, body = _get(port, f"/gradio_api/file={root / name}")
            assert status == 403, (name, status)
            assert b"not-for-the-browser" not in body and b"not for the browser" not in body
        assert _get(port, f"/gradio_api/file={root / 'later.png'}") == (200, files[0].read_bytes())
        assert _get(port, f"/gradio_api/file={files[1]}") == (200, files[1].read_bytes())
        # A page on evil.example that resolves its name to 127.0.0.1 sends Host: evil.example.
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
            assert _get(port, "/", host=host)[0] == 400, host
            assert _get(port, f"/gradio_api/file={files[1]}", host=host)[0] == 400
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            assert _get(port, "/", host=host)[0] == 200, host
    finally:
        _stop(process)
