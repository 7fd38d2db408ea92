"""The on-disk format of an index folder's ``index.json``: writing it and checking it strictly.

An index folder is a unit: ``index.json`` (the manifest) names one immutable vectors file
and records its SHA-256, the model's fingerprint and one record per image. Everything read
back is checked here before anything else (and above all before USearch) sees it: a manifest
that is not exactly this shape raises :class:`IndexFormatError` with one clear sentence.
Introduced in chapter 5.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "MANIFEST", "VERSION", "IndexFormatError", "Manifest", "parse_manifest", "dump_manifest"]

MANIFEST = "index.json"
FORMAT = "vslib-image-index"
#: Version 2 added ``vectors_sha256``, ``vectors_size`` and ``model_fingerprint``.
VERSION = 2
DTYPES = ("f32", "f16", "i8")
_VECTORS_NAME = re.compile(r"vectors-[0-9A-Za-z_-]{1,64}\.usearch")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# field -> accepted types (None means the value may be null)
_TOP: dict[str, tuple] = {
    "format": (str,),
    "version": (int,),
    "vectors_file": (str,),
    "vectors_sha256": (str,),
    "vectors_size": (int,),
    "model": (str,),
    "model_fingerprint": (str, None),
    "dim": (int,),
    "dtype": (str,),
    "metric": (str,),
    "connectivity": (int,),
    "expansion_add": (int,),
    "expansion_search": (int,),
    "root": (str, None),
    "next_key": (int,),
    "images": (list,),
}
_RECORD: dict[str, tuple] = {
    "key": (int,),
    "path": (str,),
    "size": (int, None),
    "mtime_ns": (int, None),
    "sha256": (str, None),
    "model": (str,),
    "dim": (int,),
}


class IndexFormatError(ValueError):
    """An index folder whose manifest or vectors file is malformed or damaged.

    One sentence naming the folder and what is wrong; never a traceback from deeper down.
    Introduced in chapter 5.
    """


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: the top-level fields and the image records (as plain dicts)."""

    fields: dict[str, Any]
    images: list[dict[str, Any]]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


def _type_ok(value: Any, accepted: tuple) -> bool:
    if value is None:
        return None in accepted
    if isinstance(value, bool):  # JSON true/false are not numbers here
        return False
    return any(isinstance(value, kind) for kind in accepted if kind is not None)


def _check_fields(item: Any, spec: dict[str, tuple], what: str) -> None:
    if not isinstance(item, dict):
        raise IndexFormatError(f"{what} is a JSON {type(item).__name__}, not an object")
    missing = [name for name in spec if name not in item]
    extra = [name for name in item if name not in spec]
    if missing:
        raise IndexFormatError(f"{what} lacks the field(s) {', '.join(missing)}")
    if extra:
        raise IndexFormatError(f"{what} has unknown field(s) {', '.join(map(str, extra))}")
    for name, accepted in spec.items():
        if not _type_ok(item[name], accepted):
            raise IndexFormatError(f"{what} has a {type(item[name]).__name__} as {name!r}")


def parse_manifest(data: bytes, where: str | Path) -> Manifest:
    """Parse and check the bytes of an ``index.json``; ``where`` names the folder in errors.

    Raises:
        IndexFormatError: If the bytes are not exactly a version-2 manifest: not JSON, a
            missing, extra or mistyped field, an unsafe vectors file name, records whose keys
            or paths repeat, disagree with the index's model and dimension, or reach
            ``next_key``.

    Introduced in chapter 5.
    """
    try:
        raw = json.loads(data.decode("utf-8", errors="surrogateescape"))
    except ValueError as error:
        raise IndexFormatError(f"{where} is damaged: {MANIFEST} is not valid JSON ({error})") from None
    if isinstance(raw, dict) and (raw.get("format") != FORMAT or raw.get("version") != VERSION):
        raise IndexFormatError(
            f"{where} is not a version-{VERSION} vslib image index "
            f"(format {raw.get('format')!r}, version {raw.get('version')!r}); rebuild it with 'vslib index'"
        )
    try:
        _check_fields(raw, _TOP, f"{where}/{MANIFEST}")
        _check_values(raw)
        keys: set[int] = set()
        paths: set[str] = set()
        model, dim, next_key = raw["model"], raw["dim"], raw["next_key"]
        for position, record in enumerate(raw["images"]):
            if not _record_ok(record, model, dim, next_key):  # fast check; the slow one says why
                what = f"{where}/{MANIFEST} image record {position}"
                _check_fields(record, _RECORD, what)
                _check_record(record, raw, what)
            if record["key"] in keys or record["path"] in paths:
                raise IndexFormatError(f"{MANIFEST} image record {position} repeats the key {record['key']} "
                                       f"or the path {record['path']!r}")
            keys.add(record["key"])
            paths.add(record["path"])
    except IndexFormatError as error:
        raise IndexFormatError(f"{where} is damaged: {error}") from None
    images = raw.pop("images")
    return Manifest(raw, images)


