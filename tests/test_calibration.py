"""Tests for vslib.calibration."""

from __future__ import annotations

import json
import linecache
import math
import os
import warnings

import numpy as np
import pytest

from vslib.calibration import (
    Calibration,
    cosine_degrees,
    fit_calibration,
    random_cosine_sigmas,
    random_unit_cosines,
    reliability,
    score_percentile,
    sigmoid_confidence,
    softmax_over_candidates,
)

TRUE_THRESHOLD = 0.15
TRUE_TEMPERATURE = 30.0


def _sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores uniform on [-0.1, 0.4] with matches drawn from the true sigmoid."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(-0.1, 0.4, n)
    p = 1 / (1 + np.exp(-(scores - TRUE_THRESHOLD) * TRUE_TEMPERATURE))
    return scores, rng.random(n) < p


def test_sigmoid_confidence_is_one_half_at_the_threshold_and_follows_the_formula():
    s = np.array([0.1, 0.2, 0.3])
    conf = sigmoid_confidence(s, threshold=0.2, temperature=10.0)
    assert conf[1] == pytest.approx(0.5)
    # sigmoid(1) = e / (1 + e) and sigmoid(-1) = 1 - sigmoid(1).
    assert conf[2] == pytest.approx(math.e / (1 + math.e))
    assert conf[0] == pytest.approx(1 - math.e / (1 + math.e))
    # float32 scores are computed in float64, as documented: 1e-9 above the threshold is not 0.5.
    above = sigmoid_confidence(np.float32([0.2]), threshold=float(np.float32(0.2)) - 1e-9, temperature=1e6)
    assert above.dtype == np.float64 and above[0] == pytest.approx(1 / (1 + math.exp(-1e-3)), abs=1e-9)


def test_sigmoid_confidence_saturates_without_overflow_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conf = sigmoid_confidence([-1e6, 1e6], threshold=0.0, temperature=1e3)
    np.testing.assert_array_equal(conf, [0.0, 1.0])


