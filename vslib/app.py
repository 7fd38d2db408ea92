"""A local web app over an image index: search by text, by image, or by both with weights.

::

    vslib app pictures.index                 # then open http://127.0.0.1:7860
    vslib app pictures.index --port 8000

The page has a text query, an image upload, a negative text and weights for the three; a
slider for the number of results and one for a confidence cut-off; and shows the results as
a gallery of thumbnails and a table with each image's cosine score and calibrated confidence.

Confidence comes from a :class:`vslib.calibration.Calibration`: a saved one in the index
folder (``calibration.json``, see :func:`save_calibration`) if there is one, else, for text
queries on a SigLIP model, the model's own ``logit_scale`` and ``logit_bias``
(:meth:`~vslib.calibration.Calibration.from_scale_bias`). Without a calibration for a kind
of query the table says ``n/a`` and the cut-off does not hide anything.

What the app may touch: it opens the index read-only and only reads the indexed images.
Thumbnails and uploads live in a private temporary folder (``GRADIO_TEMP_DIR`` when set).
The server binds to 127.0.0.1 unless told otherwise and serves, besides that temporary
folder, only the files the index holds: every stored path is resolved (symlinks included) and
refused if it ends outside the folder (:func:`safe_path`), and a guard in front of Gradio
(:class:`RequestGuard`) answers 403 to a file request for anything else (another file in the
folder, the index itself) and 400 to a request whose ``Host`` is not the bound address or
``localhost`` (what a DNS-rebinding page would send). Uploads are capped in size, decoded by
:mod:`vslib.images` (reduced to what the model needs, never by Gradio), and several searches
run at once (:data:`WORKERS`), so one large upload does not hold up every other user.

A two-model index (:mod:`vslib.multi`) is served too: image queries go to its DINOv3-family
model, text queries to the one that reads text, a query with both is fused by rank, and the
page says which model answered each search.

Gradio is imported only when the app is built, so ``import vslib.app`` works without it;
install it with ``pip install 'vslib[app]'``. Introduced in chapter 7.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from PIL import Image

from vslib.calibration import Calibration
from vslib.images import ImageLoadError, load_image
from vslib.index import MANIFEST, ImageIndex, SearchHit
from vslib.multi import MultiIndex

if TYPE_CHECKING:
    from vslib.encoders import Encoder

__all__ = [
    "APP_EXTRA",
    "CALIBRATION_FILE",
    "AppError",
    "Calibrations",
    "MultiSearchService",
    "RequestGuard",
    "ResultRow",
    "SearchOutcome",
    "SearchService",
    "UnsafePathError",
    "build_app",
    "calibrations_for",
    "index_message",
    "launch",
    "load_calibrations",
    "open_index",
    "require_gradio",
    "result_rows",
    "safe_path",
    "save_calibration",
    "thumbnail",
]

#: The pip extra that installs the app's dependencies: ``pip install 'vslib[app]'``.
APP_EXTRA = "app"
#: A saved calibration inside an index folder: ``{"text": {...}, "image": {...}}``.
CALIBRATION_FILE = "calibration.json"
#: The kinds of query a calibration can be for: text only, or with at least one image.
QUERY_KINDS = ("text", "image")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
THUMBNAIL_SIZE = 256
MAX_K = 50
#: Searches served at the same time; the model itself runs one query at a time (it is fast).
WORKERS = 4
#: Largest upload accepted (bytes on the wire; decoding is bounded by vslib.images).
MAX_UPLOAD = "20mb"
_LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_FILE_ROUTE = "/gradio_api/file="
_MARKDOWN_SPECIAL = re.compile(r"[\\`*_{}\[\]()#+\-.!|<>~]")


class AppError(Exception):
    """Why the app cannot start, in one line (a missing index, no gradio, ...). Chapter 7."""


class UnsafePathError(ValueError):
    """A stored path that leads outside the indexed folder (``..``, absolute, symlink). Chapter 7."""


# -- paths ---------------------------------------------------------------------------------------


def safe_path(root: str | os.PathLike, stored: str | os.PathLike) -> Path:
    """The file a stored index path names, resolved, if it lies inside ``root``.

    ``stored`` is taken relative to ``root``. Symlinks are followed before the check, so a
    link inside the folder that points outside it is refused like ``../`` or an absolute path.
    The file need not exist. Introduced in chapter 7.

    Raises:
        UnsafePathError: If the path is absolute, empty, contains a NUL byte, or resolves
            outside ``root``.
    """
    text = os.fspath(stored)
    if not text or "\x00" in text:
        raise UnsafePathError(f"{text!r} is not a usable path")
    if Path(text).is_absolute() or Path(text).drive:
        raise UnsafePathError(f"{text} is an absolute path; the index stores paths inside its folder")
    base = Path(root).resolve()
    target = (base / text).resolve()
    if not target.is_relative_to(base):
        raise UnsafePathError(f"{text} leads outside the indexed folder {base}")
    return target


# -- the index -----------------------------------------------------------------------------------


def open_index(path: str | os.PathLike) -> ImageIndex | MultiIndex:
    """Open a saved index (one model or several) read-only, memory-mapped, or say why not.

    Introduced in chapter 7.

    Raises:
        AppError: If ``path`` is missing, is not an index, is damaged, or has no image folder.
    """
    folder = Path(path)
    if not folder.exists():
        raise AppError(f"{folder} does not exist; build an index first: vslib index DIR --out {folder}")
    multi = MultiIndex.exists(folder)
    if not multi and not ImageIndex.exists(folder):
        raise AppError(
            f"{folder} is not a saved image index (no {MANIFEST} in it); "
            f"build one with: vslib index DIR --out INDEX"
        )
    try:
        index = MultiIndex.load(folder, view=True) if multi else ImageIndex.load(folder, view=True)
    except (OSError, ValueError) as error:
        raise AppError(f"cannot open {folder}: {error}") from None
    if index.root is None:
        raise AppError(
            f"{folder} has no image folder (it holds vectors added without files); "
            "the app serves indexes written by 'vslib index'"
        )
    return index


def index_message(index: ImageIndex | MultiIndex) -> str | None:
    """A message for the page when the index cannot answer searches, else ``None``. Chapter 7."""
    if len(index) == 0:
        return (
            "This index is empty: it holds no images. Add some with "
            f"`vslib index {index.root or 'DIR'} --out INDEX`, then restart the app."
        )
    if index.root is None or not index.root.is_dir():
        return (
            f"The indexed folder `{index.root}` is missing (moved or deleted). Run `vslib index` on the "
            "folder's new place to update the index; results cannot show images until then."
        )
    return None


# -- calibration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibrations:
    """The score-to-confidence map per kind of query, and where each came from. Chapter 7."""

    text: Calibration | None = None
    image: Calibration | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def for_kind(self, kind: str) -> Calibration | None:
        """The calibration for ``"text"`` or ``"image"`` queries, or ``None`` (chapter 7)."""
        if kind not in QUERY_KINDS:
            raise ValueError(f"query kind must be one of {QUERY_KINDS}, got {kind!r}")
        return self.text if kind == "text" else self.image

    def describe(self) -> str:
        """One line for the page: which calibration each kind of query uses (chapter 7)."""
        parts = [f"{kind} queries: {self.sources.get(kind, 'none (scores only)')}" for kind in QUERY_KINDS]
        return "Confidence — " + "; ".join(parts)


def save_calibration(index_dir: str | os.PathLike, calibration: Calibration, kind: str = "text") -> Path:
    """Store a calibration for ``kind`` queries in an index folder's ``calibration.json``.

    The file keeps the other kind's calibration and is replaced atomically; nothing else in
    the folder changes, and ``vslib index`` updates leave it alone. Returns the file.
    Introduced in chapter 7.

    Raises:
        FileNotFoundError: If ``index_dir`` is not a saved index.
    """
    if kind not in QUERY_KINDS:
        raise ValueError(f"kind must be one of {QUERY_KINDS}, got {kind!r}")
    folder = Path(index_dir)
    if not ImageIndex.exists(folder) and not MultiIndex.exists(folder):
        raise FileNotFoundError(f"{folder} is not a saved image index (no {MANIFEST} in it)")
    target = folder / CALIBRATION_FILE
    data = _read_calibration_file(target) if target.is_file() else {}
    data[kind] = calibration.to_dict()
    tmp = folder / f".{CALIBRATION_FILE}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def _read_calibration_file(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict) or not set(data) <= set(QUERY_KINDS):
        raise ValueError(f"{path} must map 'text' and/or 'image' to a calibration")
    return data


def load_calibrations(index_dir: str | os.PathLike) -> dict[str, Calibration]:
    """The calibrations saved in an index folder, by kind (empty when there is none).

    Introduced in chapter 7.

    Raises:
        ValueError: If ``calibration.json`` exists but is not a valid calibration file.
    """
    path = Path(index_dir) / CALIBRATION_FILE
    if not path.is_file():
        return {}
    loaded = {}
    for kind, values in _read_calibration_file(path).items():
        try:
            loaded[kind] = Calibration.from_dict(values)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: the {kind!r} calibration is invalid ({error})") from None
    return loaded


def calibrations_for(index_dir: str | os.PathLike, encoder: Encoder) -> Calibrations:
    """Pick the calibration for each kind of query: saved in the index, else the model's own.

    A SigLIP model scores a text against an image as ``sigmoid(cos * logit_scale +
    logit_bias)``; that pair calibrates text queries. No model ships a calibration for
    image-to-image scores. Introduced in chapter 7.
    """
    saved = load_calibrations(index_dir)
    chosen: dict[str, Calibration] = {}
    sources: dict[str, str] = {}
    for kind, calibration in saved.items():
        chosen[kind] = calibration
        sources[kind] = f"saved in {CALIBRATION_FILE}"
    scale, bias = getattr(encoder, "logit_scale", None), getattr(encoder, "logit_bias", None)
    if "text" not in chosen and getattr(encoder, "family", None) == "siglip" and scale and bias is not None:
        chosen["text"] = Calibration.from_scale_bias(float(scale), float(bias))
        sources["text"] = f"{encoder.name}'s own logit scale and bias"
    return Calibrations(text=chosen.get("text"), image=chosen.get("image"), sources=sources)


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultRow:
    """One result as the app shows it. Introduced in chapter 7.

    Attributes:
        rank: 1 for the best match.
        path: The path stored in the index (relative to the indexed folder).
        score: Cosine similarity.
        confidence: Calibrated confidence in ``[0, 1]``, or ``None`` without a calibration.
        file: The image file (resolved, inside the folder), or ``None`` if it is refused or missing.
        problem: Why ``file`` is ``None`` (empty otherwise).
    """

    rank: int
    path: str
    score: float
    confidence: float | None
    file: Path | None
    problem: str = ""


def result_rows(
    hits: Sequence[SearchHit],
    root: str | os.PathLike,
    calibration: Calibration | None = None,
    min_confidence: float = 0.0,
) -> tuple[list[ResultRow], int]:
    """Rows for the hits, best first, and how many were hidden by the confidence cut-off.

    Rows with a confidence below ``min_confidence`` are left out; without a calibration
    nothing is left out. A path outside ``root`` or a file that is gone keeps its row, with
    no file and the reason in ``problem``. Ranks count every hit, hidden or not.
    Introduced in chapter 7.
    """
    confidences = calibration.confidence([h.score for h in hits]) if calibration and hits else None
    rows, hidden = [], 0
    for rank, hit in enumerate(hits, start=1):
        confidence = None if confidences is None else float(confidences[rank - 1])
        if confidence is not None and confidence < min_confidence:
            hidden += 1
            continue
        file, problem = None, ""
        try:
            file = safe_path(root, hit.path)
        except UnsafePathError:
            problem = "refused: outside the indexed folder"
        if file is not None and not file.is_file():
            file, problem = None, "missing: the file is gone"
        rows.append(ResultRow(rank, hit.path, hit.score, confidence, file, problem))
    return rows, hidden


def thumbnail(file: Path | None, size: int = THUMBNAIL_SIZE) -> Image.Image:
    """A small RGB copy of an image (aspect kept), or a grey tile if it cannot be read.

    The file is only read. Introduced in chapter 7.
    """
    if file is not None:
        try:
            image = load_image(file, min_side=size)
            image.thumbnail((size, size))
            return image
        except ImageLoadError:
            pass
    return Image.new("RGB", (size, size), (200, 200, 200))


@dataclass
class SearchOutcome:
    """What one search shows: the rows, a message (an error, or what was found), how many rows
    the cut-off hid, the kind of query, and which model answered (a line). Chapter 7."""

    rows: list[ResultRow]
    message: str
    hidden: int = 0
    kind: str | None = None
    model: str | None = None


class SearchService:
    """The app's logic without the page: turn the form's fields into a search and rows.

    Args:
        index: The index, opened with :func:`open_index`.
        encoder: The model the index was built with.
        calibrations: From :func:`calibrations_for` (default: none, scores only).

    Introduced in chapter 7.
    """

    def __init__(self, index: ImageIndex, encoder: Encoder, calibrations: Calibrations | None = None) -> None:
        if encoder.name != index.model:
            raise AppError(f"the index was built with {index.model!r}, not {encoder.name!r}")
        self.index = index
        self.encoder = encoder
        self.calibrations = calibrations or Calibrations()
        # Searches run in several worker threads; the model (and its tokenizer) one at a time.
        self._model_lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The indexed folder (chapter 7)."""
        assert self.index.root is not None
        return self.index.root

    @property
    def supports_text(self) -> bool:
        """Whether text queries can be answered (chapter 7)."""
        return self.encoder.supports_text

    @property
    def decode_side(self) -> int | None:
        """The shorter side an uploaded image is decoded at (``None``: in full). Chapter 7."""
        return self.encoder.decode_side

    def header(self) -> str:
        """The page's opening lines in Markdown: what is indexed and how (chapter 7)."""
        text_note = "" if self.encoder.supports_text else " (image-only: text queries are not available)"
        return (
            f"**{len(self.index)} images** in `{self.root}` · model `{self.index.model}`{text_note} · "
            f"{self.index.dtype} vectors  \n{self.calibrations.describe()}"
        )

    def _answer(self, terms: list[Any], k: int) -> tuple[list[Any], str, bool]:
        """The hits, the model(s) that answered (a line), and whether scores are cosines."""
        from vslib.query import search

        return search(self.index, self.encoder, terms, k=k), self.encoder.name, True

    def _image_only_message(self) -> str:
        return (f"`{self.encoder.name}` is an image-only model: it cannot embed text. "
                "Search with an image and leave the text fields empty.")

    def search(
        self,
        text: str | None = None,
        image: str | os.PathLike | None = None,
        negative: str | None = None,
        text_weight: float = 1.0,
        image_weight: float = 1.0,
        negative_weight: float = 1.0,
        k: int = 10,
        min_confidence: float = 0.0,
    ) -> SearchOutcome:
        """Search with any mix of a text, an image and a negative text; never raises for bad input.

        Terms with an empty value or a zero weight are left out; the negative text pushes
        the query away with weight ``-negative_weight``. Chapter 7.
        """
        from vslib.encoders import NonFiniteEmbeddingError, TextNotSupportedError
        from vslib.query import QueryTerm

        problem = index_message(self.index)
        if problem and len(self.index) == 0:
            return SearchOutcome([], problem)
        text, negative = (text or "").strip(), (negative or "").strip()
        terms = []
        if text and text_weight > 0:
            terms.append(QueryTerm(float(text_weight), text=text))
        if image and image_weight > 0:
            try:  # decoded here, reduced to what the model needs, outside the model lock
                picture = load_image(image, min_side=self.decode_side)
            except ImageLoadError as error:
                return SearchOutcome([], f"The uploaded image cannot be read: {error.reason}.")
            terms.append(QueryTerm(float(image_weight), image=picture))
        if not terms:
            return SearchOutcome([], "Type a text or upload an image (with a weight above 0) to search.")
        if negative and negative_weight > 0:
            terms.append(QueryTerm(-float(negative_weight), text=negative))
        kind = "image" if any(term.is_image for term in terms) else "text"
        k = max(1, min(int(k), len(self.index)))
        try:
            with self._model_lock:
                hits, answered, cosines = self._answer(terms, k)
        except TextNotSupportedError:
            return SearchOutcome([], self._image_only_message())
        except ImageLoadError as error:
            return SearchOutcome([], f"The uploaded image cannot be read: {error.reason}.")
        except (ValueError, NonFiniteEmbeddingError) as error:
            return SearchOutcome([], f"Cannot search: {error}")
        calibration = self.calibrations.for_kind(kind) if cosines else None
        rows, hidden = result_rows(hits, self.root, calibration, min_confidence)
        summary = self._summary(rows, hidden, kind, calibration, min_confidence, problem, answered)
        return SearchOutcome(rows, summary, hidden, kind, answered)

    @staticmethod
    def _summary(rows, hidden, kind, calibration, min_confidence, problem, answered="") -> str:
        parts = [f"{len(rows)} result{'s' if len(rows) != 1 else ''} ({kind} query)"]
        if answered:
            parts.append(f"answered by {answered}")
        if hidden:
            parts.append(f"{hidden} hidden below confidence {min_confidence:.2f}")
        if calibration is None and min_confidence > 0:
            parts.append(f"no calibration for {kind} queries, so the cut-off hides nothing")
        if not rows and hidden:
            parts.append("lower the cut-off to see them")
        refused = sum(1 for row in rows if row.problem)
        if refused:
            parts.append(f"{refused} image{'s' if refused != 1 else ''} not shown (see the table)")
        return " · ".join(parts) + (f"\n\n{problem}" if problem else "")


