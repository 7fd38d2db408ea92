"""Combining ranked result lists by rank: reciprocal rank fusion (RRF).

Two models embed into two different spaces, and their cosines live on different scales: a
matching text scores about 0.2 against an image where two similar images score 0.7 to 1
(chapter 4's modality gap), and a DINOv3 cosine says nothing about a SigLIP 2 cosine. Adding
them lets one term swamp the other, or mixes numbers that have no common meaning. Ranks have
one: RRF (Cormack, Clarke and Buettcher, SIGIR 2009) gives an item in position ``r`` of a list
``1 / (k + r)`` and sums that over the lists, so an item that is near the top of several lists
wins, whatever the lists' scores were. ``k = 60`` is the paper's value; a larger ``k`` flattens
the difference between the first few positions.

:func:`fuse_hits` applies it to search results of several models. Introduced in chapter 7.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from vslib.index import SearchHit

__all__ = [
    "FUSIONS",
    "RRF_K",
    "FusedHit",
    "MixedSpacesError",
    "check_fusion",
    "fuse_hits",
    "reciprocal_rank_fusion",
]

#: The ``k`` of reciprocal rank fusion: 60, the value of the paper that introduced it.
RRF_K = 60
#: How results of several models may be combined: by rank, or not at all (an error).
FUSIONS = ("rrf", "refuse")

T = TypeVar("T", bound=Hashable)


class MixedSpacesError(ValueError):
    """A query would combine cosines of different models, or was refused across them.

    Introduced in chapter 7.
    """


def check_fusion(fusion: str) -> str:
    """Return ``fusion`` if it is one of :data:`FUSIONS`, else raise a clear error (chapter 7).

    Raises:
        MixedSpacesError: For any other method, e.g. adding cosines across models.
    """
    if fusion in FUSIONS:
        return fusion
    raise MixedSpacesError(
        f"unknown fusion {fusion!r}: results of different models are combined by rank ('rrf') or "
        "not at all ('refuse'); their cosines are never added, because each model has its own "
        "embedding space and its own scale of scores"
    )


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[T]], k: float = RRF_K, weights: Sequence[float] | None = None
) -> list[tuple[T, float]]:
    """Fuse ranked lists: ``score(item) = sum over lists of weight / (k + rank)``, best first.

    Ranks start at 1. An item missing from a list gets nothing from it. Ties are broken by
    the item's best rank in any list, then by where it first appears (list by list), so the
    result is deterministic. Introduced in chapter 7.

    Args:
        rankings: Lists of items, each best first; an item appears at most once per list.
        k: The RRF constant (default 60); at least 0.
        weights: One positive weight per list (default: 1 each).

    Returns:
        ``(item, fused score)`` pairs, highest score first.

    Raises:
        ValueError: If there are no lists, ``k`` is negative or not finite, the weights do not
            match the lists or are not positive, or a list repeats an item.
    """
    rankings = [list(ranking) for ranking in rankings]
    if not rankings:
        raise ValueError("rank fusion needs at least one ranked list")
    if not math.isfinite(k) or k < 0:
        raise ValueError(f"the RRF constant k must be a finite number >= 0, got {k}")
    if weights is None:
        weights = [1.0] * len(rankings)
    weights = [float(w) for w in weights]
    if len(weights) != len(rankings):
        raise ValueError(f"got {len(weights)} weights for {len(rankings)} ranked lists")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"rank fusion weights must be positive and finite, got {weights}")
    scores: dict[T, float] = {}
    best: dict[T, int] = {}
    for ranking, weight in zip(rankings, weights):
        if len(set(ranking)) != len(ranking):
            raise ValueError("a ranked list names the same item more than once")
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            best[item] = min(best.get(item, rank), rank)
    order = {item: position for position, item in enumerate(scores)}
    ranked = sorted(scores, key=lambda item: (-scores[item], best[item], order[item]))
    return [(item, scores[item]) for item in ranked]


@dataclass(frozen=True)
class FusedHit:
    """One result of a rank-fused search. Introduced in chapter 7.

    Attributes:
        path: The image's stored path (the same image in every model's index).
        score: The fused RRF score (not a cosine; only its order means something).
        ranks: Per model, the image's rank in that model's results (``None``: not in them).
        cosines: Per model, the cosine it scored there (``None``: not in its results).
    """

    path: str
    score: float
    ranks: dict[str, int | None]
    cosines: dict[str, float | None]


def fuse_hits(
    results: Mapping[str, Sequence[SearchHit]],
    k: float = RRF_K,
    weights: Mapping[str, float] | None = None,
) -> list[FusedHit]:
    """Fuse the search results of several models by reciprocal rank, matching images by path.

    ``results`` maps a model name to its hits, best first; ``weights`` optionally maps a model
    to the weight of its list. Only the order of each list is used, never its cosines (they
    are kept in :attr:`FusedHit.cosines` for display). Introduced in chapter 7.

    Raises:
        ValueError: As :func:`reciprocal_rank_fusion`, or if a weight names a model without
            results.
    """
    models = list(results)
    if weights is not None and set(weights) - set(models):
        raise ValueError(f"weights given for models without results: {sorted(set(weights) - set(models))}")
    lists = [[hit.path for hit in results[model]] for model in models]
    fused = reciprocal_rank_fusion(
        lists, k=k, weights=None if weights is None else [weights.get(m, 1.0) for m in models]
    )
    positions = [{path: rank for rank, path in enumerate(paths, start=1)} for paths in lists]
    cosines = [{hit.path: hit.score for hit in results[model]} for model in models]
    return [
        FusedHit(
            path,
            score,
            {model: positions[i].get(path) for i, model in enumerate(models)},
            {model: cosines[i].get(path) for i, model in enumerate(models)},
        )
        for path, score in fused
    ]
