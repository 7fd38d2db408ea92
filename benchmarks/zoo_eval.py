"""Evaluate the bundled tiny models through the public encoder API and update their model cards.

    python benchmarks/zoo_eval.py [--models tiny-dinov3 tiny-siglip2 tiny-dinotxt]

Writes ``benchmarks/results/zoo_eval.json`` and rewrites each checkpoint's ``README.md``
with these numbers. Everything is measured on held-out synthetic scenes: the natural
``test`` split, where a scene follows its class's typical context with probability 0.7,
and the ``mixed`` split (keys ``mixed/...``), where context is drawn independently of the
class; the drop between the two measures how much a model relies on context.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import vslib
from vslib import copy_detection, lexicon, probes, synth, zeroshot
from vslib.templates import IMAGENET_TEMPLATES
from vslib.zoo import checkpoint_path, common, model_cards

RESULTS = Path(__file__).resolve().parent / "results" / "zoo_eval.json"


def _class_weights(encoder, templates) -> np.ndarray:
    rows = []
    for name in synth.CLASSES:
        e = encoder.encode_texts([t.format(name) for t in templates], progress=False)
        m = e.mean(0)
        rows.append(m / np.linalg.norm(m))
    return np.stack(rows)


def _topk(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == labels[:, None]).any(1).mean())


def load_seconds(name: str, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        vslib.load_encoder(name, device="cpu")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def knn_top1(encoder, size: int, test_emb: np.ndarray, test_labels: np.ndarray) -> float:
    """20-NN top-1 of the test embeddings against a train-split gallery (``common.knn_top1``)."""
    gallery = synth.make_split("train", 5000, size, start=10_000_000)
    g = encoder.encode_images([s.image for s in gallery], progress=False)
    gl = torch.tensor([s.label_index for s in gallery])
    return common.knn_top1(torch.from_numpy(g), gl, torch.from_numpy(test_emb), torch.from_numpy(test_labels), k=20)


def zero_shot(encoder, test: list[synth.Scene], img: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    ens = img @ _class_weights(encoder, IMAGENET_TEMPLATES).T
    single = img @ _class_weights(encoder, ["a photo of a {}."]).T
    keys = [(s.objects[0].color, s.objects[0].shape) for s in test]
    queries = sorted(set(keys))
    q = encoder.encode_texts([f"a {c} {s}" for c, s in queries], progress=False)
    top5 = np.argsort(-(q @ img.T), axis=1)[:, :5]
    recall5 = float(np.mean([any(keys[j] == qk for j in top5[i]) for i, qk in enumerate(queries)]))
    return {
        "zero_shot_top1_80_templates": _topk(ens, labels, 1),
        "zero_shot_top5_80_templates": _topk(ens, labels, 5),
        "zero_shot_top1_single_template": _topk(single, labels, 1),
        "color_class_recall_at_5": recall5,
    }


def small_objects(encoder, size: int, n: int = 100) -> dict[str, float]:
    """Cosine of a caption naming the small object with the full scene and with a crop around it."""
    full, crop, dominant = [], [], []
    for i in range(n):
        s = synth.scene_with_small_object(i, size, small_shape=synth.CLASSES[i % 10])
        o = s.small_objects[0]
        box = synth.crop_box(o.box, size, margin=0.5)
        imgs = encoder.encode_images([s.image, s.image.crop(box)], progress=False)
        txt = encoder.encode_texts([f"a {o.color} {o.shape}", f"a {s.objects[0].color} {s.objects[0].shape}"],
                                   progress=False)
        full.append(float(imgs[0] @ txt[0]))
        crop.append(float(imgs[1] @ txt[0]))
        dominant.append(float(imgs[0] @ txt[1]))
    return {
        "small_object_caption_cosine_full_scene": float(np.mean(full)),
        "small_object_caption_cosine_crop": float(np.mean(crop)),
        "dominant_object_caption_cosine_full_scene": float(np.mean(dominant)),
        "small_object_crop_beats_full_scene": float(np.mean(np.array(crop) > np.array(full))),
    }


def multilingual(encoder, img: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Zero-shot top-1 with each language's class prompts (``vslib.lexicon``), English included."""
    out = {}
    for lang in lexicon.LANGUAGES:
        prompts = np.stack([encoder.encode_texts(lexicon.class_prompts(lang, name), progress=False)
                            for name in synth.CLASSES])
        out[f"zero_shot_top1_{lang}"] = _topk(img @ zeroshot.ensemble_embeddings(prompts).T, labels, 1)
    return out


