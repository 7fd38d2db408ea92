"""Two-model search: one index holding a vector per image from each of several models.

DINOv3 is the better image-to-image model and SigLIP 2 the one that reads text (chapter 1),
so a search can use both: a :class:`MultiIndex` keeps one :class:`~vslib.index.ImageIndex`
per model over the same images, sends image queries to the image-image model (the
DINOv3-family one) and text queries to a text-capable one, and says which model answered.
A query that mixes texts and images across the two spaces is combined by rank (reciprocal
rank fusion, :mod:`vslib.fusion`) or refused; cosines of different models are never added.

On disk a multi-model index is a folder::

    pictures.index/
        models.json                   # the models, their sub-indexes; the commit point
        gen-<random>/                 # one generation of sub-indexes (never changed)
            tiny-dinov3/              # an ImageIndex folder: index.json + vectors file
            tiny-siglip2/

A save holds the folder's writer lock (:mod:`vslib.indexlock`), writes every sub-index into a
new generation folder (each one saved atomically as :meth:`ImageIndex.save` does), then swaps
in a new ``models.json`` with one atomic rename. ``models.json`` names the generation and the
SHA-256 of each sub-index's ``index.json``, which in turn names its vectors file and checksum,
so a reader always sees one whole generation: the models never disagree about which images
are indexed. A crash before the rename leaves the previous generation in force; the next
save clears the leftovers. Introduced in chapter 7.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vslib.fingerprint import file_sha256
from vslib.fusion import RRF_K, FusedHit, MixedSpacesError, check_fusion, fuse_hits
from vslib.index import (
    MANIFEST,
    ImageIndex,
    ReadOnlyIndexError,
    SearchHit,
    UpdateReport,
    _fsync_dir,
    _write_tmp,
)
from vslib.indexlock import writer_lock
from vslib.manifest import IndexFormatError

if TYPE_CHECKING:
    from vslib.encoders import Encoder
    from vslib.query import QueryTerm

__all__ = [
    "MULTI_MANIFEST",
    "ModelInfo",
    "MultiIndex",
    "MultiResult",
    "QueryPlan",
    "image_model",
    "parse_multi_manifest",
    "plan_query",
    "text_model",
]

#: The manifest of a multi-model index folder.
MULTI_MANIFEST = "models.json"
FORMAT = "vslib-multi-index"
VERSION = 1
#: How many results each model contributes to a rank fusion (at least ``k``).
FUSION_DEPTH = 100
#: Called with the name of each step of a save (tests use it to kill a save at every step).
SAVE_HOOK: Callable[[str], None] | None = None
SAVE_POINTS = ("locked", "generation written", "manifest written", "committed", "cleaned")
_GENERATION = re.compile(r"gen-[0-9a-f]{32}")
_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TMP_SUFFIX = ".tmp"
_LOAD_ATTEMPTS = 5
# field -> its JSON type (exactly: a bool is not an int here)
_TOP: dict[str, type] = {"format": str, "version": int, "generation": str, "models": list}
_ENTRY: dict[str, type] = {"name": str, "family": str, "supports_text": bool, "folder": str, "manifest_sha256": str}


def _save_point(name: str) -> None:
    if SAVE_HOOK is not None:
        SAVE_HOOK(name)


@dataclass(frozen=True)
class ModelInfo:
    """A model of a multi-model index: its name, family and whether it embeds text (chapter 7)."""

    name: str
    family: str
    supports_text: bool

    @classmethod
    def of(cls, encoder: Encoder) -> ModelInfo:
        """The description of a loaded encoder (chapter 7)."""
        return cls(encoder.name, encoder.family, bool(encoder.supports_text))


def image_model(models: Sequence[ModelInfo]) -> str:
    """The model image queries go to: the first DINOv3-family model, else the first image-only
    model, else the first model (chapter 7)."""
    if not models:
        raise ValueError("no models")
    for wanted in (lambda m: m.family == "dinov3", lambda m: not m.supports_text, lambda m: True):
        for model in models:
            if wanted(model):
                return model.name
    raise AssertionError("unreachable")


def text_model(models: Sequence[ModelInfo]) -> str | None:
    """The model text queries go to: the first that embeds text, or ``None`` (chapter 7)."""
    return next((model.name for model in models if model.supports_text), None)


@dataclass(frozen=True)
class QueryPlan:
    """Which model embeds which terms of a query, and whether the results are fused by rank.

    ``groups`` maps a model name to its terms; ``roles`` says what each model answers
    (``"image query"``, ``"text query"``, ``"image terms"``, ...). Chapter 7.
    """

    groups: dict[str, list[QueryTerm]]
    roles: dict[str, str]
    fused: bool

    @property
    def models(self) -> list[str]:
        """The models the query needs, in the order they are asked (chapter 7)."""
        return list(self.groups)


def _kind(terms: Sequence[QueryTerm]) -> str:
    images = sum(1 for term in terms if term.is_image)
    return "image" if images == len(terms) else "text" if images == 0 else "image and text"


def plan_query(
    models: Sequence[ModelInfo],
    terms: Sequence[QueryTerm],
    model: str | None = None,
    fusion: str = "rrf",
) -> QueryPlan:
    """Decide which model answers a query in a multi-model index.

    With ``model``, that model embeds every term (one space: the usual weighted query).
    Otherwise image terms go to :func:`image_model` and text terms to :func:`text_model`. A
    query with both kinds, when they land in two models, is split: each model embeds its own
    terms as a query of their own, and the two rankings are fused by rank (``fusion="rrf"``)
    or the query is refused (``fusion="refuse"``). Only when one kind has nothing but
    negative terms (an image and a negative text) is there nothing to rank on its own: then
    the text model, which embeds images too, answers every term in its one space.
    Introduced in chapter 7.

    Raises:
        ValueError: If ``model`` is not in the index or cannot embed a text term, no model
            embeds text for a text term, or a mixed query is refused.
        MixedSpacesError: If ``fusion`` is neither ``"rrf"`` nor ``"refuse"`` (a
            ``ValueError``), or a mixed query is refused.
    """
    check_fusion(fusion)
    terms = list(terms)
    if not terms:
        raise ValueError("the query is empty")
    by_name = {info.name: info for info in models}
    kind = _kind(terms)
    if model is not None:
        if model not in by_name:
            raise ValueError(f"this index holds the models {', '.join(by_name)}, not {model!r}")
        if kind != "image" and not by_name[model].supports_text:
            raise ValueError(
                f"{model} is an image-only model: it cannot embed the text of this query; "
                f"leave out the model to let {text_model(models) or 'a text model'} answer text"
            )
        return QueryPlan({model: terms}, {model: f"{kind} query"}, fused=False)
    for_images = image_model(models)
    for_texts = text_model(models)
    if kind != "image" and for_texts is None:
        raise ValueError(f"no model of this index embeds text ({', '.join(by_name)} are image-only)")
    if kind == "image":
        return QueryPlan({for_images: terms}, {for_images: "image query"}, fused=False)
    if kind == "text" or for_images == for_texts:
        assert for_texts is not None
        return QueryPlan({for_texts: terms}, {for_texts: f"{kind} query"}, fused=False)
    assert for_texts is not None
    groups = {
        for_images: [term for term in terms if term.is_image],
        for_texts: [term for term in terms if not term.is_image],
    }
    if not all(any(term.weight > 0 for term in group) for group in groups.values()):
        return QueryPlan({for_texts: terms}, {for_texts: f"{kind} query in one space"}, fused=False)
    if fusion == "refuse":
        raise MixedSpacesError(
            f"this query mixes images and texts, which go to different models ({for_images} for images, "
            f"{for_texts} for texts); their cosines live in different spaces and are never added. Search "
            "with one kind of term, pick one model for all terms (--model), or combine the two rankings by "
            "rank (--fusion rrf)"
        )
    return QueryPlan(groups, {for_images: "image terms", for_texts: "text terms"}, fused=True)


@dataclass(frozen=True)
class MultiResult:
    """The answer to a query on a :class:`MultiIndex`. Introduced in chapter 7.

    Attributes:
        hits: :class:`~vslib.index.SearchHit` (cosines) when one model answered, or
            :class:`~vslib.fusion.FusedHit` (RRF scores) when two were fused.
        roles: The model(s) that answered, each with what it answered.
        fused: Whether the hits were fused by rank.
        rrf_k: The RRF constant of a fusion, else ``None``.
    """

    hits: list[SearchHit] | list[FusedHit]
    roles: dict[str, str]
    fused: bool = False
    rrf_k: float | None = None

    @property
    def models(self) -> list[str]:
        """The model(s) that answered (chapter 7)."""
        return list(self.roles)

    def answered_by(self) -> str:
        """One line naming the model(s) that answered, e.g. ``tiny-dinov3 (image query)``."""
        parts = " and ".join(f"{model} ({role})" for model, role in self.roles.items())
        if self.fused:
            parts += f", fused by rank (RRF, k={self.rrf_k:g}): scores are RRF, not cosines"
        return parts


def _folder_name(name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-_")[:56] or "model"
    candidate, n = base, 2
    while candidate.lower() in used:
        candidate, n = f"{base}-{n}", n + 1
    used.add(candidate.lower())
    return candidate


class MultiIndex:
    """One :class:`~vslib.index.ImageIndex` per model over the same images, searched together.

    Args:
        models: The models, in order (the order decides ties in :func:`image_model` and
            :func:`text_model`).
        indexes: One index per model, each holding that model's embeddings.

    Build one with :meth:`for_encoders`, keep it in step with a folder with
    :meth:`update_folder`, and :meth:`save` / :meth:`load` it. ``len(index)``,
    :attr:`paths` and :attr:`root` are the images all models share. Introduced in chapter 7.
    """

    def __init__(self, models: Sequence[ModelInfo], indexes: Sequence[ImageIndex]) -> None:
        models, indexes = list(models), list(indexes)
        if len(models) < 2:
            raise ValueError("a multi-model index holds two or more models; use ImageIndex for one")
        if len(models) != len(indexes):
            raise ValueError(f"got {len(models)} models but {len(indexes)} indexes")
        names = [info.name for info in models]
        if len(set(names)) != len(names):
            raise ValueError(f"a model appears more than once: {', '.join(names)}")
        for info, index in zip(models, indexes):
            if index.model != info.name:
                raise ValueError(f"the index for {info.name!r} holds embeddings of {index.model!r}")
        if len({index.dtype for index in indexes}) != 1:
            raise ValueError("the models of a multi-model index store their vectors in one dtype")
        self.models = models
        self._indexes = dict(zip(names, indexes))

    @classmethod
    def for_encoders(cls, encoders: Sequence[Encoder], dtype: str = "f16") -> MultiIndex:
        """A new, empty index for these encoders (chapter 7)."""
        return cls([ModelInfo.of(e) for e in encoders], [ImageIndex(e.dim, e.name, dtype=dtype) for e in encoders])

    # -- what it holds ----------------------------------------------------------------------------

    @property
    def model_names(self) -> list[str]:
        """The models' names, in order (chapter 7)."""
        return [info.name for info in self.models]

    def index(self, model: str) -> ImageIndex:
        """The sub-index of one model (``KeyError`` naming the models if it is not here)."""
        if model not in self._indexes:
            raise KeyError(f"this index holds the models {', '.join(self._indexes)}, not {model!r}")
        return self._indexes[model]

    @property
    def _first(self) -> ImageIndex:
        return next(iter(self._indexes.values()))

    @property
    def root(self) -> Path | None:
        """The indexed folder (chapter 7)."""
        return self._first.root

    @property
    def paths(self) -> list[str]:
        """Stored paths, the same in every model (chapter 7)."""
        return self._first.paths

    @property
    def dtype(self) -> str:
        """Vector storage type of every model (chapter 7)."""
        return self._first.dtype

    @property
    def read_only(self) -> bool:
        """Whether it was opened with ``view=True`` (chapter 7)."""
        return self._first.read_only

    def resolve(self, path: str) -> Path:
        """The file a stored path points to (chapter 7)."""
        return self._first.resolve(path)

    def __len__(self) -> int:
        return len(self._first)

    def __contains__(self, path: object) -> bool:
        return path in self._first

    def __repr__(self) -> str:
        mode = ", view" if self.read_only else ""
        return f"MultiIndex({len(self)} images, models={self.model_names}, dtype={self.dtype}{mode})"

    # -- keeping a folder in step -----------------------------------------------------------------

    def update_folder(
        self,
        root: str | os.PathLike,
        encoders: Sequence[Encoder] | Mapping[str, Encoder],
        batch_size: int = 32,
        progress: bool | None = None,
        num_workers: int | None = None,
        rehash: bool = False,
    ) -> UpdateReport:
        """Make every model's index mirror the images under ``root`` (chapter 7).

        Each model runs :meth:`ImageIndex.update_folder`, encoding only what changed for it.
        Afterwards the models are reconciled: an image that one model could not encode, or
        whose bytes changed between the models' passes, is removed from all of them and listed
        as skipped, so every model holds the same images. Returns one report for the index.

        Raises:
            ValueError: If the encoders are not exactly the index's models (or one is another
                model of the same name, see :meth:`ImageIndex.check_encoder`).
        """
        by_name = dict(encoders) if isinstance(encoders, Mapping) else {e.name: e for e in encoders}
        if sorted(by_name) != sorted(self._indexes):
            raise ValueError(
                f"this index needs encoders for {', '.join(self._indexes)}, got {', '.join(by_name) or 'none'}"
            )
        for name, index in self._indexes.items():
            index.check_encoder(by_name[name])
        before = self._keys()
        reports = {
            name: index.update_folder(root, by_name[name], batch_size=batch_size, progress=progress,
                                      num_workers=num_workers, rehash=rehash)
            for name, index in self._indexes.items()
        }
        skipped: dict[str, str] = {}
        for report in reports.values():
            for path, reason in report.skipped:
                skipped.setdefault(path, reason)
        common = set.intersection(*(set(index.paths) for index in self._indexes.values()))
        for path in sorted(common):
            if len({index.record(path).sha256 for index in self._indexes.values()}) > 1:
                common.discard(path)
                skipped[path] = "it changed while it was being indexed; run the update again"
        for name, index in self._indexes.items():
            extra = [path for path in index.paths if path not in common]
            for path in extra:
                skipped.setdefault(path, "not every model of the index could encode it")
            if extra:
                index.remove(extra)
        after = self._keys()
        report = UpdateReport()
        report.added = sorted(set(after) - set(before))
        report.removed = sorted(set(before) - set(after))
        kept = sorted(set(after) & set(before))
        report.updated = [path for path in kept if after[path] != before[path]]
        report.unchanged = [path for path in kept if after[path] == before[path]]
        refreshed = set().union(*(set(r.refreshed) for r in reports.values()))
        report.refreshed = [path for path in report.unchanged if path in refreshed]
        report.skipped = sorted(skipped.items())
        return report

    def _keys(self) -> dict[str, tuple[int, ...]]:
        """For each path all models hold, its key in each model (a new key means re-encoded)."""
        indexes = list(self._indexes.values())
        common = set.intersection(*(set(index.paths) for index in indexes))
        return {path: tuple(index.record(path).key for index in indexes) for path in common}

    # -- searching --------------------------------------------------------------------------------

    def plan(self, query: str | QueryTerm | Sequence[QueryTerm], model: str | None = None,
             fusion: str = "rrf") -> QueryPlan:
        """Which model answers a query (see :func:`plan_query`). Chapter 7."""
        return plan_query(self.models, _terms(query), model=model, fusion=fusion)

    def search(
        self,
        query: str | QueryTerm | Sequence[QueryTerm],
        encoders: Mapping[str, Encoder],
        k: int = 10,
        *,
        model: str | None = None,
        fusion: str = "rrf",
        rrf_k: float = RRF_K,
        exact: bool = False,
    ) -> MultiResult:
        """Answer a query with the model(s) :meth:`plan` picks; see :class:`MultiResult`.

        ``encoders`` maps model names to loaded encoders; only the models the query needs
        must be there. When two models are fused, each contributes its top
        ``max(k, FUSION_DEPTH)`` results; each list's weight in the fusion is the sum of its
        positive term weights. Introduced in chapter 7.

        Raises:
            ValueError: As :func:`plan_query`, if an encoder is missing or is not the model of
                its sub-index, or a query cannot be embedded.
        """
        from vslib.query import search

        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        plan = self.plan(query, model=model, fusion=fusion)
        missing = [name for name in plan.models if name not in encoders]
        if missing:
            raise ValueError(f"this query needs the encoder(s) {', '.join(missing)}")
        depth = max(k, FUSION_DEPTH) if plan.fused else k
        results = {
            name: search(self._indexes[name], encoders[name], terms, k=depth, exact=exact)
            for name, terms in plan.groups.items()
        }
        if not plan.fused:
            (hits,) = results.values()
            return MultiResult(hits, plan.roles)
        weights = {name: sum(t.weight for t in terms if t.weight > 0) for name, terms in plan.groups.items()}
        fused = fuse_hits(results, k=rrf_k, weights=weights)[:k]
        return MultiResult(fused, plan.roles, fused=True, rrf_k=rrf_k)

    # -- saving and loading -----------------------------------------------------------------------

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """Whether ``path`` is a saved multi-model index folder (chapter 7)."""
        return (Path(path) / MULTI_MANIFEST).is_file()

    @staticmethod
    def folder_state(path: str | os.PathLike) -> str:
        """What ``path`` holds: ``"missing"``, ``"multi"`` (a saved multi-model index),
        ``"index"`` (a single-model index), ``"new"`` (empty, or only the leftovers of a first
        save that was killed), ``"file"`` or ``"foreign"``. Chapter 7."""
        folder = Path(path)
        if not folder.exists():
            return "missing"
        if not folder.is_dir():
            return "file"
        if (folder / MULTI_MANIFEST).is_file():
            return "multi"
        if (folder / MANIFEST).is_file():
            return "index"
        return "new" if all(_is_own_entry(entry.name) for entry in folder.iterdir()) else "foreign"

    def save(self, path: str | os.PathLike, *, wait: bool = True) -> Path:
        """Save to the folder ``path`` (created if needed) atomically; returns the folder.

        Holds the writer lock (waiting, or with ``wait=False`` raising
        :class:`~vslib.indexlock.IndexLockedError`), writes a new generation of sub-indexes,
        and commits it by renaming ``models.json`` into place; older generations and leftovers
        of killed saves are deleted after the commit. Introduced in chapter 7.

        Raises:
            FileExistsError: If ``path`` is a file, a single-model index or another folder.
            ReadOnlyIndexError: If the index was opened with ``view=True``.
        """
        if self.read_only:
            raise ReadOnlyIndexError("this index was opened with view=True (read-only); load it to change it")
        folder = Path(path)
        with writer_lock(folder, wait=wait):
            _save_point("locked")
            state = self.folder_state(folder)
            if state == "file":
                raise FileExistsError(f"{folder} is a file; an index is saved as a folder")
            if state == "index":
                raise FileExistsError(f"{folder} is a single-model index; write the multi-model index elsewhere")
            if state == "foreign":
                raise FileExistsError(f"{folder} is a folder that is not an image index; refusing to write into it")
            folder.mkdir(parents=True, exist_ok=True)
            generation = self._commit(folder)
            _fsync_dir(folder)
            for stale in folder.iterdir():
                if stale.name != generation and _is_own_entry(stale.name):
                    _remove_quietly(stale)
            _save_point("cleaned")
        return folder

    def _commit(self, folder: Path) -> str:
        generation = f"gen-{uuid.uuid4().hex}"
        gen_dir = folder / generation
        manifest_tmp: Path | None = None
        try:
            gen_dir.mkdir()
            entries, used = [], set()
            for info in self.models:
                sub = gen_dir / _folder_name(info.name, used)
                self._indexes[info.name].save(sub)
                entries.append({
                    "name": info.name,
                    "family": info.family,
                    "supports_text": info.supports_text,
                    "folder": sub.name,
                    "manifest_sha256": file_sha256(sub / MANIFEST),
                })
            _fsync_dir(gen_dir)
            _save_point("generation written")
            data = {"format": FORMAT, "version": VERSION, "generation": generation, "models": entries}
            manifest_tmp = _write_tmp(folder, MULTI_MANIFEST, json.dumps(data, indent=1).encode("ascii"))
            _save_point("manifest written")
            os.replace(manifest_tmp, folder / MULTI_MANIFEST)
        except BaseException:
            _remove_quietly(gen_dir)
            if manifest_tmp is not None:
                _remove_quietly(manifest_tmp)
            raise
        _save_point("committed")
        return generation

    @classmethod
    def load(cls, path: str | os.PathLike, view: bool = False, verify: bool = True) -> MultiIndex:
        """Open a saved multi-model index, checking every part before it is used.

        ``models.json`` is checked field by field, each sub-index's ``index.json`` against
        the checksum it records, each sub-index as :meth:`ImageIndex.load` does (``view`` and
        ``verify`` mean the same), and the models must hold the same images with the same
        bytes. A save that commits meanwhile is handled by reading the new manifest.

        Raises:
            FileNotFoundError: If ``path`` is not a saved multi-model index.
            IndexFormatError: If anything is malformed, damaged or inconsistent.

        Introduced in chapter 7.
        """
        folder = Path(path)
        for _ in range(_LOAD_ATTEMPTS):
            data = _read_manifest_bytes(folder)
            manifest = parse_multi_manifest(data, folder)
            try:
                return cls._open(folder, manifest, view, verify)
            except (FileNotFoundError, IndexFormatError) as error:
                if _read_manifest_bytes(folder) == data:
                    if isinstance(error, IndexFormatError):
                        raise
                    raise IndexFormatError(f"{folder} is damaged: {error}") from None
        raise IndexFormatError(f"{folder} changed {_LOAD_ATTEMPTS} times while it was being read; try again")

    @classmethod
    def _open(cls, folder: Path, manifest: dict[str, Any], view: bool, verify: bool) -> MultiIndex:
        models, indexes = [], []
        for entry in manifest["models"]:
            sub = folder / manifest["generation"] / entry["folder"]
            if file_sha256(sub / MANIFEST) != entry["manifest_sha256"]:
                raise IndexFormatError(
                    f"{folder} is damaged: {sub.name}/{MANIFEST} does not match the checksum in {MULTI_MANIFEST}"
                )
            index = ImageIndex.load(sub, view=view, verify=verify)
            if index.model != entry["name"]:
                raise IndexFormatError(f"{folder} is damaged: {sub.name} holds {index.model!r}, not {entry['name']!r}")
            models.append(ModelInfo(entry["name"], entry["family"], entry["supports_text"]))
            indexes.append(index)
        first = indexes[0]
        hashes = {record.path: record.sha256 for record in first.records}
        for index in indexes[1:]:
            if index.root != first.root or index.dtype != first.dtype or len(index) != len(first) or any(
                hashes.get(record.path, "-") != record.sha256 for record in index.records
            ):
                raise IndexFormatError(
                    f"{folder} is damaged: its models {first.model!r} and {index.model!r} do not hold the same "
                    "images of the same folder"
                )
        return cls(models, indexes)


