"""Pre-rendered pools of synthetic scenes as tensors, for fast training and evaluation."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vslib import synth


@dataclass
class ScenePool:
    """A split's scenes as one uint8 tensor (N, 3, S, S) plus labels, captions and facts.

    ``facts[i]`` is ``synth.scene_facts`` of scene ``i``: what a caption may truly say of it.
    ``boxes[i]`` is its dominant object's box ``(x0, y0, x1, y1)`` in pixels (``None`` for
    images that are not whole scenes, such as crops).
    """

    images: torch.Tensor
    labels: torch.Tensor
    captions: list[list[str]]
    facts: list[frozenset[str]]
    boxes: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


# One process's share of a pool: images (N, S, S, 3) uint8, labels, captions, facts, boxes (N, 4).
Chunk = tuple[np.ndarray, list[int], list[list[str]], list[frozenset[str]], np.ndarray]


def _render_chunk(context_probability: float | None, args: tuple[str, int, int, int]) -> Chunk:
    split, start, n, size = args
    return _chunk_arrays(synth.make_split(split, n, size=size, start=start,
                                          context_probability=context_probability))


def _chunk_arrays(scenes: list[synth.Scene]) -> Chunk:
    """Images (N, S, S, 3) uint8, labels, captions, facts and dominant-object boxes of rendered scenes."""
    images = np.stack([np.asarray(s.image, dtype=np.uint8) for s in scenes])
    return (images, [s.label_index for s in scenes], [list(s.captions) for s in scenes],
            [synth.scene_facts(s) for s in scenes], np.array([s.objects[0].box for s in scenes], dtype=np.float32))


def render_pool(split: str, n: int, size: int = 64, *, start: int = 0, workers: int | None = None,
                context_probability: float | None = None) -> ScenePool:
    """Render ``n`` scenes of ``split`` (deterministic) in parallel processes.

    ``context_probability`` overrides the split's (``synth.render_scene``).
    """
    render = functools.partial(_render_chunk, context_probability)
    return _render_in_parallel(render, split, n, size, start, workers)


def concat_pools(pools: list[ScenePool]) -> ScenePool:
    """One pool of several, in order (with boxes only when every pool has them)."""
    boxes = torch.cat([p.boxes for p in pools]) if all(p.boxes is not None for p in pools) else None
    return ScenePool(torch.cat([p.images for p in pools]), torch.cat([p.labels for p in pools]),
                     [c for p in pools for c in p.captions], [f for p in pools for f in p.facts], boxes)


def _render_in_parallel(render_chunk, split: str, n: int, size: int, start: int, workers: int | None) -> ScenePool:
    """Split seeds ``start .. start + n - 1`` into chunks, render them in processes, concatenate in order."""
    if n < 0:
        raise ValueError(f"the number of scenes must be >= 0, got {n}")
    if n == 0:
        return ScenePool(torch.empty(0, 3, size, size, dtype=torch.uint8), torch.empty(0, dtype=torch.long), [], [],
                         torch.empty(0, 4))
    workers = workers or min(4, os.cpu_count() or 1)
    chunk = max(1, -(-n // (workers * 4)))
    jobs = [(split, start + i, min(chunk, n - i), size) for i in range(0, n, chunk)]
    if workers == 1 or len(jobs) == 1:
        parts = [render_chunk(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as ex:
            parts = list(ex.map(render_chunk, jobs))
    return _pool_of(parts)


def _pool_of(parts: list[Chunk]) -> ScenePool:
    """One pool from chunks of ``_chunk_arrays`` output, in order."""
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([lab for p in parts for lab in p[1]])
    captions = [c for p in parts for c in p[2]]
    boxes = torch.from_numpy(np.concatenate([p[4] for p in parts]))
    return ScenePool(images, labels, captions, [f for p in parts for f in p[3]], boxes)


def twin_label(seed: int, label_index: int) -> str:
    """The class of a scene's shape twin: a different class, chosen by the seed."""
    return synth.CLASSES[(label_index + 1 + seed % (len(synth.CLASSES) - 1)) % len(synth.CLASSES)]


