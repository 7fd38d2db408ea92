"""Labelled image sets: the reader's ImageFolder-layout folder or the synthetic scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vslib import folders, synth


def _write(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 10), (value, 0, 0)).save(path)


@pytest.fixture()
def labelled(tmp_path) -> Path:
    for i in range(4):
        _write(tmp_path / "golf_ball" / f"{i}.png", 10 + i)
        _write(tmp_path / "tench" / f"{i}.jpg", 100 + i)
    (tmp_path / "tench" / "4.jpg").write_bytes(b"")  # skipped: empty
    (tmp_path / "tench" / "5.jpg").write_text("not an image")  # skipped when decoded
    (tmp_path / "empty_class").mkdir()
    return tmp_path


def test_folder_classes_labels_and_disjoint_splits(labelled):
    test = folders.load_image_folder(labelled, "test")
    val = folders.load_image_folder(labelled, "val")
    assert test.class_names == ["golf ball", "tench"]
    assert [p.relative_to(labelled).as_posix() for p in test.paths] == [
        "golf_ball/1.png", "golf_ball/3.png", "tench/1.jpg", "tench/3.jpg"]
    assert test.labels.tolist() == [0, 0, 1, 1]
    assert [im.getpixel((0, 0))[0] for im in test.images[:2]] == [11, 13]  # PNG is lossless
    assert not set(test.paths) & set(val.paths)
    assert test.captions[0] == "a photo of a golf ball." and test.label(2) == "tench"
    assert test.describe(2) == test.describe(2, detail=True) == "tench" and list(test.attributes()) == ["class"]
    phrases, index = test.phrases()
    assert phrases == ["a photo of a golf ball.", "a photo of a tench."] and index.tolist() == [0, 0, 1, 1]


def test_bad_files_are_skipped_with_a_reason(labelled):
    # The empty file is skipped before the split; the readable files alternate: val 0, 2, 5, test 1, 3.
    val = folders.load_image_folder(labelled, "val")
    assert [(p.name, r) for p, r in val.skipped] == [
        ("4.jpg", "empty file (0 bytes)"), ("5.jpg", "not an image (unknown or unsupported format)")]
    assert len(val.images) == len(val.labels) == len(val.paths) == 4
    assert [p.name for p, _ in folders.load_image_folder(labelled, "test").skipped] == ["4.jpg"]
    assert len(folders.load_image_folder(labelled, "val", per_class=1).images) == 2


def test_imagenette_layout_reads_the_val_folder(tmp_path):
    for split in ("train", "val"):
        for i in range(2):
            _write(tmp_path / split / "n01440764" / f"{split}{i}.png", i)
    got = folders.load_image_folder(tmp_path, "test")
    assert got.class_names == ["n01440764"] and [p.name for p in got.paths] == ["val1.png"]


def test_folder_without_class_folders_is_refused_clearly(tmp_path):
    _write(tmp_path / "a.png", 1)
    with pytest.raises(folders.NotALabelledFolderError, match="no class sub-folders.*1 files lie directly"):
        folders.load_image_folder(tmp_path)
    with pytest.raises(NotADirectoryError):
        folders.load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="split"):
        folders.load_image_folder(tmp_path, "train")


def test_eval_set_follows_the_environment(labelled, monkeypatch):
    monkeypatch.delenv("VSLIB_IMAGES", raising=False)
    monkeypatch.delenv("VSLIB_PER_CLASS", raising=False)
    scenes = synth.eval_set("test", per_class=2, size=32)
    got = folders.eval_set("test", per_class=2, size=32)
    assert got.class_names == list(synth.CLASSES) and len(got) == len(scenes)
    assert got.labels.tolist() == [s.label_index for s in scenes]
    assert np.array_equal(np.asarray(got.images[3]), np.asarray(scenes[3].image))
    obj = scenes[3].objects[0]
    assert got.describe(3) == f"{obj.color} {obj.texture} {obj.shape}"
    assert got.describe(3, detail=True).endswith(f"{obj.shape} on a {scenes[3].background} background")
    phrases, index = got.phrases()
    assert phrases[index[3]].endswith(f"{obj.color} {obj.shape}")
    monkeypatch.setenv("VSLIB_PER_CLASS", "1")
    assert len(folders.eval_set("test", per_class=2, size=32)) == len(synth.CLASSES)
    monkeypatch.setenv("VSLIB_IMAGES", str(labelled))
    assert folders.eval_set("test", per_class=50).class_names == ["golf ball", "tench"]
