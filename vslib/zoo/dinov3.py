"""Train ``tiny-dinov3``: a transformers ``DINOv3ViTModel`` learned by DINO self-distillation.

No labels are used: a student network matches the sharpened output of an
exponential-moving-average teacher across multi-crop views of the same scene
(Caron et al., 2021). Labels only enter the evaluation (20-NN on frozen CLS features).

Every view is a crop of the same rendering of a scene, with flips, colour jitter,
grayscale and, with probability 0.2, shuffled RGB channels. In world v2 (``vslib.synth``)
a scene follows its class's typical context with probability 0.7, so what views share,
and what DINO learns first, is context: background, colours, texture. That is what copy
detection needs, and it gives 20-NN on the natural test split far above chance; on the
``mixed`` split, where context says nothing about the class, what is left is the shape
the backbone learned. An instance term (InfoNCE between the two global views of each scene,
against the other scenes of the batch) makes the CLS feature tell look-alike scenes of one
class apart, which copy detection needs. A second instance term (``shape_instance``) pairs each
scene with a global crop of a restyled and reposed rendering of it (new background, colours,
textures, rotations and places; the same shapes and sizes), so finding that twin among the
batch takes shape, which is what lifts the ``mixed`` split. Views from renderings that share only the geometry
(``appearances``) collapsed in world v1 unless Sinkhorn-Knopp balanced the teacher targets and
a KoLeo term spread the features (both stay on). The trainer logs the mean cosine between the
teacher's CLS features of a batch beside the loss: near 1 means collapse.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

from vslib.zoo import augment, common
from vslib.zoo.data import eval_pool, render_appearance_pool, render_pool


@dataclass
class DinoRecipe:
    """Hyper-parameters of the tiny-dinov3 run (recorded in the model card)."""

    image_size: int = 64
    # A finer grid does not teach more shape: patch 8 (8 x 8 tokens; 0.7 s a step on 2 threads,
    # 2.5 times patch 16) gave, after 1,000 steps, 20-NN 0.712 on test and 0.120 on mixed and
    # copy detection 0.736, against 0.714 / 0.146 / 0.782 for patch 16 at the same length.
    patch_size: int = 16
    hidden_size: int = 96
    layers: int = 4
    heads: int = 3
    mlp_ratio: int = 4
    registers: int = 4
    train_scenes: int = 8000
    steps: int = 3000
    batch_size: int = 64
    local_crops: int = 3
    local_size: int = 32
    # Global crops keep most of the scene (and so the dominant object); local crops are
    # large enough to show part of it. 1,000-step runs (1 thread) of two variants did not beat
    # the bundled run on copy detection (0.644): global crops of 0.7-1.0, local crops of
    # 0.2-0.5 and 2,048 prototypes gave 20-NN 0.708 on test, 0.150 on mixed, copy detection
    # 0.548; no channel shuffle, no grayscale and KoLeo 0.3 gave 0.678, 0.170 and 0.580.
    # Edited copies are hard for a layout reason: with the bundled model, JPEG alone or
    # brightness alone leaves recall@1 at 1.000 and the crop alone brings it to 0.652, while
    # raw 4 x 4 thumbnails score 0.936 on the full edit. Scenes of one class-typical context
    # differ mostly in where things lie, which crop-invariant features let go of.
    global_scale: tuple[float, float] = (0.5, 1.0)
    local_scale: tuple[float, float] = (0.15, 0.5)
    channel_shuffle: float = 0.2
    lr: float = 6e-4
    min_lr: float = 1e-5
    warmup: int = 100
    weight_decay: float = 0.04
    out_dim: int = 512
    head_hidden: int = 384
    bottleneck: int = 128
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    ema_start: float = 0.99
    monitor_every: int = 200
    # Views from different renderings of a scene (same geometry, new background, colours
    # and textures; ``synth.render_appearances``): 0 crops every view from one rendering.
    # DINO's views stay on one rendering (a 1,000-step pilot reached 20-NN 0.666 on test,
    # against 0.17-0.20 for views across renderings in world v1); the second rendering feeds
    # only ``shape_instance`` below.
    appearances: int = 2
    # Renderings that also turn and move every object (``render_appearances(..., repose=True)``),
    # so views share the objects' shapes but not where they lie. In world v1, as DINO views,
    # 1,000-step runs (1 thread) reached 20-NN 0.295 on val at step 750 against about 0.21, but
    # the full run (1,500 steps, 2 threads) scored 0.224 on the test split against 0.222 without.
    repose: bool = True
    # With ``appearances`` >= 2: both global views come from the scene's own rendering (its
    # class's context, usually) and each local view, with this probability, from a restyled
    # one. The student must then predict, from a crop whose colours and background are new,
    # the teacher's output on the original: what the two share is the objects' shapes.
    restyled_locals: float = 0.0
    # DINOv2's Sinkhorn-Knopp teacher targets instead of centring, and its KoLeo spreading term.
    sinkhorn: bool = True
    koleo: float = 0.1
    # Pilots (1,000 steps, 1 thread; 20-NN test / mixed, copy detection recall@1) against the
    # run without the two terms below (3,000 steps: 0.710 / 0.152 / 0.644): iBOT weight 1 gave
    # 0.672 / 0.170 / 0.61; the instance term at weight 0.5 gave 0.686 / 0.106 / 0.82; with half
    # the local views restyled on top, 0.710 / 0.102 / 0.734. Full runs with the instance term:
    # weight 0.5 at temperature 0.1 (bundled) 0.714 / 0.106 / 0.796; weight 1 at 0.05, 0.700 /
    # 0.122 / 0.794. The instance term lifts copy detection; none of them teaches shape.
    # iBOT's masked-patch loss (Zhou et al., 2022; kept in DINOv2 and DINOv3): with
    # probability ``mask_probability`` a global view reaches the student with a share of its
    # patches (drawn from ``mask_ratio``) replaced by the mask token, and the student predicts,
    # through the same head, the teacher's prototype scores for those patches. 0 turns it off.
    ibot: float = 0.0
    mask_probability: float = 0.5
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    # Instance discrimination on the CLS features of the two global views (InfoNCE over the
    # batch, as in SSCD's copy-detection descriptor): each view must find its twin among the
    # other scenes of the batch, scenes of the same class included. 0 turns it off.
    instance: float = 0.5
    instance_temp: float = 0.1
    # The same InfoNCE between the first global view and a global crop of a restyled and
    # reposed rendering of the scene (needs ``appearances`` >= 2; with ``repose``,
    # ``render_appearances(..., repose=True)``): the two share only the objects' shapes and sizes,
    # so finding the twin among the batch takes shape. 0 turns it off. Pilots (1,000 steps,
    # 1 thread, with appearances=2 and repose; 20-NN test / mixed, copy detection recall@1):
    # weight 0.5 gave 0.714 / 0.146 / 0.782 and weight 1 gave 0.690 / 0.170 / 0.696, against
    # 0.686 / 0.106 / 0.82 without it: a little shape on the mixed split, paid for in copy
    # detection at that length. The full 3,000-step run at weight 0.5 (bundled; 1 thread, 31 min)
    # gained on all three against the same recipe without it: 0.720 / 0.178 / 0.818 against
    # 0.714 / 0.106 / 0.796. Two more 1,000-step pilots lost on all three: weight 2 gave
    # 0.672 / 0.144 / 0.602, and twins whose dominant object is also redrawn at a random size
    # (so that only the shapes are shared, not the sizes), weight 1, gave 0.688 / 0.120 / 0.758.
    # Neither the CLS token nor the mean of the patch tokens of the bundled model holds shape
    # (20-NN on mixed: 0.178 and 0.114 at 64 px, 0.124 and 0.128 at 128 px), although a head
    # trained on its frozen patch tokens with captions reaches 0.542 there (tiny-dinotxt).
    # Length gains, but the gain did not survive tiny-dinotxt. The bundled run used 1 thread
    # (3,000 steps, 31 min); 2 threads take 0.28 s a step. 4,000 steps on 2 threads (20 min) gave
    # 0.740 / 0.202 / 0.848, and 8,000 steps (37.6 min, ``--steps 8000``) 0.752 / 0.244 / 0.860:
    # its validation 20-NN rose from 0.730 at step 600 to 0.775 at step 4,200 and stayed at
    # 0.770-0.775 to the end, so more steps alone will not reach 0.85. It is not bundled because
    # tiny-dinotxt, retrained on it, gained at most 0.008 of zero-shot on test (0.890 with four
    # blocks, against the bundled 0.882) and only where it left the released models' modality
    # gap (matched image-caption cosines near 0 at its temperature, 0.45 at half of it); at
    # temperature 350 the cosines stayed inside it (0.218) but zero-shot fell to 0.868 (see that
    # recipe).
    shape_instance: float = 0.5
    seed: int = 0


def backbone_config(r: DinoRecipe) -> DINOv3ViTConfig:
    return DINOv3ViTConfig(
        image_size=r.image_size,
        patch_size=r.patch_size,
        hidden_size=r.hidden_size,
        num_hidden_layers=r.layers,
        num_attention_heads=r.heads,
        intermediate_size=r.hidden_size * r.mlp_ratio,
        num_register_tokens=r.registers,
        layerscale_value=0.1,
    )


class DinoHead(nn.Module):
    """MLP projector and L2-normalised prototypes (the DINO head)."""

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.prototypes, dim=-1))


class DinoNet(nn.Module):
    def __init__(self, backbone: DINOv3ViTModel, head: DinoHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor, with_features: bool = False):
        features = self.backbone(pixel_values=x).pooler_output
        out = self.head(features)
        return (out, features) if with_features else out

    def tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None, *, patches: bool = True):
        """Head scores of the CLS token, of every patch token (``None`` without ``patches``), and the CLS features."""
        hidden = self.backbone(pixel_values=x, bool_masked_pos=masks)
        patch_scores = None
        if patches:
            patch_scores = self.head(hidden.last_hidden_state[:, 1 + self.backbone.config.num_register_tokens :])
        return self.head(hidden.pooler_output), patch_scores, hidden.pooler_output


@torch.no_grad()
def sinkhorn_targets(logits: torch.Tensor, temp: float, iterations: int = 3) -> torch.Tensor:
    """Teacher targets with equal mass on every prototype over the batch (Sinkhorn-Knopp).

    Rows (samples) and columns (prototypes) of ``exp(logits / temp)`` are normalised in
    turn, so no prototype can take the whole batch: the collapse that centring alone
    only slows down.
    """
    q = torch.exp((logits - logits.max()) / temp).T  # (prototypes, batch)
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * k
        q /= q.sum(dim=0, keepdim=True) * b
    return (q * b).T


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko spreading term: minus the mean log distance to the nearest neighbour."""
    x = F.normalize(features, dim=-1)
    dots = x @ x.T
    dots.fill_diagonal_(-2.0)
    nearest = dots.argmax(dim=1)
    return -torch.log((x - x[nearest]).norm(dim=-1) + eps).mean()


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor | None,
              student_temp: float, teacher_temp: float) -> torch.Tensor:
    """Cross-entropy between each teacher global view and every other student view.

    With ``center=None`` the teacher targets come from ``sinkhorn_targets``.
    """
    if center is None:
        targets = [sinkhorn_targets(t, teacher_temp) for t in teacher]
    else:
        targets = [F.softmax((t - center) / teacher_temp, dim=-1) for t in teacher]
    logps = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    total, n = 0.0, 0
    for i, t in enumerate(targets):
        for j, lp in enumerate(logps):
            if i == j:
                continue
            total = total + (-(t * lp).sum(-1)).mean()
            n += 1
    return total / n