def _render_twin_chunk(args: tuple[str, int, int, int]) -> Chunk:
    split, start, n, size = args
    scenes = []
    for seed in range(start, start + n):
        scene = synth.render_scene(seed, size, split=split)
        twin = synth.render_scene(seed, size, split=split, label=twin_label(seed, scene.label_index),
                                  context_label=scene.label)
        scenes += [scene, twin]
    return _chunk_arrays(scenes)


def render_twin_pool(split: str, n: int, size: int = 64, *, start: int = 0, workers: int | None = None) -> ScenePool:
    """``n`` scenes, each followed by its shape twin: 2n images, scene ``i`` at ``2i``, its twin at ``2i + 1``.

    A twin is the same scene (background, colours, textures, layout, caption wording) with
    the dominant object drawn as another class (keeping the scene's context), so a scene and its twin differ only in that
    object's shape, and their captions only in its name.
    """
    return _render_in_parallel(_render_twin_chunk, split, n, size, start, workers)


def _render_appearance_chunk(appearances: int, repose: bool,
                             args: tuple[str, int, int, int]) -> Chunk:
    split, start, n, size = args
    scenes = []
    for seed in range(start, start + n):
        scenes += synth.render_appearances(seed, appearances, size, split=split, repose=repose)
    return _chunk_arrays(scenes)


def render_appearance_pool(split: str, n: int, appearances: int, size: int = 64, *, start: int = 0,
                           repose: bool = False, workers: int | None = None) -> ScenePool:
    """``n`` scenes, each as ``appearances`` renderings (``synth.render_appearances``), scene-major.

    Rendering ``a`` of scene ``i`` is image ``i * appearances + a``; the renderings of a
    scene share its geometry (shapes, sizes, poses, places) and nothing else, or with
    ``repose`` only its objects' shapes and sizes.
    """
    render = functools.partial(_render_appearance_chunk, appearances, repose)
    return _render_in_parallel(render, split, n, size, start, workers)


def pool_of_scenes(scenes: list[synth.Scene]) -> ScenePool:
    """Already rendered scenes as a pool, in order."""
    return _pool_of([_chunk_arrays(scenes)])


def eval_pool(split: str = "test", per_class: int = 50, size: int = 64, *, small_objects: int = 0) -> ScenePool:
    """The balanced 10-class synthetic Imagenette set as a pool."""
    return pool_of_scenes(synth.eval_set(split, per_class=per_class, size=size, small_objects=small_objects))


def object_crops(pool: ScenePool, index: torch.Tensor, margin: tuple[float, float] = (0.05, 0.3), *,
                 generator: torch.Generator | None = None) -> ScenePool:
    """Object-centric views of scenes ``index``: a square around each dominant object, at the pool's size.

    Each side is the object's longer side plus a random ``margin`` (a fraction of it) on
    each side, kept inside the image, so some background stays in view. Small objects may
    fall outside the crop, so the crops' captions and facts leave them out.
    """
    if pool.boxes is None:
        raise ValueError("object_crops needs a pool of whole scenes (with boxes)")
    size = pool.images.shape[-1]
    boxes = pool.boxes[index]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    longer = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values
    m = torch.empty(len(index)).uniform_(*margin, generator=generator)
    side = (longer * (1 + 2 * m)).clamp(max=size)
    centre = torch.minimum(torch.maximum(centre, side[:, None] / 2), size - side[:, None] / 2)
    theta = torch.zeros(len(index), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side / size
    theta[:, :, 2] = centre / size * 2 - 1
    grid = F.affine_grid(theta, [len(index), 3, size, size], align_corners=False)
    crops = F.grid_sample(pool.images[index].float(), grid, mode="bilinear", align_corners=False)
    images = crops.round().clamp(0, 255).to(torch.uint8)
    captions = [[c for c in pool.captions[i] if not _mentions_small(c)] for i in index.tolist()]
    facts = [frozenset(f for f in pool.facts[i] if not f.startswith("small:")) for i in index.tolist()]
    return ScenePool(images, pool.labels[index], captions, facts)


def _mentions_small(caption: str) -> bool:
    return any(f.startswith("small:") for f in synth.caption_facts(caption))