class MultiSearchService(SearchService):
    """:class:`SearchService` over a two-model index (:class:`~vslib.multi.MultiIndex`).

    Image queries go to the index's DINOv3-family model, text queries to its text model; a
    search with both an image and a text is fused by rank (its scores are RRF scores, so no
    confidence is shown). Every outcome names the model(s) that answered.

    Args:
        index: The index, opened with :func:`open_index`.
        encoders: Every model of the index, by name.
        calibrations: From :func:`calibrations_for` with the text model (default: none).

    Introduced in chapter 7.
    """

    def __init__(self, index: MultiIndex, encoders: Mapping[str, Encoder],
                 calibrations: Calibrations | None = None) -> None:
        missing = [name for name in index.model_names if name not in encoders]
        if missing:
            raise AppError(f"the index needs the model(s) {', '.join(missing)}")
        for name in index.model_names:
            if encoders[name].name != name:
                raise AppError(f"the index was built with {name!r}, not {encoders[name].name!r}")
        self.index = index
        self.encoders = {name: encoders[name] for name in index.model_names}
        self.calibrations = calibrations or Calibrations()
        self._model_lock = threading.Lock()

    @property
    def supports_text(self) -> bool:
        return any(encoder.supports_text for encoder in self.encoders.values())

    @property
    def decode_side(self) -> int | None:
        sides = [encoder.decode_side for encoder in self.encoders.values()]
        return None if None in sides else max(sides)

    def header(self) -> str:
        from vslib.multi import image_model, text_model

        for_images, for_texts = image_model(self.index.models), text_model(self.index.models)
        roles = f"`{for_images}` answers image queries"
        if for_texts is None:
            roles += "; no model reads text"
        elif for_texts != for_images:
            roles += f", `{for_texts}` text queries; an image with a text is fused by rank"
        return (
            f"**{len(self.index)} images** in `{self.root}` · {len(self.index.models)} models: {roles} · "
            f"{self.index.dtype} vectors  \n{self.calibrations.describe()}"
        )

    def _answer(self, terms: list[Any], k: int) -> tuple[list[Any], str, bool]:
        result = self.index.search(terms, self.encoders, k=k)
        answered = result.answered_by() if result.fused else result.models[0]
        return result.hits, answered, not result.fused

    def _image_only_message(self) -> str:
        return "No model of this index can embed text. Search with an image and leave the text fields empty."