def _terms(query: str | QueryTerm | Sequence[QueryTerm]) -> list[QueryTerm]:
    from vslib.query import QueryTerm, parse_query

    if isinstance(query, str):
        return parse_query(query)
    if isinstance(query, QueryTerm):
        return [query]
    return list(query)


def parse_multi_manifest(data: bytes, where: str | Path) -> dict[str, Any]:
    """Parse and check the bytes of a ``models.json``; ``where`` names the folder in errors.

    Raises:
        IndexFormatError: If it is not exactly a version-1 multi-model manifest: not JSON, a
            missing, extra or mistyped field, fewer than two models, a repeated model or
            folder, or a generation or folder name that a save does not write.

    Introduced in chapter 7.
    """
    try:
        raw = json.loads(data.decode("utf-8"))
    except ValueError as error:
        raise IndexFormatError(f"{where} is damaged: {MULTI_MANIFEST} is not valid JSON ({error})") from None
    if isinstance(raw, dict) and (raw.get("format") != FORMAT or raw.get("version") != VERSION):
        raise IndexFormatError(
            f"{where} is not a version-{VERSION} vslib multi-model index "
            f"(format {raw.get('format')!r}, version {raw.get('version')!r})"
        )
    what = f"{where}/{MULTI_MANIFEST}"
    try:
        _check_fields(raw, _TOP, what)
        if not _GENERATION.fullmatch(raw["generation"]):
            raise IndexFormatError(f"{what} names the generation {raw['generation']!r}, not one a save writes")
        if len(raw["models"]) < 2:
            raise IndexFormatError(f"{what} lists {len(raw['models'])} model(s); a multi-model index has two or more")
        for position, entry in enumerate(raw["models"]):
            _check_fields(entry, _ENTRY, f"{what} model {position}")
            if not entry["name"] or not entry["family"]:
                raise IndexFormatError(f"{what} model {position} has an empty name or family")
            if not _FOLDER.fullmatch(entry["folder"]):
                raise IndexFormatError(f"{what} model {position} has the folder {entry['folder']!r}")
            if not _SHA256.fullmatch(entry["manifest_sha256"]):
                raise IndexFormatError(f"{what} model {position} has a manifest_sha256 that is not a hex digest")
        for name in ("name", "folder"):
            values = [entry[name].lower() if name == "folder" else entry[name] for entry in raw["models"]]
            if len(set(values)) != len(values):
                raise IndexFormatError(f"{what} repeats a model {name}")
    except IndexFormatError as error:
        message = str(error)
        raise IndexFormatError(message if message.startswith(f"{where} ") else f"{where} is damaged: {message}") from None
    return raw


