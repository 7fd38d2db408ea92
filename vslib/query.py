"""Queries that mix texts and images with weights, including negative ones.

A query is a list of :class:`QueryTerm`; :func:`parse_query` reads them from one string::

    +2 dog, -leash, -0.5 img:photos/leash.jpg, "red, white and blue"

Terms are separated by commas. A leading sign sets the weight: ``+2`` doubles a term,
``-`` gives it weight -1, ``-0.5`` weight -0.5; no sign means weight 1. A number only counts
as a weight right after a sign, so ``3d model`` is plain text. A term is an image when it
starts with ``img:`` or is the path of an existing image file; double quotes keep a term as
text and let it contain commas. :func:`query_vector` embeds the terms and returns the
renormalised weighted sum of their unit embeddings. Introduced in chapter 5.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vslib.images import IMAGE_SUFFIXES
from vslib.index import ImageIndex, SearchHit

if TYPE_CHECKING:
    from vslib.encoders import Encoder

__all__ = ["QueryTerm", "parse_query", "query_vector", "search"]

_WEIGHT = re.compile(r"^(?P<sign>[+-])\s*(?:(?P<number>\d+(?:\.\d*)?|\.\d+)(?=\s|$|\"))?\s*(?P<rest>.*)$", re.S)
_IMAGE_PREFIX = "img:"


@dataclass(frozen=True)
class QueryTerm:
    """One weighted part of a query: a text or an image file (exactly one of them).

    Introduced in chapter 5.
    """

    weight: float
    text: str | None = None
    image: Path | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise ValueError("a query term is either a text or an image, not both or neither")
        if not math.isfinite(self.weight) or self.weight == 0:
            raise ValueError(f"a query term needs a finite, non-zero weight, got {self.weight}")

    @property
    def is_image(self) -> bool:
        """Whether the term is an image (chapter 5)."""
        return self.image is not None


def _split_terms(query: str) -> list[str]:
    """Split on commas outside double quotes."""
    terms, current, quoted = [], [], False
    for char in query:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise ValueError(f"unbalanced double quote in query {query!r}")
    terms.append("".join(current))
    return [t.strip() for t in terms if t.strip()]


def parse_query(query: str, base_dir: str | os.PathLike | None = None) -> list[QueryTerm]:
    """Parse ``"+2 dog, -leash, img:cat.jpg"`` into weighted text and image terms.

    Relative image paths are looked up in ``base_dir`` (default: the current folder).
    Without ``img:``, only an existing file with an image suffix counts as an image, so a
    word never turns into an image by accident.

    Raises:
        ValueError: If the query is empty, has a zero weight, empty quotes or an unbalanced quote.
        FileNotFoundError: If an ``img:`` term names a file that does not exist.

    Introduced in chapter 5.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    terms = []
    for raw in _split_terms(query):
        weight, body = 1.0, raw
        match = _WEIGHT.match(raw)
        if match:
            sign = -1.0 if match["sign"] == "-" else 1.0
            weight = sign * float(match["number"]) if match["number"] else sign
            body = match["rest"].strip()
        if not body:
            raise ValueError(f"query term {raw!r} has a weight but nothing to search for")
        if len(body) >= 2 and body[0] == body[-1] == '"':
            if not body[1:-1].strip():
                raise ValueError(f"query term {raw!r} has empty quotes: put the text to search for between them")
            terms.append(QueryTerm(weight, text=body[1:-1]))
            continue
        if body.startswith(_IMAGE_PREFIX):
            path = base / Path(body[len(_IMAGE_PREFIX):].strip()).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"query image {path} does not exist")
            terms.append(QueryTerm(weight, image=path))
            continue
        path = base / Path(body).expanduser()
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            terms.append(QueryTerm(weight, image=path))
        else:
            terms.append(QueryTerm(weight, text=body))
    if not terms:
        raise ValueError("the query is empty")
    return terms


def _as_terms(query: str | QueryTerm | Sequence[QueryTerm]) -> list[QueryTerm]:
    if isinstance(query, str):
        return parse_query(query)
    if isinstance(query, QueryTerm):
        return [query]
    terms = list(query)
    if not terms:
        raise ValueError("the query is empty")
    return terms


def query_vector(encoder: Encoder, terms: str | QueryTerm | Sequence[QueryTerm]) -> np.ndarray:
    """One unit query vector ``(dim,)``: the weighted sum of the terms' unit embeddings, renormalised.

    Negative terms push the query away from what they describe; they cannot make a query
    on their own.

    Raises:
        ValueError: If no term has a positive weight, or the terms cancel out.
        vslib.encoders.TextNotSupportedError: For a text term with an image-only model.
        vslib.images.ImageLoadError: If an image term cannot be read.

    Introduced in chapter 5.
    """
    terms = _as_terms(terms)
    if not any(term.weight > 0 for term in terms):
        raise ValueError("a query needs at least one term with a positive weight; negative terms only push away")
    texts = [t for t in terms if not t.is_image]
    images = [t for t in terms if t.is_image]
    total = np.zeros(encoder.dim, dtype=np.float64)
    if texts:
        embedded = encoder.encode_texts([t.text for t in texts])
        total += np.asarray([t.weight for t in texts]) @ embedded.astype(np.float64)
    if images:
        embedded = encoder.encode_images([t.image for t in images])
        total += np.asarray([t.weight for t in images]) @ embedded.astype(np.float64)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise ValueError("the query terms cancel each other out; there is no direction left to search")
    return (total / norm).astype(np.float32)


def search(
    index: ImageIndex,
    encoder: Encoder,
    query: str | QueryTerm | Sequence[QueryTerm] | np.ndarray,
    k: int = 10,
    exact: bool = False,
) -> list[SearchHit]:
    """The top ``k`` images of ``index`` for a query string, terms or query vector, best first.

    Raises:
        ValueError: If ``encoder`` is not the model the index was built with (name,
            dimension or fingerprint).

    Introduced in chapter 5.
    """
    if encoder.name != index.model:
        raise ValueError(
            f"the index holds embeddings from model {index.model!r} but the query encoder is {encoder.name!r}; "
            "query with the model the index was built with"
        )
    index.check_encoder(encoder)
    vector = query if isinstance(query, np.ndarray) else query_vector(encoder, query)
    return index.search(vector, k=k, exact=exact)