def test_fit_recovers_the_threshold_and_temperature_of_the_generating_sigmoid():
    scores, is_match = _sample(20_000, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fit that converges does not warn
        cal = fit_calibration(scores, is_match)
    assert cal.threshold == pytest.approx(TRUE_THRESHOLD, abs=0.01)
    assert cal.temperature == pytest.approx(TRUE_TEMPERATURE, rel=0.1)


@pytest.mark.parametrize("threshold", [0.32, -0.02])
def test_fit_recovers_a_threshold_far_from_the_mean_score(threshold):
    # Scores average 0.15; a threshold far to either side makes the fitted intercept large,
    # so a sign slip in turning (slope, intercept) into a threshold moves it to the other side.
    rng = np.random.default_rng(7)
    scores = rng.uniform(-0.1, 0.4, 20_000)
    is_match = rng.random(scores.size) < 1 / (1 + np.exp(-(scores - threshold) * TRUE_TEMPERATURE))
    cal = fit_calibration(scores, is_match)
    assert abs(scores.mean() - threshold) > 0.15
    assert cal.threshold == pytest.approx(threshold, abs=0.01)
    assert cal.temperature == pytest.approx(TRUE_TEMPERATURE, rel=0.1)


def test_fitted_confidences_are_better_calibrated_than_a_wrong_threshold():
    scores, is_match = _sample(20_000, seed=1)
    cal = fit_calibration(scores, is_match)
    test_scores, test_match = _sample(20_000, seed=2)
    fitted = reliability(cal.confidence(test_scores), test_match)
    wrong = reliability(sigmoid_confidence(test_scores, 0.3, TRUE_TEMPERATURE), test_match)
    assert fitted.ece < 0.02
    assert wrong.ece > 3 * fitted.ece


def test_fit_stays_finite_on_separable_data_and_splits_the_classes():
    scores = np.array([0.00, 0.03, 0.06, 0.10, 0.20, 0.24, 0.27, 0.30])
    is_match = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    cal = fit_calibration(scores, is_match)
    assert math.isfinite(cal.temperature) and cal.temperature > 0
    assert 0.10 < cal.threshold < 0.20
    conf = cal.confidence(scores)
    assert (conf[is_match] > 0.9).all() and (conf[~is_match] < 0.1).all()


@pytest.mark.parametrize(("threshold", "separable"), [(TRUE_THRESHOLD, False), (TRUE_THRESHOLD, True), (0.32, False)])
def test_fit_is_the_penalised_maximum_likelihood(threshold, separable):
    # At the optimum the gradient of the penalised log-loss vanishes. In standardised
    # scores x the model is sigmoid(a x + b) with a = temperature * std, b = a (mean - threshold) / std,
    # and the penalty l2 a^2 / 2 pulls a (only a) towards 0. A threshold far from the mean
    # score makes b large: a penalty (or a line search) that touched b would stop short of it.
    rng = np.random.default_rng(4)
    scores = rng.uniform(-0.1, 0.4, 400)
    is_match = rng.random(scores.size) < 1 / (1 + np.exp(-(scores - threshold) * TRUE_TEMPERATURE))
    if separable:
        is_match = scores > threshold
    l2 = 50.0
    cal = fit_calibration(scores, is_match, l2=l2)
    mean, std = scores.mean(), scores.std()
    x = (scores - mean) / std
    a = cal.temperature * std
    b = a * (mean - cal.threshold) / std
    p = 1 / (1 + np.exp(-(a * x + b)))
    y = is_match.astype(float)
    np.testing.assert_allclose([np.sum((p - y) * x) + l2 * a, np.sum(p - y)], [0.0, 0.0], atol=1e-6)
    # The penalty shrinks the slope: a weaker one gives a steeper fit.
    assert fit_calibration(scores, is_match, l2=1e-3).temperature > cal.temperature


def test_fit_needs_two_distinct_finite_scores():
    cal = fit_calibration([0.1, 0.3], [False, True])
    assert 0.1 < cal.threshold < 0.3
    with pytest.raises(ValueError, match="^need at least two labelled pairs to fit a calibration$"):
        fit_calibration([0.1], [True])
    with pytest.raises(ValueError, match="all scores are equal"):
        fit_calibration([0.2, 0.2, 0.2], [False, True, True])
    with pytest.raises(ValueError, match="^scores contain NaN or infinite values$"):
        fit_calibration([0.1, np.inf], [False, True])


def test_float32_scores_are_fitted_in_float64():
    scores, is_match = _sample(2000, seed=5)
    single = scores.astype(np.float32)
    assert fit_calibration(single, is_match) == fit_calibration(single.astype(np.float64), is_match)


def test_fit_warns_when_newton_has_not_converged():
    scores, is_match = _sample(500, seed=3)
    with pytest.warns(RuntimeWarning, match="did not converge in 1 Newton steps") as record:
        fit_calibration(scores, is_match, max_iter=1)
    # The warning names the caller's line, not the library's (or pytest's). Under mutmut
    # (benchmarks/mutation_score.py) the caller is mutmut's trampoline in front of the function.
    caller = "trampoline.py" if "MUTANT_UNDER_TEST" in os.environ else os.path.basename(__file__)
    assert [os.path.basename(w.filename) for w in record] == [caller]
    if "MUTANT_UNDER_TEST" in os.environ:  # the trampoline's line that calls the function, not its wrapper's
        assert "_func(*call_args" in linecache.getline(record[0].filename, record[0].lineno)


@pytest.mark.parametrize(
    ("scores", "is_match", "message"),
    [
        ([0.1, 0.2, 0.3], [True, True, True], "only matches"),
        ([0.1, 0.2, 0.3], [False, False, False], "only non-matches"),
        ([0.1, 0.2, 0.3], [True, False], "differ in length"),
        ([0.3, 0.2, 0.1, 0.0], [False, False, True, True], "slope"),
    ],
)
def test_fit_rejects_unusable_labels(scores, is_match, message):
    with pytest.raises(ValueError, match=message):
        fit_calibration(scores, is_match)


def test_calibration_round_trips_through_json_and_matches_a_scale_bias_pair():
    cal = Calibration(threshold=0.12, temperature=25.0)
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    # sigmoid(s * scale + bias) with scale 25 and bias -3 has its midpoint at 3 / 25.
    siglip_like = Calibration.from_scale_bias(25.0, -3.0)
    assert siglip_like.threshold == pytest.approx(0.12)
    s = np.linspace(-0.2, 0.5, 8)
    np.testing.assert_allclose(siglip_like.confidence(s), 1 / (1 + np.exp(-(25.0 * s - 3.0))))
    unit = Calibration.from_scale_bias(1.0, -0.5)
    assert (unit.threshold, unit.temperature) == (0.5, 1.0)
    with pytest.raises(ValueError, match="scale must be non-zero"):
        Calibration.from_scale_bias(0.0, -3.0)


def test_ece_is_zero_when_every_bin_matches_its_confidence():
    conf = np.array([0.25] * 4 + [0.75] * 4)
    is_match = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    stats = reliability(conf, is_match, bins=10)
    assert stats.ece == pytest.approx(0.0)
    assert stats.bin_counts[2] == 4 and stats.bin_counts[7] == 4 and stats.bin_counts.sum() == 8


def test_ece_on_a_hand_computed_case():
    # Bin [0.1, 0.2): confidence 0.15, 1 of 2 matches -> gap 0.35.
    # Bin [0.8, 0.9): confidence 0.85, 2 of 2 matches -> gap 0.15.
    stats = reliability([0.15, 0.15, 0.85, 0.85], [False, True, True, True], bins=10)
    assert stats.ece == pytest.approx(0.5 * 0.35 + 0.5 * 0.15)
    assert stats.bin_accuracy[1] == pytest.approx(0.5)
    assert stats.bin_confidence[8] == pytest.approx(0.85)
    assert np.isnan(stats.bin_accuracy[0]) and stats.bin_counts[0] == 0
    np.testing.assert_allclose(stats.bin_edges, np.linspace(0, 1, 11))


def test_reliability_puts_confidence_one_in_the_last_bin_and_rejects_out_of_range():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # empty bins are NaN, without a 0/0 warning
        stats = reliability([1.0, 0.0], [True, False], bins=4)
    assert np.isnan(stats.bin_confidence[1:3]).all() and np.isnan(stats.bin_accuracy[1:3]).all()
    assert stats.bin_counts.tolist() == [1, 0, 0, 1]
    assert stats.ece == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"^confidences must lie in \[0, 1\]$"):
        reliability([1.2], [True])
    with pytest.raises(ValueError, match="no confidences given"):
        reliability([], [])
    with pytest.raises(ValueError, match="bins must be >= 1, got 0"):
        reliability([0.5], [True], bins=0)


