"""Prompt templates for zero-shot classification.

``IMAGENET_TEMPLATES`` are the 80 prompt templates that OpenAI used for zero-shot
ImageNet with CLIP (Radford et al., 2021, "Learning Transferable Visual Models From
Natural Language Supervision"; listed in the notebook
``notebooks/Prompt_Engineering_for_ImageNet.ipynb`` of https://github.com/openai/CLIP).
Each holds one ``{}`` where a class name goes. Averaging the text embeddings of all
80 filled templates gives one class embedding (a template ensemble).
"""

from __future__ import annotations

from collections.abc import Iterable

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

SHORT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a {}.",
    "the {}.",
    "{}",
)

PLACEHOLDER = "{}"


def fill(templates: Iterable[str], name: str) -> list[str]:
    """Fill each template's ``{}`` with a class name.

    Introduced in chapter 3.

    Args:
        templates: Templates that each contain ``{}`` exactly once.
        name: The class name, for example ``"red circle"``.

    Returns:
        One prompt per template, in order.

    Raises:
        TypeError: If ``name`` or a template is not a string.
        ValueError: If ``name`` is empty or a template does not hold exactly one ``{}``.
    """
    if not isinstance(name, str):
        raise TypeError(f"class name must be a string, got {type(name).__name__}")
    if not name.strip():
        raise ValueError("class name is empty")
    if isinstance(templates, str):
        raise TypeError("templates must be a sequence of strings, not a single string")
    prompts = []
    for template in templates:
        if not isinstance(template, str):
            raise TypeError(f"template {template!r} is not a string")
        if template.count(PLACEHOLDER) != 1:
            raise ValueError(f"template {template!r} must contain '{{}}' exactly once")
        prompts.append(template.replace(PLACEHOLDER, name))
    return prompts
