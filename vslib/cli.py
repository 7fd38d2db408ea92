"""The ``vslib`` command line: index a folder of images, then search it by text or image.

::

    vslib index ~/Pictures --model tiny-siglip2 --out pictures.index
    vslib search pictures.index --text "a dog on a beach" -k 5
    vslib search pictures.index --query "+2 dog, -leash" --json
    vslib app pictures.index            # a web page on http://127.0.0.1:7860
    vslib index ~/Pictures --model tiny-dinov3 --model tiny-siglip2 --out both.index
    vslib describe photo.jpg --labels labels.txt --top 3

Introduced in chapter 5; two-model indexes and ``describe`` in chapter 7.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vslib import __version__

if TYPE_CHECKING:
    from vslib.encoders import Encoder


class CommandError(Exception):
    """A failure reported as one line on stderr, without a traceback. Introduced in chapter 5."""


def load_encoder(name: str, device: str | None = None) -> Encoder:
    """Load an encoder by name (:func:`vslib.encoders.load_encoder`), importing torch only now.

    Introduced in chapter 5.
    """
    from vslib.encoders import load_encoder as load

    return load(name, device=device)


def _encoder(name: str, device: str | None) -> Encoder:
    from vslib.registry import ModelNotAvailableError

    try:
        if device is not None:
            from vslib.precision import check_device

            check_device(device)
        return load_encoder(name, device=device)
    except KeyError as error:
        # str(KeyError) adds quotes around the message.
        raise CommandError(str(error.args[0]) if error.args else f"unknown model {name!r}") from None
    except (ValueError, FileNotFoundError, ModelNotAvailableError) as error:
        raise CommandError(str(error)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


# -- vslib index ---------------------------------------------------------------------------------


def _add_index_command(commands: Any) -> None:
    parser = commands.add_parser(
        "index",
        help="index a folder of images (or update an existing index)",
        description=(
            "Embed every image under DIR and save a searchable index. If INDEX already exists it is "
            "updated: new and changed files are encoded, deleted files removed, unchanged files kept. "
            "Unreadable files are skipped and listed with the reason. The default engine encodes in this "
            "process: right for a photo folder on one machine. --engine ray runs the same job on Ray Data "
            "(needs the 'scale' extra): decoding in parallel tasks, encoder actors on each GPU, Parquet "
            "shards in INDEX.parquet beside the index; worth it for collections that take hours on one "
            "machine, or on a Ray cluster (--address or RAY_ADDRESS). On one small machine it only adds "
            "overhead (starting Ray, a model per actor)."
        ),
    )
    parser.add_argument("dir", metavar="DIR", help="folder of images, searched recursively")
    parser.add_argument(
        "--model", action="append", metavar="NAME",
        help="encoder name, e.g. tiny-siglip2 (required for a new index; an existing index keeps its own model). "
             "Give it twice, e.g. --model tiny-dinov3 --model tiny-siglip2, for a two-model index: image queries "
             "go to the DINOv3-family model, text queries to the one that reads text",
    )
    parser.add_argument("--out", required=True, metavar="INDEX", help="index folder to create or update")
    parser.add_argument(
        "--dtype", choices=["f32", "f16", "i8"], help="vector storage of a new index (default: f16)"
    )
    parser.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                        help="images per forward pass (default: 32)")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.add_argument("--rehash", action="store_true",
                        help="hash every file, also those whose size and mtime did not change (reads every byte)")
    parser.add_argument("--no-wait", action="store_true",
                        help="fail at once if another process is writing INDEX (default: wait for it)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: encode in this process (default); ray: on Ray Data (see above)")
    parser.add_argument("--address", metavar="ADDR",
                        help="with --engine ray: the Ray cluster to use (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--actors", type=_positive_int, default=1, metavar="N",
                        help="with --engine ray: encoder actors, one GPU each when there are GPUs (default: 1)")
    parser.set_defaults(run=_run_index)


def _run_index(args: argparse.Namespace) -> int:
    from vslib.indexlock import IndexLockedError, writer_lock

    root = Path(args.dir)
    if not root.is_dir():
        raise CommandError(f"{root} is not a folder")
    try:
        # One writer at a time, from reading the index to committing the update.
        with writer_lock(args.out, wait=not args.no_wait):
            return _update_index(args, root, Path(args.out))
    except IndexLockedError as error:
        raise CommandError(str(error)) from None
    except OSError as error:  # e.g. no permission to create the lock file
        raise CommandError(f"cannot write {args.out}: {error}") from None


def _update_index(args: argparse.Namespace, root: Path, out: Path) -> int:
    from vslib.index import ImageIndex
    from vslib.multi import MultiIndex

    models = args.model or []
    repeated = sorted({name for name in models if models.count(name) > 1})
    if repeated:
        raise CommandError(f"--model {repeated[0]} is given more than once")
    if len(models) > 1 or MultiIndex.folder_state(out) == "multi":
        return _update_multi_index(args, root, out, models)
    args.model = models[0] if models else None
    index = None
    state = ImageIndex.folder_state(out)
    if state == "index":
        try:
            index = ImageIndex.load(out)
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot open {out}: {error}") from None
        if args.model is not None and args.model != index.model:
            raise CommandError(
                f"{out} was built with model {index.model!r}, not {args.model!r}; "
                "leave out --model to update it, or write a new index with --out"
            )
        if args.dtype is not None and args.dtype != index.dtype:
            raise CommandError(f"{out} stores {index.dtype} vectors, not {args.dtype}; write a new index with --out")
        model = index.model
    elif state in ("file", "foreign"):
        raise CommandError(f"{out} exists and is not an image index")
    elif args.model is None:
        raise CommandError("--model is required to create a new index")
    else:
        model = args.model

    if args.engine == "ray":
        return _run_index_on_ray(args, root, out, model, args.dtype or (index.dtype if index else "f16"))
    encoder = _encoder(model, args.device)
    if index is None:
        index = ImageIndex(encoder.dim, encoder.name, dtype=args.dtype or "f16")
    try:
        report = index.update_folder(root, encoder, batch_size=args.batch_size,
                                     progress=False if args.no_progress else None, rehash=args.rehash)
        index.save(out)
    except (OSError, ValueError) as error:
        raise CommandError(str(error)) from None
    return _print_index_report(root, out, report, index)


def _print_index_report(root: Path, out: Path, report: Any, index: Any, note: str = "") -> int:
    from vslib.safetext import printable_path

    for path, reason in report.skipped:
        print(f"skipped {printable_path(str(root / path))}: {reason}")
    print(report.summary())
    models = ", ".join(index.model_names) if hasattr(index, "model_names") else index.model
    print(f"{len(index)} images in {out} ({models}, {index.dtype}){note}")
    return 0


def _update_multi_index(args: argparse.Namespace, root: Path, out: Path, models: list[str]) -> int:
    """``vslib index`` for an index with a vector per image from each of several models (chapter 7)."""
    from vslib.multi import MultiIndex

    index = None
    state = MultiIndex.folder_state(out)
    if state == "multi":
        try:
            index = MultiIndex.load(out)
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot open {out}: {error}") from None
        if models and sorted(models) != sorted(index.model_names):
            raise CommandError(
                f"{out} holds the models {', '.join(index.model_names)}, not {', '.join(models)}; "
                "leave out --model to update it, or write a new index with --out"
            )
        if args.dtype is not None and args.dtype != index.dtype:
            raise CommandError(f"{out} stores {index.dtype} vectors, not {args.dtype}; write a new index with --out")
        models = index.model_names
    elif state == "index":
        raise CommandError(
            f"{out} is a single-model index; a two-model index needs its own folder: write it with a new --out"
        )
    elif state in ("file", "foreign"):
        raise CommandError(f"{out} exists and is not an image index")
    if args.engine == "ray":
        raise CommandError("--engine ray builds single-model indexes; build a two-model index with --engine local")
    encoders = [_encoder(name, args.device) for name in models]
    if index is None:
        index = MultiIndex.for_encoders(encoders, dtype=args.dtype or "f16")
    try:
        report = index.update_folder(root, encoders, batch_size=args.batch_size,
                                     progress=False if args.no_progress else None, rehash=args.rehash)
        index.save(out)
    except (OSError, ValueError) as error:
        raise CommandError(str(error)) from None
    return _print_index_report(root, out, report, index)


def _run_index_on_ray(args: argparse.Namespace, root: Path, out: Path, model: str, dtype: str) -> int:
    import importlib.util

    from vslib.registry import ModelNotAvailableError

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
        raise CommandError("--engine ray needs the 'scale' extra: pip install 'vslib[scale]'")
    from vslib import scale

    try:
        report, index = scale.index_folder(root, model, out, dtype=dtype, batch_size=args.batch_size,
                                           actors=args.actors, address=args.address, device=args.device)
    except KeyError as error:
        raise CommandError(str(error.args[0]) if error.args else f"unknown model {model!r}") from None
    except (OSError, ValueError, ModelNotAvailableError) as error:
        raise CommandError(str(error)) from None
    return _print_index_report(root, out, report, index, f"; shards in {scale.shards_folder(out)}")


# -- vslib search --------------------------------------------------------------------------------


def _add_search_command(commands: Any) -> None:
    parser = commands.add_parser(
        "search",
        help="search an index by text, image or a weighted query",
        description="Search an index with the model it was built with; prints the best matches.",
    )
    parser.add_argument("index", metavar="INDEX", help="index folder written by 'vslib index'")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help='a text query, e.g. "a dog on a beach" (multimodal models only)')
    what.add_argument("--image", metavar="PATH", help="an image file to find similar images to")
    what.add_argument(
        "--query",
        help='weighted terms separated by commas, e.g. "+2 dog, -leash, img:cat.jpg" (see vslib.query)',
    )
    parser.add_argument("-k", type=_positive_int, default=10, metavar="N", help="number of results (default: 10)")
    parser.add_argument("--json", action="store_true", help="print results as a JSON list of objects")
    parser.add_argument("--exact", action="store_true",
                        help="compare with every image instead of the HNSW graph (slower, exact)")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--model", metavar="NAME",
                        help="the model that answers, for a two-model index (default: image queries go to the "
                             "DINOv3-family model, text queries to the one that reads text); it must be in the index "
                             "and able to embed every term")
    parser.add_argument("--fusion", default="rrf", metavar="HOW",
                        help="two-model index, query with both texts and images: 'rrf' (default) sends images to "
                             "one model and texts to the other and combines the two rankings by reciprocal rank "
                             "fusion; 'refuse' stops with a message. Cosines of two models are never added")
    parser.add_argument("--rrf-k", type=float, default=60.0, metavar="K",
                        help="the constant k of reciprocal rank fusion, score = sum of 1/(k + rank) (default: 60)")
    parser.set_defaults(run=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    from vslib.encoders import TextNotSupportedError
    from vslib.images import ImageLoadError
    from vslib.index import ImageIndex
    from vslib.multi import MultiIndex
    from vslib.query import search
    from vslib.safetext import json_path, printable_path

    if args.text is not None and not args.text.strip():
        raise CommandError("the text query is empty; type what to search for")
    if MultiIndex.exists(args.index):
        return _run_multi_search(args)
    if "new" in (ImageIndex.folder_state(args.index), MultiIndex.folder_state(args.index)):
        raise CommandError(f"{args.index} holds no saved index yet (an interrupted first save?); "
                           f"run 'vslib index DIR --out {args.index}' again")
    try:
        index = ImageIndex.load(args.index, view=True)
    except (OSError, ValueError) as error:
        raise CommandError(str(error)) from None
    if args.model is not None and args.model != index.model:
        raise CommandError(f"{args.index} holds only the model {index.model}, not {args.model}")
    try:
        terms = _search_terms(args)
        encoder = _encoder(index.model, args.device)
        hits = search(index, encoder, terms, k=args.k, exact=args.exact)
    except (ValueError, FileNotFoundError, ImageLoadError, TextNotSupportedError) as error:
        raise CommandError(str(error)) from None

    rows = [
        {"rank": rank, "score": round(hit.score, 6), **json_path(str(index.resolve(hit.path))), "key": hit.key,
         "model": index.model}
        for rank, hit in enumerate(hits, start=1)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no results: the index is empty")
    else:
        print(f"{'rank':>4}  {'score':>7}  path")
        for row, hit in zip(rows, hits):
            print(f"{row['rank']:>4}  {row['score']:>7.4f}  {printable_path(str(index.resolve(hit.path)))}")
    return 0


def _search_terms(args: argparse.Namespace) -> list[Any]:
    from vslib.query import QueryTerm, parse_query

    if args.text is not None:
        return [QueryTerm(1.0, text=args.text)]
    if args.image is not None:
        if not Path(args.image).is_file():
            raise CommandError(f"{args.image} is not a file")
        return [QueryTerm(1.0, image=Path(args.image))]
    return parse_query(args.query)


def _run_multi_search(args: argparse.Namespace) -> int:
    """``vslib search`` on a two-model index: the query picks the model (chapter 7)."""
    from vslib.encoders import TextNotSupportedError
    from vslib.images import ImageLoadError
    from vslib.multi import MultiIndex
    from vslib.safetext import json_path, printable_path

    if not args.rrf_k >= 0 or args.rrf_k == float("inf"):
        raise CommandError(f"--rrf-k must be a finite number of at least 0, got {args.rrf_k}")
    try:
        index = MultiIndex.load(args.index, view=True)
    except (OSError, ValueError) as error:
        raise CommandError(str(error)) from None
    try:
        terms = _search_terms(args)
        plan = index.plan(terms, model=args.model, fusion=args.fusion)
        encoders = {name: _encoder(name, args.device) for name in plan.models}
        result = index.search(terms, encoders, k=args.k, model=args.model, fusion=args.fusion,
                              rrf_k=args.rrf_k, exact=args.exact)
    except (ValueError, FileNotFoundError, ImageLoadError, TextNotSupportedError) as error:
        raise CommandError(str(error)) from None

    rows = []
    for rank, hit in enumerate(result.hits, start=1):
        row = {"rank": rank, "score": round(hit.score, 6), **json_path(str(index.resolve(hit.path)))}
        if result.fused:
            row.update(model="+".join(result.models), fusion="rrf", ranks=hit.ranks,
                       cosines={m: None if c is None else round(c, 6) for m, c in hit.cosines.items()})
        else:
            row.update(key=hit.key, model=result.models[0])
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"answered by {result.answered_by()}")
    if not rows:
        print("no results: the index is empty")
        return 0
    widths = [max(4, len(m)) for m in result.models] if result.fused else []
    ranks = "".join(f"  {m:>{w}}" for m, w in zip(result.models, widths))
    print(f"{'rank':>4}  {'rrf' if result.fused else 'score':>7}{ranks}  path")
    for row, hit in zip(rows, result.hits):
        line = f"{row['rank']:>4}  {row['score']:>7.4f}"
        if result.fused:
            line += "".join(f"  {hit.ranks[m] or '-':>{w}}" for m, w in zip(result.models, widths))
        print(f"{line}  {printable_path(str(index.resolve(hit.path)))}")
    return 0


# -- vslib describe -------------------------------------------------------------------------------


def _add_describe_command(commands: Any) -> None:
    from vslib.describe import PROMPT_MODES

    parser = commands.add_parser(
        "describe",
        help="rank a list of labels or captions for an image (image-to-text)",
        description=(
            "Embed IMAGE and every line of the labels file with a model that has a text tower, and print "
            "the lines best first with their cosine. Plain labels ('red circle') go through the 80-template "
            "prompt ensemble; if any line reads as a caption (more than three words, starting with a, an "
            "or the, or ending with . ! ?) every line is embedded as it is. Nothing is generated: only the "
            "given texts are ranked."
        ),
    )
    parser.add_argument("image", metavar="IMAGE", help="the image file to describe")
    parser.add_argument("--labels", required=True, metavar="FILE",
                        help="UTF-8 text file, one label or caption per line; blank lines and # comments are ignored")
    parser.add_argument("--model", metavar="NAME",
                        help="a model with a text tower (default: the book's multimodal model, tiny-siglip2 "
                             "unless VSLIB_MODELS=real)")
    parser.add_argument("--top", type=_positive_int, default=5, metavar="K", help="lines to print (default: 5)")
    parser.add_argument("--prompts", choices=PROMPT_MODES, default="auto",
                        help="auto (default, see above), ensemble (templates for every line) or as-is")
    parser.add_argument("--json", action="store_true", help="print the result as a JSON object")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.set_defaults(run=_run_describe)


def _run_describe(args: argparse.Namespace) -> int:
    from vslib import config
    from vslib.describe import describe_image, read_labels
    from vslib.encoders import TextNotSupportedError
    from vslib.images import ImageLoadError, load_image
    from vslib.safetext import json_path, printable_path

    try:
        labels = read_labels(args.labels)
    except (OSError, ValueError) as error:
        raise CommandError(str(error)) from None
    if not Path(args.image).is_file():
        raise CommandError(f"{args.image} is not a file")
    try:
        image = load_image(args.image)
    except ImageLoadError as error:
        raise CommandError(str(error)) from None
    try:
        encoder = _encoder(args.model or config.models().multimodal, args.device)
        found = describe_image(encoder, image, labels, prompts=args.prompts, top=args.top)
    except (ValueError, TextNotSupportedError) as error:
        raise CommandError(str(error)) from None
    if args.json:
        print(json.dumps({**json_path(args.image), "model": found.model, "prompts": found.mode,
                          "labels": [{"rank": r.rank, "label": r.text, "score": round(r.score, 6)}
                                     for r in found.ranked]}, indent=2))
        return 0
    how = "the 80-template ensemble" if found.mode == "ensemble" else "each line as it is"
    print(f"{found.model} ranks {len(labels)} lines for {printable_path(args.image)} ({how})")
    print(f"{'rank':>4}  {'cosine':>7}  label")
    for row in found.ranked:
        print(f"{row.rank:>4}  {row.score:>7.4f}  {row.text}")
    return 0


# -- vslib app -----------------------------------------------------------------------------------


def _add_app_command(commands: Any) -> None:
    parser = commands.add_parser(
        "app",
        help="search an index in a local web page (needs the 'app' extra)",
        description=(
            "Serve a web page to search INDEX by text, by image or both, with scores and calibrated "
            "confidences. Only the indexed folder's images are served; they are never changed. "
            "Stop it with Ctrl+C."
        ),
    )
    parser.add_argument("index", metavar="INDEX", help="index folder written by 'vslib index'")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=_positive_int, default=7860, metavar="N", help="port (default: 7860)")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.set_defaults(run=_run_app)


def _run_app(args: argparse.Namespace) -> int:
    from vslib import app  # gradio itself is imported only when the page is built

    try:
        app.launch(args.index, host=args.host, port=args.port,
                   load_encoder=lambda name: _encoder(name, args.device))
    except app.AppError as error:
        raise CommandError(str(error)) from None
    return 0


# -- entry point ---------------------------------------------------------------------------------

_COMMANDS: tuple[Callable[[Any], None], ...] = (
    _add_index_command, _add_search_command, _add_describe_command, _add_app_command
)


def build_parser() -> argparse.ArgumentParser:
    """The ``vslib`` argument parser with all its subcommands. Introduced in chapter 5."""
    parser = argparse.ArgumentParser(
        prog="vslib",
        description="Multimodal visual search: index a folder of images, then search it by text or image.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="show the vslib version and exit")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(commands)
    return parser


_FREE_TEXT_OPTIONS = ("--query", "--text")


def _attach_free_text(argv: Sequence[str]) -> list[str]:
    """Turn ``--query -leash`` into ``--query=-leash``.

    argparse takes a value that starts with ``-`` for an option, but a query that starts
    with a negative term is normal. A value starting with ``--`` is still an option.
    """
    argv = list(argv)
    joined: list[str] = []
    i = 0
    while i < len(argv):
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if argv[i] in _FREE_TEXT_OPTIONS and value.startswith("-") and not value.startswith("--"):
            joined.append(f"{argv[i]}={value}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vslib`` command line; returns the exit status (0 on success).

    Introduced in chapter 5.
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # never crash on a character the terminal cannot show
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(_attach_free_text(sys.argv[1:] if argv is None else argv))
    try:
        return args.run(args)
    except CommandError as error:
        print(f"vslib {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