def test_softmax_rows_sum_to_one_and_follow_the_temperature():
    scores = np.random.default_rng(0).uniform(-1, 1, (5, 7))
    probs = softmax_over_candidates(scores, temperature=100.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # Two candidates 0.1 apart at temperature 10 ln 3 differ by a factor of 3 in probability.
    pair = softmax_over_candidates([0.0, 0.1], temperature=10 * math.log(3))
    np.testing.assert_allclose(pair, [0.25, 0.75])
    # A softmax hands out all the mass even when every candidate scores low.
    assert softmax_over_candidates([0.01, 0.02, 0.03], temperature=100.0).sum() == pytest.approx(1.0)


def test_softmax_stays_finite_for_large_logits_row_by_row():
    # exp(800) overflows float64: the softmax must shift each row by its own maximum.
    probs = softmax_over_candidates([[800.0, 800.0 + math.log(3)], [-900.0, -900.0 - math.log(3)]], temperature=1.0)
    np.testing.assert_allclose(probs, [[0.25, 0.75], [0.75, 0.25]])
    # float32 scores are computed (and returned) in float64, as documented.
    assert softmax_over_candidates(np.float32([0.1, 0.2]), temperature=1.0).dtype == np.float64
    # Integer scores are not truncated by the temperature.
    np.testing.assert_allclose(softmax_over_candidates([0, 1], temperature=0.5), 1 / (1 + np.exp([0.5, -0.5])))


@pytest.mark.parametrize("dim", [16, 256, 1024])
def test_random_unit_cosines_spread_like_one_over_sqrt_dim(dim):
    cos = random_unit_cosines(dim, n=4000, seed=0)
    assert cos.shape == (4000,)
    assert np.abs(cos).max() <= 1.0
    # For random unit vectors E[cos] = 0 and Var[cos] = 1 / dim exactly.
    assert cos.std() * math.sqrt(dim) == pytest.approx(1.0, rel=0.05)
    assert abs(cos.mean()) < 4 / math.sqrt(dim * 4000)


def test_random_unit_cosines_refuses_too_few_dimensions_or_pairs():
    assert random_unit_cosines(2, n=1).shape == (1,)
    with pytest.raises(ValueError, match="dim must be >= 2, got 1"):
        random_unit_cosines(1)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        random_unit_cosines(8, n=0)


def test_random_unit_cosines_are_reproducible_from_the_seed():
    np.testing.assert_array_equal(random_unit_cosines(64, 100, seed=5), random_unit_cosines(64, 100, seed=5))
    assert not np.array_equal(random_unit_cosines(64, 100, seed=5), random_unit_cosines(64, 100, seed=6))
    np.testing.assert_array_equal(random_unit_cosines(64, 10), random_unit_cosines(64, 10, seed=0))  # default seed


def test_score_percentile_ranks_among_reference_scores_with_ties_counting_half():
    reference = [0.3, 0.0, 0.1, 0.2]
    pct = score_percentile([-1.0, 0.15, 0.1, 5.0], reference)
    np.testing.assert_allclose(pct, [0.0, 50.0, 37.5, 100.0])
    assert score_percentile(np.zeros((2, 3)), [0.0]).shape == (2, 3)
    assert score_percentile(0.0, [0.0, 0.0]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="no reference"):
        score_percentile([0.1], [])
    with pytest.raises(ValueError, match="reference scores contain NaN"):
        score_percentile([0.1], [0.2, float("nan")])
    # Scores are compared as given, not rounded to the reference's type.
    assert score_percentile([1.5], [1, 2]) == pytest.approx(50.0)
    assert score_percentile([1], [0.5, 1.5]) == pytest.approx(50.0)


def test_slope_at_the_threshold_is_the_numerical_derivative_and_a_quarter_of_the_temperature():
    cal = Calibration(threshold=0.2, temperature=40.0)
    h = 1e-6
    numeric = (cal.confidence(0.2 + h) - cal.confidence(0.2 - h)) / (2 * h)
    assert cal.slope == pytest.approx(numeric, rel=1e-6)
    assert cal.slope == 10.0
    # Away from the threshold the sigmoid is flatter than at it.
    assert (cal.confidence(0.3 + h) - cal.confidence(0.3 - h)) / (2 * h) < cal.slope


def test_score_at_inverts_the_confidence():
    cal = Calibration(threshold=0.15, temperature=60.0)
    p = np.array([0.01, 0.1, 0.5, 0.9, 0.99])
    scores = cal.score_at(p)
    np.testing.assert_allclose(cal.confidence(scores), p, rtol=1e-12)
    assert cal.score_at(0.5) == pytest.approx(0.15)
    assert scores[3] - scores[1] == pytest.approx(2 * math.log(9) / 60.0)
    for bad in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            cal.score_at(bad)
    # Computed in float64 whatever the input's type.
    single = np.float32([0.9, 0.999])
    exact = cal.score_at(single.astype(np.float64))
    assert cal.score_at(single).dtype == np.float64
    np.testing.assert_array_equal(cal.score_at(single), exact)


def test_cosine_degrees_reads_a_cosine_as_an_angle():
    np.testing.assert_allclose(cosine_degrees([1.0, 0.5, 0.0, -0.5, -1.0]), [0.0, 60.0, 90.0, 120.0, 180.0],
                               atol=1e-12)
    assert cosine_degrees(0.2) == pytest.approx(math.degrees(math.acos(0.2)))
    # float16 rounding can land a hair outside [-1, 1]; a real error cannot.
    assert cosine_degrees(np.float16(1.0005)) == 0.0
    np.testing.assert_array_equal(cosine_degrees([-1.0005, 1.0005]), [180.0, 0.0])
    # Computed in float64 whatever the input: a float32 cosine's angle is its exact value's angle.
    single = np.float32([0.2, -0.7])
    angles = cosine_degrees(single)
    assert angles.dtype == np.float64
    np.testing.assert_array_equal(angles, np.degrees(np.arccos(single.astype(np.float64))))
    assert cosine_degrees(np.zeros((2, 3))).shape == (2, 3)
    for bad in (1.5, -1.01, float("nan")):
        with pytest.raises(ValueError, match=r"cosines must lie in \[-1, 1\]"):
            cosine_degrees(bad)


def test_random_cosine_sigmas_match_the_measured_spread_of_random_pairs():
    dim = 768
    cos = random_unit_cosines(dim, n=4000, seed=1)
    # One measured standard deviation of random cosines is about one sigma.
    assert random_cosine_sigmas(cos.std(), dim) == pytest.approx(1.0, rel=0.05)
    assert random_cosine_sigmas(0.2, dim) == pytest.approx(0.2 * math.sqrt(768))
    np.testing.assert_allclose(random_cosine_sigmas([0.1, -0.1], 100), [1.0, -1.0])
    with pytest.raises(ValueError, match="dim must be >= 2, got 1"):
        random_cosine_sigmas(0.2, 1)


# -- what the complete mutation run (benchmarks/mutation_score.py) showed the tests above missed ---


@pytest.mark.parametrize(
    ("scores", "is_match", "l2"),
    [
        # Separable, with almost no penalty: a full Newton step overshoots here without the line search.
        ([0.00, 0.03, 0.06, 0.10, 0.20, 0.24, 0.27, 0.30], [0, 0, 0, 0, 1, 1, 1, 1], 1e-9),
        # One match far above 99 non-matches: a line search that starts beyond the Newton step stalls here.
        (np.r_[np.linspace(0, 1, 99), 5.0], np.r_[np.zeros(99), 1], 1e-3),
    ],
)
def test_fit_converges_on_separable_and_lopsided_data(scores, is_match, l2):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cal = fit_calibration(scores, np.asarray(is_match, dtype=bool), l2=l2)
    assert math.isfinite(cal.threshold) and cal.temperature > 0


def test_fit_gives_up_after_100_newton_steps_by_default():
    scores, is_match = _sample(200, seed=8)
    with pytest.warns(RuntimeWarning, match="did not converge in 100 Newton steps"):
        fit_calibration(scores, is_match, tol=0.0)  # no update is below 0: it never converges


def test_fit_refuses_labels_that_scores_do_not_explain_at_all():
    # Symmetric around the mean score, matches at both ends: the fitted slope is exactly 0.
    with pytest.raises(ValueError, match="slope"):
        fit_calibration([-2.0, -1.0, 1.0, 2.0], [True, False, False, True])


def test_reliability_defaults_to_ten_bins_and_allows_one():
    assert len(reliability([0.5], [True]).bin_counts) == 10
    one = reliability([0.2, 0.4, 0.9], [True, False, True], bins=1)
    assert one.bin_counts.tolist() == [3]
    assert one.ece == pytest.approx(abs(2 / 3 - 0.5))


def test_a_bin_with_one_pair_counts_in_the_ece():
    stats = reliability([0.15, 0.85, 0.85], [True, True, True])
    assert stats.bin_counts[1] == 1
    assert stats.ece == pytest.approx((0.85 + 2 * 0.15) / 3)


def test_reliability_bins_float32_confidences_by_their_exact_values():
    # float32(0.7) is 0.69999998..., which belongs to [0.6, 0.7); times 10 in float32 it rounds up to 7.
    single = np.float32([0.7])
    assert float(single[0]) < 0.7 and single[0] * np.float32(10) == 7
    assert reliability(single, [True]).bin_counts.tolist() == [0] * 6 + [1] + [0] * 3


def test_reliability_reads_is_match_as_truth_values_like_the_fit():
    stats = reliability([0.55, 0.55, 0.55, 0.55], [2, 0, 1, 0])  # any non-zero count is a match
    assert stats.bin_accuracy[5] == pytest.approx(0.5)


def test_cosine_degrees_accepts_exactly_1e_3_beyond_the_range():
    np.testing.assert_array_equal(cosine_degrees([1.001, -1.001]), [0.0, 180.0])


def test_random_cosine_sigmas_in_two_dimensions_and_in_float64():
    assert random_cosine_sigmas(0.5, 2) == pytest.approx(0.5 * math.sqrt(2))
    assert random_cosine_sigmas(np.longdouble(0.5), 4).dtype == np.float64


def test_random_unit_cosines_default_count_and_memory_bound(monkeypatch):
    assert random_unit_cosines(8).shape == (2000,)
    drawn = []
    real_rng = np.random.default_rng

    class Recording:
        def __init__(self, seed):
            self.rng = real_rng(seed)

        def standard_normal(self, size):
            drawn.append(size)
            return self.rng.standard_normal(size)

    monkeypatch.setattr(np.random, "default_rng", Recording)
    # Each draw holds at most 2,000,000 numbers, or one vector when a single vector is longer.
    random_unit_cosines(3, n=666_667)
    random_unit_cosines(2_000_001, n=2)
    assert max(m * d for m, d in drawn[:-4]) <= 2_000_000 and sum(m for m, _ in drawn[:-4]) == 2 * 666_667
    assert drawn[-4:] == [(1, 2_000_001)] * 4
