"""Evaluate the bundled tiny models through the public encoder API and update their model cards.

    python benchmarks/zoo_eval.py [--models tiny-dinov3 tiny-siglip2 tiny-dinotxt]

Writes ``benchmarks/results/zoo_eval.json`` and rewrites each checkpoint's ``README.md``
with these numbers. Everything is measured on held-out synthetic scenes.
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
from vslib import synth
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


def evaluate(name: str) -> dict:
    torch.manual_seed(0)
    enc = vslib.load_encoder(name, device="cpu")
    path = checkpoint_path(name)
    size = json.loads((path / "training.json").read_text())["recipe"].get("image_size", 64)
    out: dict = {"load_seconds": load_seconds(name),
                 "size_mb": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6}
    test = synth.eval_set("test", per_class=50, size=size)
    img = enc.encode_images([s.image for s in test], progress=False)
    labels = np.array([s.label_index for s in test])
    # 20-NN for every model, so the image-text models' image embeddings (trained with captions
    # that name the class) read as a reference for tiny-dinov3's label-free ones.
    out["knn20_top1"] = knn_top1(enc, size, img, labels)
    if name != "tiny-dinov3":
        out.update(zero_shot(enc, test, img, labels))
        out.update(small_objects(enc, 2 * size))
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
