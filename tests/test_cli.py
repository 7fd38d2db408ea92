"""The ``vslib`` command line end to end, with a small colour encoder instead of a real model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vslib import cli
from vslib.encoders import Encoder
from vslib.index import ImageIndex
from vslib.registry import ModelNotAvailableError

COLOURS = {"red": (230, 20, 20), "blue": (30, 40, 230), "purple": (200, 30, 210), "green": (20, 200, 40)}


class ColourEncoder(Encoder):
    """Images and colour words embed as their centred colour through a fixed orthonormal map."""

    family = "fake"

    def __init__(self, name: str, supports_text: bool = True) -> None:
        self.name, self.dim, self.supports_text = name, 8, supports_text
        basis = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 3)))[0].T
        self.projection = torch.from_numpy(basis.astype(np.float32))
        self.images_embedded = 0

    def preprocess(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        means = np.stack([np.asarray(im, dtype=np.float32).reshape(-1, 3).mean(0) for im in images])
        return {"colour": torch.from_numpy(means / 255 - 0.5)}

    def _embed_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.images_embedded += len(inputs["colour"])
        return inputs["colour"] @ self.projection

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        if not self.supports_text:
            return super()._embed_texts(texts)
        rows = [sum(np.asarray(COLOURS[w], np.float32) / 255 - 0.5 for w in t.split() if w in COLOURS) for t in texts]
        return torch.from_numpy(np.stack(rows).astype(np.float32)) @ self.projection


@pytest.fixture
def loaded(monkeypatch) -> list[ColourEncoder]:
    """Replace model loading: 'fake-colour' and 'fake-image-only' exist, other names do not."""
    encoders: list[ColourEncoder] = []

    def load_encoder(name: str, device: str | None = None) -> ColourEncoder:
        if name == "fake-offline":
            raise ModelNotAvailableError("fake-offline is not cached and the network is off")
        if name not in ("fake-colour", "fake-image-only", "fake-other"):
            raise KeyError(f"unknown model {name!r}; run vslib.registry.available_models()")
        encoders.append(ColourEncoder(name, supports_text=name != "fake-image-only"))
        return encoders[-1]

    monkeypatch.setattr(cli, "load_encoder", load_encoder)
    return encoders


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "more").mkdir(parents=True)
    for name, rgb in COLOURS.items():
        if name != "green":
            Image.new("RGB", (16, 16), rgb).save(root / ("more" if name == "purple" else "") / f"{name}.png")
    (root / "broken.jpg").write_text("this is not a JPEG")
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_index_reports_every_count_and_each_skipped_file(photos, tmp_path, loaded, capsys):
    out_index = tmp_path / "photos.index"
    code, out, err = run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index, "--batch-size", "2")
    assert code == 0, err
    assert "added 3, updated 0, removed 0, unchanged 0, skipped 1" in out
    skipped = [line for line in out.splitlines() if "broken.jpg" in line]
    assert len(skipped) == 1 and "not an image" in skipped[0]
    index = ImageIndex.load(out_index)
    assert sorted(index.paths) == ["blue.png", "more/purple.png", "red.png"]
    assert (index.model, index.dtype) == ("fake-colour", "f16")


def test_search_prints_json_and_a_table(photos, tmp_path, loaded, capsys):
    out_index = tmp_path / "photos.index"
    assert run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index, "--dtype", "f32")[0] == 0

    code, out, err = run(capsys, "search", out_index, "--text", "red", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert [Path(r["path"]).name for r in results][:1] == ["red.png"]
    assert len(results) == 3 and all({"path", "score"} <= set(r) for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert Path(results[0]["path"]).is_file()
    assert loaded[-1].name == "fake-colour"  # the model recorded in the index

    code, out, _ = run(capsys, "search", out_index, "--image", photos / "blue.png", "-k", "2", "--json")
    assert code == 0 and [Path(r["path"]).name for r in json.loads(out)] == ["blue.png", "purple.png"]

    plain = {Path(r["path"]).name: r["score"] for r in json.loads(run(capsys, "search", out_index, "--text", "red",
                                                                      "--json")[1])}
    mixed = {Path(r["path"]).name: r["score"] for r in json.loads(run(capsys, "search", out_index, "--query",
                                                                      "red, -blue", "--json")[1])}
    assert mixed["purple.png"] < plain["purple.png"]

    code, out, _ = run(capsys, "search", out_index, "--text", "blue", "-k", "1")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2 and "score" in lines[0] and lines[1].endswith("blue.png")


def test_reindexing_updates_incrementally_with_the_recorded_model(photos, tmp_path, loaded, capsys):
    out_index = tmp_path / "photos.index"
    run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index)
    Image.new("RGB", (16, 16), COLOURS["green"]).save(photos / "green.png")
    (photos / "red.png").unlink()

    code, out, err = run(capsys, "index", photos, "--out", out_index)
    assert code == 0, err
    assert "added 1, updated 0, removed 1, unchanged 2, skipped 1" in out
    assert loaded[-1].name == "fake-colour" and loaded[-1].images_embedded == 1
    assert sorted(ImageIndex.load(out_index).paths) == ["blue.png", "green.png", "more/purple.png"]


def test_a_disagreeing_model_or_dtype_is_an_error_and_leaves_the_index(photos, tmp_path, loaded, capsys):
    out_index = tmp_path / "photos.index"
    run(capsys, "index", photos, "--model", "fake-colour", "--out", out_index)
    before = sorted(p.name for p in out_index.iterdir())
    code, out, err = run(capsys, "index", photos, "--model", "fake-other", "--out", out_index)
    assert code != 0 and "fake-colour" in err and "fake-other" in err and "Traceback" not in err
    code, _, err = run(capsys, "index", photos, "--dtype", "i8", "--out", out_index)
    assert code != 0 and "f16" in err and "i8" in err
    assert sorted(p.name for p in out_index.iterdir()) == before
    assert len(loaded) == 1


@pytest.mark.parametrize(
    "model, message",
    [("no-such-model", "unknown model 'no-such-model'"), ("fake-offline", "not cached"), (None, "--model is required")],
)
def test_model_errors_are_one_line_without_a_traceback(photos, tmp_path, loaded, capsys, model, message):
    out_index = tmp_path / "photos.index"
    argv = ["index", photos, "--out", out_index] + (["--model", model] if model else [])
    code, out, err = run(capsys, *argv)
    assert code != 0
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not ImageIndex.exists(out_index)


def test_a_missing_folder_or_index_is_a_clear_error(tmp_path, loaded, capsys):
    code, _, err = run(capsys, "index", tmp_path / "nowhere", "--model", "fake-colour", "--out", tmp_path / "x.index")
    assert code != 0 and "nowhere" in err and "is not a folder" in err
    code, _, err = run(capsys, "search", tmp_path / "x.index", "--text", "red")
    assert code != 0 and "x.index" in err and "not a saved image index" in err
    assert loaded == []


def test_search_errors_are_reported(photos, tmp_path, loaded, capsys):
    out_index = tmp_path / "photos.index"
    run(capsys, "index", photos, "--model", "fake-image-only", "--out", out_index)
    code, _, err = run(capsys, "search", out_index, "--text", "red")
    assert code != 0 and "image-only" in err and "Traceback" not in err
    code, _, err = run(capsys, "search", out_index, "--query", "-img:" + str(photos / "red.png"))
    assert code != 0 and "positive" in err
    code, _, err = run(capsys, "search", out_index, "--image", photos / "missing.png")
    assert code != 0 and "missing.png" in err
    code, out, _ = run(capsys, "search", out_index, "--query", "img:" + str(photos / "red.png"), "--json")
    assert code == 0 and Path(json.loads(out)[0]["path"]).name == "red.png"


def test_search_exact_compares_with_every_vector(photos, tmp_path, loaded, capsys):
    # A deliberately poor HNSW graph (2 edges per node, search breadth 1) misses most of
    # the true neighbours; --exact must return the brute-force top k all the same.
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ImageIndex(8, "fake-colour", dtype="f32", connectivity=2, expansion_add=2, expansion_search=1)
    index.add_vectors(vectors, threads=1)
    index.save(tmp_path / "vectors.index")
    query = ColourEncoder("fake-colour").encode_images([photos / "red.png"])[0]
    truth = np.argsort(-(vectors @ query), kind="stable")[:10].tolist()

    def keys(*options: str) -> list[int]:
        code, out, err = run(capsys, "search", tmp_path / "vectors.index", "--image", photos / "red.png",
                             "-k", "10", "--json", *options)
        assert code == 0, err
        return [row["key"] for row in json.loads(out)]

    assert keys("--exact") == truth
    assert keys() != truth  # the graph search alone does miss some


def test_search_needs_exactly_one_kind_of_query(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["search", str(tmp_path), "--text", "red", "--image", "red.png"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["search", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "one of the arguments" in capsys.readouterr().err


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_help_documents_every_option(capsys):
    parser = cli.build_parser()
    commands = _subparsers(parser)
    assert {"index", "search"} <= set(commands)
    for name, command in [("", parser), *commands.items()]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"] if name else ["--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{name or 'vslib'}: {action.dest} has no help"
            for option in action.option_strings:
                assert option in text
    assert "index" in parser.format_help() and "search" in parser.format_help()
