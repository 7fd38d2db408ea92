"""Two-model search with the bundled tiny-dinov3 and tiny-siglip2: routing, fusion, the CLI, the app,
updates and crash safety of a multi-model index folder."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vslib import app, cli, multi, synth
from vslib.encoders import load_encoder
from vslib.fusion import (
    MixedSpacesError,
    check_fusion,
    fuse_hits,
    reciprocal_rank_fusion,
)
from vslib.index import ImageIndex, IndexFormatError, SearchHit
from vslib.multi import ModelInfo, MultiIndex, image_model, plan_query, text_model
from vslib.query import QueryTerm, search

REPO = Path(__file__).resolve().parents[1]
DINO, SIGLIP = "tiny-dinov3", "tiny-siglip2"
_ENCODERS: dict[str, object] = {}


def encoder(name: str):
    """The bundled models, each loaded once for the whole file."""
    if name not in _ENCODERS:
        _ENCODERS[name] = load_encoder(name, device="cpu")
    return _ENCODERS[name]


@pytest.fixture
def cached_models(monkeypatch):
    """The CLI loads the real bundled models, from a cache; other names are unknown."""

    def load(name: str, device: str | None = None):
        if name not in (DINO, SIGLIP):
            raise KeyError(f"unknown model {name!r}")
        return encoder(name)

    monkeypatch.setattr(cli, "load_encoder", load)


@pytest.fixture(scope="module")
def scenes_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes") / "photos"
    synth.save_scenes(synth.make_split("test", 16, size=64, small_objects=0), root)
    (root / synth.LABELS_FILE).unlink()
    return root


@pytest.fixture
def photos(scenes_folder, tmp_path) -> Path:
    root = tmp_path / "photos"
    shutil.copytree(scenes_folder, root)
    return root


@pytest.fixture(scope="module")
def built(scenes_folder, tmp_path_factory) -> Path:
    """A saved two-model index of the scenes (read only by the tests that use it)."""
    out = tmp_path_factory.mktemp("built") / "both.index"
    encoders = [encoder(DINO), encoder(SIGLIP)]
    index = MultiIndex.for_encoders(encoders, dtype="f32")
    index.update_folder(scenes_folder, encoders, progress=False)
    index.save(out)
    return out


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cosines(model: str, folder: Path, query: str | Path) -> dict[str, float]:
    """Each image's cosine with a text or image query, computed directly with one model."""
    files = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    model_encoder = encoder(model)
    images = model_encoder.encode_images(files)
    if isinstance(query, Path):
        vector = model_encoder.encode_images([query])[0]
    else:
        vector = model_encoder.encode_texts([query])[0]
    return {file.name: float(score) for file, score in zip(files, images @ vector)}


# -- reciprocal rank fusion ----------------------------------------------------------------------


def test_rrf_sums_one_over_k_plus_rank_and_sorts_best_first():
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert [item for item, _ in reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]])] == ["a", "c", "b"]
    # k changes how much the top positions dominate: with k=0 one first place beats two thirds.
    assert [item for item, _ in reciprocal_rank_fusion([["x", "y", "z"], ["w", "v", "z"]], k=0)][:2] == ["x", "w"]
    assert reciprocal_rank_fusion([["x", "y", "z"], ["w", "v", "z"]], k=1000)[0][0] == "z"


def test_rrf_weights_ties_and_bad_input():
    weighted = dict(reciprocal_rank_fusion([["a"], ["b"]], k=10, weights=[3, 1]))
    assert weighted == {"a": pytest.approx(3 / 11), "b": pytest.approx(1 / 11)}
    # Equal scores: the better best rank first, then the first seen.
    assert [i for i, _ in reciprocal_rank_fusion([["a", "b"], ["b", "a"]])] == ["a", "b"]
    assert [i for i, _ in reciprocal_rank_fusion([["p"], ["q"]])] == ["p", "q"]
    assert reciprocal_rank_fusion([[], []]) == []
    for bad in ({"rankings": []}, {"rankings": [["a", "a"]]}, {"rankings": [["a"]], "k": -1},
                {"rankings": [["a"]], "k": math.inf}, {"rankings": [["a"]], "weights": [1, 2]},
                {"rankings": [["a"]], "weights": [0]}):
        with pytest.raises(ValueError):
            reciprocal_rank_fusion(**bad)


