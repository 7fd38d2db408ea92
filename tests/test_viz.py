"""Tests for vslib.viz: each figure has the expected axes, titles and labels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from vslib import viz  # noqa: E402
from vslib.calibration import reliability  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (24, 24), (30 * i, 80, 200 - 30 * i)) for i in range(n)]


def test_image_grid_has_one_titled_axis_per_image():
    titles = [f"image {i}" for i in range(5)]
    fig = viz.image_grid(_images(5), titles=titles, cols=3, suptitle="five")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes] == titles
    assert fig.get_suptitle() == "five"
    with pytest.raises(ValueError, match="titles"):
        viz.image_grid(_images(2), titles=["one"])


def test_results_grid_shows_the_query_then_ranked_scores():
    results = list(zip(_images(3), [0.91, 0.5, 0.25]))
    fig = viz.results_grid("a red circle", results, captions=["circle", "ring", "star"], correct=[True, False, False])
    assert len(fig.axes) == 4
    assert fig.axes[0].get_title() == "query (text)"
    assert "a red circle" in fig.axes[0].texts[0].get_text()
    assert fig.axes[1].get_title() == "#1  0.910\ncircle"
    assert fig.axes[3].get_title().startswith("#3  0.250")
    # One coloured frame per result: green for the hit, red for the misses.
    frames = [ax.patches[-1].get_edgecolor() for ax in fig.axes[1:]]
    assert frames[0] == to_rgba("tab:green")
    assert frames[1] == frames[2] == to_rgba("tab:red")


def test_results_grid_with_an_image_query_wraps_rows():
    fig = viz.results_grid(_images(1)[0], list(zip(_images(7), np.linspace(0.9, 0.3, 7))), cols=4)
    assert len(fig.axes) == 8
    assert fig.axes[0].get_title() == "query"
    assert len(fig.axes[0].images) == 1


def test_heatmap_overlay_draws_the_map_over_the_image_with_a_colour_bar():
    image = Image.new("RGB", (64, 48))
    fig = viz.heatmap_overlay(image, np.random.default_rng(0).random((3, 4)), title="red", boxes=[(4, 4, 20, 20)])
    overlay, colorbar = fig.axes
    assert overlay.get_title() == "red"
    assert len(overlay.images) == 2
    assert overlay.images[1].get_extent() == [0, 64, 48, 0]
    assert len(overlay.patches) == 1
    assert colorbar.get_ylabel() == "cosine similarity"
    assert overlay.get_xlabel() and overlay.get_ylabel()


def test_score_histograms_plots_one_labelled_group_each():
    groups = {"image-image": np.full(50, 0.6), "image-text": np.linspace(0.1, 0.3, 50)}
    fig = viz.score_histograms(groups, title="modality gap")
    (ax,) = fig.axes
    assert ax.get_title() == "modality gap"
    assert ax.get_xlabel() == "cosine similarity" and ax.get_ylabel() == "density"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["image-image (mean 0.600)", "image-text (mean 0.200)"]


def test_reliability_diagram_has_a_panel_per_calibration_titled_with_its_ece():
    good = reliability([0.25] * 4 + [0.75] * 4, [1, 0, 0, 0, 1, 1, 1, 0])
    bad = reliability([0.15, 0.15, 0.85, 0.85], [0, 1, 1, 1])
    fig = viz.reliability_diagram(good)
    assert len(fig.axes) == 1
    assert fig.axes[0].get_title() == "ECE = 0.000"
    # Two filled bins, two bars.
    assert len(fig.axes[0].patches) == 2
    fig = viz.reliability_diagram({"fitted": good, "fixed threshold": bad}, title="comparison")
    assert [ax.get_title() for ax in fig.axes] == ["fitted: ECE = 0.000", "fixed threshold: ECE = 0.250"]
    assert all(ax.get_xlabel() == "confidence" for ax in fig.axes)


def test_confusion_matrix_plot_labels_classes_and_writes_counts():
    cm = np.array([[3, 1, 0], [0, 2, 2], [1, 0, 5]])
    fig = viz.confusion_matrix_plot(cm, ["circle", "square", "star"])
    ax, colorbar = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["circle", "square", "star"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["circle", "square", "star"]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert [t.get_text() for t in ax.texts] == [str(v) for v in cm.ravel()]
    fig = viz.confusion_matrix_plot(cm, ["circle", "square", "star"], normalize=True)
    assert fig.axes[0].texts[0].get_text() == "0.75"
    with pytest.raises(ValueError, match="classes"):
        viz.confusion_matrix_plot(cm, ["a", "b"])


def test_patch_grid_views_share_one_pixel_scale_and_draw_the_grid():
    square = np.zeros((64, 64, 3))
    wide = np.ones((48, 80, 3))
    fig = viz.patch_grid_views([square, wide], 16, titles=["4 x 4", "3 x 5"], suptitle="grids")
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["4 x 4", "3 x 5"]
    for ax in fig.axes:
        assert ax.get_xlim() == (0, 80) and ax.get_ylim() == (64, 0)
    # Grid lines: 5 + 5 for the 64 px square, 6 + 4 for the 80 x 48 view.
    assert [len(ax.lines) for ax in fig.axes] == [10, 10]
    vertical = [line.get_xdata()[0] for line in fig.axes[1].lines if line.get_xdata()[0] == line.get_xdata()[1]]
    assert vertical == [0, 16, 32, 48, 64, 80]
    with pytest.raises(ValueError, match="titles"):
        viz.patch_grid_views([square], 16, titles=["a", "b"])
    with pytest.raises(ValueError, match="no views"):
        viz.patch_grid_views([], 16)