def _caption(row: ResultRow) -> str:
    confidence = "n/a" if row.confidence is None else f"{row.confidence:.2f}"
    return f"#{row.rank} {row.path} · score {row.score:.3f} · conf {confidence}"


def _table(rows: Sequence[ResultRow]) -> list[list[str]]:
    table = []
    for row in rows:
        name = _MARKDOWN_SPECIAL.sub(r"\\\g<0>", row.path)
        link = f"[{name}]({_FILE_ROUTE}{quote(str(row.file))})" if row.file is not None else f"{name} ({row.problem})"
        confidence = "n/a" if row.confidence is None else f"{row.confidence:.3f}"
        table.append([str(row.rank), link, f"{row.score:.4f}", confidence])
    return table


# -- the page ------------------------------------------------------------------------------------


def require_gradio() -> Any:
    """Import gradio, or raise :class:`AppError` naming the extra to install. Chapter 7."""
    try:
        import gradio
    except ImportError as error:
        raise AppError(
            f"the web app needs gradio, which is not installed ({error}); "
            f"install the app extra: pip install 'vslib[{APP_EXTRA}]'"
        ) from None
    return gradio


def _private_temp_dir() -> str:
    """Point Gradio's upload and thumbnail folder at a new private folder (unless set).

    Gradio's file route serves anything in that folder, and its default is shared by every
    Gradio app on the machine; a folder of our own keeps other apps' files out of reach.
    """
    current = os.environ.get("GRADIO_TEMP_DIR")
    if current:
        return current
    folder = tempfile.mkdtemp(prefix="vslib-app-")
    os.environ["GRADIO_TEMP_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


_CSS = "#results-table a { word-break: break-all; }"


def build_app(service: SearchService) -> Any:
    """The Gradio page (a ``gradio.Blocks``) for a :class:`SearchService`; not launched yet.

    Introduced in chapter 7.

    Raises:
        AppError: If gradio is not installed.
    """
    gr = require_gradio()
    _private_temp_dir()
    # A slider needs two distinct ends; searches clamp k to the index size anyway.
    max_k = max(2, min(MAX_K, len(service.index)))
    problem = index_message(service.index)

    def run(text, image, negative, text_weight, image_weight, negative_weight, k, min_confidence):
        outcome = service.search(text, image, negative, text_weight, image_weight, negative_weight, k, min_confidence)
        gallery = [(thumbnail(row.file), _caption(row)) for row in outcome.rows]
        return outcome.message, gallery, _table(outcome.rows)

    with gr.Blocks(title="vslib search", analytics_enabled=False) as page:
        gr.Markdown("# vslib search\n" + service.header())
        with gr.Row():
            with gr.Column(scale=2):
                text = gr.Textbox(label="Text query", placeholder="e.g. a red circle", elem_id="query-text",
                                  interactive=service.supports_text)
                negative = gr.Textbox(label="Negative text (optional): push results away from it",
                                      placeholder="e.g. striped", elem_id="query-negative",
                                      interactive=service.supports_text)
                with gr.Accordion("Weights of the text, the image and the negative text", open=False):
                    text_weight = gr.Slider(0, 3, value=1, step=0.1, label="text weight", elem_id="text-weight")
                    image_weight = gr.Slider(0, 3, value=1, step=0.1, label="image weight", elem_id="image-weight")
                    negative_weight = gr.Slider(0, 3, value=1, step=0.1, label="negative weight",
                                                elem_id="negative-weight")
            with gr.Column(scale=1):
                # image_mode=None: Gradio passes the uploaded file on without decoding it.
                image = gr.Image(label="Image query (upload)", type="filepath", image_mode=None, sources=["upload"],
                                 height=220, elem_id="query-image")
        with gr.Row():
            k = gr.Slider(1, max_k, value=min(12, max(1, len(service.index))), step=1, label="results (k)",
                          elem_id="k")
            min_confidence = gr.Slider(0, 1, value=0, step=0.01, label="confidence cut-off", elem_id="cutoff")
            search = gr.Button("Search", variant="primary", elem_id="search")
        status = gr.Markdown(problem or "Type a text or upload an image, then press Search.", elem_id="status")
        gallery = gr.Gallery(label="Results", columns=6, height="auto", object_fit="contain", allow_preview=True,
                             elem_id="results-gallery")
        table = gr.Dataframe(headers=["rank", "image", "score", "confidence"],
                             datatype=["str", "markdown", "str", "str"], interactive=False, wrap=True,
                             label="Scores", elem_id="results-table")
        inputs = [text, image, negative, text_weight, image_weight, negative_weight, k, min_confidence]
        outputs = [status, gallery, table]
        for event in (search.click, text.submit, negative.submit):
            event(run, inputs, outputs, api_visibility="private")
    page.queue(default_concurrency_limit=WORKERS)
    return page


class RequestGuard:
    """ASGI middleware in front of Gradio: checks the ``Host`` header and every file request.

    Args:
        app: The ASGI app it guards.
        hosts: Host names accepted in the ``Host`` header (without the port).
        files: Resolved paths of the files that may be served (the indexed images).
        folders: Resolved folders whose files may be served (Gradio's temporary folder).

    Introduced in chapter 7.
    """

    def __init__(self, app: Any, hosts: frozenset[str], files: frozenset[str], folders: Sequence[str]) -> None:
        self.app, self.hosts, self.files = app, hosts, files
        self.folders = tuple(os.path.join(folder, "") for folder in folders)

    def allows_host(self, header: str) -> bool:
        """Whether a ``Host`` header names an accepted host (chapter 7)."""
        name = header.strip().lower()
        if name.startswith("["):
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        return name in self.hosts

    def allows_file(self, target: str) -> bool:
        """Whether the file route may serve ``target`` (a path, never a URL) (chapter 7)."""
        if "://" in target or not target or "\x00" in target:
            return False
        resolved = os.path.realpath(target)
        return resolved in self.files or resolved.startswith(self.folders)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host", b"").decode("latin-1")
            path = scope.get("path", "")
            if not self.allows_host(host):
                return await self._refuse(scope, send, 400, b"refused: unexpected Host header")
            if "/file=" in path and not self.allows_file(path.split("/file=", 1)[1]):
                return await self._refuse(scope, send, 403, b"refused: not an indexed image")
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: dict, send: Callable, status: int, body: bytes) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _accepted_hosts(host: str) -> frozenset[str]:
    names = set(_LOCAL_NAMES) | {host.lower()}
    if host in ("0.0.0.0", "::", ""):  # every address of this machine: its names and addresses
        import socket

        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
    return frozenset(names)


