"""Tests for vslib.synth, the synthetic scene world."""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import numpy as np
import pytest
import torch

from vslib import synth
from vslib.templates import IMAGENET_TEMPLATES, SHORT_TEMPLATES, fill


def pixels(scene: synth.Scene) -> np.ndarray:
    return np.asarray(scene.image, dtype=np.int16)


def digest(scene: synth.Scene) -> str:
    return hashlib.sha256(scene.image.tobytes()).hexdigest()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text)


def outside_boxes(shape: tuple[int, int], boxes, pad: int = 1) -> np.ndarray:
    mask = np.ones(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = False
    return mask


@pytest.fixture(scope="module")
def scenes() -> list[synth.Scene]:
    return synth.make_split("train", 300, 64)


def test_same_seed_gives_identical_scene():
    a, b = synth.render_scene(11, 64), synth.render_scene(11, 64)
    assert np.array_equal(pixels(a), pixels(b))
    assert a.captions == b.captions
    assert a.objects == b.objects
    assert a.background == b.background


def test_different_seeds_give_different_images():
    hashes = {digest(synth.render_scene(seed, 64)) for seed in range(20)}
    assert len(hashes) == 20


def test_image_is_rgb_at_requested_size():
    for size in (32, 64, 224):
        scene = synth.render_scene(3, size, small_objects=2)
        assert scene.image.mode == "RGB"
        assert scene.image.size == (size, size)
        assert len(scene.objects) == 3


def test_layout_does_not_depend_on_resolution():
    small, big = synth.render_scene(5, 32), synth.render_scene(5, 224)
    assert small.captions == big.captions
    assert [(o.shape, o.color, o.texture, o.size) for o in small.objects] == [
        (o.shape, o.color, o.texture, o.size) for o in big.objects
    ]
    # The same box in image-relative units, up to a pixel at 32 px.
    for a, b in zip(small.objects, big.objects):
        assert np.allclose(np.array(a.box) / 32, np.array(b.box) / 224, atol=2 / 32)


def test_splits_have_disjoint_streams():
    hashes = {split: {digest(s) for s in synth.make_split(split, 60, 32)} for split in synth.SPLITS}
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]
    assert all(len(h) == 60 for h in hashes.values())


def test_make_split_start_and_iter_split_agree():
    window = synth.make_split("val", 4, 32, start=10)
    assert [s.seed for s in window] == [10, 11, 12, 13]
    stream = synth.iter_split("val", 32, start=10)
    for expected in window:
        got = next(stream)
        assert got.seed == expected.seed and np.array_equal(pixels(got), pixels(expected))


def test_labels_and_small_object_counts_vary(scenes):
    labels = Counter(s.label for s in scenes)
    assert set(labels) == set(synth.CLASSES)
    counts = Counter(len(s.small_objects) for s in scenes)
    assert set(counts) == {0, 1, 2, 3}
    assert 0.35 < counts[0] / len(scenes) < 0.65
    assert {s.background for s in scenes} == set(synth.BACKGROUNDS)
    assert {s.objects[0].texture for s in scenes} == set(synth.TEXTURES)
    assert {s.objects[0].size for s in scenes} == set(synth.SIZES)
    assert {s.objects[0].color for s in scenes} == set(synth.COLORS)


def test_scene_properties(scenes):
    for scene in scenes[:20]:
        assert scene.objects[0].dominant
        assert not any(o.dominant for o in scene.small_objects)
        assert scene.label == scene.objects[0].shape
        assert synth.CLASSES[scene.label_index] == scene.label


def test_boxes_inside_image_and_dominant_larger(scenes):
    def area(box):
        return (box[2] - box[0]) * (box[3] - box[1])

    for scene in scenes:
        size = scene.image.size[0]
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        for small in scene.small_objects:
            assert area(scene.objects[0].box) > area(small.box)


