"""Batched image augmentations in torch, used to train the tiny models.

Everything works on a whole batch at once (one ``grid_sample`` call for all crops),
because a per-image Python loop would dominate a training step on two CPU cores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [0, 1]."""
    return images.float().div_(255.0)


def normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Standardise [0, 1] images channel-wise."""
    m = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - m) / s


def random_resized_crop(
    images: torch.Tensor,
    out_size: int,
    scale: tuple[float, float],
    *,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop a random area fraction ``scale`` and aspect ``ratio`` of each image, resize to ``out_size``.

    Implemented as one affine ``grid_sample``; a random horizontal flip is folded into the
    same transform.
    """
    b = images.shape[0]
    g = generator
    area = torch.empty(b).uniform_(*scale, generator=g)
    log_r = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(b, generator=g) * (1 - w) + w / 2) * 2 - 1
    cy = (torch.rand(b, generator=g) * (1 - h) + h / 2) * 2 - 1
    sx = w.clone()
    if flip:
        sx = torch.where(torch.rand(b, generator=g) < 0.5, -sx, sx)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [b, 3, out_size, out_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(
    images: torch.Tensor,
    *,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    p: float = 0.8,
    grayscale_p: float = 0.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random brightness, contrast and saturation per image, then random grayscale; [0, 1] in and out."""
    b = images.shape[0]
    g = generator
    apply = (torch.rand(b, 1, 1, 1, generator=g) < p).float()

    def factor(amount: float) -> torch.Tensor:
        f = 1 + (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * amount
        return apply * f + (1 - apply)

    gray_w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    x = images * factor(brightness)
    mean = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean) * factor(contrast) + mean
    gray = (x * gray_w).sum(1, keepdim=True)
    x = (x - gray) * factor(saturation) + gray
    to_gray = (torch.rand(b, 1, 1, 1, generator=g) < grayscale_p).float()
    gray = (x * gray_w).sum(1, keepdim=True)
    x = to_gray * gray.expand_as(x) + (1 - to_gray) * x
    return x.clamp_(0, 1)


def random_channel_permutation(images: torch.Tensor, p: float = 0.5, *,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """Shuffle the RGB channels of each image with probability ``p`` (a hue change that keeps shapes).

    Two views of one scene then rarely share their colours, so self-distillation cannot
    match views by colour alone and has to use shape.
    """
    b = images.shape[0]
    perms = torch.stack([torch.randperm(3, generator=generator) for _ in range(b)])
    keep = torch.rand(b, generator=generator) >= p
    perms[keep] = torch.arange(3)
    index = perms.view(b, 3, 1, 1).expand_as(images)
    return torch.gather(images, 1, index)
