"""The synthetic world's words in French, German and Spanish: captions and class prompts.

SigLIP 2's text side is multilingual, so the bundled ``tiny-siglip2`` learns captions
in four languages; ``tiny-dinotxt`` stays English, like the released dino.txt. This
module holds the project's own small lexicon (shape nouns with their grammatical
gender, inflected colour and texture words, and a few sentence frames per language),
builds indefinite noun phrases such as ``"une étoile rouge rayée"``, ``"ein roter
gestreifter Stern"`` or ``"una estrella roja a rayas"``, and reads the facts back out of
a caption, so that a caption counts as a positive for every image it is true of.

Introduced in chapter 7.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

from vslib import synth

LANGUAGES: tuple[str, ...] = ("en", "fr", "de", "es")
FOREIGN: tuple[str, ...] = ("fr", "de", "es")

# Shape nouns and their gender: m(asculine), f(eminine), n(euter).
NOUNS: dict[str, dict[str, tuple[str, str]]] = {
    "fr": {
        "circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
        "star": ("étoile", "f"), "cross": ("croix", "f"), "ring": ("anneau", "m"),
        "diamond": ("losange", "m"), "hexagon": ("hexagone", "m"), "heart": ("cœur", "m"),
        "arrow": ("flèche", "f"),
    },
    "de": {
        "circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
        "star": ("Stern", "m"), "cross": ("Kreuz", "n"), "ring": ("Ring", "m"),
        "diamond": ("Raute", "f"), "hexagon": ("Sechseck", "n"), "heart": ("Herz", "n"),
        "arrow": ("Pfeil", "m"),
    },
    "es": {
        "circle": ("círculo", "m"), "square": ("cuadrado", "m"), "triangle": ("triángulo", "m"),
        "star": ("estrella", "f"), "cross": ("cruz", "f"), "ring": ("anillo", "m"),
        "diamond": ("rombo", "m"), "hexagon": ("hexágono", "m"), "heart": ("corazón", "m"),
        "arrow": ("flecha", "f"),
    },
}
# French and Spanish colours as (masculine, feminine); German colours as stems that take
# the strong ending of the indefinite article (-er, -e, -es).
_COLOURS: dict[str, dict[str, tuple[str, str] | str]] = {
    "fr": {
        "red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
        "yellow": ("jaune", "jaune"), "orange": ("orange", "orange"), "purple": ("violet", "violette"),
        "white": ("blanc", "blanche"), "black": ("noir", "noire"),
    },
    "de": {
        "red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "orange": "orangefarben",
        "purple": "violett", "white": "weiß", "black": "schwarz",
    },
    "es": {
        "red": ("rojo", "roja"), "green": ("verde", "verde"), "blue": ("azul", "azul"),
        "yellow": ("amarillo", "amarilla"), "orange": ("naranja", "naranja"),
        "purple": ("morado", "morada"), "white": ("blanco", "blanca"), "black": ("negro", "negra"),
    },
}
_TEXTURES: dict[str, dict[str, tuple[str, str] | str]] = {
    "fr": {"striped": ("rayé", "rayée"), "dotted": ("à pois", "à pois")},
    "de": {"striped": "gestreift", "dotted": "gepunktet"},
    "es": {"striped": ("a rayas", "a rayas"), "dotted": ("a lunares", "a lunares")},
}
_ARTICLES = {"fr": {"m": "un", "f": "une"}, "de": {"m": "ein", "f": "eine", "n": "ein"},
             "es": {"m": "un", "f": "una"}}
_GERMAN_ENDINGS = {"m": "er", "f": "e", "n": "es"}

# Sentence frames around a noun phrase; each language's first frame is the phrase alone.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("{}.", "a photo of {}.", "an image of {}.", "this is {}.", "there is {}."),
    "fr": ("{}.", "une photo montrant {}.", "une image avec {}.", "voici {}.", "on voit {}."),
    "de": ("{}.", "ein Foto: {}.", "ein Bild: {}.", "das ist {}.", "hier ist {}."),
    "es": ("{}.", "una foto de {}.", "una imagen de {}.", "esto es {}.", "se ve {}."),
}


def _check_language(lang: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; use one of {LANGUAGES}")
    return lang


def noun_phrase(lang: str, shape: str, color: str | None = None, texture: str | None = None) -> str:
    """An indefinite noun phrase naming a shape, with an optional colour and texture.

    Introduced in chapter 7.

    Args:
        lang: One of ``LANGUAGES``.
        shape: One of ``synth.CLASSES``.
        color: One of ``synth.COLORS``, or ``None``.
        texture: ``"striped"``, ``"dotted"``, or ``None`` (or ``"solid"``: not named).

    Returns:
        For example ``"a striped red star"``, ``"une étoile rouge rayée"``,
        ``"ein roter gestreifter Stern"`` or ``"una estrella roja a rayas"``.

    Raises:
        ValueError: If the language, shape, colour or texture is unknown.
    """
    _check_language(lang)
    if shape not in synth.CLASSES:
        raise ValueError(f"unknown shape {shape!r}; use one of {synth.CLASSES}")
    if color is not None and color not in synth.COLORS:
        raise ValueError(f"unknown colour {color!r}; use one of {tuple(synth.COLORS)}")
    if texture is not None and texture not in synth.TEXTURES:
        raise ValueError(f"unknown texture {texture!r}; use one of {synth.TEXTURES}")
    texture = None if texture == "solid" else texture
    if lang == "en":
        words = [w for w in (texture, color, shape) if w]
        return f"{'an' if words[0][0] in 'aeiou' else 'a'} {' '.join(words)}"
    noun, gender = NOUNS[lang][shape]
    article = _ARTICLES[lang][gender]
    if lang == "de":
        ending = _GERMAN_ENDINGS[gender]
        adjectives = [f"{_COLOURS['de'][color]}{ending}"] if color else []
        adjectives += [f"{_TEXTURES['de'][texture]}{ending}"] if texture else []
        return " ".join([article, *adjectives, noun])
    form = 0 if gender == "m" else 1
    after = [_COLOURS[lang][color][form]] if color else []
    after += [_TEXTURES[lang][texture][form]] if texture else []
    return " ".join([article, noun, *after])


def class_prompts(lang: str, shape: str) -> list[str]:
    """Every sentence frame of a language filled with the shape's bare noun phrase.

    Introduced in chapter 7: the prompts of a zero-shot classifier in that language.
    """
    phrase = noun_phrase(lang, shape)
    return [t.format(phrase) for t in TEMPLATES[_check_language(lang)]]


def scene_caption(lang: str, facts: Iterable[str], rng: np.random.Generator) -> str:
    """One caption of a scene's dominant object in ``lang``, from its ``synth.scene_facts``.

    The caption names the shape and, at random, its colour, or its colour and texture,
    inside one of the language's sentence frames.
    """
    values = dict(f.split(":", 1) for f in facts if not f.startswith("small:"))
    detail = int(rng.integers(3))
    color = values["color"] if detail >= 1 else None
    texture = values["texture"] if detail == 2 else None
    frame = TEMPLATES[_check_language(lang)][int(rng.integers(len(TEMPLATES[lang])))]
    return frame.format(noun_phrase(lang, values["shape"], color, texture))


def _words(text: str) -> list[str]:
    """Lowercase word and punctuation tokens, split as a whitespace word-level tokenizer does."""
    return re.findall(r"\w+|[^\w\s]+", unicodedata.normalize("NFKC", text).lower())


def _forms(entry: tuple[str, str] | str, german: bool) -> set[str]:
    if german:
        return {f"{entry}{e}" for e in _GERMAN_ENDINGS.values()}
    return set(entry)


@functools.lru_cache(maxsize=1)
def _fact_of_word() -> dict[str, str]:
    """Foreign words and the facts they state; words English shares ("orange") are left to synth."""
    english = set(synth.caption_vocabulary())
    table: dict[str, str] = {}
    for lang in FOREIGN:
        for shape, (noun, _) in NOUNS[lang].items():
            table[_words(noun)[0]] = f"shape:{shape}"
        for kind, words in (("color", _COLOURS[lang]), ("texture", _TEXTURES[lang])):
            for value, entry in words.items():
                for form in _forms(entry, lang == "de"):
                    # The texture's own word ("pois", "rayas", "lunares"), not its preposition.
                    table[_words(form)[-1]] = f"{kind}:{value}"
    return {word: fact for word, fact in table.items() if word not in english}


@functools.lru_cache(maxsize=1 << 16)
def caption_facts(caption: str) -> frozenset[str]:
    """The facts a caption in any of the four languages states (``synth.scene_facts`` terms).

    ``synth.caption_facts`` reads the English words (and those other languages share
    with English, such as "triangle"), including its small-object mentions; French,
    German and Spanish words for the dominant object's shape, colour and texture add
    their facts.
    """
    table = _fact_of_word()
    foreign = {table[w] for w in _words(caption) if w in table}
    return synth.caption_facts(caption) | foreign


def vocabulary() -> list[str]:
    """Every token of the noun phrases and sentence frames, as a word-level tokenizer splits them."""
    words: set[str] = set()
    for lang in LANGUAGES:
        for frame in TEMPLATES[lang]:
            words.update(_words(frame.replace("{}", " ")))
        for shape in synth.CLASSES:
            for color in synth.COLORS:
                for texture in synth.TEXTURES:
                    words.update(_words(noun_phrase(lang, shape, color, texture)))
    return sorted(words)