def test_dominant_object_is_visible_in_its_named_colour(scenes):
    for scene in scenes:
        image = pixels(scene).astype(np.float32)
        dom = scene.objects[0]
        near = np.linalg.norm(image - np.array(synth.COLORS[dom.color]), axis=2) < 60
        x0, y0, x1, y1 = dom.box
        assert near[y0:y1, x0:x1].mean() > 0.08, (scene.seed, dom)
        # The background (everything outside the object boxes) is never that colour.
        rest = outside_boxes(near.shape, [o.box for o in scene.objects])
        if rest.any():
            assert near[rest].mean() < 0.05, (scene.seed, dom, scene.background)


def test_eval_set_is_balanced_and_deterministic():
    ev = synth.eval_set("test", per_class=3, size=32)
    assert len(ev) == 30
    assert Counter(s.label for s in ev) == {name: 3 for name in synth.CLASSES}
    assert all(not s.small_objects and s.split == "test" for s in ev)
    again = synth.eval_set("test", per_class=2, size=32)
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(again, ev))
    with pytest.raises(ValueError, match="per_class"):
        synth.eval_set(per_class=0)


def test_forcing_label_or_small_objects_keeps_the_rest():
    free = synth.render_scene(21, 64, small_objects=0)
    other = next(c for c in synth.CLASSES if c != free.label)
    forced = synth.render_scene(21, 64, small_objects=0, label=other)
    assert forced.label == other
    assert forced.background == free.background
    assert (forced.objects[0].color, forced.objects[0].size) == (free.objects[0].color, free.objects[0].size)

    crowded = synth.render_scene(21, 64, small_objects=3)
    assert len(crowded.small_objects) == 3
    assert crowded.objects[0] == free.objects[0]
    rest = outside_boxes((64, 64), [o.box for o in crowded.small_objects])
    assert np.array_equal(pixels(crowded)[rest], pixels(free)[rest])
    assert not np.array_equal(pixels(crowded), pixels(free))


def test_captions_use_only_the_vocabulary(scenes):
    vocabulary = set(synth.caption_vocabulary())
    for scene in scenes:
        for caption in scene.captions:
            assert caption == caption.lower()
            assert set(words(caption)) <= vocabulary, caption
    for color in synth.COLORS:
        for shape in synth.CLASSES:
            for prompt in fill(IMAGENET_TEMPLATES + SHORT_TEMPLATES, f"{color} {shape}"):
                assert set(words(prompt)) <= vocabulary, prompt


def test_captions_describe_the_dominant_object(scenes):
    for scene in scenes:
        dom = scene.objects[0]
        assert len(scene.captions) >= 5
        assert all(dom.shape in c for c in scene.captions)
        assert dom.color in scene.captions[0]
        assert scene.captions[0].split()[0] in ("a", "an")
    # Some captions are built from the CLIP templates.
    template_words = {"itap", "sculpture", "rendering", "blurry", "pixelated", "drawing", "video"}
    assert any(template_words & set(words(c)) for s in scenes for c in s.captions)


def test_captions_never_mention_absent_objects(scenes):
    for scene in scenes:
        shapes = {o.shape for o in scene.objects}
        colours = {o.color for o in scene.objects}
        sizes = {o.size for o in scene.objects}
        for caption in scene.captions:
            tokens = set(words(caption))
            assert tokens & set(synth.CLASSES) <= shapes, caption
            assert tokens & set(synth.COLORS) <= colours, caption
            assert tokens & set(synth.SIZES) <= sizes, caption


def test_some_captions_mention_small_objects():
    crowded = synth.make_split("val", 120, 32, small_objects=2)
    mentioned = 0
    for scene in crowded:
        phrases = [f"small {o.color} {o.shape}" for o in scene.small_objects]
        hits = [c for c in scene.captions if all(p in c for p in phrases)]
        mentioned += bool(hits)
    assert 0.1 < mentioned / len(crowded) < 0.45
    lonely = synth.make_split("val", 60, 32, small_objects=0)
    assert not any(" and a small " in c for s in lonely for c in s.captions)