def restyled_source(pool_images: torch.Tensor, idx: torch.Tensor, r: DinoRecipe,
                    g: torch.Generator) -> torch.Tensor:
    """For each scene of ``idx``, one of its restyled renderings (never the scene's own)."""
    a = r.appearances
    if a < 2:
        raise ValueError(f"restyled views (shape_instance, restyled_locals) need appearances >= 2, got {a}")
    return pool_images[idx * a + 1 + torch.randint(a - 1, idx.shape, generator=g)]


def view_sources(pool_images: torch.Tensor, idx: torch.Tensor, r: DinoRecipe,
                 g: torch.Generator) -> list[torch.Tensor]:
    """The image each view is cropped from: one per view, from a scene's renderings when ``r.appearances``.

    Without ``restyled_locals`` or ``shape_instance`` the two global views come from two
    different renderings, so the teacher and the student never see the same colours,
    textures or background; with either, both come from the scene's own rendering.
    """
    n_views = 2 + r.local_crops
    if not r.appearances:
        return [pool_images[idx]] * n_views
    a = r.appearances
    if r.restyled_locals or r.shape_instance:  # the restyled renderings feed only what asks for them
        own = pool_images[idx * a]
        views = [own, own]
        for _ in range(r.local_crops):
            restyled = restyled_source(pool_images, idx, r, g)
            use = torch.rand(idx.shape, generator=g) < r.restyled_locals
            views.append(torch.where(use.view(-1, 1, 1, 1), restyled, own))
        return views
    first = torch.randint(a, idx.shape, generator=g)
    second = (first + 1 + torch.randint(a - 1, idx.shape, generator=g)) % a
    picks = [first, second] + [torch.randint(a, idx.shape, generator=g) for _ in range(r.local_crops)]
    return [pool_images[idx * a + p] for p in picks]