def modality_gap(encoder, test: list[synth.Scene], img: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Median cosine of each image with its own first caption, and of same-class image pairs."""
    caps = encoder.encode_texts([s.captions[0] for s in test], progress=False)
    gap = common.modality_gap(torch.from_numpy(img), torch.from_numpy(caps), torch.from_numpy(labels))
    return {f"median_cos_{k}": v for k, v in gap.items()}


def patch_map_peaks(encoder, size: int, n: int = 200) -> dict[str, float]:
    """How often the top patch of "a {colour} {class}" for the dominant object lies on it (chapter 6's maps).

    A patch counts as on the object when its cell's centre lies inside the object's box;
    chance is the fraction of cells whose centre does.
    """
    hits, chance = [], []
    for s in synth.make_split("test", n, size, small_objects=0):
        dom = s.objects[0]
        sim = probes.patch_similarity_map(encoder, s.image, f"a {dom.color} {dom.shape}")
        x0, y0, x1, y1 = dom.box
        inside = [x0 <= (a + c) / 2 < x1 and y0 <= (b + d) / 2 < y1
                  for a, b, c, d in probes.patch_boxes(encoder, sim.shape, s.image.size)]
        hits.append(inside[int(np.argmax(sim))])
        chance.append(np.mean(inside))
    return {"patch_peak_on_dominant": float(np.mean(hits)), "patch_peak_chance": float(np.mean(chance))}


def split_metrics(name: str, enc, size: int, split: str) -> dict[str, float]:
    """Every metric of one evaluation split (``test`` or ``mixed``)."""
    test = synth.eval_set(split, per_class=50, size=size)
    img = enc.encode_images([s.image for s in test], progress=False)
    labels = np.array([s.label_index for s in test])
    # 20-NN for every model, so the image-text models' image embeddings (trained with captions
    # that name the class) read as a reference for tiny-dinov3's label-free ones.
    out = {"knn20_top1": knn_top1(enc, size, img, labels),
           "copy_detection_recall_at_1": copy_detection.copy_detection_recall(enc, [s.image for s in test])}
    if name != "tiny-dinov3":
        out.update(zero_shot(enc, test, img, labels))
        out.update(modality_gap(enc, test, img, labels))
    if name == "tiny-siglip2":
        out.update(multilingual(enc, img, labels))
    return out


def evaluate(name: str) -> dict:
    torch.manual_seed(0)
    enc = vslib.load_encoder(name, device="cpu")
    path = checkpoint_path(name)
    size = json.loads((path / "training.json").read_text())["recipe"].get("image_size", 64)
    out: dict = {"load_seconds": load_seconds(name),
                 "size_mb": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6}
    out.update(split_metrics(name, enc, size, "test"))
    out.update({f"mixed/{k}": v for k, v in split_metrics(name, enc, size, "mixed").items()})
    if name != "tiny-dinov3":
        out.update(small_objects(enc, 2 * size))
    if name == "tiny-dinotxt":
        out.update(patch_map_peaks(enc, size))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-dinov3", "tiny-siglip2", "tiny-dinotxt"])
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    for name in args.models:
        print(f"== {name}", flush=True)
        r = evaluate(name)
        results[name] = r
        for k, v in r.items():
            print(f"  {k:45s} {v:.3f}")
        path = checkpoint_path(name)
        model_cards.write_card(name, path, model_cards.load_report(path), benchmark=r)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