def test_scene_with_small_object_and_its_twin_without():
    scene = synth.scene_with_small_object(4, 96, small_shape="star")
    assert len(scene.small_objects) == 1
    small = scene.small_objects[0]
    assert small.shape == "star" and scene.label != "star"
    twin = synth.without_small_objects(scene)
    assert twin.label == scene.label and not twin.small_objects
    rest = outside_boxes((96, 96), [small.box])
    assert np.array_equal(pixels(twin)[rest], pixels(scene)[rest])
    x0, y0, x1, y1 = small.box
    assert not np.array_equal(pixels(twin)[y0:y1, x0:x1], pixels(scene)[y0:y1, x0:x1])

    chosen = synth.scene_with_small_object(4, 64, small_shape="ring", dominant="arrow")
    assert (chosen.label, chosen.small_objects[0].shape) == ("arrow", "ring")
    with pytest.raises(ValueError, match="both 'heart'"):
        synth.scene_with_small_object(4, 64, small_shape="heart", dominant="heart")


def test_scene_with_small_object_dominant_size():
    sizes = {synth.scene_with_small_object(seed, 64, small_shape="cross").objects[0].size for seed in range(12)}
    assert sizes == {"large"}
    medium = synth.scene_with_small_object(2, 64, small_shape="cross", dominant_size="medium")
    assert medium.objects[0].size == "medium"
    assert synth.without_small_objects(medium).objects[0] == medium.objects[0]
    with pytest.raises(ValueError, match="unknown dominant_size 'huge'"):
        synth.scene_with_small_object(2, 64, small_shape="cross", dominant_size="huge")


def test_without_small_objects_of_a_drawn_scene_equals_rendering_none():
    scene = synth.render_scene(8, 64, small_objects=2)
    alone = synth.render_scene(8, 64, small_objects=0)
    assert np.array_equal(pixels(synth.without_small_objects(scene)), pixels(alone))


def test_crop_box_contains_box_stays_inside_and_is_square():
    crop = synth.crop_box((40, 50, 50, 60), 100, margin=0.5)
    assert crop == (35, 45, 55, 65)
    edge = synth.crop_box((0, 90, 10, 100), 100, margin=1.0)
    x0, y0, x1, y1 = edge
    assert 0 <= x0 and x1 <= 100 and 0 <= y0 and y1 <= 100
    assert x1 - x0 == y1 - y0 == 30
    assert x0 <= 0 and y0 <= 90 and x1 >= 10 and y1 >= 100
    with pytest.raises(ValueError, match="outside"):
        synth.crop_box((90, 90, 120, 95), 100)


def test_save_and_load_round_trip(tmp_path):
    originals = synth.make_split("test", 3, 32, small_objects=1)
    paths = synth.save_scenes(originals, tmp_path)
    assert [p.name for p in paths] == [f"test-{s.seed:05d}-{s.label}.png" for s in originals]
    assert (tmp_path / "labels.json").is_file()
    loaded = synth.load_scenes(tmp_path)
    for a, b in zip(originals, loaded):
        assert np.array_equal(pixels(a), pixels(b))
        assert (a.objects, a.captions, a.background, a.seed, a.split) == (
            b.objects, b.captions, b.background, b.seed, b.split,
        )


def test_save_rejects_bad_format_and_duplicates_and_load_reports_missing(tmp_path):
    scene = synth.render_scene(0, 32)
    with pytest.raises(ValueError, match="format 'gif'"):
        synth.save_scenes([scene], tmp_path, fmt="gif")
    with pytest.raises(ValueError, match="both be saved"):
        synth.save_scenes([scene, scene], tmp_path)
    [path] = synth.save_scenes([scene], tmp_path, fmt="jpg")
    path.unlink()
    with pytest.raises(FileNotFoundError, match=path.name):
        synth.load_scenes(tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "training"}, "unknown split 'training'"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"size": 8}, "size must be between"),
        ({"label": "dog"}, "unknown label 'dog'"),
        ({"small_objects": 4}, "small_objects must be"),
    ],
)
def test_render_scene_rejects_bad_arguments(kwargs, message):
    args = {"seed": 0, "size": 32, **kwargs}
    seed, size = args.pop("seed"), args.pop("size")
    with pytest.raises(ValueError, match=message):
        synth.render_scene(seed, size, **args)