def random_masks(n: int, patches: int, r: DinoRecipe, g: torch.Generator) -> torch.Tensor:
    """iBOT masks: for a ``mask_probability`` share of the ``n`` views, a random ``mask_ratio`` share of patches."""
    masks = torch.zeros(n, patches, dtype=torch.bool)
    lo, hi = r.mask_ratio
    for i in torch.nonzero(torch.rand(n, generator=g) < r.mask_probability).flatten().tolist():
        k = max(1, round(patches * (lo + (hi - lo) * torch.rand(1, generator=g).item())))
        masks[i, torch.randperm(patches, generator=g)[:k]] = True
    return masks


def ibot_loss(student_patches: torch.Tensor, teacher_patches: torch.Tensor, masks: torch.Tensor,
              r: DinoRecipe) -> torch.Tensor:
    """Cross-entropy between the teacher's (unmasked) and the student's (masked) scores at masked patches."""
    if not masks.any():
        return student_patches.sum() * 0.0
    targets = sinkhorn_targets(teacher_patches[masks], r.teacher_temp)
    return -(targets * F.log_softmax(student_patches[masks] / r.student_temp, dim=-1)).sum(-1).mean()


def instance_loss(features: torch.Tensor, temp: float) -> torch.Tensor:
    """Symmetric InfoNCE between the first and second half of ``features`` (two views of each scene)."""
    a, b = F.normalize(features, dim=-1).chunk(2)
    logits = a @ b.T / temp
    target = torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def mean_cosine(net: DinoNet, images: torch.Tensor) -> float:
    """Mean cosine between the CLS features of different images: the collapse signal (1 = collapsed)."""
    f = F.normalize(net.backbone(pixel_values=images).pooler_output, dim=-1)
    n = f.shape[0]
    return ((f @ f.T).sum() - n).item() / (n * (n - 1))


