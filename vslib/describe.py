"""Image-to-text: rank given labels or captions for one image.

Retrieval in the other direction: the image is embedded once, every text once, and the texts
are ranked by cosine with the image. The texts are given; nothing is generated (a captioning
model such as PaliGemma writes new text with a language decoder, which is another kind of
model). Only models with a text tower can do this (SigLIP 2, dino.txt), not DINOv3.

How a text is embedded depends on what it is, decided for the whole list at once so that
every score is on the same footing (:func:`prompt_mode`):

- *labels* (``"red circle"``, ``"dog"``) go through the template ensemble of chapter 3:
  each label fills the 80 CLIP templates, and the normalised embeddings are averaged
  (:func:`vslib.zeroshot.class_embeddings`);
- *captions* (``"a red circle on a grey background"``) are embedded as they are: they
  already are sentences, and a template around a sentence only adds noise.

Introduced in chapter 7.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vslib.images import as_image
from vslib.zeroshot import class_embeddings

if TYPE_CHECKING:
    from PIL import Image

    from vslib.encoders import Encoder

__all__ = [
    "PROMPT_MODES",
    "Description",
    "LabelScore",
    "describe_image",
    "is_caption",
    "label_embeddings",
    "prompt_mode",
    "read_labels",
]

#: ``auto`` decides with :func:`prompt_mode`; ``ensemble`` and ``as-is`` force one way.
PROMPT_MODES = ("auto", "ensemble", "as-is")
#: A label has at most this many words; a longer text is a caption.
LABEL_MAX_WORDS = 3
_ARTICLES = re.compile(r"^(a|an|the)\s", re.IGNORECASE)
_SENTENCE_END = (".", "!", "?")


def read_labels(path: str | os.PathLike) -> list[str]:
    """The labels or captions of a text file: one per line, in order (chapter 7).

    Surrounding spaces are stripped; blank lines and lines starting with ``#`` are ignored;
    a line repeated later is kept once.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a file, not UTF-8 text, or holds no label.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"the labels file {file} does not exist")
    if not file.is_file():
        raise ValueError(f"the labels file {file} is not a file")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"the labels file {file} is not UTF-8 text (one label or caption per line)") from None
    except OSError as error:
        raise ValueError(f"cannot read the labels file {file}: {error.strerror or error}") from None
    labels = [line.strip() for line in text.splitlines()]
    labels = list(dict.fromkeys(line for line in labels if line and not line.startswith("#")))
    if not labels:
        raise ValueError(f"the labels file {file} holds no labels (one per line; blank lines and # comments are ignored)")
    return labels


def is_caption(text: str) -> bool:
    """Whether a text reads as a caption rather than a label (chapter 7).

    A caption has more than :data:`LABEL_MAX_WORDS` words, starts with an article (``a``,
    ``an``, ``the``) or ends like a sentence (``.``, ``!``, ``?``).
    """
    text = text.strip()
    return len(text.split()) > LABEL_MAX_WORDS or bool(_ARTICLES.match(text)) or text.endswith(_SENTENCE_END)


def prompt_mode(texts: Sequence[str]) -> str:
    """``"as-is"`` if any text is a caption (:func:`is_caption`), else ``"ensemble"`` (chapter 7).

    One mode for the whole list: an ensemble embedding and a single caption's embedding
    score on different scales, so mixing them would rank the modes, not the texts.
    """
    return "as-is" if any(is_caption(text) for text in texts) else "ensemble"


def label_embeddings(
    encoder: Encoder, texts: Sequence[str], prompts: str = "auto", templates: Sequence[str] | None = None
) -> tuple[np.ndarray, str]:
    """Unit text embeddings ``(len(texts), dim)`` and the mode used (chapter 7).

    ``prompts``: ``"ensemble"`` fills ``templates`` (default: the 80 CLIP templates) with
    each text and averages; ``"as-is"`` embeds each text unchanged; ``"auto"`` picks with
    :func:`prompt_mode`.

    Raises:
        ValueError: For an unknown mode or no texts.
        vslib.encoders.TextNotSupportedError: If the model has no text tower.
    """
    if prompts not in PROMPT_MODES:
        raise ValueError(f"prompts must be one of {', '.join(PROMPT_MODES)}, got {prompts!r}")
    texts = list(texts)
    if not texts:
        raise ValueError("no labels or captions to rank")
    _require_text(encoder)
    mode = prompt_mode(texts) if prompts == "auto" else prompts
    if mode == "ensemble":
        return class_embeddings(encoder, texts, templates), mode
    return encoder.encode_texts(texts), mode


@dataclass(frozen=True)
class LabelScore:
    """One ranked text: its rank (1 = best), the text, and its cosine with the image."""

    rank: int
    text: str
    score: float


@dataclass(frozen=True)
class Description:
    """What :func:`describe_image` found: the model, the prompt mode and the ranked texts."""

    model: str
    mode: str
    ranked: list[LabelScore]


def describe_image(
    encoder: Encoder,
    image: Image.Image | str | os.PathLike,
    texts: Sequence[str],
    *,
    prompts: str = "auto",
    templates: Sequence[str] | None = None,
    top: int | None = None,
) -> Description:
    """Rank ``texts`` by cosine with one image, best first; ties keep the input order.

    ``top`` keeps the best ``top`` (default: all). See :func:`label_embeddings` for
    ``prompts`` and ``templates``. Introduced in chapter 7.

    Raises:
        vslib.encoders.TextNotSupportedError: If the model has no text tower (checked first).
        vslib.images.ImageLoadError: If the image file cannot be read.
        ValueError: For no texts, an unknown mode or ``top < 1``.
    """
    if top is not None and top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    _require_text(encoder)
    text_emb, mode = label_embeddings(encoder, texts, prompts, templates)
    image_emb = encoder.encode_images([as_image(image)])[0]
    scores = text_emb @ image_emb
    order = np.argsort(-scores, kind="stable")[: top or len(scores)]
    ranked = [LabelScore(rank, texts[i], float(scores[i])) for rank, i in enumerate(order.tolist(), start=1)]
    return Description(encoder.name, mode, ranked)


def _require_text(encoder: Encoder) -> None:
    if not encoder.supports_text:
        from vslib.encoders import TextNotSupportedError

        raise TextNotSupportedError(
            f"{encoder.name} is an image-only model ({encoder.family}): it has no text tower to embed labels "
            "or captions; use a multimodal model such as tiny-siglip2 or tiny-dinotxt"
        )