def test_fuse_hits_uses_ranks_only_and_keeps_each_models_rank_and_cosine():
    # The image list's cosines are far larger; adding them would let it swamp the text list.
    image = [SearchHit("a", 0, 0.99), SearchHit("b", 1, 0.98), SearchHit("c", 2, 0.97)]
    text = [SearchHit("c", 7, 0.21), SearchHit("b", 8, 0.20), SearchHit("d", 9, 0.05)]
    fused = fuse_hits({"img": image, "txt": text})
    assert [hit.path for hit in fused] == ["c", "b", "a", "d"]
    assert fused[0].ranks == {"img": 3, "txt": 1} and fused[0].cosines == {"img": 0.97, "txt": 0.21}
    assert fused[2].ranks == {"img": 1, "txt": None} and fused[2].cosines["txt"] is None
    assert fused[0].score == pytest.approx(1 / 63 + 1 / 61)
    # Weight 5 on the image list: b (5/62 + 1/62) > c (5/63 + 1/61) > a (5/61) > d (1/63).
    assert [h.path for h in fuse_hits({"img": image, "txt": text}, weights={"img": 5})] == ["b", "c", "a", "d"]
    with pytest.raises(ValueError, match="without results"):
        fuse_hits({"img": image}, weights={"txt": 1})


@pytest.mark.parametrize("method", ["sum", "add", "cosine", "mean"])
def test_adding_cosines_across_models_is_refused_with_a_reason(method):
    with pytest.raises(MixedSpacesError, match="never added"):
        check_fusion(method)
    with pytest.raises(ValueError, match="never added"):
        plan_query([ModelInfo("a", "dinov3", False), ModelInfo("b", "siglip", True)],
                   [QueryTerm(1.0, text="red")], fusion=method)


# -- routing -------------------------------------------------------------------------------------


def test_image_terms_go_to_the_dinov3_model_and_text_terms_to_the_text_model(tmp_path):
    models = [ModelInfo(SIGLIP, "siglip", True), ModelInfo(DINO, "dinov3", False)]
    picture, other = Path("x.png"), Path("y.png")
    assert image_model(models) == DINO and text_model(models) == SIGLIP
    assert plan_query(models, [QueryTerm(1.0, image=picture)]).groups == {DINO: [QueryTerm(1.0, image=picture)]}
    assert plan_query(models, [QueryTerm(1.0, text="red")]).models == [SIGLIP]
    both = plan_query(models, [QueryTerm(2.0, text="red"), QueryTerm(1.0, image=picture)])
    assert both.fused and both.groups == {DINO: [QueryTerm(1.0, image=picture)], SIGLIP: [QueryTerm(2.0, text="red")]}
    # An image with only a negative text: nothing to rank on the text side, so one space answers.
    pushed = plan_query(models, [QueryTerm(1.0, image=picture), QueryTerm(-1.0, text="red")])
    assert not pushed.fused and pushed.models == [SIGLIP]
    assert plan_query(models, [QueryTerm(1.0, image=picture), QueryTerm(-1.0, image=other)]).models == [DINO]
    with pytest.raises(MixedSpacesError, match="different spaces"):
        plan_query(models, [QueryTerm(1.0, text="red"), QueryTerm(1.0, image=picture)], fusion="refuse")
    explicit = plan_query(models, [QueryTerm(1.0, text="red"), QueryTerm(1.0, image=picture)], model=SIGLIP)
    assert not explicit.fused and explicit.models == [SIGLIP]
    with pytest.raises(ValueError, match="image-only"):
        plan_query(models, [QueryTerm(1.0, text="red")], model=DINO)
    with pytest.raises(ValueError, match="not 'nope'"):
        plan_query(models, [QueryTerm(1.0, image=picture)], model="nope")
    images_only = [ModelInfo("d1", "dinov3", False), ModelInfo("d2", "dinov3", False)]
    with pytest.raises(ValueError, match="no model of this index embeds text"):
        plan_query(images_only, [QueryTerm(1.0, text="red")])
    # A DINOv3-family model wins image queries; without one, the first image-only model does.
    assert image_model([ModelInfo("o", "other", False), ModelInfo("d", "dinov3", False)]) == "d"
    assert image_model([ModelInfo("t", "siglip", True), ModelInfo("i", "other", False)]) == "i"
    assert text_model([ModelInfo("d", "dinov3", False), ModelInfo("x", "dinotxt", True),
                       ModelInfo("s", "siglip", True)]) == "x"


