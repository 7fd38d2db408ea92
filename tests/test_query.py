"""Query strings, weighted text/image mixes and negative terms.

A small encoder stands in for a multimodal model: images embed as their centred mean colour,
colour words as the same colour, both through a fixed orthonormal map into 16 dimensions.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vslib.encoders import Encoder, TextNotSupportedError
from vslib.index import ImageIndex
from vslib.query import QueryTerm, parse_query, query_vector, search

COLOURS = {
    "red": (230, 20, 20),
    "green": (20, 200, 40),
    "blue": (30, 40, 230),
    "purple": (200, 30, 210),
    "yellow": (240, 220, 10),
}


class ColourEncoder(Encoder):
    """Images and colour words in one 16-d space; other words get a fixed random direction."""

    family = "fake"
    supports_text = True

    def __init__(self, name: str = "fake-colour", supports_text: bool = True) -> None:
        self.name, self.dim, self.supports_text = name, 16, supports_text
        rng = np.random.default_rng(0)
        self.projection = torch.from_numpy(np.linalg.qr(rng.normal(size=(16, 3)))[0].T.astype(np.float32))

    @staticmethod
    def _colour(rgb) -> np.ndarray:
        return np.asarray(rgb, dtype=np.float32) / 255 - 0.5

    def preprocess(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        means = [np.asarray(im, dtype=np.float32).reshape(-1, 3).mean(0) for im in images]
        return {"colour": torch.from_numpy(np.stack([self._colour(m) for m in means]))}

    def _embed_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs["colour"] @ self.projection

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        if not self.supports_text:
            return super()._embed_texts(texts)
        rows = []
        for text in texts:
            words = text.lower().split()
            known = [self._colour(COLOURS[w]) for w in words if w in COLOURS]
            if known:
                rows.append(np.sum(known, axis=0))
            else:
                rows.append(np.random.default_rng(zlib.crc32(text.encode())).normal(size=3).astype(np.float32))
        return torch.from_numpy(np.stack(rows)) @ self.projection


@pytest.fixture
def encoder() -> ColourEncoder:
    return ColourEncoder()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for name, rgb in COLOURS.items():
        Image.new("RGB", (24, 24), rgb).save(root / f"{name}.png")
    return root


@pytest.fixture
def index(photos, encoder) -> ImageIndex:
    index = ImageIndex(encoder.dim, encoder.name, dtype="f32")
    index.update_folder(photos, encoder)
    return index


# -- parsing -------------------------------------------------------------------------------------


def test_signs_set_weights_and_plain_numbers_stay_text(tmp_path):
    terms = parse_query("+2 dog, -leash, -0.5 cat toy, 3d model, +dog, -.25 fog", base_dir=tmp_path)
    assert [(t.weight, t.text) for t in terms] == [
        (2.0, "dog"), (-1.0, "leash"), (-0.5, "cat toy"), (1.0, "3d model"), (1.0, "dog"), (-0.25, "fog"),
    ]
    assert not any(t.is_image for t in terms)
    assert [(t.weight, t.text) for t in parse_query("-3d glasses")] == [(-1.0, "3d glasses")]


def test_existing_image_files_and_img_prefix_make_image_terms(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "cat.png")
    (tmp_path / "notes.txt").write_text("not an image")
    terms = parse_query('cat.png, -img:cat.png, +2 "cat.png", notes.txt, dog.png', base_dir=tmp_path)
    assert [(t.weight, t.image, t.text) for t in terms] == [
        (1.0, tmp_path / "cat.png", None),
        (-1.0, tmp_path / "cat.png", None),
        (2.0, None, "cat.png"),
        (1.0, None, "notes.txt"),
        (1.0, None, "dog.png"),
    ]
    absolute = parse_query(f"-0.5 {tmp_path / 'cat.png'}")
    assert absolute[0].image == tmp_path / "cat.png" and absolute[0].weight == -0.5
    with pytest.raises(FileNotFoundError, match="missing.png"):
        parse_query("img:missing.png", base_dir=tmp_path)


def test_weights_next_to_quotes_spaces_and_trailing_points(tmp_path):
    terms = parse_query('-2"red, blue", + 3 dog, +2. cat, +1e3 x', base_dir=tmp_path)
    assert [(t.weight, t.text) for t in terms] == [(-2.0, "red, blue"), (3.0, "dog"), (2.0, "cat"), (1.0, "1e3 x")]


def test_image_terms_ignore_suffix_case_spaces_after_img_and_use_the_current_folder(tmp_path, monkeypatch):
    Image.new("RGB", (4, 4)).save(tmp_path / "CAT.PNG")
    monkeypatch.chdir(tmp_path)
    terms = parse_query("CAT.PNG, -img: CAT.PNG")
    assert [(t.weight, t.image) for t in terms] == [(1.0, Path.cwd() / "CAT.PNG"), (-1.0, Path.cwd() / "CAT.PNG")]
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_query("img:~/CAT.PNG", base_dir="/elsewhere")[0].image == tmp_path / "CAT.PNG"
    with pytest.raises(ValueError, match="has a weight but nothing to search for"):
        parse_query("dog, +2 ")
    with pytest.raises(ValueError, match="finite, non-zero weight"):
        QueryTerm(float("inf"), text="dog")


def test_quotes_keep_commas_inside_a_term():
    terms = parse_query('+2 "red, white and blue", flags')
    assert [(t.weight, t.text) for t in terms] == [(2.0, "red, white and blue"), (1.0, "flags")]


@pytest.mark.parametrize(
    "query, message",
    [
        ("", "^the query is empty$"),
        (" , ,", "^the query is empty$"),
        ("+0 dog", "finite, non-zero weight, got 0.0"),
        ("+2", "'\\+2' has a weight but nothing to search for"),
        ("-", "'-' has a weight but nothing to search for"),
        ('unbalanced "quote', "unbalanced double quote"),
        ('dog, ""', "'\"\"' has empty quotes"),
        ('-2 "  "', "has empty quotes"),
    ],
)
def test_malformed_queries_are_refused(query, message):
    with pytest.raises(ValueError, match=message):
        parse_query(query)


def test_a_term_is_a_text_or_an_image():
    with pytest.raises(ValueError, match="^a query term is either a text or an image, not both or neither$"):
        QueryTerm(1.0)
    with pytest.raises(ValueError, match="either a text or an image"):
        QueryTerm(1.0, text="dog", image=Path("dog.png"))
    with pytest.raises(ValueError, match="finite, non-zero weight, got nan"):
        QueryTerm(float("nan"), text="dog")
    # Quoted text keeps what is inside the quotes, even a single character.
    assert parse_query('"a"')[0].text == "a"


# -- query vectors -------------------------------------------------------------------------------


def test_query_vector_is_the_renormalised_weighted_sum(encoder, photos):
    terms = [QueryTerm(2.0, text="red"), QueryTerm(-0.5, image=photos / "blue.png"), QueryTerm(1.0, text="yellow")]
    vector = query_vector(encoder, terms)
    red, yellow = encoder.encode_texts(["red", "yellow"])
    blue = encoder.encode_images([photos / "blue.png"])[0]
    expected = 2.0 * red - 0.5 * blue + yellow
    assert vector.shape == (encoder.dim,) and vector.dtype == np.float32
    assert np.allclose(vector, expected / np.linalg.norm(expected), atol=1e-6)
    assert np.allclose(query_vector(encoder, "+2 red, yellow"), query_vector(encoder, [terms[0], terms[2]]))


def test_query_vector_takes_a_string_one_term_or_a_list(encoder, photos):
    red = encoder.encode_texts(["red"])[0]
    np.testing.assert_allclose(query_vector(encoder, "red"), red, atol=1e-6)
    np.testing.assert_allclose(query_vector(encoder, QueryTerm(3.0, text="red")), red, atol=1e-6)
    image = QueryTerm(0.5, image=photos / "green.png")
    green = encoder.encode_images([photos / "green.png"])[0]
    np.testing.assert_allclose(query_vector(encoder, (image,)), green, atol=1e-6)
    # Nearly opposite terms leave a short but real direction: it is kept and normalised.
    almost = query_vector(encoder, [QueryTerm(1.0, text="red"), QueryTerm(-0.999, text="red")])
    np.testing.assert_allclose(almost, red, atol=1e-3)


def test_queries_without_a_positive_direction_are_refused(encoder):
    with pytest.raises(ValueError, match="^a query needs at least one term with a positive weight; negative terms"):
        query_vector(encoder, "-red, -0.5 blue")
    with pytest.raises(ValueError, match="^the query terms cancel each other out"):
        query_vector(encoder, "red, -red")
    with pytest.raises(ValueError, match="^the query is empty$"):
        query_vector(encoder, [])


def test_text_terms_need_a_multimodal_model(photos):
    image_only = ColourEncoder(supports_text=False)
    with pytest.raises(TextNotSupportedError):
        query_vector(image_only, "red")
    assert query_vector(image_only, [QueryTerm(1.0, image=photos / "red.png")]).shape == (16,)


# -- searching -----------------------------------------------------------------------------------


def test_text_and_image_queries_find_the_matching_image(index, encoder, photos):
    assert search(index, encoder, "blue", k=1)[0].path == "blue.png"
    hits = search(index, encoder, [QueryTerm(1.0, image=photos / "yellow.png")], k=3)
    assert hits[0].path == "yellow.png" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 3 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    vector = query_vector(encoder, "green")
    assert search(index, encoder, vector, k=2) == index.search(vector, k=2)


def test_a_negative_term_lowers_the_images_that_match_it(index, encoder):
    plain = {hit.path: hit.score for hit in search(index, encoder, "red", k=len(index))}
    mixed = {hit.path: hit.score for hit in search(index, encoder, "red, -0.7 blue", k=len(index))}
    assert plain["purple.png"] > plain["green.png"]  # purple is part red, part blue
    assert mixed["purple.png"] < plain["purple.png"]
    assert mixed["red.png"] - mixed["purple.png"] > plain["red.png"] - plain["purple.png"]
    assert max(mixed, key=mixed.get) == "red.png"


def test_exact_search_reaches_past_a_poor_graph(encoder):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ImageIndex(16, encoder.name, dtype="f32", connectivity=2, expansion_add=2, expansion_search=1)
    index.add_vectors(vectors, threads=1)
    query = query_vector(encoder, "red, -0.3 blue")
    truth = np.argsort(-(vectors @ query), kind="stable")[:10].tolist()
    assert [hit.key for hit in search(index, encoder, "red, -0.3 blue", k=10, exact=True)] == truth
    assert [hit.key for hit in search(index, encoder, query, k=10)] != truth
    assert len(search(index, encoder, query)) == 10  # the default k


def test_search_refuses_an_encoder_of_another_model(index):
    with pytest.raises(ValueError, match="'fake-colour' but the query encoder is 'fake-other'; query with the model the"):
        search(index, ColourEncoder("fake-other"), "red")
