"""The four-language lexicon: grammar of the noun phrases, facts read back, tokenizer coverage."""

from __future__ import annotations

import numpy as np
import pytest

from vslib import lexicon, synth


@pytest.mark.parametrize(
    ("lang", "shape", "color", "texture", "expected"),
    [
        ("en", "arrow", "orange", None, "an orange arrow"),
        ("en", "star", "red", "striped", "a striped red star"),
        ("fr", "star", "white", "striped", "une étoile blanche rayée"),
        ("fr", "square", "green", "dotted", "un carré vert à pois"),
        ("de", "circle", "red", "striped", "ein roter gestreifter Kreis"),
        ("de", "square", "white", "dotted", "ein weißes gepunktetes Quadrat"),
        ("de", "diamond", "black", None, "eine schwarze Raute"),
        ("es", "arrow", "yellow", "dotted", "una flecha amarilla a lunares"),
        ("es", "heart", "purple", None, "un corazón morado"),
        ("es", "cross", None, None, "una cruz"),
    ],
)
def test_noun_phrases_agree_in_gender(lang, shape, color, texture, expected):
    assert lexicon.noun_phrase(lang, shape, color, texture) == expected


def test_every_phrase_states_exactly_its_facts_and_no_word_names_two_facts():
    for lang in lexicon.LANGUAGES:
        for shape in synth.CLASSES:
            for color in synth.COLORS:
                for texture in synth.TEXTURES:
                    phrase = lexicon.noun_phrase(lang, shape, color, texture)
                    expected = {f"shape:{shape}", f"color:{color}"}
                    expected |= {f"texture:{texture}"} if texture != "solid" else set()
                    assert lexicon.caption_facts(phrase) == expected, phrase
            assert lexicon.caption_facts(lexicon.class_prompts(lang, shape)[1]) == {f"shape:{shape}"}


def test_english_captions_state_the_same_facts_as_synth_reads_them():
    # "orange" is also French: a small orange object must stay a small-object fact.
    caption = "a large yellow circle and a small orange cross and a small white ring"
    assert lexicon.caption_facts(caption) == synth.caption_facts(caption)
    for scene in synth.make_split("train", 200, 16):
        for caption in scene.captions:
            assert lexicon.caption_facts(caption) == synth.caption_facts(caption), caption


def test_scene_captions_are_true_of_their_scene_in_every_language():
    rng = np.random.default_rng(0)
    for scene in synth.make_split("train", 30, 16):
        facts = synth.scene_facts(scene)
        for lang in lexicon.FOREIGN:
            caption = lexicon.scene_caption(lang, facts, rng)
            claims = lexicon.caption_facts(caption)
            assert f"shape:{scene.label}" in claims and claims <= facts, caption


def test_the_tiny_siglip_tokenizer_knows_every_foreign_word():
    from vslib.zoo.siglip import build_tokenizer

    tok = build_tokenizer(16)
    texts = [p for lang in lexicon.LANGUAGES for s in synth.CLASSES for p in lexicon.class_prompts(lang, s)]
    texts += [lexicon.noun_phrase(lang, "heart", "white", "dotted") for lang in lexicon.FOREIGN]
    unknown = tok.unk_token_id
    assert all(unknown not in tok(t)["input_ids"] for t in texts)
    # Upper case meets lower case (the tokenizer lowercases, accents included).
    assert tok("Une Étoile")["input_ids"] == tok("une étoile")["input_ids"]


def test_unknown_words_are_refused():
    with pytest.raises(ValueError, match="language"):
        lexicon.noun_phrase("it", "star")
    with pytest.raises(ValueError, match="colour"):
        lexicon.noun_phrase("fr", "star", "pink")