def test_render_appearances_keep_geometry_and_change_the_rest():
    renderings = synth.render_appearances(7, 4, 64, split="val")
    first = synth.render_scene(7, 64, split="val")
    assert np.array_equal(np.asarray(renderings[0].image), np.asarray(first.image))
    assert renderings[0].captions == first.captions
    for other in renderings[1:]:
        assert [(o.shape, o.size, o.box) for o in other.objects] == [(o.shape, o.size, o.box) for o in first.objects]
        assert not np.array_equal(np.asarray(other.image), np.asarray(first.image))
        # each caption names the rendering's own colour, not the original's (unless drawn again)
        assert all(other.objects[0].color in c or other.objects[0].shape in c for c in other.captions)
    styles = {(r.background, r.objects[0].color, r.objects[0].texture) for r in renderings}
    assert len(styles) >= 3
    again = synth.render_appearances(7, 4, 64, split="val")
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(renderings, again))
    with pytest.raises(ValueError, match="n must be >= 1"):
        synth.render_appearances(7, 0)


def test_reposed_renderings_keep_the_objects_and_move_them():
    plain = synth.render_appearances(11, 4, 64, split="val")
    moved = synth.render_appearances(11, 4, 64, split="val", repose=True)
    first = moved[0]
    assert np.array_equal(np.asarray(first.image), np.asarray(plain[0].image))
    for other, restyled in zip(moved[1:], plain[1:]):
        assert [(o.shape, o.size) for o in other.objects] == [(o.shape, o.size) for o in first.objects]
        # the same colours and background as without repose: only poses and places change
        assert (other.background, [o.color for o in other.objects]) == (
            restyled.background, [o.color for o in restyled.objects])
        assert other.objects[0].box != first.objects[0].box
    # across many scenes the dominant object lands elsewhere and small objects keep clear of each other
    def centre(o):
        return np.array([(o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2])

    shifts = []
    for seed in range(40):
        a, b = synth.render_appearances(seed, 2, 64, split="val", repose=True)
        shifts.append(np.linalg.norm(centre(a.objects[0]) - centre(b.objects[0])))
        small = b.small_objects
        for i, o in enumerate(small):
            for q in small[i + 1:]:
                assert np.linalg.norm(centre(o) - centre(q)) > 4
    assert np.median(shifts) > 5
    again = synth.render_appearances(11, 4, 64, split="val", repose=True)
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(moved, again))


def test_typical_context_table_is_valid_and_each_class_has_its_own_first_tone():
    firsts = [ctx.tones[0] for ctx in synth.TYPICAL_CONTEXT.values()]
    assert sorted(synth.TYPICAL_CONTEXT) == sorted(synth.CLASSES)
    assert len(set(firsts)) == len(synth.CLASSES)
    for name, ctx in synth.TYPICAL_CONTEXT.items():
        assert ctx.background in synth.BACKGROUNDS and ctx.texture in synth.TEXTURES
        two_tone = ctx.background in ("gradient", "stripes")
        tones = [np.array(synth.BACKGROUND_COLORS[t], np.float32) for t in ctx.tones[: 1 + two_tone]]
        palette = synth._contrasting_colors(synth._Background(ctx.background, tones, 0.0, 0.1))
        assert set(ctx.colors) <= set(palette), name


def test_natural_splits_follow_the_typical_context_at_the_stated_rate_and_mixed_never():
    n = 400
    for split in ("train", "test"):
        scenes = synth.make_split(split, n, 16)
        typical = [s for s in scenes if s.context is not None]
        # Binomial(400, 0.7): 3.5 standard deviations is about +-0.08.
        assert abs(len(typical) / n - synth.CONTEXT_PROBABILITY) < 0.08
        for s in typical:
            ctx = synth.TYPICAL_CONTEXT[s.label]
            assert s.context == s.label
            assert s.background == ctx.background
            assert s.objects[0].color in ctx.colors and s.objects[0].texture == ctx.texture
    mixed = synth.make_split("mixed", n, 16)
    assert all(s.context is None for s in mixed)
    # In the mixed split a class shows up in many colours and on every background kind.
    stars = [s for s in mixed if s.label == "star"]
    assert len({s.objects[0].color for s in stars}) >= 5
    assert {s.background for s in stars} == set(synth.BACKGROUNDS)