# -- the command line ----------------------------------------------------------------------------


def test_cli_builds_a_two_model_index_with_a_vector_per_image_from_each(photos, tmp_path, cached_models, capsys):
    out = tmp_path / "both.index"
    code, stdout, err = run(capsys, "index", photos, "--model", DINO, "--model", SIGLIP, "--out", out,
                            "--no-progress")
    assert code == 0, err
    assert "added 16, updated 0, removed 0, unchanged 0, skipped 0" in stdout
    assert f"16 images in {out} ({DINO}, {SIGLIP}, f16)" in stdout
    index = MultiIndex.load(out)
    assert index.model_names == [DINO, SIGLIP] and len(index) == 16
    for name in (DINO, SIGLIP):
        sub = index.index(name)
        assert sub.model == name and sub.dim == encoder(name).dim and sorted(sub.paths) == sorted(index.paths)
    assert sorted(p.name for p in out.iterdir())[1:] == ["models.json"]  # one generation folder


def test_image_query_is_answered_by_dinov3_and_text_query_by_siglip2(built, scenes_folder, cached_models, capsys):
    query = scenes_folder / "test-00003-hexagon.png"
    code, out, err = run(capsys, "search", built, "--image", query, "-k", "16", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert {row["model"] for row in rows} == {DINO}
    assert Path(rows[0]["path"]).name == query.name
    truth = cosines(DINO, scenes_folder, query)
    assert all(row["score"] == pytest.approx(truth[Path(row["path"]).name], abs=1e-4) for row in rows)
    other = cosines(SIGLIP, scenes_folder, query)
    assert any(abs(row["score"] - other[Path(row["path"]).name]) > 1e-2 for row in rows)

    code, out, err = run(capsys, "search", built, "--text", "a purple hexagon", "-k", "16", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert {row["model"] for row in rows} == {SIGLIP}
    truth = cosines(SIGLIP, scenes_folder, "a purple hexagon")
    assert all(row["score"] == pytest.approx(truth[Path(row["path"]).name], abs=1e-4) for row in rows)
    assert [Path(row["path"]).name for row in rows] == sorted(truth, key=lambda name: -truth[name])

    code, out, _ = run(capsys, "search", built, "--image", query, "-k", "2")
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"answered by {DINO} (image query)" and lines[2].endswith(query.name)
    code, out, _ = run(capsys, "search", built, "--text", "a red circle", "-k", "1")
    assert out.splitlines()[0] == f"answered by {SIGLIP} (text query)"


def test_model_option_picks_the_model_or_explains_why_not(built, scenes_folder, cached_models, capsys):
    query = scenes_folder / "test-00003-hexagon.png"
    code, out, err = run(capsys, "search", built, "--image", query, "--model", SIGLIP, "-k", "16", "--json")
    assert code == 0, err
    truth = cosines(SIGLIP, scenes_folder, query)
    rows = json.loads(out)
    assert {row["model"] for row in rows} == {SIGLIP}
    assert all(row["score"] == pytest.approx(truth[Path(row["path"]).name], abs=1e-4) for row in rows)

    code, out, err = run(capsys, "search", built, "--text", "red", "--model", "nope")
    assert code == 1 and out == "" and "not 'nope'" in err and DINO in err and "Traceback" not in err
    code, out, err = run(capsys, "search", built, "--text", "red", "--model", DINO)
    assert code == 1 and "image-only" in err and "Traceback" not in err
    code, _, err = run(capsys, "search", built, "--text", "red", "--fusion", "sum")
    assert code == 1 and "never added" in err


def test_a_mixed_query_is_fused_by_rank_or_refused(built, scenes_folder, cached_models, capsys):
    picture = scenes_folder / "test-00003-hexagon.png"
    query = f"img:{picture}, blue"
    code, out, err = run(capsys, "search", built, "--query", query, "-k", "5", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert all(row["model"] == f"{DINO}+{SIGLIP}" and row["fusion"] == "rrf" for row in rows)
    index = MultiIndex.load(built)
    image_hits = search(index.index(DINO), encoder(DINO), [QueryTerm(1.0, image=picture)], k=16)
    text_hits = search(index.index(SIGLIP), encoder(SIGLIP), [QueryTerm(1.0, text="blue")], k=16)
    expected = reciprocal_rank_fusion([[h.path for h in image_hits], [h.path for h in text_hits]])[:5]
    assert [Path(row["path"]).name for row in rows] == [path for path, _ in expected]
    assert [row["score"] for row in rows] == pytest.approx([score for _, score in expected], abs=1e-6)
    first = rows[0]
    assert first["ranks"][DINO] == 1 + [h.path for h in image_hits].index(Path(first["path"]).name)

    code, out, _ = run(capsys, "search", built, "--query", query, "-k", "3", "--rrf-k", "5")
    assert code == 0 and "fused by rank (RRF, k=5)" in out.splitlines()[0] and "rrf" in out.splitlines()[1]

    code, out, err = run(capsys, "search", built, "--query", query, "--fusion", "refuse")
    assert code == 1 and out == "" and "different spaces" in err and "Traceback" not in err


def test_reindexing_a_two_model_index_is_incremental_and_keeps_the_models_in_step(photos, tmp_path,
                                                                                   cached_models, capsys):
    out = tmp_path / "both.index"
    assert run(capsys, "index", photos, "--model", DINO, "--model", SIGLIP, "--out", out, "--no-progress")[0] == 0
    keys = {name: MultiIndex.load(out).index(name).record("test-00005-arrow.png").key for name in (DINO, SIGLIP)}
    (photos / "test-00000-hexagon.png").unlink()
    shutil.copy(photos / "test-00001-diamond.png", photos / "copy.png")
    with Image.open(photos / "test-00005-arrow.png") as image:
        image.rotate(90).save(photos / "test-00005-arrow.png")
    code, stdout, err = run(capsys, "index", photos, "--out", out, "--no-progress")
    assert code == 0, err
    assert "added 1, updated 1, removed 1, unchanged 14, skipped 0" in stdout
    index = MultiIndex.load(out)
    assert "copy.png" in index and "test-00000-hexagon.png" not in index
    for name in (DINO, SIGLIP):
        assert index.index(name).record("test-00005-arrow.png").key != keys[name]
        assert sorted(index.index(name).paths) == sorted(index.paths)
    code, stdout, _ = run(capsys, "index", photos, "--out", out, "--no-progress", "--rehash")
    assert code == 0 and "added 0, updated 0, removed 0, unchanged 16, skipped 0" in stdout
    assert sum(1 for p in out.iterdir() if p.name.startswith("gen-")) == 1

    # Asking for other models, a dtype, or Ray is a clear error that leaves the index as it is.
    before = (out / "models.json").read_bytes()
    for extra, message in ((["--model", DINO], "leave out --model"), (["--dtype", "i8"], "f16 vectors"),
                           (["--engine", "ray"], "single-model")):
        code, _, err = run(capsys, "index", photos, "--out", out, *extra)
        assert code == 1 and message in err, err
    assert (out / "models.json").read_bytes() == before
    code, _, err = run(capsys, "index", photos, "--model", DINO, "--model", DINO, "--out", tmp_path / "x.index")
    assert code == 1 and "more than once" in err


def test_single_and_two_model_indexes_do_not_mix(photos, tmp_path, cached_models, capsys):
    single = tmp_path / "single.index"
    assert run(capsys, "index", photos, "--model", SIGLIP, "--out", single, "--no-progress")[0] == 0
    assert ImageIndex.exists(single) and not MultiIndex.exists(single)  # one model: the old format
    code, _, err = run(capsys, "index", photos, "--model", DINO, "--model", SIGLIP, "--out", single)
    assert code == 1 and "single-model index" in err
    code, out, _ = run(capsys, "search", single, "--text", "red", "--json")
    assert code == 0 and {row["model"] for row in json.loads(out)} == {SIGLIP}
    code, _, err = run(capsys, "search", single, "--text", "red", "--model", DINO)
    assert code == 1 and "only the model" in err


def test_a_file_only_one_model_could_encode_is_left_out_of_both(photos, tmp_path, monkeypatch):
    siglip = encoder(SIGLIP)
    original = type(siglip).encode_files

    def encode_files(self, paths, *args, **kwargs):
        result = original(self, paths, *args, **kwargs)
        keep = [i for i, p in enumerate(result.paths) if p.name != "test-00002-ring.png"]
        result.skipped.append((photos / "test-00002-ring.png", "cannot decode (simulated)"))
        result.vectors, result.paths = result.vectors[keep], [result.paths[i] for i in keep]
        return result

    monkeypatch.setattr(type(siglip), "encode_files", encode_files)
    index = MultiIndex.for_encoders([encoder(DINO), siglip])
    report = index.update_folder(photos, [encoder(DINO), siglip], progress=False)
    assert report.skipped == [("test-00002-ring.png", "cannot decode (simulated)")]
    assert len(report.added) == 15 and "test-00002-ring.png" not in index
    assert "test-00002-ring.png" not in index.index(DINO)
    with pytest.raises(ValueError, match="needs encoders"):
        index.update_folder(photos, [siglip])


# -- the folder on disk --------------------------------------------------------------------------


def test_every_damaged_manifest_is_one_clear_error(built, tmp_path, cached_models, capsys):
    folder = tmp_path / "copy.index"
    shutil.copytree(built, folder)
    manifest = json.loads((folder / "models.json").read_text())
    generation = folder / manifest["generation"]

    def edit(change) -> None:
        data = json.loads(json.dumps(manifest))
        change(data)
        (folder / "models.json").write_text(json.dumps(data))

    edits = [
        lambda d: d.update(version=2),
        lambda d: d.update(extra=1),
        lambda d: d.update(generation="../elsewhere"),
        lambda d: d["models"].pop(),
        lambda d: d["models"][0].update(folder="../x"),
        lambda d: d["models"][0].update(supports_text=1),
        lambda d: d["models"][1].update(name=DINO),
        lambda d: d["models"][0].update(manifest_sha256="0" * 64),
        lambda d: d["models"][0].update(name="tiny-other"),
    ]
    for change in edits:
        edit(change)
        with pytest.raises(IndexFormatError):
            MultiIndex.load(folder)
    (folder / "models.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        MultiIndex.load(folder)
    code, out, err = run(capsys, "search", folder, "--text", "red")
    assert code == 1 and out == "" and "not valid JSON" in err and "Traceback" not in err

    # Sub-indexes that disagree about the images are refused even with matching checksums.
    edit(lambda d: None)
    sub = ImageIndex.load(generation / manifest["models"][1]["folder"])
    sub.remove([sub.paths[0]])
    shutil.rmtree(generation / manifest["models"][1]["folder"])
    sub.save(generation / manifest["models"][1]["folder"])
    from vslib.fingerprint import file_sha256

    edit(lambda d: d["models"][1].update(manifest_sha256=file_sha256(
        generation / manifest["models"][1]["folder"] / "index.json")))
    with pytest.raises(IndexFormatError, match="do not hold the same images"):
        MultiIndex.load(folder)


def _toy_index(n: int, seed: int) -> MultiIndex:
    rng = np.random.default_rng(seed)
    a, b = ImageIndex(8, "a", dtype="f32"), ImageIndex(4, "b", dtype="f32")
    paths = [f"v{seed}-{i}" for i in range(n)]
    a.add_vectors(rng.normal(size=(n, 8)), paths, threads=1)
    b.add_vectors(rng.normal(size=(n, 4)), paths, threads=1)
    return MultiIndex([ModelInfo("a", "dinov3", False), ModelInfo("b", "siglip", True)], [a, b])


_KILLED_SAVE = """
    import os, signal, sys
    import numpy as np
    from vslib import multi
    from vslib.index import ImageIndex
    from vslib.multi import ModelInfo, MultiIndex
    folder, point, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(n)
    a, b = ImageIndex(8, "a", dtype="f32"), ImageIndex(4, "b", dtype="f32")
    paths = [f"k{n}-{i}" for i in range(n)]
    a.add_vectors(rng.normal(size=(n, 8)), paths, threads=1)
    b.add_vectors(rng.normal(size=(n, 4)), paths, threads=1)
    index = MultiIndex([ModelInfo("a", "dinov3", False), ModelInfo("b", "siglip", True)], [a, b])
    def hook(name):
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)
    multi.SAVE_HOOK = hook
    index.save(folder)
"""


def _killed_save(folder: Path, point: str, n: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_SAVE), str(folder), point, str(n)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.parametrize("point", multi.SAVE_POINTS)
def test_a_save_killed_at_any_point_leaves_the_previous_or_the_new_index_whole(tmp_path, point):
    folder = tmp_path / "killed.index"
    first = _killed_save(folder, point, 5)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert MultiIndex.folder_state(folder) in ("missing", "new", "multi")
    _toy_index(7, 1).save(folder)
    assert len(MultiIndex.load(folder)) == 7
    assert sorted(p.name.split("-")[0] for p in folder.iterdir()) == ["gen", "models.json"]

    second = _killed_save(folder, point, 3)
    assert second.returncode == -signal.SIGKILL
    loaded = MultiIndex.load(folder)
    assert len(loaded) in (7, 3) and all(len(loaded.index(m)) == len(loaded) for m in ("a", "b"))
    _toy_index(4, 2).save(folder)
    assert len(MultiIndex.load(folder)) == 4 and len(list(folder.iterdir())) == 2


def test_saving_refuses_other_folders_and_a_read_only_index(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "mine.txt").write_text("x")
    ImageIndex(8, "a").save(tmp_path / "single.index")
    for target, message in (("file", "is a file"), ("foreign", "not an image index"),
                            ("single.index", "single-model")):
        with pytest.raises(FileExistsError, match=message):
            _toy_index(2, 0).save(tmp_path / target)
    _toy_index(2, 0).save(tmp_path / "ok.index")
    view = MultiIndex.load(tmp_path / "ok.index", view=True)
    with pytest.raises(Exception, match="read-only"):
        view.save(tmp_path / "ok.index")
    with pytest.raises(ValueError, match="two or more"):
        MultiIndex([ModelInfo("a", "dinov3", False)], [ImageIndex(8, "a")])


# -- the web app ---------------------------------------------------------------------------------


def test_the_app_says_which_model_answered(built, scenes_folder):
    index = app.open_index(built)
    assert isinstance(index, MultiIndex) and index.read_only
    encoders = {DINO: encoder(DINO), SIGLIP: encoder(SIGLIP)}
    service = app.MultiSearchService(index, encoders, app.calibrations_for(built, encoder(SIGLIP)))
    assert DINO in service.header() and SIGLIP in service.header() and service.supports_text

    text = service.search(text="a purple hexagon", k=16)
    truth = cosines(SIGLIP, scenes_folder, "a purple hexagon")
    assert text.model == SIGLIP and f"answered by {SIGLIP}" in text.message
    assert [row.path for row in text.rows] == sorted(truth, key=lambda name: -truth[name])
    assert text.rows[0].confidence is not None  # SigLIP's own calibration, for its own cosines

    image = service.search(image=scenes_folder / "test-00003-hexagon.png", k=3)
    assert image.model == DINO and f"answered by {DINO}" in image.message
    assert image.rows[0].path == "test-00003-hexagon.png"

    both = service.search(text="blue", image=scenes_folder / "test-00003-hexagon.png", k=3)
    assert DINO in both.model and SIGLIP in both.model and "fused by rank" in both.message
    assert all(row.confidence is None for row in both.rows)  # RRF scores are not cosines

    single_folder = built.parent / "single.index"
    if not single_folder.exists():
        only = ImageIndex(encoder(SIGLIP).dim, SIGLIP)
        only.update_folder(scenes_folder, encoder(SIGLIP), progress=False)
        only.save(single_folder)
    single = app.SearchService(app.open_index(single_folder), encoder(SIGLIP))
    outcome = single.search(text="a red circle", k=2)
    assert outcome.model == SIGLIP and outcome.message.startswith("2 results (text query) · answered by tiny-siglip2")
    with pytest.raises(app.AppError, match="needs the model"):
        app.MultiSearchService(index, {SIGLIP: encoder(SIGLIP)})


def test_leftovers_of_a_killed_first_save_are_no_index_yet(tmp_path, capsys):
    folder = tmp_path / "both.index"
    (folder / ("gen-" + "0" * 32) / "tiny-dinov3").mkdir(parents=True)
    assert MultiIndex.folder_state(folder) == "new" and ImageIndex.folder_state(folder) == "foreign"
    code, out, err = run(capsys, "search", folder, "--text", "red")
    assert code == 1 and out == "" and "no saved index yet" in err
    _toy_index(3, 0).save(folder)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("gen-")) != ["gen-" + "0" * 32]
    assert len(list(folder.iterdir())) == 2
