"""Peak memory of decoding one large image with vslib.images.load_image, in full and reduced.

Each measurement runs in a fresh Python process that imports PIL and vslib.images, records
its resident memory (RSS), loads one image and reports the peak RSS growth (Linux
``VmHWM``, the high-water mark of this process's own memory). The images are compressible (a few hundred KB on disk) but 64 MP once decoded:
the shape of a decompression bomb that stays under the pixel cap.

    python benchmarks/decode_memory.py            # 64 MP, min_side 448 (twice a 224-px model)

Writes ``results/decode_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import bench_common

_CHILD = r"""
import json, sys
from vslib.images import load_image
def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
before = status_kb("VmRSS")
image = load_image(sys.argv[1], min_side=None if sys.argv[2] == "none" else int(sys.argv[2]))
peak = status_kb("VmHWM")
print(json.dumps({"size": image.size, "peak_growth_mb": (peak - before) / 1024}))
"""


def make_images(folder: Path, megapixels: int) -> dict[str, Path]:
    side = int((megapixels * 1e6) ** 0.5)
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (64, 64, 4), dtype=np.uint8)
    pixels = np.tile(tile, (side // 64 + 1, side // 64 + 1, 1))[:side, :side]
    files = {"RGBA PNG": folder / "big.png", "RGB JPEG": folder / "big.jpg"}
    Image.fromarray(pixels, "RGBA").save(files["RGBA PNG"], compress_level=9)
    Image.fromarray(np.ascontiguousarray(pixels[..., :3]), "RGB").save(files["RGB JPEG"], quality=90)
    return files


def measure(path: Path, min_side: int | None) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(min_side or "none")],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=int, default=64)
    parser.add_argument("--min-side", type=int, default=448)
    args = parser.parse_args()
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in make_images(Path(tmp), args.megapixels).items():
            for min_side in (None, args.min_side):
                got = measure(path, min_side)
                row = {"image": kind, "file_kb": round(path.stat().st_size / 1024), "min_side": min_side,
                       "decoded_size": got["size"], "peak_growth_mb": round(got["peak_growth_mb"])}
                results.append(row)
                rows.append([kind, row["file_kb"], min_side or "full", "x".join(map(str, got["size"])),
                             row["peak_growth_mb"]])
    bench_common.print_table(rows, ["image", "file KB", "min_side", "decoded", "peak RSS growth MB"])
    path = bench_common.write_result("decode_memory", {
        "machine": bench_common.machine_info(["PIL"]), "megapixels": args.megapixels, "rows": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
