"""Tests for vslib.zeroshot, with hand-built score matrices and small fake encoders."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vslib.encoders import Encoder
from vslib.templates import fill
from vslib.zeroshot import (
    class_embeddings,
    classify,
    confusion_matrix,
    evaluate_zero_shot,
    mean_per_class_recall,
    retrieval_recall_at_k,
    top5_printout,
    topk_accuracy,
)

PRIMARIES = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class HashTextEncoder(Encoder):
    """Texts become fixed pseudo-random vectors of varied length; records encode_texts calls."""

    name, dim, family, supports_text = "hash-text", 16, "fake", True

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.batches: list[int] = []

    def raw(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(text.encode()))
        return rng.standard_normal(self.dim) * (1 + zlib.crc32(text.encode()) % 7)

    def preprocess(self, images):
        return {"pixels": torch.zeros(len(images), self.dim)}

    def _embed_inputs(self, inputs):
        return inputs["pixels"] + 1.0

    def _embed_texts(self, texts):
        self.batches.append(len(texts))
        return torch.tensor(np.stack([self.raw(t) for t in texts]), dtype=torch.float32)

    def encode_texts(self, texts, batch_size=64, progress=None):
        self.calls.append(list(texts))
        return super().encode_texts(texts, batch_size=batch_size, progress=progress)


class PrimaryColorEncoder(Encoder):
    """Images embed as their mean RGB; a text embeds as the RGB of the primary colour it names."""

    name, dim, family, supports_text = "primary-colour", 3, "fake", True

    def preprocess(self, images):
        return {"rgb": torch.tensor(np.stack([np.asarray(im, np.float32).mean((0, 1)) for im in images]))}

    def _embed_inputs(self, inputs):
        return inputs["rgb"]

    def _embed_texts(self, texts):
        rows = [sum((np.array(rgb, np.float32) for c, rgb in PRIMARIES.items() if c in t), np.full(3, 1e-3))
                for t in texts]
        return torch.tensor(np.stack(rows))


def test_class_embeddings_average_normalised_prompts_in_one_call():
    enc = HashTextEncoder()
    names = ["cat", "dog", "red circle"]
    templates = ["a photo of a {}.", "{}", "a drawing of the {}."]
    emb = class_embeddings(enc, names, templates)

    prompts = [p for n in names for p in fill(templates, n)]
    assert enc.calls == [prompts]
    expected = []
    for n in names:
        vecs = np.stack([enc.raw(p) for p in fill(templates, n)])
        mean = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).mean(axis=0)
        expected.append(mean / np.linalg.norm(mean))
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, np.stack(expected), atol=1e-5)
    # Prompts of varied length: the plain mean of raw vectors points elsewhere.
    raw_mean = np.stack([enc.raw(p) for p in fill(templates, "cat")]).mean(axis=0)
    assert not np.allclose(emb[0], raw_mean / np.linalg.norm(raw_mean), atol=1e-3)


def test_class_embeddings_default_to_the_80_clip_templates_in_batches_of_64(capsys):
    from vslib.templates import IMAGENET_TEMPLATES

    enc = HashTextEncoder()
    emb = class_embeddings(enc, ["cat"])
    assert len(IMAGENET_TEMPLATES) == 80 and enc.calls == [fill(IMAGENET_TEMPLATES, "cat")]
    assert enc.batches == [64, 16]
    np.testing.assert_allclose(emb, class_embeddings(HashTextEncoder(), ["cat"], IMAGENET_TEMPLATES), atol=0)
    enc = HashTextEncoder()
    class_embeddings(enc, ["cat"], batch_size=30, progress=True)
    assert enc.batches == [30, 30, 20]
    assert "encoding (hash-text)" in capsys.readouterr().err  # the bar that was asked for
    from vslib.zeroshot import template_embeddings

    enc = HashTextEncoder()
    template_embeddings(enc, ["cat"])
    assert enc.batches == [64, 16]


def test_the_ensemble_is_computed_in_float64_whatever_the_input_type():
    from vslib.templates import IMAGENET_TEMPLATES
    from vslib.zeroshot import ensemble_embeddings, template_embeddings

    per = template_embeddings(HashTextEncoder(), ["cat", "dog"], IMAGENET_TEMPLATES)
    assert per.dtype == np.float32
    # 80 float32 vectors summed in float32 would round differently in the last bits.
    np.testing.assert_array_equal(ensemble_embeddings(per), ensemble_embeddings(per.astype(np.float64)))


def test_class_embeddings_rejects_empty_inputs():
    with pytest.raises(ValueError, match="^no class names given$"):
        class_embeddings(HashTextEncoder(), [], ["{}"])
    with pytest.raises(ValueError, match="^no templates given$"):
        class_embeddings(HashTextEncoder(), ["cat"], [])


def test_zero_shot_with_a_colour_encoder_classifies_solid_colours():
    enc = PrimaryColorEncoder()
    names = list(PRIMARIES)
    class_emb = class_embeddings(enc, names, ["a photo of a {} thing.", "{}"])
    images = [Image.new("RGB", (8, 8), PRIMARIES[names[i % 3]]) for i in range(6)]
    labels = np.arange(6) % 3
    scores = classify(enc.encode_images(images), class_emb)
    assert scores.shape == (6, 3)
    np.testing.assert_allclose(scores[np.arange(6), labels], 1.0, atol=1e-5)
    result = evaluate_zero_shot(enc.encode_images(images), class_emb, labels)
    assert result == {"top1": 1.0, "top5": 1.0, "mean_per_class_recall": 1.0}


def test_classify_refuses_embeddings_of_different_models():
    with pytest.raises(ValueError, match="were they made by the same model\\?$"):
        classify(np.ones((2, 4)), np.ones((3, 5)))


# Six classes; per row the true label's rank is 1, 2, 1, 6 and 5.
SCORES = np.array(
    [
        [0.9, 0.1, 0.2, 0.3, 0.4, 0.5],
        [0.8, 0.7, 0.1, 0.2, 0.3, 0.4],
        [0.1, 0.2, 0.9, 0.3, 0.4, 0.5],
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
        [0.2, 0.6, 0.5, 0.4, 0.3, 0.1],
    ]
)
LABELS = np.array([0, 1, 2, 5, 0])


@pytest.mark.parametrize(("k", "expected"), [(1, 2 / 5), (2, 3 / 5), (5, 4 / 5), (6, 1.0), (10, 1.0)])
def test_topk_accuracy_on_a_hand_built_matrix(k, expected):
    assert topk_accuracy(SCORES, LABELS, k) == pytest.approx(expected)


def test_topk_accuracy_is_top1_by_default():
    assert topk_accuracy(SCORES, LABELS) == pytest.approx(2 / 5)


#: 21 classes: class 20 scores best, the other 20 tie. Ties go to the lower index, so the
#: top 3 are classes 20, 0 and 1 (an unstable sort may pick others among the tied ones).
TIED = np.r_[np.zeros(20), 0.5]


def test_ties_go_to_the_lower_index_in_every_ranking():
    assert topk_accuracy(TIED[None], [1], 3) == 1.0 and topk_accuracy(TIED[None], [2], 3) == 0.0
    gallery = np.eye(21, dtype=np.float32)
    assert retrieval_recall_at_k(TIED[None], gallery, [{1}], 3) == 1.0
    assert retrieval_recall_at_k(TIED[None], gallery, [{2}], 3) == 0.0
    names = [f"c{i}" for i in range(21)]
    assert [line.split()[1] for line in top5_printout(TIED[None], names, 0)] == ["c20", "c0", "c1", "c2", "c3"]


def test_evaluate_zero_shot_reports_top1_top5_and_mean_recall():
    # Class embeddings on the axes make the scores the image embeddings themselves.
    result = evaluate_zero_shot(SCORES, np.eye(6), LABELS)
    assert result == pytest.approx({"top1": 2 / 5, "top5": 4 / 5, "mean_per_class_recall": (0.5 + 1) / 4})


def test_topk_accuracy_breaks_ties_like_argmax():
    # All scores equal: argmax predicts class 0, so only the class-0 sample is a top-1 hit.
    assert topk_accuracy(np.zeros((3, 4)), [0, 1, 2], 1) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="labels"):
        topk_accuracy(SCORES, [0, 1, 2, 6, 0], 1)
    with pytest.raises(ValueError, match="k must"):
        topk_accuracy(SCORES, LABELS, 0)


def test_mean_per_class_recall_differs_from_top1_on_imbalanced_labels():
    # Nine samples of class 0 and one of class 1; the model always predicts class 0.
    scores = np.tile([0.9, 0.1], (10, 1))
    labels = np.array([0] * 9 + [1])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(0.9)
    assert mean_per_class_recall(scores, labels) == pytest.approx((1.0 + 0.0) / 2)


def test_mean_per_class_recall_averages_only_classes_present():
    # Predictions: 0, 0, 2, 0, 1. Class 0 recall 1/2, class 1 recall 0, class 2 recall 1, class 5 recall 0.
    assert mean_per_class_recall(SCORES, LABELS) == pytest.approx((0.5 + 0 + 1 + 0) / 4)


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], num_classes=3)
    expected = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 2]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == 6
    with pytest.raises(ValueError, match="pred"):
        confusion_matrix([3], [0], num_classes=3)


def test_retrieval_recall_at_k_with_sets_and_a_boolean_matrix():
    gallery = np.eye(4, dtype=np.float32)
    # Query q ranks the gallery as given by its weights (all distinct).
    queries = np.array(
        [
            [0.9, 0.3, 0.2, 0.1],  # ranking 0, 1, 2, 3
            [0.1, 0.2, 0.3, 0.9],  # ranking 3, 2, 1, 0
            [0.2, 0.9, 0.1, 0.3],  # ranking 1, 3, 0, 2
        ],
        dtype=np.float32,
    )
    positives = [{0}, {0, 1}, {2}]
    # Ranks of the first positive: 1, 3, 4.
    assert retrieval_recall_at_k(queries, gallery, positives, 1) == pytest.approx(1 / 3)
    assert retrieval_recall_at_k(queries, gallery, positives, 3) == pytest.approx(2 / 3)
    assert retrieval_recall_at_k(queries, gallery, positives, 4) == pytest.approx(1.0)
    mask = np.zeros((3, 4), dtype=bool)
    for q, items in enumerate(positives):
        mask[q, list(items)] = True
    assert retrieval_recall_at_k(queries, gallery, mask, 3) == pytest.approx(2 / 3)


def test_retrieval_recall_refuses_queries_without_positives_and_ambiguous_positives():
    with pytest.raises(ValueError, match=r"^queries \[1\] have no positive in the gallery$"):
        retrieval_recall_at_k(np.eye(2), np.eye(2), [{0}, set()], 1)
    # Many empty queries: the first five are named.
    with pytest.raises(ValueError, match=r"^queries \[0, 1, 2, 3, 4\] have no positive"):
        retrieval_recall_at_k(np.eye(7), np.eye(7), [set()] * 6 + [{6}], 1)
    # Lists of indices could be read as 0/1 flags; only sets or a boolean matrix are accepted.
    with pytest.raises(ValueError, match="boolean matrix"):
        retrieval_recall_at_k(np.eye(2), np.eye(2), [[0], [1]], 1)


def test_top5_printout_lists_the_best_classes_and_marks_the_truth():
    names = ["a", "b", "c", "d", "e", "f"]
    lines = top5_printout(SCORES, names, 1, labels=LABELS)
    assert len(lines) == 5
    assert lines[0].split()[:3] == ["1.", "a", "0.800"]
    assert lines[1].split()[:3] == ["2.", "b", "0.700"] and lines[1].endswith("<- true")
    assert sum("<- true" in line for line in lines) == 1
    # Row 3's true class f scores lowest: it is not listed, so an extra line names its rank.
    lines = top5_printout(SCORES, names, 3, labels=LABELS)
    assert len(lines) == 6 and "'f'" in lines[-1] and "ranks 6" in lines[-1]


def test_template_embeddings_ensemble_equals_class_embeddings():
    from vslib.zeroshot import ensemble_embeddings, template_embeddings

    names = ["cat", "dog", "red circle"]
    templates = ["a photo of a {}.", "{}", "a drawing of the {}."]
    per = template_embeddings(HashTextEncoder(), names, templates)
    assert per.shape == (3, 3, 16) and per.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(per, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(per[1, 2], HashTextEncoder().encode_texts(["a drawing of the dog."])[0], atol=1e-5)
    expected = class_embeddings(HashTextEncoder(), names, templates)
    np.testing.assert_allclose(ensemble_embeddings(per), expected, atol=1e-5)
    with pytest.raises(ValueError, match="templates"):
        ensemble_embeddings(per[0])


def test_per_template_accuracy_scores_each_template_alone():
    from vslib.zeroshot import per_template_accuracy

    images = np.eye(3, dtype=np.float32)
    labels = np.array([0, 1, 2])
    # Template 0 matches each class to its own axis; template 1 swaps classes 0 and 1.
    good = np.eye(3, dtype=np.float32)
    swapped = good[[1, 0, 2]]
    per = np.stack([good, swapped], axis=1)
    acc = per_template_accuracy(images, per, labels)
    np.testing.assert_allclose(acc, [1.0, 1 / 3])
    np.testing.assert_allclose(per_template_accuracy(images, per, labels, k=2), [1.0, 1.0])


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (SCORES, [0, 1, 2], "5 score rows but 3 labels"),
        (np.zeros((0, 3)), [], "^no samples given$"),
        (SCORES, [0, 1, 2, -1, 0], r"labels must be integers in \[0, 6\)"),
        (SCORES, [0, 1, 2, 6, 0], r"labels must be integers in \[0, 6\)"),
        (SCORES, [0.0, 1.0, 2.0, 5.0, 0.0], r"labels must be integers in \[0, 6\)"),
    ],
)
def test_scores_and_labels_are_checked(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        topk_accuracy(scores, labels, 1)
    with pytest.raises(ValueError, match=message):
        mean_per_class_recall(scores, labels)


def test_labels_at_the_edges_of_the_range_are_accepted():
    scores = np.eye(3)
    assert topk_accuracy(scores, [0, 1, 2], 1) == 1.0
    assert topk_accuracy(scores[::-1], [2, 1, 0], 1) == 1.0


def test_confusion_matrix_refuses_bad_indices_and_counts_an_empty_input():
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        confusion_matrix([0, 1, 2], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\)"):
        confusion_matrix([0, 1], [0, 3], num_classes=3)
    with pytest.raises(ValueError, match=r"pred must be integers in \[0, 3\)"):
        confusion_matrix([-1, 1], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match=r"pred must be integers in \[0, 3\)"):
        confusion_matrix([0.5, 1], [0, 1], num_classes=3)
    np.testing.assert_array_equal(confusion_matrix([], [], num_classes=2), np.zeros((2, 2)))
    assert confusion_matrix([2, 2], [2, 0], num_classes=3)[0, 2] == 1


def test_classify_accepts_single_vectors_and_scores_by_dot_product():
    image = np.array([0.6, 0.8], dtype=np.float64)
    classes = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, -0.8]])
    scores = classify(image, classes)
    assert scores.shape == (1, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[0], [0.6, 0.8, 0.36 - 0.64], atol=1e-6)
    np.testing.assert_allclose(classify(classes, classes[1]), [[0.0], [1.0], [-0.8]], atol=1e-6)
    with pytest.raises(ValueError, match="dim 2 but class embeddings dim 3"):
        classify(image, np.ones((2, 3)))


def test_retrieval_recall_checks_the_positive_sets():
    queries, gallery = np.eye(3), np.eye(3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        retrieval_recall_at_k(queries, gallery, [{0}, {1}, {2}], 0)
    with pytest.raises(ValueError, match="2 positive sets for 3 queries"):
        retrieval_recall_at_k(queries, gallery, [{0}, {1}], 1)
    with pytest.raises(ValueError, match="out of range for query 1"):
        retrieval_recall_at_k(queries, gallery, [{0}, {3}, {2}], 1)
    with pytest.raises(ValueError, match="out of range for query 0"):
        retrieval_recall_at_k(queries, gallery, [{-1}, {1}, {2}], 1)
    with pytest.raises(ValueError, match=r"\(3, 3\) boolean matrix"):
        retrieval_recall_at_k(queries, gallery, np.ones((3, 2), dtype=bool), 1)
    assert retrieval_recall_at_k(queries, gallery, [{0}, {1}, {2}], 1) == 1.0
    assert retrieval_recall_at_k(queries, gallery, [{2}, {0}, {1}], 2) == pytest.approx(1 / 3)


def test_top5_printout_without_labels_and_with_wrong_names():
    lines = top5_printout(SCORES, list("abcdef"), 0, k=2)
    assert lines == [" 1. a  0.900", " 2. f  0.500"]
    with pytest.raises(ValueError, match="6 classes but 2 names"):
        top5_printout(SCORES, ["a", "b"], 0)
    lines = top5_printout(SCORES, ["long-name", "b", "c", "d", "e", "f"], 4, labels=LABELS, k=1)
    assert lines == [" 1. b          0.600", "    true class 'long-name' ranks 5 with 0.200"]


def test_template_functions_refuse_wrong_shapes():
    from vslib.zeroshot import per_template_accuracy

    with pytest.raises(ValueError, match=r"\(classes, templates, dim\), got shape \(3, 3\)"):
        per_template_accuracy(np.eye(3), np.eye(3), [0, 1, 2])