def _check_values(raw: dict[str, Any]) -> None:
    if not _VECTORS_NAME.fullmatch(raw["vectors_file"]):
        raise IndexFormatError(f"the vectors file name {raw['vectors_file']!r} is not one an index writes")
    if not _SHA256.fullmatch(raw["vectors_sha256"]):
        raise IndexFormatError("vectors_sha256 is not a SHA-256 hex digest")
    if raw["dtype"] not in DTYPES or raw["metric"] != "cos":
        raise IndexFormatError(f"dtype {raw['dtype']!r} / metric {raw['metric']!r} are not supported")
    for name in ("dim", "connectivity", "expansion_add", "expansion_search"):
        if not 0 < raw[name] <= 1 << 20:
            raise IndexFormatError(f"{name} {raw[name]} is out of range")
    if raw["next_key"] < 0 or raw["vectors_size"] < 0 or not raw["model"]:
        raise IndexFormatError("next_key, vectors_size or model is invalid")
    fingerprint = raw["model_fingerprint"]
    if fingerprint is not None and not fingerprint.startswith(f"{raw['model']}@"):
        raise IndexFormatError(
            f"the model is {raw['model']!r} but the recorded model fingerprint is {fingerprint!r}"
        )


_RECORD_KEYS = frozenset(_RECORD)


def _record_ok(record: Any, model: str, dim: int, next_key: int) -> bool:
    """The common case of :func:`_check_fields` and :func:`_check_record`, in one quick pass."""
    if type(record) is not dict or record.keys() != _RECORD_KEYS:
        return False
    key, path, size, mtime, digest = (record["key"], record["path"], record["size"], record["mtime_ns"],
                                      record["sha256"])
    return (
        type(key) is int and 0 <= key < next_key
        and type(path) is str and path != "" and "\x00" not in path
        and (size is None or type(size) is int) and (mtime is None or type(mtime) is int)
        and record["model"] == model and type(record["model"]) is str
        and record["dim"] == dim and type(record["dim"]) is int
        and (digest is None or (type(digest) is str and _SHA256.fullmatch(digest) is not None))
    )


def _check_record(record: dict[str, Any], raw: dict[str, Any], what: str) -> None:
    if not 0 <= record["key"] < raw["next_key"]:
        raise IndexFormatError(f"{what} has key {record['key']} outside 0..next_key-1")
    if not record["path"] or "\x00" in record["path"]:
        raise IndexFormatError(f"{what} has an empty path or one with a NUL byte")
    if record["model"] != raw["model"] or record["dim"] != raw["dim"]:
        raise IndexFormatError(f"{what} is for model {record['model']!r} (dim {record['dim']}), not the index's")
    if record["sha256"] is not None and not _SHA256.fullmatch(record["sha256"]):
        raise IndexFormatError(f"{what} has a sha256 that is not a hex digest")


def dump_manifest(fields: dict[str, Any], images: list[dict[str, Any]]) -> bytes:
    """The bytes of an ``index.json`` (pure ASCII; undecodable path bytes stay escaped). Chapter 5."""
    data = {"format": FORMAT, "version": VERSION, **fields, "images": images}
    return json.dumps(data, indent=1).encode("ascii")