def _check_fields(item: Any, spec: dict[str, type], what: str) -> None:
    if type(item) is not dict:
        raise IndexFormatError(f"{what} is a JSON {type(item).__name__}, not an object")
    if set(item) != set(spec):
        missing, extra = sorted(set(spec) - set(item)), sorted(map(str, set(item) - set(spec)))
        raise IndexFormatError(f"{what} lacks the field(s) {missing} or has unknown field(s) {extra}")
    for name, kind in spec.items():
        if type(item[name]) is not kind:
            raise IndexFormatError(f"{what} has a {type(item[name]).__name__} as {name!r}")


def _read_manifest_bytes(folder: Path) -> bytes:
    try:
        return (folder / MULTI_MANIFEST).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} is not a saved multi-model index (no {MULTI_MANIFEST} in it)") from None
    except IsADirectoryError:
        raise IndexFormatError(f"{folder} is damaged: {MULTI_MANIFEST} is a folder") from None
    except OSError as error:
        raise IndexFormatError(f"cannot read {folder / MULTI_MANIFEST}: {error.strerror or error}") from None


def _is_own_entry(name: str) -> bool:
    """Generation folders and temporary manifests that a save (maybe a killed one) leaves."""
    if _GENERATION.fullmatch(name):
        return True
    return name.startswith(f".{MULTI_MANIFEST}.") and name.endswith(_TMP_SUFFIX)




def _remove_quietly(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass


