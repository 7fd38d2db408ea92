"""Image-to-text with the bundled tiny-siglip2: reading a labels file, labels against captions,
the ranking itself, and ``vslib describe``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vslib import cli, synth, zeroshot
from vslib.describe import (
    describe_image,
    is_caption,
    label_embeddings,
    prompt_mode,
    read_labels,
)
from vslib.encoders import TextNotSupportedError, load_encoder
from vslib.images import ImageLoadError
from vslib.templates import SHORT_TEMPLATES

_ENCODERS: dict[str, object] = {}


def encoder(name: str):
    if name not in _ENCODERS:
        _ENCODERS[name] = load_encoder(name, device="cpu")
    return _ENCODERS[name]


@pytest.fixture(scope="module")
def scenes():
    return synth.make_split("test", 20, size=64, small_objects=0)


@pytest.fixture
def cached_models(monkeypatch):
    def load(name: str, device: str | None = None):
        if name not in ("tiny-siglip2", "tiny-dinov3"):
            raise KeyError(f"unknown model {name!r}")
        return encoder(name)

    monkeypatch.setattr(cli, "load_encoder", load)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the labels file -----------------------------------------------------------------------------


def test_labels_file_skips_blanks_comments_and_repeats(tmp_path):
    file = write(tmp_path / "labels.txt", "# shapes\n  red circle  \n\nblue square\n   # indented comment\nred circle\n")
    assert read_labels(file) == ["red circle", "blue square"]


def test_bad_labels_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_labels(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="holds no labels"):
        read_labels(write(tmp_path / "empty.txt", "\n# only a comment\n   \n"))
    with pytest.raises(ValueError, match="not a file"):
        read_labels(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_labels(tmp_path / "latin1.txt")


def test_labels_use_the_template_ensemble_and_captions_are_used_as_they_are():
    assert not any(is_caption(t) for t in ("circle", "red circle", "big red circle", "Hexagon"))
    assert all(is_caption(t) for t in ("a red circle", "The ring", "red circle.", "a red circle on grey"))
    assert all(is_caption(t) for t in ("red circle on grey background", "is it a ring?"))
    assert prompt_mode(["circle", "red ring"]) == "ensemble"
    assert prompt_mode(["circle", "a red ring"]) == "as-is"  # one caption: all as they are


# -- ranking -------------------------------------------------------------------------------------


def test_describe_ranks_by_cosine_with_the_right_text_embeddings(scenes):
    model = encoder("tiny-siglip2")
    image = scenes[0].image
    image_emb = model.encode_images([image])[0]
    labels = list(synth.CLASSES)
    found = describe_image(model, image, labels)
    assert found.model == "tiny-siglip2" and found.mode == "ensemble"
    ensemble = zeroshot.class_embeddings(model, labels) @ image_emb
    assert [r.text for r in found.ranked] == [labels[i] for i in np.argsort(-ensemble, kind="stable")]
    assert [r.score for r in found.ranked] == pytest.approx(sorted(ensemble, reverse=True), abs=1e-5)
    assert [r.rank for r in found.ranked] == list(range(1, len(labels) + 1))

    plain = describe_image(model, image, labels, prompts="as-is", top=3)
    direct = model.encode_texts(labels) @ image_emb
    assert plain.mode == "as-is" and len(plain.ranked) == 3
    assert [r.score for r in plain.ranked] == pytest.approx(sorted(direct, reverse=True)[:3], abs=1e-5)
    assert not np.allclose(direct, ensemble, atol=1e-3)  # the mode matters

    short = describe_image(model, image, labels, prompts="ensemble", templates=SHORT_TEMPLATES)
    expected = zeroshot.class_embeddings(model, labels, SHORT_TEMPLATES) @ image_emb
    assert short.ranked[0].score == pytest.approx(expected.max(), abs=1e-5)


def test_the_right_label_and_the_right_caption_usually_come_first(scenes):
    """Far above chance (1 in 10 labels, 1 in 20 captions), as zero-shot and retrieval are."""
    model = encoder("tiny-siglip2")
    images = model.encode_images([s.image for s in scenes])
    labels, mode = label_embeddings(model, list(synth.CLASSES))
    assert mode == "ensemble"
    predicted = [synth.CLASSES[i] for i in (images @ labels.T).argmax(axis=1)]
    assert np.mean([p == s.label for p, s in zip(predicted, scenes)]) >= 0.5
    captions = [f"a {s.objects[0].color} {s.label}" for s in scenes]
    texts, mode = label_embeddings(model, captions)
    assert mode == "as-is"
    assert np.mean((images @ texts.T).argmax(axis=1) == np.arange(len(scenes))) >= 0.5


def test_models_without_text_and_images_that_do_not_load_are_refused(tmp_path):
    with pytest.raises(TextNotSupportedError, match="no text tower"):
        describe_image(encoder("tiny-dinov3"), tmp_path / "not-even-there.png", ["circle"])
    with pytest.raises(ImageLoadError):
        describe_image(encoder("tiny-siglip2"), write(tmp_path / "fake.png", "not a picture"), ["circle"])
    with pytest.raises(ValueError, match="no labels"):
        describe_image(encoder("tiny-siglip2"), tmp_path / "x.png", [])
    with pytest.raises(ValueError, match="prompts"):
        label_embeddings(encoder("tiny-siglip2"), ["circle"], prompts="templates")


# -- vslib describe ------------------------------------------------------------------------------


def test_describe_command_prints_the_best_labels(scenes, tmp_path, cached_models, capsys):
    picture = tmp_path / "scene.png"
    scenes[0].image.save(picture)
    labels = write(tmp_path / "labels.txt", "# the ten shapes\n" + "\n".join(synth.CLASSES) + "\n")
    assert cli.main(["describe", str(picture), "--labels", str(labels), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = describe_image(encoder("tiny-siglip2"), picture, list(synth.CLASSES), top=3)
    assert lines[0].startswith("tiny-siglip2 ranks 10 lines") and "template ensemble" in lines[0]
    assert [line.split(maxsplit=2)[2] for line in lines[2:]] == [r.text for r in expected.ranked]

    captions = write(tmp_path / "captions.txt", "a red circle\na blue square on a plain background\n")
    assert cli.main(["describe", str(picture), "--labels", str(captions), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "tiny-siglip2" and result["prompts"] == "as-is"
    assert [row["rank"] for row in result["labels"]] == [1, 2]
    assert result["labels"][0]["score"] >= result["labels"][1]["score"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing labels", "does not exist"),
        ("empty labels", "holds no labels"),
        ("not an image", "not an image"),
        ("no image", "is not a file"),
        ("image-only model", "no text tower"),
        ("unknown model", "unknown model"),
    ],
)
def test_describe_command_errors_are_one_line(case, message, scenes, tmp_path, cached_models, capsys):
    picture = tmp_path / "scene.png"
    scenes[0].image.save(picture)
    labels = write(tmp_path / "labels.txt", "circle\nsquare\n")
    args = {"image": picture, "--labels": labels}
    if case == "missing labels":
        args["--labels"] = tmp_path / "nope.txt"
    elif case == "empty labels":
        args["--labels"] = write(tmp_path / "empty.txt", "# nothing\n")
    elif case == "not an image":
        args["image"] = write(tmp_path / "notes.png", "hello")
    elif case == "no image":
        args["image"] = tmp_path / "gone.png"
    elif case == "image-only model":
        args["--model"] = "tiny-dinov3"
    elif case == "unknown model":
        args["--model"] = "tiny-unknown"
    argv = ["describe", str(args.pop("image"))] + [str(x) for pair in args.items() for x in pair]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("vslib describe: error:") and message in err
    assert len(err.strip().splitlines()) == 1