def make_views(sources: list[torch.Tensor], r: DinoRecipe, g: torch.Generator) -> list[torch.Tensor]:
    views = []
    for k, images in enumerate(sources):
        x = augment.to_float(images)
        size, scale = (r.image_size, r.global_scale) if k < 2 else (r.local_size, r.local_scale)
        v = augment.random_resized_crop(x, size, scale, generator=g)
        v = augment.random_channel_permutation(v, r.channel_shuffle, generator=g)
        views.append(augment.normalize(augment.color_jitter(v, generator=g)))
    return views


@torch.no_grad()
def cls_features(backbone: DINOv3ViTModel, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Frozen CLS (pooler) features of uint8 images."""
    backbone.eval()
    out = []
    for i in range(0, len(images), batch):
        x = augment.normalize(augment.to_float(images[i : i + batch]))
        out.append(backbone(pixel_values=x).pooler_output)
    return torch.cat(out)


def _monitor(size: int):
    """A small, fast 20-NN probe to watch features improve during training."""
    gallery = render_pool("val", 1000, size)
    test = eval_pool("val", per_class=20, size=size)

    def probe(backbone: DINOv3ViTModel) -> float:
        return common.knn_top1(cls_features(backbone, gallery.images), gallery.labels,
                               cls_features(backbone, test.images), test.labels, k=20)

    return probe


def evaluate(backbone: DINOv3ViTModel, size: int = 64) -> dict[str, float]:
    """20-NN top-1 on frozen CLS features: train-split gallery, test-split synthetic Imagenette."""
    gallery = render_pool("train", 5000, size, start=10_000_000)
    test = eval_pool("test", per_class=50, size=size)
    acc = common.knn_top1(cls_features(backbone, gallery.images), gallery.labels,
                          cls_features(backbone, test.images), test.labels, k=20)
    return {"knn20_top1": acc, "gallery": len(gallery), "test": len(test)}


def train_step(student: DinoNet, teacher: DinoNet, center: torch.Tensor, views: list[torch.Tensor],
               opt: torch.optim.Optimizer, r: DinoRecipe, *, ema: float,
               generator: torch.Generator | None = None, restyled: torch.Tensor | None = None) -> float:
    """One DINO step: teacher on the global views, student on all views, EMA and centre updates.

    ``restyled`` (global views of restyled renderings, one per scene) feeds the
    ``shape_instance`` term.
    """
    globals_ = torch.cat(views[:2])
    with torch.no_grad():  # patch scores only feed the iBOT loss
        t_cls, t_patches, _ = teacher.tokens(globals_, patches=bool(r.ibot))
    t_out = list(t_cls.chunk(2))
    masks = random_masks(len(globals_), t_patches.shape[1], r, generator) if r.ibot else None
    s_global, s_patches, features = student.tokens(globals_, masks, patches=bool(r.ibot))
    s_out = list(s_global.chunk(2))
    n_local = len(views) - 2
    if n_local:
        s_out += list(student(torch.cat(views[2:])).chunk(n_local))
    loss = dino_loss(s_out, t_out, None if r.sinkhorn else center, r.student_temp, r.teacher_temp)
    if r.koleo:
        loss = loss + r.koleo * sum(koleo_loss(f) for f in features.chunk(2)) / 2
    if r.ibot:
        loss = loss + r.ibot * ibot_loss(s_patches, t_patches, masks, r)
    if r.instance:
        loss = loss + r.instance * instance_loss(features, r.instance_temp)
    if r.shape_instance:
        if restyled is None:
            raise ValueError("shape_instance needs the restyled views")
        twins = student.backbone(pixel_values=restyled).pooler_output
        loss = loss + r.shape_instance * instance_loss(torch.cat([features.chunk(2)[0], twins]), r.instance_temp)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(student.parameters(), 3.0)
    opt.step()
    with torch.no_grad():
        for ps, pt in zip(student.parameters(), teacher.parameters()):
            pt.mul_(ema).add_(ps.detach(), alpha=1 - ema)
        center.mul_(r.center_momentum).add_(torch.cat(t_out).mean(0, keepdim=True), alpha=1 - r.center_momentum)
    return loss.item()


def build(r: DinoRecipe) -> tuple[DinoNet, DinoNet, torch.Tensor]:
    """Student, teacher (a frozen copy) and the zero centre."""
    student = DinoNet(DINOv3ViTModel(backbone_config(r)),
                      DinoHead(r.hidden_size, r.head_hidden, r.bottleneck, r.out_dim))
    teacher = copy.deepcopy(student).requires_grad_(False)
    return student, teacher, torch.zeros(1, r.out_dim)


def train(out_dir: Path, recipe: DinoRecipe | None = None, *, log_every: int = 50,
          run_eval: bool = True) -> dict:
    """Train tiny-dinov3 and save it (weights, config, image processor) to ``out_dir``."""
    r = recipe or DinoRecipe()
    torch.manual_seed(r.seed)
    g = torch.Generator().manual_seed(r.seed)
    if r.shape_instance and r.appearances < 2:  # before minutes of rendering, not at the first step
        raise ValueError(f"shape_instance needs appearances >= 2, got {r.appearances}")
    if r.appearances:
        print(f"rendering {r.train_scenes} training scenes, {r.appearances} renderings each ...", flush=True)
        pool = render_appearance_pool("train", r.train_scenes, r.appearances, r.image_size, repose=r.repose)
    else:
        print(f"rendering {r.train_scenes} training scenes ...", flush=True)
        pool = render_pool("train", r.train_scenes, r.image_size)

    student, teacher, center = build(r)
    monitor = _monitor(r.image_size) if r.monitor_every and r.steps >= r.monitor_every else None
    opt = torch.optim.AdamW(common.param_groups(student, r.weight_decay), lr=r.lr)
    log = common.Logger(r.steps, log_every)
    student.train()
    for step in range(r.steps):
        common.set_lr(opt, common.cosine_schedule(step, r.steps, r.lr, r.min_lr, r.warmup))
        idx = torch.randint(r.train_scenes, (r.batch_size,), generator=g)
        views = make_views(view_sources(pool.images, idx, r, g), r, g)
        restyled = make_views([restyled_source(pool.images, idx, r, g)], r, g)[0] if r.shape_instance else None
        m = 1 - (1 - r.ema_start) * (1 + torch.cos(torch.tensor(torch.pi * step / r.steps)).item()) / 2
        loss = train_step(student, teacher, center, views, opt, r, ema=m, generator=g, restyled=restyled)
        if monitor is not None and (step + 1) % r.monitor_every == 0:
            print(f"  step {step + 1}: 20-NN top-1 {monitor(teacher.backbone):.3f}", flush=True)
        extra = {"mean_cos": mean_cosine(teacher, views[0])} if step % log_every == 0 else {}
        log.log(step, loss, lr=opt.param_groups[0]["lr"], ema=m, **extra)
    train_seconds = log.elapsed()

    backbone = teacher.backbone  # the teacher's weights are the better features (as in DINO)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backbone.save_pretrained(out_dir)
    DINOv3ViTImageProcessor(size={"height": r.image_size, "width": r.image_size}).save_pretrained(out_dir)
    metrics = evaluate(backbone, r.image_size) if run_eval else {}
    return common.training_report(r, log, train_seconds, sum(p.numel() for p in backbone.parameters()),
                                  metrics)
