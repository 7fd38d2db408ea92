"""dino.txt: a text tower aligned with a frozen DINOv3 backbone (chapter 3).

dino.txt ("DINOv2 Meets Text", Jose et al. 2024; released for DINOv3 as
``dinov3_vitl16_dinotxt_tet1280d20h24l``) keeps a DINOv3 image backbone frozen
and trains two things against it with CLIP's contrastive loss:

- a vision head: transformer blocks over the backbone's output tokens (after its
  final norm: CLS, register tokens, patches), a LayerNorm and, when the sizes
  call for it, a linear projection. The image embedding is the concatenation of
  the head's CLS output and the mean of its patch outputs, so its first half
  describes the image as a whole and its second half the average patch;
- a text tower: a causal pre-norm transformer over CLIP BPE tokens, pooled at the
  end-of-text token, projected linearly into the same joint space.

The module layout mirrors the official release, so the state dict of
:class:`DinoTxtModel` minus the ``backbone.`` entries *is* the official key
layout of the head + text checkpoint (``visual_model.head.*``,
``text_model.backbone.*``, ``text_model.head.linear_projection.weight``,
``logit_scale``). The backbone is a transformers ``DINOv3ViTModel``.

Two on-disk formats load with :func:`load_dinotxt`:

- the vslib directory (written by :func:`save_dinotxt`): ``config.json``,
  ``model.safetensors`` (head, text tower and ``logit_scale``, official keys),
  ``bpe_vocab.txt.gz``, and a reference to the backbone in ``config.json``
  (a path relative to the directory, or a Hub id) with the sha256 of the
  backbone's weights, checked on load;
- the official file set: the head + text ``.pth``, CLIP's
  ``bpe_simple_vocab_16e6.txt.gz``, and the backbone as an official DINOv3
  ``.pth`` (converted here to the transformers layout), a transformers model
  directory, or a Hub id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from vslib.bpe import CONTEXT_LENGTH, ClipTokenizer

__all__ = [
    "CONFIG_FILE",
    "VOCAB_FILE",
    "WEIGHTS_FILE",
    "DinoTxtBackboneError",
    "DinoTxtConfig",
    "DinoTxtExtraKeysWarning",
    "DinoTxtKeyError",
    "DinoTxtModel",
    "TextTower",
    "VisionHead",
    "backbone_sha256",
    "backbone_weights",
    "check_state_dict",
    "clip_loss",
    "convert_official_backbone",
    "load_backbone",
    "load_dinotxt",
    "save_dinotxt",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "bpe_vocab.txt.gz"
#: CLIP caps the learned temperature so that exp(logit_scale) stays at most 100.
MAX_LOGIT_SCALE = math.log(100.0)
_LAYER_NORM_EPS = 1e-5


class DinoTxtKeyError(KeyError):
    """A state dict does not match the model: missing, unexpected or mis-shaped keys.

    Attributes:
        missing: Keys the model needs that the state dict lacks.
        unexpected: Keys in the state dict that the model does not have.
        mismatched: ``(key, expected shape, found shape)`` for keys whose shapes differ.
    """

    def __init__(
        self,
        missing: Sequence[str],
        unexpected: Sequence[str],
        mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
    ) -> None:
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        super().__init__(self._message())

    def _message(self, shown: int = 10) -> str:
        parts = []
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                more = f", ... ({len(keys) - shown} more)" if len(keys) > shown else ""
                parts.append(f"{len(keys)} {label} keys: {', '.join(keys[:shown])}{more}")
        if self.mismatched:
            listed = [f"{k} (model {tuple(a)}, state dict {tuple(b)})" for k, a, b in self.mismatched[:shown]]
            more = f", ... ({len(self.mismatched) - shown} more)" if len(self.mismatched) > shown else ""
            parts.append(f"{len(self.mismatched)} keys with wrong shapes: {', '.join(listed)}{more}")
        return "state dict does not match the model: " + "; ".join(parts)

    def __str__(self) -> str:
        return self._message()


class DinoTxtExtraKeysWarning(UserWarning):
    """The official weights hold keys the model does not use (named in the message)."""


class DinoTxtBackboneError(ValueError):
    """The backbone does not fit the dino.txt weights (wrong weights or wrong shape)."""


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class DinoTxtConfig:
    """Sizes and settings of a dino.txt model; the defaults are the released ViT-L/16 model.

    Introduced in chapter 3.

    Args:
        embed_dim: Size of the joint embedding (image and text). The image
            embedding is two halves of ``embed_dim // 2``: CLS, then mean patch.
        backbone_hidden_size: Token width of the DINOv3 backbone.
        backbone_num_register_tokens: Register tokens between CLS and patches.
        patch_size: Backbone patch size in pixels.
        head_blocks: Transformer blocks in the vision head.
        head_heads: Attention heads in the vision head (the backbone's count).
        head_mlp_ratio: Head MLP ratio; the head uses a SwiGLU MLP whose hidden
            size is two thirds of ``ratio * width``, rounded up to a multiple of 64.
        text_vocab_size: Text vocabulary size (BPE ids, 49,408 for CLIP's).
        text_context_length: Tokens per text, start and end tokens included.
        text_width: Width of the text transformer.
        text_layers: Blocks in the text transformer.
        text_heads: Attention heads in the text transformer.
        text_mlp_ratio: Text MLP hidden size over width.
        image_size: Side of the square images the model is meant for (crop size).
        resize_size: Short side images are resized to before the centre crop.
        image_mean: Per-channel mean used to normalise pixels.
        image_std: Per-channel standard deviation used to normalise pixels.
        init_logit_scale: Initial log of the contrastive temperature's inverse.
        max_logit_scale: Cap on the learned ``logit_scale`` (CLIP's: log 100).
        backbone: Where the frozen backbone comes from: a path relative to the
            model directory or a Hugging Face Hub id ("" if not recorded).
        backbone_sha256: :func:`backbone_sha256` of the backbone the head was
            trained against ("" if not recorded).
    """

    embed_dim: int = 2048
    backbone_hidden_size: int = 1024
    backbone_num_register_tokens: int = 4
    patch_size: int = 16
    head_blocks: int = 2
    head_heads: int = 16
    head_mlp_ratio: float = 4.0
    text_vocab_size: int = 49408
    text_context_length: int = CONTEXT_LENGTH
    text_width: int = 1280
    text_layers: int = 24
    text_heads: int = 20
    text_mlp_ratio: float = 4.0
    image_size: int = 224
    resize_size: int = 256
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = MAX_LOGIT_SCALE
    backbone: str = ""
    backbone_sha256: str = ""

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(v) for v in self.image_mean)  # type: ignore[assignment]
        self.image_std = tuple(float(v) for v in self.image_std)  # type: ignore[assignment]
        positive = (
            "embed_dim", "backbone_hidden_size", "patch_size", "head_heads", "text_vocab_size",
            "text_context_length", "text_width", "text_layers", "text_heads", "image_size",
            "resize_size",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"DinoTxtConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("backbone_num_register_tokens", "head_blocks"):
            if getattr(self, name) < 0:
                raise ValueError(f"DinoTxtConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.embed_dim % 2:
            raise ValueError(f"DinoTxtConfig.embed_dim must be even (two halves), got {self.embed_dim}")
        if self.backbone_hidden_size % self.head_heads:
            raise ValueError(
                f"DinoTxtConfig.backbone_hidden_size={self.backbone_hidden_size} is not divisible "
                f"by head_heads={self.head_heads}"
            )
        if self.text_width % self.text_heads:
            raise ValueError(
                f"DinoTxtConfig.text_width={self.text_width} is not divisible by text_heads={self.text_heads}"
            )
        if self.text_context_length < 2:
            raise ValueError("DinoTxtConfig.text_context_length must be at least 2 (start and end tokens)")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"DinoTxtConfig.{name} must have 3 values, got {getattr(self, name)}")
        if any(v <= 0 for v in self.image_std):
            raise ValueError(f"DinoTxtConfig.image_std must be positive, got {self.image_std}")

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict.

        Introduced in chapter 3.
        """
        data = dataclasses.asdict(self)
        data["image_mean"] = list(self.image_mean)
        data["image_std"] = list(self.image_std)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DinoTxtConfig:
        """Build a config from a dict, rejecting unknown fields by name.

        Args:
            data: Field values; missing fields take their defaults.

        Returns:
            The config.

        Raises:
            ValueError: If ``data`` has fields this class does not know.

        Introduced in chapter 3.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DinoTxtConfig fields: {', '.join(unknown)}")
        return cls(**dict(data))

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON, and write it to ``path`` when given.

        Args:
            path: Optional file to write.

        Returns:
            The JSON text.

        Introduced in chapter 3.
        """
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> DinoTxtConfig:
        """Read a config from a JSON file path or a JSON string.

        Args:
            source: A path to a JSON file, or JSON text (a string starting with ``{``).

        Returns:
            The config.

        Raises:
            FileNotFoundError: If ``source`` is a path that does not exist.
            ValueError: If the JSON is not an object or has unknown fields.

        Introduced in chapter 3.
        """
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text = source
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"dino.txt config {str(path)!r} does not exist")
            text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a dino.txt config must be a JSON object")
        return cls.from_dict(data)


# ---------------------------------------------------------------------------------------------
# Layers (names follow the official checkpoint's keys)
# ---------------------------------------------------------------------------------------------


class _Attention(nn.Module):
    """Multi-head self-attention with a fused, bias-free qkv projection."""

    def __init__(self, dim: int, num_heads: int, causal: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _SwiGLU(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, align_to: int = 64) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio * 2 / 3)
        hidden += -hidden % align_to
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class _HeadBlock(nn.Module):
    """Pre-norm ViT block of the vision head: attention and SwiGLU, each with LayerScale."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.attn = _Attention(dim, num_heads, causal=False)
        self.ls1 = _LayerScale(dim, 1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.mlp = _SwiGLU(dim, mlp_ratio)
        self.ls2 = _LayerScale(dim, 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionHead(nn.Module):
    """Trainable transformer blocks over the frozen backbone's tokens.

    Blocks, a final LayerNorm, then a bias-free linear projection to
    ``embed_dim // 2`` per token (omitted, as in the official model, when the
    backbone width already equals ``embed_dim // 2``).

    Args:
        config: The model config.

    Introduced in chapter 3.
    """

    def __init__(self, config: DinoTxtConfig) -> None:
        super().__init__()
        dim = config.backbone_hidden_size
        self.blocks = nn.ModuleList(
            _HeadBlock(dim, config.head_heads, config.head_mlp_ratio) for _ in range(config.head_blocks)
        )
        self.ln_final: nn.Module = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS) if config.head_blocks else nn.Identity()
        half = config.embed_dim // 2
        self.linear_projection: nn.Module = nn.Linear(dim, half, bias=False) if dim != half else nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map backbone tokens ``(N, T, backbone width)`` to head tokens ``(N, T, embed_dim // 2)``.

        Introduced in chapter 3.
        """
        for block in self.blocks:
            tokens = block(tokens)
        return self.linear_projection(self.ln_final(tokens))

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal linear weights (std 0.02), zero biases, LayerScale 1e-5.

        Introduced in chapter 3.
        """
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, _LayerScale):
                module.gamma.fill_(1e-5)
        if isinstance(self.ln_final, nn.LayerNorm):
            self.ln_final.reset_parameters()
        if isinstance(self.linear_projection, nn.Linear):
            nn.init.normal_(self.linear_projection.weight, std=self.linear_projection.in_features**-0.5)


class _TextMlp(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _TextBlock(nn.Module):
    """Pre-norm causal transformer block of the text tower."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.attention = _Attention(dim, num_heads, causal=True)
        self.ffn_norm = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.feed_forward = _TextMlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class _TextTransformer(nn.Module):
    """Token and position embeddings, causal blocks, final LayerNorm."""

    def __init__(self, config: DinoTxtConfig) -> None:
        super().__init__()
        width = config.text_width
        self.token_embedding = nn.Embedding(config.text_vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(config.text_context_length, width))
        self.blocks = nn.ModuleList(
            _TextBlock(width, config.text_heads, config.text_mlp_ratio) for _ in range(config.text_layers)
        )
        self.ln_final = nn.LayerNorm(width, eps=_LAYER_NORM_EPS)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(token_ids) + self.positional_embedding[: token_ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln_final(x)


class TextTower(nn.Module):
    """CLIP-style text encoder: causal transformer, pooled at the end-of-text token, projected.

    The end-of-text token has the largest id in CLIP's vocabulary, so its
    position in each row is ``argmax`` of the ids.

    Args:
        config: The model config.

    Introduced in chapter 3.
    """

    def __init__(self, config: DinoTxtConfig) -> None:
        super().__init__()
        self.backbone = _TextTransformer(config)
        self.head = nn.ModuleDict(
            {"linear_projection": nn.Linear(config.text_width, config.embed_dim, bias=False)}
        )

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Map ``(N, L)`` token ids to ``(N, embed_dim)`` text embeddings.

        Introduced in chapter 3.
        """
        tokens = self.backbone(token_ids)
        pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), token_ids.argmax(dim=-1)]
        return self.head["linear_projection"](pooled)

    @torch.no_grad()
    def init_weights(self) -> None:
        """CLIP's text initialisation, depth-scaled for the residual projections.

        Introduced in chapter 3.
        """
        text = self.backbone
        width, layers = text.token_embedding.embedding_dim, len(text.blocks)
        nn.init.normal_(text.token_embedding.weight, std=0.02)
        nn.init.normal_(text.positional_embedding, std=0.01)
        attn_std = width**-0.5
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in text.blocks:
            nn.init.normal_(block.attention.qkv.weight, std=attn_std)
            nn.init.normal_(block.attention.proj.weight, std=proj_std)
            nn.init.zeros_(block.attention.proj.bias)
            nn.init.normal_(block.feed_forward.fc1.weight, std=fc_std)
            nn.init.zeros_(block.feed_forward.fc1.bias)
            nn.init.normal_(block.feed_forward.fc2.weight, std=proj_std)
            nn.init.zeros_(block.feed_forward.fc2.bias)
            block.attention_norm.reset_parameters()
            block.ffn_norm.reset_parameters()
        text.ln_final.reset_parameters()
        projection = self.head["linear_projection"]
        nn.init.normal_(projection.weight, std=projection.in_features**-0.5)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


def loss_scale(logit_scale: torch.Tensor, max_logit_scale: float = MAX_LOGIT_SCALE) -> torch.Tensor:
    """The factor that multiplies cosines in the contrastive loss: ``exp(logit_scale)``, capped
    at ``exp(max_logit_scale)`` (a clamp, so no gradient reaches a scale above the cap)."""
    return logit_scale.float().clamp(max=max_logit_scale).exp()


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
              max_logit_scale: float = MAX_LOGIT_SCALE) -> torch.Tensor:
    """CLIP's symmetric cross-entropy: row ``i`` of each input is a matching pair.

    Embeddings are L2-normalised; logits are cosines times ``exp(logit_scale)``
    (capped at ``exp(max_logit_scale)``, CLIP's 100 by default); the loss is the
    mean of the image-to-text and text-to-image cross-entropies.

    Args:
        image_emb: ``(N, D)`` image embeddings.
        text_emb: ``(N, D)`` text embeddings, row ``i`` describing image ``i``.
        logit_scale: Log of the inverse temperature (a one-element tensor).
        max_logit_scale: Cap on ``logit_scale``.

    Returns:
        The scalar loss.

    Raises:
        ValueError: If the shapes differ or are not ``(N, D)`` with ``N >= 1``.

    Introduced in chapter 3.
    """
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape or image_emb.shape[0] == 0:
        raise ValueError(
            f"clip_loss needs two (N, D) batches of equal shape, got image {tuple(image_emb.shape)} "
            f"and text {tuple(text_emb.shape)}"
        )
    image = F.normalize(image_emb.float(), dim=-1)
    text = F.normalize(text_emb.float(), dim=-1)
    logits = loss_scale(logit_scale, max_logit_scale) * image @ text.T
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


class DinoTxtModel(nn.Module):
    """A frozen DINOv3 backbone with a trainable vision head and text tower.

    The joint embedding has ``config.embed_dim`` dimensions. An image embedding
    is ``[CLS half | patch half]``: the head's CLS output, then the mean of its
    patch outputs, each ``embed_dim // 2`` wide. A text embedding is trained
    against the whole of it; its *second* half (``text_emb[:, embed_dim // 2:]``)
    is the part aligned with patches, so cosines between that half and
    :meth:`patch_features` give a patch-level similarity map.

    The backbone is frozen: its parameters do not require gradients, and it stays
    in eval mode even after :meth:`train`.

    Args:
        config: Sizes and settings; the backbone-related fields must match ``backbone``.
        backbone: A transformers ``DINOv3ViTModel``.
        tokenizer: The CLIP BPE tokenizer; needed for :meth:`tokenize` and saving.

    Raises:
        DinoTxtBackboneError: If the backbone's width, register count or patch
            size differs from the config.
        ValueError: If the tokenizer's vocabulary size differs from the config.

    Introduced in chapter 3.
    """

    def __init__(
        self, config: DinoTxtConfig, backbone: DINOv3ViTModel, tokenizer: ClipTokenizer | None = None
    ) -> None:
        super().__init__()
        _check_backbone_fits(config, backbone)
        if tokenizer is not None and tokenizer.vocab_size != config.text_vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} ids but config.text_vocab_size is {config.text_vocab_size}"
            )
        self.config = config
        self.tokenizer = tokenizer
        #: Where the backbone was loaded from (a resolved path or a Hub id), if known.
        self.backbone_source: str | None = None
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.visual_model = nn.ModuleDict({"head": VisionHead(config)})
        self.text_model = TextTower(config)
        self.logit_scale = nn.Parameter(torch.full((1,), float(config.init_logit_scale)))
        self.init_weights()

    @property
    def head(self) -> VisionHead:
        """The vision head."""
        return self.visual_model["head"]

    @property
    def image_size(self) -> int:
        """Side of the square input images the model expects."""
        return self.config.image_size

    @property
    def image_mean(self) -> tuple[float, float, float]:
        """Per-channel mean for pixel normalisation."""
        return self.config.image_mean

    @property
    def image_std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation for pixel normalisation."""
        return self.config.image_std

    @property
    def embed_dim(self) -> int:
        """Size of the joint embedding."""
        return self.config.embed_dim

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise the head, the text tower and ``logit_scale`` (the backbone is untouched).

        Introduced in chapter 3.
        """
        self.head.init_weights()
        self.text_model.init_weights()
        self.logit_scale.fill_(float(self.config.init_logit_scale))

    def train(self, mode: bool = True) -> DinoTxtModel:
        """Set training mode for the head and text tower; the backbone stays in eval mode.

        Introduced in chapter 3.
        """
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Return the head, text tower and ``logit_scale`` weights, in the official key layout.

        Introduced in chapter 3.
        """
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def load_trainable_state_dict(self, state_dict: Mapping[str, torch.Tensor], *, extra: str = "error") -> None:
        """Load head, text and ``logit_scale`` weights after a strict key and shape check.

        Args:
            state_dict: Weights in the official key layout (no backbone keys).
            extra: What unexpected keys do when nothing else is wrong: ``"error"``, or
                ``"warn"`` (a :class:`DinoTxtExtraKeysWarning` naming them; they are not
                loaded). The released head file may hold keys random-weight tests never saw.

        Raises:
            DinoTxtKeyError: If keys are missing or mis-shaped, or (``extra="error"``) unexpected.

        Introduced in chapter 3.
        """
        if extra not in ("error", "warn"):
            raise ValueError(f"extra must be 'error' or 'warn', got {extra!r}")
        try:
            check_state_dict(self, state_dict)
        except DinoTxtKeyError as error:
            if extra == "error" or error.missing or error.mismatched:
                raise
            shown = ", ".join(error.unexpected[:10]) + (" ..." if len(error.unexpected) > 10 else "")
            warnings.warn(DinoTxtExtraKeysWarning(
                f"the dino.txt weights hold {len(error.unexpected)} keys this model does not use, left "
                f"unloaded: {shown}. Every weight the model needs was found with the right shape."
            ), stacklevel=2)
            state_dict = {k: v for k, v in state_dict.items() if k not in set(error.unexpected)}
        result = self.load_state_dict(dict(state_dict), strict=False)
        # Only backbone keys may be left over, and check_state_dict saw to the rest.
        assert not result.unexpected_keys and all(k.startswith("backbone.") for k in result.missing_keys)

    # -- text ----------------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Tokenize texts into a ``(N, context_length)`` long tensor.

        Args:
            texts: The texts.

        Returns:
            Token ids, ``(N, 77)`` for the released model.

        Raises:
            RuntimeError: If the model was built without a tokenizer.

        Introduced in chapter 3.
        """
        if self.tokenizer is None:
            raise RuntimeError("this DinoTxtModel has no tokenizer; pass one to DinoTxtModel(...)")
        return self.tokenizer.tokenize(texts, context_length=self.config.text_context_length)

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Embed tokenized texts.

        Args:
            token_ids: ``(N, L)`` integer ids from :meth:`tokenize`, ``L <= context length``.

        Returns:
            ``(N, embed_dim)`` text embeddings, not normalised.

        Raises:
            ValueError: If the ids have the wrong shape, type or range.

        Introduced in chapter 3.
        """
        if token_ids.ndim != 2 or token_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"token_ids must be a 2-D integer tensor, got shape {tuple(token_ids.shape)} dtype {token_ids.dtype}"
            )
        if token_ids.shape[1] > self.config.text_context_length:
            raise ValueError(
                f"token_ids have {token_ids.shape[1]} positions, more than the context length "
                f"{self.config.text_context_length}"
            )
        if token_ids.numel() and (token_ids.min() < 0 or token_ids.max() >= self.config.text_vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.config.text_vocab_size}), got range "
                f"[{int(token_ids.min())}, {int(token_ids.max())}]"
            )
        device = self.logit_scale.device
        return self.text_model(token_ids.to(device=device, dtype=torch.long))

    # -- images --------------------------------------------------------------------------------

    def backbone_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run the frozen backbone: its normed output tokens (CLS, registers, patches).

        Useful to cache, since they never change while the head trains.

        Args:
            pixel_values: ``(N, 3, H, W)`` normalised images, ``H`` and ``W``
                multiples of the patch size.

        Returns:
            ``(N, 1 + registers + H*W/patch**2, backbone width)`` tokens.

        Raises:
            ValueError: If the images have the wrong shape.

        Introduced in chapter 3.
        """
        patch = self.config.patch_size
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (N, 3, H, W), got {tuple(pixel_values.shape)}")
        height, width = pixel_values.shape[-2:]
        if height % patch or width % patch:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch}")
        reference = self.backbone.embeddings.patch_embeddings.weight
        pixels = pixel_values.to(device=reference.device, dtype=reference.dtype)
        return self.backbone(pixel_values=pixels).last_hidden_state

    def head_outputs(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the vision head on backbone tokens.

        Args:
            tokens: Output of :meth:`backbone_tokens`.

        Returns:
            ``(cls, patches)``: ``(N, embed_dim // 2)`` and ``(N, P, embed_dim // 2)``;
            the register tokens' outputs are dropped.

        Raises:
            ValueError: If the tokens do not have the backbone's width or hold no patch.

        Introduced in chapter 3.
        """
        first_patch = 1 + self.config.backbone_num_register_tokens
        if tokens.ndim != 3 or tokens.shape[-1] != self.config.backbone_hidden_size or tokens.shape[1] <= first_patch:
            raise ValueError(
                f"expected backbone tokens (N, >{first_patch}, {self.config.backbone_hidden_size}), "
                f"got {tuple(tokens.shape)}"
            )
        out = self.head(tokens.to(self.logit_scale.dtype))
        return out[:, 0], out[:, first_patch:]

    def embed_backbone_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``[CLS half | mean patch half]`` from cached backbone tokens.

        Args:
            tokens: Output of :meth:`backbone_tokens`.

        Returns:
            ``(N, embed_dim)`` image embeddings, not normalised.

        Introduced in chapter 3.
        """
        cls, patches = self.head_outputs(tokens)
        return torch.cat([cls, patches.mean(dim=1)], dim=-1)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Embed images.

        Args:
            pixel_values: ``(N, 3, H, W)`` normalised images (see :meth:`backbone_tokens`).

        Returns:
            ``(N, embed_dim)`` image embeddings ``[CLS half | mean patch half]``, not normalised.

        Introduced in chapter 3.
        """
        return self.embed_backbone_tokens(self.backbone_tokens(pixel_values))

    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per-patch head outputs laid out on the patch grid.

        They live in the patch half of the joint space: compare them (cosine) with
        ``text_emb[:, embed_dim // 2:]``, the second half of a text embedding.

        Args:
            pixel_values: ``(N, 3, H, W)`` normalised images.

        Returns:
            ``(N, H / patch, W / patch, embed_dim // 2)`` patch features, not normalised.

        Introduced in chapter 6.
        """
        _, patches = self.head_outputs(self.backbone_tokens(pixel_values))
        grid_h = pixel_values.shape[-2] // self.config.patch_size
        grid_w = pixel_values.shape[-1] // self.config.patch_size
        return patches.reshape(patches.shape[0], grid_h, grid_w, patches.shape[-1])

    def loss(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """CLIP symmetric cross-entropy with this model's learned ``logit_scale`` (and its cap).

        Args:
            image_emb: ``(N, embed_dim)`` image embeddings.
            text_emb: ``(N, embed_dim)`` matching text embeddings.

        Returns:
            The scalar loss (see :func:`clip_loss`).

        Introduced in chapter 3.
        """
        return clip_loss(image_emb, text_emb, self.logit_scale, self.config.max_logit_scale)

    def loss_scale(self) -> torch.Tensor:
        """The factor that multiplies cosines in this model's loss (:func:`loss_scale`)."""
        return loss_scale(self.logit_scale, self.config.max_logit_scale)


def _check_backbone_fits(config: DinoTxtConfig, backbone: nn.Module) -> None:
    backbone_config = getattr(backbone, "config", None)
    if backbone_config is None or not hasattr(backbone_config, "num_register_tokens"):
        raise DinoTxtBackboneError(
            f"the backbone must be a transformers DINOv3ViTModel, got {type(backbone).__name__}"
        )
    patch = backbone_config.patch_size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    pairs = {
        "backbone_hidden_size": backbone_config.hidden_size,
        "backbone_num_register_tokens": backbone_config.num_register_tokens,
        "patch_size": patch,
    }
    wrong = [f"{name}={getattr(config, name)} but the backbone has {value}"
             for name, value in pairs.items() if getattr(config, name) != value]
    if wrong:
        raise DinoTxtBackboneError("the backbone does not fit the config: " + "; ".join(wrong))


# ---------------------------------------------------------------------------------------------
# State dicts and hashes
# ---------------------------------------------------------------------------------------------


def check_state_dict(model_part: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Check that a state dict has exactly the keys (and shapes) a module expects.

    For a :class:`DinoTxtModel` the expected keys are its trainable ones (see
    :meth:`DinoTxtModel.trainable_state_dict`): the backbone loads separately.
    This replaces the official loader's ``strict=False``, which would silently
    leave renamed or missing weights at their random initial values.

    Args:
        model_part: The module to be loaded.
        state_dict: The weights to check.

    Raises:
        DinoTxtKeyError: Listing missing and unexpected keys by name (and keys
            whose shapes differ).

    Introduced in chapter 3.
    """
    if isinstance(model_part, DinoTxtModel):
        expected = model_part.trainable_state_dict()
    else:
        expected = model_part.state_dict()
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    mismatched = [
        (k, tuple(expected[k].shape), tuple(state_dict[k].shape))
        for k in sorted(expected)
        if k in state_dict and tuple(expected[k].shape) != tuple(state_dict[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise DinoTxtKeyError(missing, unexpected, mismatched)


def backbone_weights(backbone: nn.Module, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """A module's weights as float32 NumPy arrays on the CPU, by state-dict key.

    Args:
        backbone: The module (usually the DINOv3 backbone), on any device and dtype.
        dtype: Round floating-point weights through this dtype first (e.g. the dtype an
            encoder runs in), so that weights from a file compare with a loaded model's.

    Returns:
        ``{key: array}`` in key order.

    Introduced in chapter 3.
    """
    weights = {}
    for name, tensor in sorted(backbone.state_dict().items()):
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        weights[name] = tensor.to(device="cpu", dtype=torch.float32).numpy()
    return weights


def backbone_sha256(backbone: nn.Module) -> str:
    """Hash a module's weights: names, dtypes, shapes and raw bytes, in key order.

    Two backbones hash equally exactly when their state dicts are bit-identical,
    whatever file format they came from.

    Args:
        backbone: The module (usually the DINOv3 backbone).

    Returns:
        The hex sha256 digest.

    Introduced in chapter 3.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Official DINOv3 backbone checkpoints
# ---------------------------------------------------------------------------------------------


def convert_official_backbone(
    state_dict: Mapping[str, torch.Tensor], *, image_size: int = 224
) -> DINOv3ViTModel:
    """Build a transformers ``DINOv3ViTModel`` from an official DINOv3 ViT state dict.

    The architecture is read off the tensors: width, depth, patch size, register
    count, MLP kind and size, head size and RoPE base (from ``rope_embed.periods``).
    The official k-bias mask is applied, so a masked key bias is dropped exactly.
    ``local_cls_norm`` (used only in training) is dropped.

    Args:
        state_dict: Official keys (``cls_token``, ``storage_tokens``, ``blocks.0.attn.qkv.weight``, ...).
        image_size: Nominal image size recorded in the transformers config.

    Returns:
        The converted backbone, in eval mode.

    Raises:
        DinoTxtKeyError: If keys are missing or not understood.
        DinoTxtBackboneError: If the checkpoint uses separate CLS and patch norms,
            which the transformers model does not support.

    Introduced in chapter 3.
    """
    source = dict(state_dict)
    if any(k.startswith("cls_norm.") for k in source):
        raise DinoTxtBackboneError(
            "this DINOv3 checkpoint has a separate CLS norm (cls_norm.*), which transformers' DINOv3ViTModel lacks"
        )
    required = ["cls_token", "patch_embed.proj.weight", "norm.weight", "rope_embed.periods", "blocks.0.attn.qkv.weight"]
    absent = [k for k in required if k not in source]
    if absent:
        raise DinoTxtKeyError(absent, [])
    hidden = source["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in source if k.startswith("blocks."))
    patch_size = source["patch_embed.proj.weight"].shape[-1]
    registers = source["storage_tokens"].shape[1] if "storage_tokens" in source else 0
    periods = source["rope_embed.periods"].float()
    head_dim = 4 * periods.numel()
    rope_theta = float(periods[1] ** (head_dim / 4)) if periods.numel() > 1 else 100.0
    gated = "blocks.0.mlp.w1.weight" in source
    intermediate = source["blocks.0.mlp.w1.weight" if gated else "blocks.0.mlp.fc1.weight"].shape[0]
    qkv_bias = source.get("blocks.0.attn.qkv.bias")
    key_bias = False
    if qkv_bias is not None:
        for i in range(depth):
            bias = source[f"blocks.{i}.attn.qkv.bias"]
            mask = source.get(f"blocks.{i}.attn.qkv.bias_mask")
            if mask is not None:
                bias = bias * mask.to(bias.dtype)
            key_bias = key_bias or bool(bias[hidden : 2 * hidden].abs().sum() > 0)
    config = DINOv3ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=hidden // head_dim,
        intermediate_size=intermediate,
        patch_size=patch_size,
        image_size=image_size,
        num_register_tokens=registers,
        rope_theta=round(rope_theta, 4),
        use_gated_mlp=gated,
        hidden_act="silu" if gated else "gelu",
        query_bias=qkv_bias is not None,
        key_bias=key_bias,
        value_bias=qkv_bias is not None,
        proj_bias="blocks.0.attn.proj.bias" in source,
        mlp_bias=f"blocks.0.mlp.{'w1' if gated else 'fc1'}.bias" in source,
        layerscale_value=1.0,
    )

    converted: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    absent_keys: list[str] = []

    def take(key: str) -> torch.Tensor:
        used.add(key)
        if key not in source:
            absent_keys.append(key)
            return torch.zeros(0)
        return source[key]

    converted["embeddings.cls_token"] = take("cls_token").reshape(1, 1, hidden)
    if "mask_token" in source:
        converted["embeddings.mask_token"] = take("mask_token").reshape(1, 1, hidden)
    if registers:
        converted["embeddings.register_tokens"] = take("storage_tokens").reshape(1, registers, hidden)
    converted["embeddings.patch_embeddings.weight"] = take("patch_embed.proj.weight")
    converted["embeddings.patch_embeddings.bias"] = take("patch_embed.proj.bias")
    converted["norm.weight"] = take("norm.weight")
    converted["norm.bias"] = take("norm.bias")
    take("rope_embed.periods")
    if gated:
        mlp_names = {"w1": "gate_proj", "w2": "up_proj", "w3": "down_proj"}
    else:
        mlp_names = {"fc1": "up_proj", "fc2": "down_proj"}
    for i in range(depth):
        old, new = f"blocks.{i}.", f"model.layer.{i}."
        for norm in ("norm1", "norm2"):
            for p in ("weight", "bias"):
                converted[f"{new}{norm}.{p}"] = take(f"{old}{norm}.{p}")
        q, k, v = take(f"{old}attn.qkv.weight").chunk(3, dim=0)
        converted.update({f"{new}attention.q_proj.weight": q, f"{new}attention.k_proj.weight": k,
                          f"{new}attention.v_proj.weight": v})
        if qkv_bias is not None:
            bias = take(f"{old}attn.qkv.bias")
            if f"{old}attn.qkv.bias_mask" in source:
                bias = bias * take(f"{old}attn.qkv.bias_mask").to(bias.dtype)
            bq, bk, bv = bias.chunk(3)
            converted[f"{new}attention.q_proj.bias"] = bq
            converted[f"{new}attention.v_proj.bias"] = bv
            if key_bias:
                converted[f"{new}attention.k_proj.bias"] = bk
        for p in ("weight", "bias"):
            if f"{old}attn.proj.{p}" in source:
                converted[f"{new}attention.o_proj.{p}"] = take(f"{old}attn.proj.{p}")
            for official, hf in mlp_names.items():
                if f"{old}mlp.{official}.{p}" in source:
                    converted[f"{new}mlp.{hf}.{p}"] = take(f"{old}mlp.{official}.{p}")
        converted[f"{new}layer_scale1.lambda1"] = take(f"{old}ls1.gamma")
        converted[f"{new}layer_scale2.lambda1"] = take(f"{old}ls2.gamma")
    leftover = sorted(k for k in source if k not in used and not k.startswith("local_cls_norm."))
    if absent_keys or leftover:
        raise DinoTxtKeyError(absent_keys, leftover)

    model = DINOv3ViTModel(config)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in converted)
    if "embeddings.mask_token" in missing:  # only used for masked training
        missing.remove("embeddings.mask_token")
        converted["embeddings.mask_token"] = torch.zeros_like(expected["embeddings.mask_token"])
    if missing:
        raise DinoTxtKeyError(missing, [])
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in converted.items()}, strict=True)
    hf_inv_freq = model.rope_embeddings.inv_freq.float()
    if not torch.allclose(hf_inv_freq, 1.0 / periods, rtol=1e-4):
        raise DinoTxtBackboneError("the checkpoint's RoPE periods do not match a transformers RoPE base")
    return model.eval()


def load_backbone(
    source: str | Path | DINOv3ViTModel, base_dir: str | Path | None = None
) -> tuple[DINOv3ViTModel, str]:
    """Load a DINOv3 backbone from a model, a directory, an official ``.pth`` or a Hub id.

    Args:
        source: A ``DINOv3ViTModel``; a transformers model directory; an official
            DINOv3 ``.pth`` state dict; or a Hugging Face Hub id.
        base_dir: Directory that relative paths are resolved against (the dino.txt
            model directory); the working directory when ``None``.

    Returns:
        ``(backbone, where)``: the model in eval mode, and the resolved path or Hub id
        it came from (``""`` for a model passed in).

    Raises:
        FileNotFoundError: If ``source`` looks like a path (starts with ``.``, ``/``
            or ``~``, or ends in ``.pth``) but does not exist.
        OSError: If a Hub id cannot be loaded (for example, offline and not cached).

    Introduced in chapter 3.
    """
    if isinstance(source, nn.Module):
        return source.eval(), ""
    text = str(source)
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        return DINOv3ViTModel.from_pretrained(path).eval(), str(path.resolve())
    if path.is_file():
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        return convert_official_backbone(state_dict), str(path.resolve())
    if text.startswith((".", "/", "~")) or text.endswith((".pth", ".pt")) or isinstance(source, Path):
        raise FileNotFoundError(f"DINOv3 backbone {text!r} not found (looked for {str(path)!r})")
    try:
        return DINOv3ViTModel.from_pretrained(text).eval(), text
    except OSError as error:
        raise OSError(f"could not load the DINOv3 backbone {text!r} from the Hugging Face Hub: {error}") from error


# ---------------------------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------------------------


def load_dinotxt(
    source: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    backbone: str | Path | DINOv3ViTModel | None = None,
    bpe_vocab: str | Path | None = None,
    config: DinoTxtConfig | None = None,
) -> DinoTxtModel:
    """Load a dino.txt model from a vslib directory or the official file set.

    A **directory** holds ``config.json``, ``model.safetensors`` and
    ``bpe_vocab.txt.gz``; the backbone comes from ``config.json["backbone"]``
    (relative to the directory, or a Hub id) unless ``backbone`` overrides it,
    and its :func:`backbone_sha256` must equal ``config.json["backbone_sha256"]``.

    A **file** is the official head + text checkpoint (``.pth``); then
    ``backbone`` and ``bpe_vocab`` are required, and ``config`` defaults to the
    released ViT-L model's.

    In both cases the head and text weights are checked by :func:`check_state_dict`:
    missing or mis-shaped keys are an error; keys the model does not use are an error
    in a vslib directory and a :class:`DinoTxtExtraKeysWarning` naming them in the
    official file set. The model is moved to ``device`` and ``dtype``
    after the checks, and returned in eval mode.

    Args:
        source: The model directory, or the official head + text ``.pth``.
        device: Target device (default: CPU).
        dtype: Target dtype (default: as stored). Prefer bf16 or fp32 for DINOv3.
        backbone: The backbone (see :func:`load_backbone`), overriding the directory's.
        bpe_vocab: The CLIP BPE merges file, for the official file set.
        config: The model config, for the official file set.

    Returns:
        The model.

    Raises:
        FileNotFoundError: If ``source`` or a file it needs does not exist.
        ValueError: If the official file set is missing ``backbone`` or ``bpe_vocab``.
        DinoTxtBackboneError: If the backbone does not fit or its weights differ
            from the recorded ones.
        DinoTxtKeyError: If the head + text weights do not match the model.

    Introduced in chapter 3.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        model = _load_directory(path, backbone)
    elif path.is_file():
        if backbone is None or bpe_vocab is None:
            raise ValueError(
                f"{str(path)!r} is a single checkpoint file: pass backbone= (DINOv3 .pth, transformers "
                "directory or Hub id) and bpe_vocab= (bpe_simple_vocab_16e6.txt.gz) to load the official file set"
            )
        config = config if config is not None else DinoTxtConfig()
        tokenizer = ClipTokenizer.from_file(bpe_vocab, vocab_size=config.text_vocab_size)
        backbone_model, where = load_backbone(backbone)
        state_dict = _read_weights(path)
        model = DinoTxtModel(config, backbone_model, tokenizer)
        model.backbone_source = where or None
        model.load_trainable_state_dict(state_dict, extra="warn")
    else:
        raise FileNotFoundError(f"dino.txt model {str(source)!r} does not exist")
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model.eval()


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(path)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{path} does not hold a state dict (found {type(state_dict).__name__})")
    return dict(state_dict)


def _load_directory(directory: Path, backbone: str | Path | DINOv3ViTModel | None) -> DinoTxtModel:
    for name in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"dino.txt directory {str(directory)!r} has no {name}")
    config = DinoTxtConfig.from_json(directory / CONFIG_FILE)
    if backbone is None:
        if not config.backbone:
            raise ValueError(f"{directory / CONFIG_FILE} records no backbone; pass backbone=")
        backbone = config.backbone
    backbone_model, where = load_backbone(backbone, base_dir=directory)
    if config.backbone_sha256:
        found = backbone_sha256(backbone_model)
        if found != config.backbone_sha256:
            raise DinoTxtBackboneError(
                f"backbone {str(backbone)!r} has weights sha256 {found}, but {directory.name} was trained "
                f"against {config.backbone_sha256}: the frozen backbone must be bit-identical"
            )
    tokenizer = ClipTokenizer.from_file(directory / VOCAB_FILE, vocab_size=config.text_vocab_size)
    model = DinoTxtModel(config, backbone_model, tokenizer)
    model.backbone_source = where or None
    model.load_trainable_state_dict(load_file(directory / WEIGHTS_FILE))
    return model


def save_dinotxt(model: DinoTxtModel, directory: str | Path, *, backbone_ref: str | None = None) -> None:
    """Write a model in the vslib directory format that :func:`load_dinotxt` reads.

    Writes ``config.json`` (with the backbone reference and its weights' sha256),
    ``model.safetensors`` (head, text tower and ``logit_scale``, official keys,
    float32 unless the model is in another dtype) and ``bpe_vocab.txt.gz``. The
    backbone itself is not copied.

    Args:
        model: The model to save; it must have a tokenizer.
        directory: Destination; created if needed.
        backbone_ref: What ``config.json`` records as the backbone: a path
            relative to ``directory`` (such as ``"../tiny-dinov3"``) or a Hub id.
            By default, the path the backbone was loaded from (made relative to
            ``directory``) or its Hub id.

    Raises:
        ValueError: If the model has no tokenizer, or no backbone reference is
            given or known.

    Introduced in chapter 3.
    """
    if model.tokenizer is None:
        raise ValueError("cannot save a DinoTxtModel without a tokenizer (bpe_vocab.txt.gz)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if backbone_ref is None:
        source = model.backbone_source
        if not source:
            raise ValueError("the model's backbone source is unknown; pass backbone_ref= (a path or Hub id)")
        backbone_ref = os.path.relpath(source, directory.resolve()) if Path(source).is_absolute() else source
    config = dataclasses.replace(model.config, backbone=backbone_ref, backbone_sha256=backbone_sha256(model.backbone))
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.trainable_state_dict().items()}
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    model.tokenizer.save(directory / VOCAB_FILE)
    config.to_json(directory / CONFIG_FILE)
