"""Reproduce a bundled checkpoint from scratch: ``python -m vslib.zoo.train NAME``.

Each model trains on two CPU cores in at most 45 minutes; the model card records the measured
time.
The run writes the checkpoint directory, a ``training.json`` with the recipe, timings and evaluation numbers, and the
model card (``README.md``) quoting them. ``tiny-siglip2-naflex`` is converted from the
bundled ``tiny-siglip2`` in seconds (:mod:`vslib.zoo.naflex`), not trained; its
``training.json`` records the conversion and its check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from vslib.zoo import BUNDLED, CONVERTED, checkpoint_path, common, model_cards


def _override(recipe, assignments: list[str]) -> None:
    """Apply ``key=value`` overrides to a recipe dataclass, parsing values as its field types."""
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not hasattr(recipe, key):
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with a field of {type(recipe).__name__}")
        current = getattr(recipe, key)
        if isinstance(current, tuple):
            parsed = tuple(float(v) for v in value.split(","))
        elif isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {item!r}: {key} takes true or false")
            parsed = value.lower() in ("true", "1")
        else:
            parsed = type(current)(value)
        setattr(recipe, key, parsed)


def _train(name: str, out: Path, steps: int | None, quick: bool, run_eval: bool,
           overrides: list[str] | None = None) -> dict:
    if name in CONVERTED:
        from vslib.zoo import naflex

        if steps is not None or quick:
            raise SystemExit(f"{name} is converted from {CONVERTED[name]}, not trained: --steps and --quick "
                             "do not apply")
        recipe = naflex.NaflexRecipe(source=CONVERTED[name])
        _override(recipe, overrides or [])
        return naflex.convert(out, recipe, run_eval=run_eval)
    if name == "tiny-dinov3":
        from vslib.zoo import dinov3 as trainer

        recipe = trainer.DinoRecipe()
    elif name == "tiny-siglip2":
        from vslib.zoo import siglip as trainer

        recipe = trainer.SiglipRecipe()
    elif name == "tiny-dinotxt":
        from vslib.zoo import dinotxt_train as trainer

        recipe = trainer.DinoTxtRecipe()
    else:
        raise SystemExit(f"unknown model {name!r}; choose one of {', '.join(BUNDLED)}")
    _override(recipe, overrides or [])
    if steps is not None:
        recipe.steps = steps
    if quick:
        recipe.train_scenes = min(recipe.train_scenes, 500)
    return trainer.train(out, recipe, run_eval=run_eval)


def _without_out(args: list[str]) -> list[str]:
    """The command line minus ``--out DIR`` (where a run writes does not change what it trains)."""
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            kept.append(a)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vslib.zoo.train", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=BUNDLED, help="which bundled model to train (or convert)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: the bundled checkpoint directory)")
    parser.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    parser.add_argument("--quick", action="store_true", help="small training pool, for smoke tests")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field, e.g. --set lr=2.5e-4 (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or checkpoint_path(args.name)
    start = time.perf_counter()
    report = _train(args.name, out, args.steps, args.quick, not args.no_eval, args.set)
    report.update(
        name=args.name,
        wall_seconds=round(time.perf_counter() - start, 1),
        size_bytes=common.dir_size_bytes(out),
        machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        command=" ".join(["python -m vslib.zoo.train", *_without_out(argv if argv is not None else sys.argv[1:])]),
    )
    common.write_json(Path(out) / "training.json", report)
    model_cards.write_card(args.name, Path(out), report)
    print(json.dumps(report["metrics"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
