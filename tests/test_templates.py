"""Tests for vslib.templates."""

from __future__ import annotations

import pytest

from vslib.templates import IMAGENET_TEMPLATES, SHORT_TEMPLATES, fill


def test_imagenet_templates_are_the_80_unique_clip_prompts():
    assert len(IMAGENET_TEMPLATES) == 80
    assert len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert all(t == t.lower() and t.endswith(".") for t in IMAGENET_TEMPLATES)
    # Spot checks of the published list: first, last and the odd "itap" ones.
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
    assert IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert {"itap of a {}.", "itap of the {}.", "itap of my {}."} <= set(IMAGENET_TEMPLATES)


def test_short_templates_hold_one_placeholder_each():
    assert 3 <= len(SHORT_TEMPLATES) <= 10
    assert len(set(SHORT_TEMPLATES)) == len(SHORT_TEMPLATES)
    assert all(t.count("{}") == 1 for t in SHORT_TEMPLATES)
    assert "{}" in SHORT_TEMPLATES


def test_fill_substitutes_the_name_in_order():
    prompts = fill(("a photo of a {}.", "{}", "the {} in a video game."), "red circle")
    assert prompts == ["a photo of a red circle.", "red circle", "the red circle in a video game."]


def test_fill_all_imagenet_templates_keeps_count_and_removes_placeholders():
    prompts = fill(IMAGENET_TEMPLATES, "star")
    assert len(prompts) == 80
    assert all("star" in p and "{}" not in p for p in prompts)


@pytest.mark.parametrize("template", ["a photo.", "{} and {}"])
def test_fill_rejects_template_without_exactly_one_placeholder(template):
    with pytest.raises(ValueError, match="exactly once"):
        fill([template], "circle")


def test_fill_rejects_empty_name_and_single_string_templates():
    with pytest.raises(ValueError, match="empty"):
        fill(SHORT_TEMPLATES, "  ")
    with pytest.raises(TypeError, match="single string"):
        fill("a photo of a {}.", "circle")