def _served_files(index: ImageIndex | MultiIndex) -> frozenset[str]:
    """Resolved paths of the indexed files that lie inside the indexed folder."""
    assert index.root is not None
    files = set()
    for stored in index.paths:
        try:
            files.add(str(safe_path(index.root, stored)))
        except UnsafePathError:
            continue
    return frozenset(files)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def launch(
    index_path: str | os.PathLike,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    load_encoder: Callable[[str], Encoder] | None = None,
    block: bool = True,
) -> Any:
    """Open an index, load its model, and serve the app on ``host:port``.

    ``load_encoder`` maps a model name to an encoder (default:
    :func:`vslib.encoders.load_encoder`). With ``block=False`` it returns the running
    ``gradio.Blocks`` (call ``.close()`` to stop it). Introduced in chapter 7.

    Raises:
        AppError: If gradio is missing, the index is missing or unusable.
    """
    index = open_index(index_path)
    require_gradio()
    if load_encoder is None:
        from vslib.encoders import load_encoder as default_loader

        load_encoder = default_loader
    try:
        if isinstance(index, MultiIndex):
            from vslib.multi import image_model, text_model

            encoders = {name: load_encoder(name) for name in index.model_names}
            lead = text_model(index.models) or image_model(index.models)
            service: SearchService = MultiSearchService(index, encoders, calibrations_for(index_path, encoders[lead]))
        else:
            encoder = load_encoder(index.model)
            service = SearchService(index, encoder, calibrations_for(index_path, encoder))
    except ValueError as error:
        raise AppError(str(error)) from None
    page = build_app(service)
    if not _is_loopback(host):
        print(f"warning: serving on {host}: anyone who can reach this machine can search the index and see "
              "its images; there is no login", file=sys.stderr)
    from starlette.middleware import Middleware

    blocked = [str(Path(index_path).resolve())]
    guard = Middleware(RequestGuard, hosts=_accepted_hosts(host), files=_served_files(index),
                       folders=[os.path.realpath(_private_temp_dir())])
    previous = None
    if block and threading.current_thread() is threading.main_thread():
        # `kill PID` stops the server like Ctrl+C, so the temporary folder is removed at exit.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        page.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            allowed_paths=[str(index.root)],
            blocked_paths=blocked,
            max_file_size=MAX_UPLOAD,
            app_kwargs={"middleware": [guard]},
            footer_links=[],
            run_history=False,
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            enable_monitoring=False,
            prevent_thread_lock=not block,
            css=_CSS,
        )
    except OSError as error:  # the port is taken, or the address is not this machine's
        reason = str(error).split(". ")[0]
        raise AppError(f"cannot serve on {host}:{port} ({reason}); choose another --port or --host") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return page
