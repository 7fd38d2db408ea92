"""The chapters' labelled image sets: the synthetic scenes, or the reader's own folder.

:func:`eval_set` is the one call chapters 1, 3 and 4 use for their gallery and
evaluation images. Without ``VSLIB_IMAGES`` it renders the synthetic scenes
(:func:`vslib.synth.eval_set`); with it, it reads a labelled folder in the
ImageFolder layout (one sub-folder per class, as Imagenette ships it)::

    my_images/
        golf_ball/   a.jpg b.jpg ...
        parachute/   c.jpg ...

Class names come from the sub-folder names (underscores read as spaces). Bad files
are skipped and reported with their reasons, as :mod:`vslib.images` does. Both
sources answer the same questions (:class:`LabelledSet`), so chapter cells never
branch on where their images came from. Introduced in chapter 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vslib import config, synth
from vslib.images import ImageLoadError, load_image, scan_folder

__all__ = ["LabelledSet", "NotALabelledFolderError", "eval_set", "load_image_folder"]

#: Sub-folders that hold the class folders in Imagenette's layout (``val`` is its evaluation split).
_SPLIT_FOLDERS = ("val", "test", "train")


class NotALabelledFolderError(ValueError):
    """A folder that is not in the ImageFolder layout (no class sub-folders with images)."""


@dataclass
class LabelledSet:
    """Labelled images, from the synthetic world or from a folder.

    Attributes:
        images: RGB images.
        labels: Class index of each image.
        class_names: Class names, by index.
        captions: One caption per image (a scene's first caption; for a folder,
            ``"a photo of a <class>."``).
        scenes: The synthetic scenes (``None`` for a folder).
        paths: The files (``None`` for synthetic scenes).
        skipped: ``(path, reason)`` of files that could not be read.

    Introduced in chapter 1.
    """

    images: list[Image.Image]
    labels: np.ndarray
    class_names: list[str]
    captions: list[str]
    scenes: list[synth.Scene] | None = None
    paths: list[Path] | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def label(self, i: int) -> str:
        """The class name of image ``i``."""
        return self.class_names[int(self.labels[i])]

    def describe(self, i: int, detail: bool = False) -> str:
        """What is known about image ``i``: its class, and for a scene its dominant object.

        ``"red striped circle"``; with ``detail``, ``"a large striped red circle on a
        plain background"``. For a folder, the class name.
        """
        if self.scenes is None:
            return self.label(i)
        obj = self.scenes[i].objects[0]
        if detail:
            return f"a {obj.size} {obj.texture} {obj.color} {obj.shape} on a {self.scenes[i].background} background"
        return f"{obj.color} {obj.texture} {obj.shape}"

    def attributes(self) -> dict[str, np.ndarray]:
        """Per-image values of what is known about each image: the class, and for scenes more."""
        values = {"class": self.labels}
        if self.scenes is not None:
            values["colour"] = np.array([s.objects[0].color for s in self.scenes])
            values["texture"] = np.array([s.objects[0].texture for s in self.scenes])
            values["size"] = np.array([s.objects[0].size for s in self.scenes])
            values["background"] = np.array([s.background for s in self.scenes])
        return values

    def phrases(self) -> tuple[list[str], np.ndarray]:
        """Short phrases for text queries and, per image, the index of the one that matches it.

        For scenes: every colour and class (``"a red circle"``); for a folder, the classes
        (``"a photo of a golf ball."``). Introduced in chapter 4.
        """
        if self.scenes is None:
            return [_photo_of(c) for c in self.class_names], self.labels.copy()
        phrases = [_a(f"{colour} {shape}") for shape in synth.CLASSES for colour in synth.COLORS]
        index = [phrases.index(_a(f"{s.objects[0].color} {s.objects[0].shape}")) for s in self.scenes]
        return phrases, np.array(index)


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _photo_of(name: str) -> str:
    return f"a photo of {_a(name)}."


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_image_folder(root: str | Path, split: str = "test", per_class: int | None = None) -> LabelledSet:
    """Read an ImageFolder-layout folder (one sub-folder per class) as a :class:`LabelledSet`.

    A folder holding ``val/`` (or ``test/``, ``train/``) with the class folders inside,
    as Imagenette ships, is read from ``val/``. Within each class the files are sorted
    and split in two alternating halves, so ``"val"`` and ``"test"`` never share an image.

    Args:
        root: The folder.
        split: ``"val"`` (even-numbered files of each class) or ``"test"`` (odd-numbered).
        per_class: At most this many images per class (all by default).

    Raises:
        NotADirectoryError: If ``root`` is not a folder.
        NotALabelledFolderError: If it has no class sub-folders holding images.
        ValueError: For an unknown split.

    Introduced in chapter 1.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test' for a folder of images, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    for name in _SPLIT_FOLDERS:
        if (root / name).is_dir() and _class_folders(root / name):
            root = root / name
            break
    images, labels, paths, skipped, names = [], [], [], [], []
    for folder in _class_folders(root):
        scan = scan_folder(folder)
        skipped.extend(scan.skipped)
        files = scan.files[0 if split == "val" else 1 :: 2][:per_class]
        if not scan.files:
            continue
        names.append(folder.name.replace("_", " "))
        for path in files:
            try:
                images.append(load_image(path))
            except ImageLoadError as error:
                skipped.append((path, error.reason))
                continue
            labels.append(len(names) - 1)
            paths.append(path)
    loose = [p.name for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not names:
        hint = f" ({len(loose)} files lie directly in it)" if loose else ""
        raise NotALabelledFolderError(
            f"{root} has no class sub-folders with images{hint}: put each class's images in a sub-folder "
            "named after the class (the ImageFolder layout, as Imagenette ships)"
        )
    return LabelledSet(images=images, labels=np.array(labels, dtype=int), class_names=names,
                       captions=[_photo_of(names[k]) for k in labels], paths=paths, skipped=skipped)


def eval_set(split: str = "test", per_class: int = 50, size: int = 64) -> LabelledSet:
    """The chapters' labelled evaluation set: the reader's folder if ``VSLIB_IMAGES`` is set.

    Without it, ``10 * per_class`` synthetic scenes of ``size`` pixels
    (:func:`vslib.synth.eval_set`). With it, up to ``per_class`` images per class of
    that folder (see :func:`load_image_folder`; ``size`` does not apply: encoders
    resize as their models need). ``VSLIB_PER_CLASS`` caps ``per_class`` for a quick run.

    Introduced in chapter 1.
    """
    per_class = config.per_class(per_class)
    folder = config.image_folder()
    if folder is not None:
        return load_image_folder(folder, split=split, per_class=per_class)
    scenes = synth.eval_set(split, per_class=per_class, size=size)
    return LabelledSet(images=[s.image for s in scenes], labels=np.array([s.label_index for s in scenes]),
                       class_names=list(synth.CLASSES), captions=[s.captions[0] for s in scenes], scenes=scenes)
