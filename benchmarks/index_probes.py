"""Probes of an index folder under stress, each in real processes: overlapping saves, readers
during saves, and random bytes written into the vectors file.

1. Concurrent saves: per trial, two processes wait for the same instant and save a different
   index to one folder; the trial counts as damaged if the folder no longer loads.
2. Readers during saves: one process loads (view=True) and searches in a loop while two
   processes save 40 times each; every failed load counts.
3. Corrupted vectors: per trial, 64 random bytes overwrite a random place in a saved vectors
   file; a child process loads and searches it. Outcomes: ``refused`` (a ValueError with a
   message), ``crash`` (killed by a signal, e.g. a segmentation fault in USearch),
   ``traceback`` (any other exception) or ``silent`` (it loaded and answered).

    python benchmarks/index_probes.py --trials 30
    PYTHONPATH=/path/to/old/checkout python benchmarks/index_probes.py --out /tmp   # compare

Writes ``results/index_probes.json`` (or into ``--out``).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import bench_common

_SAVE_AT = """
    import sys, time
    import numpy as np
    from vslib.index import ImageIndex
    folder, seed, at, rounds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    indexes = []
    for r in range(rounds):
        index = ImageIndex(16, "m", dtype="f32", connectivity=8)
        index.add_vectors(np.random.default_rng(seed * 100 + r).normal(size=(200 + seed, 16)), threads=1)
        indexes.append(index)
    time.sleep(max(0.0, at - time.time()))
    for index in indexes:
        index.save(folder)
"""

_READ_LOOP = """
    import sys, time
    import numpy as np
    from vslib.index import ImageIndex
    folder, seconds = sys.argv[1], float(sys.argv[2])
    loads = failures = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            index = ImageIndex.load(folder, view=True)
            index.search(np.ones(16, np.float32), k=3)
            loads += 1
        except Exception as error:
            failures += 1
    print(loads, failures)
"""

_OPEN = """
    import sys
    import numpy as np
    from vslib.index import ImageIndex
    try:
        index = ImageIndex.load(sys.argv[1], view=True)
        hits = index.search(np.ones(16, np.float32), k=10)
        print("silent", [round(h.score, 4) for h in hits])
    except ValueError as error:
        print("refused", error)
"""


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def _index(seed: int, n: int = 200):
    from vslib.index import ImageIndex

    index = ImageIndex(16, "m", dtype="f32", connectivity=8)
    index.add_vectors(np.random.default_rng(seed).normal(size=(n, 16)), threads=1)
    return index


def _loads(folder: Path) -> bool:
    from vslib.index import ImageIndex

    try:
        ImageIndex.load(folder)
        return True
    except Exception:
        return False


def concurrent_saves(tmp: Path, trials: int) -> dict:
    damaged = 0
    for trial in range(trials):
        folder = tmp / f"concurrent-{trial}.index"
        _index(trial).save(folder)
        at = time.time() + 2.0  # both children are importing by then
        children = [subprocess.Popen(_python(_SAVE_AT, str(folder), str(seed), str(at), "1"),
                                     stderr=subprocess.DEVNULL) for seed in (1, 2)]
        for child in children:
            child.wait()
        damaged += not _loads(folder)
    return {"trials": trials, "damaged": damaged}


def readers_during_saves(tmp: Path, seconds: float = 20.0) -> dict:
    folder = tmp / "read-while-saving.index"
    _index(0).save(folder)
    reader = subprocess.Popen(_python(_READ_LOOP, str(folder), str(seconds)), stdout=subprocess.PIPE, text=True)
    at = time.time() + 2.0
    writers = [subprocess.Popen(_python(_SAVE_AT, str(folder), str(seed), str(at), "40"), stderr=subprocess.DEVNULL)
               for seed in (1, 2)]
    for writer in writers:
        writer.wait()
    loads, failures = map(int, reader.communicate()[0].split())
    return {"loads": loads, "failed_loads": failures, "index_loads_after": _loads(folder)}


def corrupted_vectors(tmp: Path, trials: int) -> dict:
    clean = tmp / "clean.index"
    _index(7, n=2000).save(clean)
    vectors = next(clean.glob("vectors-*.usearch"))
    outcomes = collections.Counter()
    for trial in range(trials):
        folder = tmp / f"corrupt-{trial}.index"
        folder.mkdir()
        for file in clean.iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
        data = bytearray((folder / vectors.name).read_bytes())
        rng = np.random.default_rng(trial)
        start = int(rng.integers(0, len(data) - 64))
        data[start:start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        (folder / vectors.name).write_bytes(bytes(data))
        result = subprocess.run(_python(_OPEN, str(folder)), capture_output=True, text=True)
        if result.returncode < 0:
            outcomes["crash"] += 1
        elif result.returncode != 0:
            outcomes["traceback"] += 1
        else:
            outcomes[result.stdout.split()[0]] += 1
    return {"trials": trials, **{k: outcomes.get(k, 0) for k in ("refused", "crash", "traceback", "silent")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--out", type=Path, default=bench_common.RESULTS_DIR)
    args = parser.parse_args()
    import vslib

    with tempfile.TemporaryDirectory() as tmp:
        saves = concurrent_saves(Path(tmp), args.trials)
        reads = readers_during_saves(Path(tmp))
        corrupt = corrupted_vectors(Path(tmp), args.trials)
    print(f"vslib from {Path(vslib.__file__).parent}")
    print(f"concurrent saves: damaged {saves['damaged']} of {saves['trials']} trials")
    print(f"readers during 2 x 40 saves: {reads['failed_loads']} failed of "
          f"{reads['loads'] + reads['failed_loads']} loads; index loads afterwards: {reads['index_loads_after']}")
    print(f"corrupted vectors file, {corrupt['trials']} trials: refused {corrupt['refused']}, "
          f"crash {corrupt['crash']}, traceback {corrupt['traceback']}, silently answered {corrupt['silent']}")
    path = bench_common.write_result("index_probes", {
        "machine": bench_common.machine_info(["usearch"]), "vslib": str(Path(vslib.__file__).parent),
        "concurrent_saves": saves, "readers_during_saves": reads, "corrupted_vectors": corrupt}, out_dir=args.out)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
