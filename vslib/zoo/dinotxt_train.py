"""Train ``tiny-dinotxt``: the dino.txt recipe in miniature on top of the frozen ``tiny-dinov3``.

Only the vision head, the text tower and the temperature learn; the backbone is loaded
from the bundled ``tiny-dinov3`` checkpoint, frozen, and its weights stay bit-identical
(the checkpoint records their sha256). Because the backbone never changes and training
uses no image augmentation, its output tokens are computed once for the training pool.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vslib import dinotxt, synth
from vslib.templates import IMAGENET_TEMPLATES
from vslib.zoo import augment, checkpoint_path, common
from vslib.zoo.data import eval_pool, render_pool


@dataclass
class DinoTxtRecipe:
    """Hyper-parameters of the tiny-dinotxt run (recorded in the model card)."""

    head_blocks: int = 2
    head_heads: int = 4
    embed_dim: int = 128  # per half: image embedding = concat(CLS, mean patches) = 2 * embed_dim
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    bpe_merges: int = 400
    train_scenes: int = 30000
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup: int = 100
    weight_decay: float = 0.05
    seed: int = 0
