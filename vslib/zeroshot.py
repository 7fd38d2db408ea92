"""Zero-shot classification and retrieval metrics.

A class becomes a text embedding: fill every prompt template with the class name,
embed the prompts, normalise each, average them and normalise again (the template
ensemble of CLIP and CLIP_benchmark). An image is then scored against every class by
cosine similarity. The metrics follow CLIP_benchmark: top-1 and top-5 accuracy,
mean per-class recall, and recall@k for retrieval. Introduced in chapter 3.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from vslib.templates import IMAGENET_TEMPLATES, fill

if TYPE_CHECKING:
    from vslib.encoders import Encoder

__all__ = [
    "class_embeddings",
    "classify",
    "confusion_matrix",
    "ensemble_embeddings",
    "evaluate_zero_shot",
    "mean_per_class_recall",
    "per_template_accuracy",
    "retrieval_recall_at_k",
    "template_embeddings",
    "top5_printout",
    "topk_accuracy",
]


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def class_embeddings(
    encoder: Encoder,
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    progress: bool | None = None,
) -> np.ndarray:
    """One text embedding per class from a template ensemble.

    All ``len(class_names) * len(templates)`` prompts go to the encoder in one
    :meth:`~vslib.encoders.Encoder.encode_texts` call. Introduced in chapter 3.

    Args:
        encoder: A multimodal encoder (``supports_text``).
        class_names: Class names, e.g. ``vslib.synth.CLASSES``.
        templates: Templates holding one ``{}`` each (default: the 80 CLIP templates,
            :data:`vslib.templates.IMAGENET_TEMPLATES`).
        batch_size: Prompts per forward pass.
        progress: Show a progress bar (``None``: only for long runs on a terminal).

    Returns:
        ``(C, dim)`` float32 unit vectors, row ``i`` for ``class_names[i]``.

    Raises:
        ValueError: If there are no class names or no templates.
    """
    return ensemble_embeddings(
        template_embeddings(encoder, class_names, templates, batch_size=batch_size, progress=progress)
    )


def classify(image_emb: ArrayLike, class_emb: ArrayLike) -> np.ndarray:
    """Cosine score of every image against every class.

    Both inputs are expected to be unit vectors, so the dot product is the cosine.
    Introduced in chapter 3.

    Args:
        image_emb: ``(N, dim)`` image embeddings.
        class_emb: ``(C, dim)`` class embeddings from :func:`class_embeddings`.

    Returns:
        ``(N, C)`` scores; the prediction for image ``i`` is ``scores[i].argmax()``.

    Raises:
        ValueError: If the embedding sizes differ.
    """
    images = np.atleast_2d(np.asarray(image_emb, dtype=np.float32))
    classes = np.atleast_2d(np.asarray(class_emb, dtype=np.float32))
    if images.shape[1] != classes.shape[1]:
        raise ValueError(
            f"image embeddings have dim {images.shape[1]} but class embeddings dim {classes.shape[1]}; "
            "were they made by the same model?"
        )
    return images @ classes.T


def _scores_and_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.atleast_2d(np.asarray(scores))
    y = np.asarray(labels).ravel()
    if len(s) != len(y):
        raise ValueError(f"{len(s)} score rows but {len(y)} labels")
    if len(y) == 0:
        raise ValueError("no samples given")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= s.shape[1]:
        raise ValueError(f"labels must be integers in [0, {s.shape[1]})")
    return s, y


def topk_accuracy(scores: ArrayLike, labels: ArrayLike, k: int = 1) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores.

    Ties are broken towards the lower class index, as ``argmax`` does. With ``k`` at
    least the number of classes the result is 1. Introduced in chapter 3.

    Args:
        scores: ``(N, C)`` scores.
        labels: ``(N,)`` true class indices.
        k: How many top classes count as a hit.

    Raises:
        ValueError: If shapes disagree, labels are out of range or ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s, y = _scores_and_labels(scores, labels)
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == y[:, None]).any(axis=1)))


def confusion_matrix(pred: ArrayLike, labels: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Introduced in chapter 3.

    Args:
        pred: ``(N,)`` predicted class indices.
        labels: ``(N,)`` true class indices.
        num_classes: Number of classes C.

    Returns:
        ``(C, C)`` int64 matrix; ``cm[t, p]`` counts samples of class ``t`` predicted as ``p``.

    Raises:
        ValueError: If lengths differ or an index is outside ``[0, num_classes)``.
    """
    p = np.asarray(pred).ravel()
    y = np.asarray(labels).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions but {y.size} labels")
    for name, v in (("pred", p), ("labels", y)):
        if v.size and (not np.issubdtype(v.dtype, np.integer) or v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} must be integers in [0, {num_classes})")
    flat = np.bincount(y.astype(np.int64) * num_classes + p.astype(np.int64), minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def mean_per_class_recall(scores: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 recall of each class, averaged over the classes present in ``labels``.

    On imbalanced data this differs from top-1 accuracy: a model that always predicts
    the common class has high accuracy and low mean per-class recall. Introduced in
    chapter 3.

    Args:
        scores: ``(N, C)`` scores.
        labels: ``(N,)`` true class indices.
    """
    s, y = _scores_and_labels(scores, labels)
    cm = confusion_matrix(s.argmax(axis=1), y, s.shape[1])
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def evaluate_zero_shot(image_emb: ArrayLike, class_emb: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Top-1, top-5 and mean per-class recall of zero-shot classification.

    Introduced in chapter 3.

    Args:
        image_emb: ``(N, dim)`` image embeddings.
        class_emb: ``(C, dim)`` class embeddings.
        labels: ``(N,)`` true class indices.

    Returns:
        ``{"top1": ..., "top5": ..., "mean_per_class_recall": ...}``.
    """
    scores = classify(image_emb, class_emb)
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mean_per_class_recall": mean_per_class_recall(scores, labels),
    }


def retrieval_recall_at_k(
    query_emb: ArrayLike,
    gallery_emb: ArrayLike,
    positives: Sequence[Set[int]] | np.ndarray,
    k: int,
) -> float:
    """Fraction of queries with at least one positive among their ``k`` nearest gallery items.

    This is CLIP_benchmark's retrieval recall@k (text-to-image or image-to-text).
    Introduced in chapter 3.

    Args:
        query_emb: ``(Q, dim)`` unit vectors.
        gallery_emb: ``(G, dim)`` unit vectors.
        positives: For each query the set of matching gallery indices, or a
            ``(Q, G)`` boolean matrix.
        k: Number of retrieved items that count.

    Raises:
        ValueError: If shapes disagree, ``positives`` is neither sets nor a boolean
            matrix, ``k < 1`` or a query has no positive.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = classify(query_emb, gallery_emb)
    n_queries, n_gallery = scores.shape
    sets = None if isinstance(positives, np.ndarray) else list(positives)
    if sets is None or not all(isinstance(p, Set) for p in sets):
        mask = np.asarray(positives if sets is None else sets)
        if mask.dtype != bool or mask.shape != scores.shape:
            raise ValueError(
                f"positives must be one set of gallery indices per query or a {scores.shape} boolean matrix"
            )
    else:
        if len(sets) != n_queries:
            raise ValueError(f"{len(sets)} positive sets for {n_queries} queries")
        mask = np.zeros(scores.shape, dtype=bool)
        for q, items in enumerate(sets):
            idx = np.fromiter(items, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n_gallery):
                raise ValueError(f"positive index out of range for query {q}")
            mask[q, idx] = True
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise ValueError(f"queries {empty[:5].tolist()} have no positive in the gallery")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.take_along_axis(mask, top, axis=1).any(axis=1)))


def top5_printout(
    scores: ArrayLike,
    class_names: Sequence[str],
    i: int,
    *,
    labels: ArrayLike | None = None,
    k: int = 5,
) -> list[str]:
    """Lines showing sample ``i``'s top classes and scores, best first.

    With ``labels`` the true class is marked ``<- true``, and named on an extra line
    when it is not in the top ``k``. Introduced in chapter 3.

    Args:
        scores: ``(N, C)`` scores (cosines or probabilities).
        class_names: The C class names.
        i: Sample index.
        labels: Optional ``(N,)`` true class indices.
        k: Number of classes to list.

    Returns:
        One string per line, e.g. ``" 1. circle      0.312  <- true"``.
    """
    s = np.atleast_2d(np.asarray(scores))
    names = list(class_names)
    if s.shape[1] != len(names):
        raise ValueError(f"scores have {s.shape[1]} classes but {len(names)} names were given")
    row = s[i]
    ranking = np.argsort(-row, kind="stable")
    order = ranking[:k]
    true = None if labels is None else int(np.asarray(labels).ravel()[i])
    width = max(len(n) for n in names)
    lines = []
    for rank, c in enumerate(order, start=1):
        mark = "  <- true" if c == true else ""
        lines.append(f"{rank:2d}. {names[c]:<{width}}  {row[c]:.3f}{mark}")
    if true is not None and true not in order:
        rank = int(np.flatnonzero(ranking == true)[0]) + 1
        lines.append(f"    true class {names[true]!r} ranks {rank} with {row[true]:.3f}")
    return lines


def template_embeddings(
    encoder: Encoder,
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    progress: bool | None = None,
) -> np.ndarray:
    """Text embeddings of every (class, template) prompt, kept apart.

    The same prompts as :func:`class_embeddings`, before the average: use it to
    score each template on its own (:func:`per_template_accuracy`) and the ensemble
    (:func:`ensemble_embeddings`) from one encoding pass. Introduced in chapter 3.

    Args:
        encoder: A multimodal encoder (``supports_text``).
        class_names: Class names.
        templates: Templates holding one ``{}`` each (default: the 80 CLIP templates).
        batch_size: Prompts per forward pass.
        progress: Show a progress bar (``None``: only for long runs on a terminal).

    Returns:
        ``(C, T, dim)`` float32 unit vectors; ``[i, j]`` embeds template ``j`` filled
        with ``class_names[i]``.

    Raises:
        ValueError: If there are no class names or no templates.
    """
    names = list(class_names)
    templates = list(IMAGENET_TEMPLATES if templates is None else templates)
    if not names:
        raise ValueError("no class names given")
    if not templates:
        raise ValueError("no templates given")
    prompts = [prompt for name in names for prompt in fill(templates, name)]
    emb = encoder.encode_texts(prompts, batch_size=batch_size, progress=progress)
    return _normalize(emb.astype(np.float64)).reshape(len(names), len(templates), -1).astype(np.float32)


def ensemble_embeddings(template_emb: ArrayLike) -> np.ndarray:
    """Class embeddings from :func:`template_embeddings`: mean over templates, renormalised.

    Equals :func:`class_embeddings` with the same templates. Introduced in chapter 3.

    Args:
        template_emb: ``(C, T, dim)`` unit vectors.

    Returns:
        ``(C, dim)`` float32 unit vectors.

    Raises:
        ValueError: If the input is not three-dimensional.
    """
    t = np.asarray(template_emb, dtype=np.float64)
    if t.ndim != 3:
        raise ValueError(f"template_emb must be (classes, templates, dim), got shape {t.shape}")
    return _normalize(_normalize(t).mean(axis=1)).astype(np.float32)


def per_template_accuracy(
    image_emb: ArrayLike, template_emb: ArrayLike, labels: ArrayLike, k: int = 1
) -> np.ndarray:
    """Top-k accuracy of zero-shot classification with each template used alone.

    Introduced in chapter 3.

    Args:
        image_emb: ``(N, dim)`` image embeddings.
        template_emb: ``(C, T, dim)`` from :func:`template_embeddings`.
        labels: ``(N,)`` true class indices.
        k: How many top classes count as a hit.

    Returns:
        ``(T,)`` float64 accuracies, entry ``j`` for template ``j``.

    Raises:
        ValueError: If the input is not three-dimensional, or as :func:`topk_accuracy`.
    """
    t = np.asarray(template_emb, dtype=np.float32)
    if t.ndim != 3:
        raise ValueError(f"template_emb must be (classes, templates, dim), got shape {t.shape}")
    return np.array([topk_accuracy(classify(image_emb, t[:, j]), labels, k) for j in range(t.shape[1])])
