"""Shared pieces of the tiny-model trainers: schedules, logging, evaluation, model cards."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from vslib import lexicon, synth
from vslib.zoo.data import concat_pools, render_pool, render_twin_pool


def cosine_schedule(step: int, total: int, start: float, end: float, warmup: int = 0) -> float:
    """Linear warmup from 0 to ``start``, then cosine decay to ``end``."""
    if step < warmup:
        return start * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(1.0, t)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and 1-d parameters (the usual ViT recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def knn_top1(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
             test_labels: torch.Tensor, k: int = 20, temperature: float = 0.07, num_classes: int = 10) -> float:
    """Weighted k-NN classification accuracy on L2-normalised features (the DINO protocol)."""
    train_feats = F.normalize(train_feats.float(), dim=1)
    test_feats = F.normalize(test_feats.float(), dim=1)
    sims = test_feats @ train_feats.T
    top, idx = sims.topk(k, dim=1)
    weights = (top / temperature).exp()
    votes = torch.zeros(test_feats.shape[0], num_classes)
    votes.scatter_add_(1, train_labels[idx], weights)
    return (votes.argmax(1) == test_labels).float().mean().item()


def modality_gap(image_emb: torch.Tensor, caption_emb: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Median cosine of matched image-caption pairs against that of same-class image pairs.

    Row ``i`` of ``caption_emb`` embeds a caption of image ``i``; both are L2-normalised.
    Released CLIP-family models put matched pairs at about 0.1-0.4, below image pairs.
    """
    matched = (image_emb * caption_emb).sum(1)
    sims = image_emb @ image_emb.T
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    return {"matched_image_caption": matched.median().item(), "same_class_images": sims[same].median().item()}


def caption_positives(texts: list[str], facts: list[frozenset[str]], true_captions: bool = True) -> torch.Tensor:
    """Which captions of a batch are positives for which images: a (texts, images) bool matrix.

    Caption ``t`` was drawn for image ``t``. With ``true_captions`` it is a positive for
    every image it is true of (``lexicon.caption_facts(t) <= facts[i]``, in any language): "a star" for every
    star of the batch. Otherwise it is a positive only for the images whose own caption is
    the same string, and a true caption worded differently counts as a negative.
    """
    if not true_captions:
        return torch.tensor([[a == b for b in texts] for a in texts])
    claims = [lexicon.caption_facts(t) for t in texts]
    return torch.tensor([[c <= f for f in facts] for c in claims])


class Logger:
    """Prints progress lines with elapsed time and keeps the loss history."""

    def __init__(self, total: int, every: int = 50) -> None:
        self.total, self.every, self.start = total, every, time.perf_counter()
        self.history: list[tuple[int, float]] = []
        # Values logged beside the loss (such as a collapse signal), at the printed steps.
        self.signals: list[dict[str, float]] = []

    def log(self, step: int, loss: float, **extra: float) -> None:
        self.history.append((step, loss))
        if step % self.every == 0 or step == self.total - 1:
            self.signals.append({"step": step, **{k: round(float(v), 5) for k, v in extra.items()}})
            parts = " ".join(f"{k}={v:.4g}" for k, v in extra.items())
            print(f"step {step:5d}/{self.total} loss {loss:.4f} {parts} [{self.elapsed():.0f}s]", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def sample_captioned_batch(captions: list[list[str]], batch_size: int,
                           generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """Random scene indices and one random caption of each (for the image-text trainers)."""
    idx = torch.randint(len(captions), (batch_size,), generator=generator)
    picks = torch.randint(1 << 30, (batch_size,), generator=generator).tolist()
    return idx, [captions[i][p % len(captions[i])] for i, p in zip(idx.tolist(), picks)]


def sample_twin_batch(captions: list[list[str]], batch_size: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """Like ``sample_captioned_batch`` on a twin pool (``data.render_twin_pool``): whole pairs.

    Each of the ``batch_size // 2`` pairs brings a scene and its shape twin with the same
    caption choice, so the two captions differ only in the dominant object's name: a hard
    negative that only shape can tell apart.
    """
    pairs = torch.randint(len(captions) // 2, (batch_size // 2,), generator=generator)
    picks = torch.randint(1 << 30, (batch_size // 2,), generator=generator).tolist()
    idx = torch.stack([pairs * 2, pairs * 2 + 1], dim=1).flatten()
    texts = [captions[i][picks[n // 2] % len(captions[i])] for n, i in enumerate(idx.tolist())]
    return idx, texts


def captioned_training_pool(images: int, size: int, shape_twins: bool, mixed_fraction: float = 0.0):
    """The image-text trainers' pool of ``images`` train-split images and its batch sampler.

    With ``shape_twins`` the pool holds ``images // 2`` scenes, each with its shape twin
    (``data.render_twin_pool``), sampled in pairs (``sample_twin_batch``). Otherwise a
    ``mixed_fraction`` of the scenes (the last seeds) never follow their class's typical
    context, as in the ``mixed`` split: there only the shape names the class.
    """
    if shape_twins:
        print(f"rendering {images // 2} training scenes and their shape twins ...", flush=True)
        return render_twin_pool("train", images // 2, size), sample_twin_batch
    if not 0.0 <= mixed_fraction <= 1.0:
        raise ValueError(f"mixed_fraction must lie in [0, 1], got {mixed_fraction}")
    mixed = int(round(images * mixed_fraction))
    print(f"rendering {images} training scenes ({mixed} without typical context) ...", flush=True)
    pools = []
    if images - mixed:
        pools.append(render_pool("train", images - mixed, size))
    if mixed:
        pools.append(render_pool("train", mixed, size, start=images - mixed, context_probability=0.0))
    return concat_pools(pools), sample_captioned_batch


def training_report(recipe, log: Logger, train_seconds: float, parameters: int, metrics: dict,
                    **extra) -> dict:
    """The ``training.json`` content shared by all trainers."""
    history = log.history
    return {
        "recipe": asdict(recipe),
        "train_seconds": round(train_seconds, 1),
        "loss_first": history[0][1],
        "loss_last": sum(v for _, v in history[-20:]) / min(20, len(history)),
        "loss_history": [round(v, 5) for _, v in history],
        "logged": log.signals,
        "parameters": parameters,
        "metrics": metrics,
        **extra,
    }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def dir_size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