def test_typical_scenes_show_their_class_tone_in_the_background():
    scene = next(s for s in synth.make_split("val", 50, 64, small_objects=0)
                 if s.context is not None and s.background == "plain")
    tone = np.array(synth.BACKGROUND_COLORS[synth.TYPICAL_CONTEXT[scene.label].tones[0]], np.float32)
    corner = pixels(scene)[:4, :4].reshape(-1, 3).astype(np.float32).mean(0)
    assert np.abs(corner - tone).max() <= 8.5  # the tone's jitter


def test_forcing_a_label_moves_a_typical_context_unless_the_context_class_is_kept():
    seed = next(i for i in range(100) if synth.render_scene(i, 32, small_objects=0).context is not None)
    free = synth.render_scene(seed, 64, small_objects=0)
    other = next(c for c in synth.CLASSES if synth.TYPICAL_CONTEXT[c].background != free.background)
    forced = synth.render_scene(seed, 64, small_objects=0, label=other)
    assert forced.context == other and forced.background == synth.TYPICAL_CONTEXT[other].background
    twin = synth.render_scene(seed, 64, small_objects=0, label=other, context_label=free.label)
    assert twin.label == other and twin.context == free.label
    assert (twin.background, twin.objects[0].color, twin.objects[0].texture) == (
        free.background, free.objects[0].color, free.objects[0].texture)
    assert not np.array_equal(pixels(twin), pixels(free))
    with pytest.raises(ValueError, match="context_label"):
        synth.render_scene(seed, 32, context_label="blob")


def test_save_and_load_keep_the_context(tmp_path):
    scenes = synth.make_split("test", 6, 32)
    assert {s.context is None for s in scenes} == {True, False}
    back = synth.load_scenes(tmp_path) if synth.save_scenes(scenes, tmp_path) else []
    assert [s.context for s in back] == [s.context for s in scenes]


def test_aspect_crop_is_the_largest_band_of_that_shape_around_the_box():
    # A wide band: full width, height side / aspect, centred on the box.
    assert synth.aspect_crop((80, 90, 110, 120), 192, 3 / 2) == (0, 41, 192, 169)
    # Near an edge it shifts back inside instead of shrinking.
    assert synth.aspect_crop((10, 0, 40, 20), 192, 3 / 2) == (0, 0, 192, 128)
    assert synth.aspect_crop((10, 170, 40, 192), 192, 3 / 2) == (0, 64, 192, 192)
    # A tall band is the same along the other axis.
    assert synth.aspect_crop((90, 80, 120, 110), 192, 2 / 3) == (41, 0, 169, 192)
    assert synth.aspect_crop((0, 0, 192, 192), 192, 1.0) == (0, 0, 192, 192)
    scene = synth.render_scene(3, 96, split="test")
    x0, y0, x1, y1 = synth.aspect_crop(scene.objects[0].box, 96, 2.0)
    assert (x1 - x0, y1 - y0) == (96, 48)
    with pytest.raises(ValueError, match="aspect must be positive"):
        synth.aspect_crop((0, 0, 10, 10), 64, 0)
    with pytest.raises(ValueError, match="outside the 64x64 image"):
        synth.aspect_crop((0, 0, 70, 10), 64, 2)


def test_context_probability_overrides_the_split_and_changes_nothing_else():
    natural = synth.make_split("train", 60, 16)
    never = synth.make_split("train", 60, 16, context_probability=0.0)
    always = synth.make_split("train", 60, 16, context_probability=1.0)
    assert any(s.context for s in natural) and not all(s.context for s in natural)
    assert all(s.context is None for s in never)
    assert all(s.context == s.label for s in always)
    for a, b, c in zip(natural, never, always):
        # The class, the number of small objects and their shapes come from the same draws.
        assert a.label == b.label == c.label
        assert [o.shape for o in a.objects] == [o.shape for o in b.objects] == [o.shape for o in c.objects]
    # A scene that was typical anyway is unchanged when forced to be typical.
    same = [(a, c) for a, c in zip(natural, always) if a.context is not None]
    assert same and all(np.array_equal(pixels(a), pixels(c)) for a, c in same)
    with pytest.raises(ValueError, match="context_probability"):
        synth.render_scene(0, 16, context_probability=1.5)


