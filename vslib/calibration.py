"""From cosine scores to confidences: sigmoid calibration and reliability.

A cosine of 0.2 can be a strong match for one model and noise for another, so a raw
score is not a probability. This module fits the two numbers that turn a score into
one, ``confidence = sigmoid((score - threshold) * temperature)``, by logistic
regression on labelled pairs; measures how well confidences match observed
frequencies (reliability bins and the expected calibration error); contrasts the
per-pair sigmoid with a softmax over candidates; and shows why cosines between
unrelated vectors crowd around zero in high dimensions, reading a cosine as an angle
and as a number of random-pair standard deviations. Introduced in chapter 4.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Calibration",
    "ReliabilityStats",
    "cosine_degrees",
    "fit_calibration",
    "random_cosine_sigmas",
    "random_unit_cosines",
    "reliability",
    "score_percentile",
    "sigmoid_confidence",
    "softmax_over_candidates",
]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, so large |x| neither overflows nor warns.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_confidence(scores: ArrayLike, threshold: float, temperature: float) -> np.ndarray:
    """Confidence that each score is a match: ``sigmoid((score - threshold) * temperature)``.

    A score at ``threshold`` gets 0.5; ``temperature`` sets how fast confidence moves
    from 0 to 1 around it. Introduced in chapter 4.

    Args:
        scores: Cosine similarities, any shape.
        threshold: The score that means "as likely a match as not".
        temperature: Slope in logits per unit of score (positive).

    Returns:
        Confidences in ``[0, 1]``, same shape as ``scores``, float64.
    """
    return _sigmoid((np.asarray(scores, dtype=np.float64) - threshold) * temperature)


@dataclass(frozen=True)
class Calibration:
    """A fitted score-to-confidence map, ``sigmoid((score - threshold) * temperature)``.

    Introduced in chapter 4.

    Args:
        threshold: The score with confidence 0.5.
        temperature: Logits per unit of score.
    """

    threshold: float
    temperature: float

    def confidence(self, scores: ArrayLike) -> np.ndarray:
        """Confidences for scores (see :func:`sigmoid_confidence`). Introduced in chapter 4."""
        return sigmoid_confidence(scores, self.threshold, self.temperature)

    def to_dict(self) -> dict[str, float]:
        """A JSON-ready ``{"threshold": ..., "temperature": ...}``. Introduced in chapter 4."""
        return {"threshold": float(self.threshold), "temperature": float(self.temperature)}

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> Calibration:
        """The inverse of :meth:`to_dict`. Introduced in chapter 4."""
        return cls(threshold=float(data["threshold"]), temperature=float(data["temperature"]))

    @property
    def slope(self) -> float:
        """Confidence gained per unit of score at the threshold: ``temperature / 4``.

        The sigmoid's steepest point is its midpoint, where its derivative is 1/4, so
        near the threshold a score ``delta`` higher adds about ``delta * temperature / 4``
        to the confidence. Introduced in chapter 4.
        """
        return self.temperature / 4.0

    def score_at(self, confidence: ArrayLike) -> np.ndarray:
        """The score that gets a given confidence: ``threshold + logit(confidence) / temperature``.

        The inverse of :meth:`confidence`; ``score_at(0.9) - score_at(0.1)``
        (``2 ln 9 / temperature``) is how wide the band of uncertain scores is.
        Introduced in chapter 4.

        Raises:
            ValueError: If a confidence is not strictly between 0 and 1.
        """
        p = np.asarray(confidence, dtype=np.float64)
        if not ((p > 0) & (p < 1)).all():
            raise ValueError("confidences must lie strictly between 0 and 1")
        return self.threshold + np.log(p / (1 - p)) / self.temperature

    @classmethod
    def from_scale_bias(cls, scale: float, bias: float) -> Calibration:
        """The calibration equal to ``sigmoid(score * scale + bias)``.

        SigLIP ships such a pair (``logit_scale``, ``logit_bias``); this expresses it as
        a threshold and temperature. Introduced in chapter 4.
        """
        if scale == 0:
            raise ValueError("scale must be non-zero")
        return cls(threshold=-bias / scale, temperature=scale)


def fit_calibration(
    scores: ArrayLike,
    is_match: ArrayLike,
    *,
    l2: float = 1e-3,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> Calibration:
    """Fit threshold and temperature by logistic regression (Newton's method).

    The model is ``P(match) = sigmoid(a * score + b)``, so ``temperature = a`` and
    ``threshold = -b / a``. Scores are standardised before fitting and a small L2
    penalty on the standardised slope keeps the fit finite when matches and
    non-matches are perfectly separated. Introduced in chapter 4.

    Args:
        scores: Cosine similarities of labelled pairs, shape ``(N,)``.
        is_match: Whether each pair is a true match (bools or 0/1).
        l2: Penalty strength on the standardised slope (summed loss, not mean).
        max_iter: Newton iterations before giving up.
        tol: Stop when the largest parameter update is below this.

    Returns:
        The fitted :class:`Calibration`.

    Raises:
        ValueError: If lengths differ, there are fewer than two pairs, only one class is
            present, scores are not finite, or higher scores do not mean more matches.

    Warns:
        RuntimeWarning: If Newton's method has not converged after ``max_iter`` steps.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(is_match).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and is_match differ in length: {s.size} vs {y.size}")
    if s.size < 2:
        raise ValueError("need at least two labelled pairs to fit a calibration")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    y = y.astype(bool).astype(np.float64)
    if y.min() == y.max():
        kind = "matches" if y[0] else "non-matches"
        raise ValueError(f"is_match holds only {kind}; a calibration needs both classes")
    # Compared directly: the std of equal floats can come out as 3e-17 rather than 0.
    if s.min() == s.max():
        raise ValueError("all scores are equal; nothing to separate")
    mean, std = s.mean(), s.std()
    x = (s - mean) / std
    design = np.stack([x, np.ones_like(x)], axis=1)
    penalty = np.diag([l2, 0.0])

    def objective(w: np.ndarray) -> float:
        z = design @ w
        # log(1 + exp(z)) - y * z, written stably.
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w[0] ** 2)

    w = np.zeros(2)
    converged = False
    for _ in range(max_iter):
        p = _sigmoid(design @ w)
        grad = design.T @ (p - y) + penalty @ w
        hess = (design * (p * (1 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        # Backtracking keeps each step downhill; a full Newton step can overshoot on separable data.
        current, t = objective(w), 1.0
        while objective(w - t * step) > current and t > 1e-8:
            t /= 2
        w = w - t * step
        if np.max(np.abs(t * step)) < tol:
            converged = True
            break
    if not converged:
        warnings.warn(f"calibration fit did not converge in {max_iter} Newton steps", RuntimeWarning, stacklevel=2)
    slope, intercept = w
    if slope <= 0:
        raise ValueError("higher scores do not mean more matches (fitted slope <= 0); check the labels")
    temperature = slope / std
    threshold = mean - intercept * std / slope
    return Calibration(threshold=float(threshold), temperature=float(temperature))


@dataclass
class ReliabilityStats:
    """Confidences against observed match rates, per equal-width confidence bin.

    Introduced in chapter 4.

    Args:
        bin_edges: ``bins + 1`` edges from 0 to 1.
        bin_confidence: Mean confidence per bin (NaN where empty).
        bin_accuracy: Fraction of matches per bin (NaN where empty).
        bin_counts: Pairs per bin.
        ece: Expected calibration error, the count-weighted mean of
            ``|bin_accuracy - bin_confidence|``.
    """

    bin_edges: np.ndarray
    bin_confidence: np.ndarray
    bin_accuracy: np.ndarray
    bin_counts: np.ndarray
    ece: float


def reliability(confidences: ArrayLike, is_match: ArrayLike, bins: int = 10) -> ReliabilityStats:
    """Bin confidences and compare each bin's mean confidence with its match rate.

    Bins are ``[0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]`` for ``bins=10``. A calibrated
    model's 0.8-confidence pairs are matches 80% of the time. Introduced in chapter 4.

    Args:
        confidences: Values in ``[0, 1]``, shape ``(N,)``.
        is_match: Whether each pair is a true match.
        bins: Number of equal-width bins.

    Returns:
        :class:`ReliabilityStats` with the per-bin numbers and the ECE.

    Raises:
        ValueError: If lengths differ, the input is empty, ``bins < 1`` or a confidence
            lies outside ``[0, 1]``.
    """
    c = np.asarray(confidences, dtype=np.float64).ravel()
    y = np.asarray(is_match).ravel().astype(bool)
    if c.shape != y.shape:
        raise ValueError(f"confidences and is_match differ in length: {c.size} vs {y.size}")
    if c.size == 0:
        raise ValueError("no confidences given")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if not ((c >= 0) & (c <= 1)).all():
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.minimum((c * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=c, minlength=bins)
    match_sum = np.bincount(index, weights=y.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, conf_sum / counts, np.nan)
        accuracy = np.where(counts > 0, match_sum / counts, np.nan)
    filled = counts > 0
    ece = float(np.sum(counts[filled] * np.abs(accuracy[filled] - mean_conf[filled])) / c.size)
    return ReliabilityStats(edges, mean_conf, accuracy, counts, ece)


def softmax_over_candidates(scores: ArrayLike, temperature: float) -> np.ndarray:
    """Softmax of ``scores * temperature`` over the last axis (the candidates).

    Unlike the per-pair sigmoid, each row sums to 1: one candidate always "wins",
    even when none matches. Introduced in chapter 4.

    Args:
        scores: Shape ``(C,)`` for one query or ``(N, C)`` for N queries.
        temperature: Logits per unit of score (CLIP uses about 100).

    Returns:
        Probabilities of the same shape, float64.
    """
    z = np.asarray(scores, dtype=np.float64) * temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def random_unit_cosines(dim: int, n: int = 2000, seed: int = 0) -> np.ndarray:
    """Cosines between ``n`` pairs of independent random unit vectors in ``dim`` dimensions.

    Their mean is 0 and their standard deviation ``1 / sqrt(dim)``: in 768 dimensions
    unrelated vectors score within about ±0.07 of zero, which is why a cosine of 0.2
    can already mean something. Introduced in chapter 4.

    Args:
        dim: Dimension of the vectors (``>= 2``).
        n: Number of pairs.
        seed: Random seed.

    Returns:
        ``(n,)`` float64 cosines.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    out = np.empty(n)
    chunk = max(1, 2_000_000 // dim)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        a = rng.standard_normal((m, dim))
        b = rng.standard_normal((m, dim))
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        out[start : start + m] = np.einsum("ij,ij->i", a, b)
    return out


def cosine_degrees(cosines: ArrayLike) -> np.ndarray:
    """The angle between two vectors with these cosine similarities, in degrees.

    ``arccos`` of the cosine: 1 is 0 degrees, 0 is 90 (orthogonal), -1 is 180. Values a
    rounding error outside ``[-1, 1]`` (as float16 scores can be) are clipped first.
    Introduced in chapter 4.

    Args:
        cosines: Cosine similarities, any shape.

    Returns:
        Angles in ``[0, 180]``, same shape, float64.

    Raises:
        ValueError: If a cosine is NaN or further than 1e-3 outside ``[-1, 1]``.
    """
    c = np.asarray(cosines, dtype=np.float64)
    if np.isnan(c).any() or (np.abs(c) > 1 + 1e-3).any():
        raise ValueError("cosines must lie in [-1, 1]")
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def random_cosine_sigmas(cosines: ArrayLike, dim: int) -> np.ndarray:
    """How many standard deviations of random-pair cosines a score is: ``cosine * sqrt(dim)``.

    The cosine of two independent random unit vectors in ``dim`` dimensions has mean 0
    and standard deviation ``1 / sqrt(dim)`` (see :func:`random_unit_cosines`), so this
    says how far a score lies from what unrelated directions give. Trained embeddings
    are not random directions: compare with the scores of non-matching pairs too
    (:func:`score_percentile`). Introduced in chapter 4.

    Args:
        cosines: Cosine similarities, any shape.
        dim: Dimension of the embeddings (``>= 2``).

    Returns:
        Multiples of ``1 / sqrt(dim)``, same shape, float64.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    return np.asarray(cosines, dtype=np.float64) * np.sqrt(dim)


def score_percentile(scores: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """Percentile rank of each score within reference scores, e.g. those of non-matching pairs.

    A score's meaning is its place among the scores of pairs that do not match: a cosine
    above 99% of non-matching pairs is a strong match whatever its raw value. Ties count
    half (the mid-rank convention), so a score equal to every reference score is at 50.
    Introduced in chapter 4.

    Args:
        scores: Scores to rank, any shape.
        reference: The reference scores, any shape (flattened); at least one.

    Returns:
        Percentiles in ``[0, 100]``, same shape as ``scores``, float64.

    Raises:
        ValueError: If ``reference`` is empty or holds NaN.
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    if ref.size == 0:
        raise ValueError("no reference scores given")
    if np.isnan(ref).any():
        raise ValueError("reference scores contain NaN")
    s = np.asarray(scores, dtype=np.float64)
    below = np.searchsorted(ref, s, side="left")
    not_above = np.searchsorted(ref, s, side="right")
    return 100.0 * (below + 0.5 * (not_above - below)) / ref.size