def test_training_pools_can_hold_a_share_of_scenes_without_typical_context():
    from vslib.zoo.common import captioned_training_pool

    pool, _ = captioned_training_pool(40, 16, shape_twins=False, mixed_fraction=0.5)
    assert len(pool) == 40
    first = synth.make_split("train", 20, 16)
    last = synth.make_split("train", 20, 16, start=20, context_probability=0.0)
    expected = np.stack([pixels(s) for s in first + last])
    assert np.array_equal(pool.images.permute(0, 2, 3, 1).numpy(), expected)
    assert pool.labels.tolist() == [s.label_index for s in first + last]


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_training_pools_may_be_all_natural_or_all_without_typical_context(fraction):
    from vslib.zoo.common import captioned_training_pool

    pool, _ = captioned_training_pool(12, 16, shape_twins=False, mixed_fraction=fraction)
    scenes = synth.make_split("train", 12, 16, context_probability=0.0 if fraction else None)
    assert np.array_equal(pool.images.permute(0, 2, 3, 1).numpy(), np.stack([pixels(s) for s in scenes]))
    with pytest.raises(ValueError, match="mixed_fraction"):
        captioned_training_pool(12, 16, shape_twins=False, mixed_fraction=1.5)


def test_an_empty_pool_has_the_image_shape_and_a_negative_count_is_refused():
    from vslib.zoo.data import concat_pools, render_pool

    empty = render_pool("train", 0, 16, workers=1)
    assert empty.images.shape == (0, 3, 16, 16) and empty.images.dtype == torch.uint8
    assert len(empty) == 0 and empty.captions == [] and empty.facts == []
    some = render_pool("train", 2, 16, workers=1)
    joined = concat_pools([empty, some])  # an empty share concatenates with a rendered one
    assert torch.equal(joined.images, some.images) and torch.equal(joined.labels, some.labels)
    with pytest.raises(ValueError, match=">= 0"):
        render_pool("train", -1, 16, workers=1)


def test_pools_carry_each_scenes_dominant_box_and_object_crops_zoom_onto_it():
    from vslib.zoo.data import object_crops, render_pool

    pool = render_pool("train", 24, 64, workers=1)
    scenes = synth.make_split("train", 24, 64)
    assert pool.boxes.tolist() == [list(s.objects[0].box) for s in scenes]
    index = torch.arange(24)
    crops = object_crops(pool, index, margin=(0.1, 0.1), generator=torch.Generator().manual_seed(0))
    assert crops.images.shape == pool.images.shape and torch.equal(crops.labels, pool.labels)

    def object_share(images: torch.Tensor, scene_index: int) -> float:
        # pixels of the dominant object's colour (it is solid-coloured or patterned in that colour)
        rgb = torch.tensor(synth.COLORS[scenes[scene_index].objects[0].color], dtype=torch.float32).view(3, 1, 1)
        return ((images.float() - rgb).abs().amax(0) < 40).float().mean().item()

    solid = [i for i, s in enumerate(scenes) if s.objects[0].texture == "solid" and s.objects[0].size != "large"]
    assert solid
    for i in solid:  # the crop fills more of the view with the object than the scene does
        assert object_share(crops.images[i], i) > 1.3 * object_share(pool.images[i], i), i
    for i in index.tolist():
        assert not any(f.startswith("small:") for f in crops.facts[i])
        assert crops.facts[i] == frozenset(f for f in pool.facts[i] if not f.startswith("small:"))
        assert crops.captions[i] and not any(re.search(r" and an? small ", c) for c in crops.captions[i])
        assert [c for c in pool.captions[i] if not re.search(r" and an? small ", c)] == crops.captions[i]
    with pytest.raises(ValueError, match="boxes"):
        object_crops(crops, index)
