"""Mutation score of vslib's core modules: do the unit tests catch single-line bugs?

    pip install -e ".[mutation]"
    nice -n 10 python benchmarks/mutation_score.py [--modules calibration images ...] [--sample N]

For each module, mutmut (https://mutmut.readthedocs.io) plants one small bug at a time
(a flipped sign or comparison, a changed number, slice or keyword argument, a string
replaced) and runs that module's own fast test file(s) against it. A mutant the tests
notice is *killed*; one they miss *survived*. The score per module is

    killed / (mutants checked - equivalent - timeouts)

where an equivalent mutant (one that cannot change any result, e.g. a tolerance
loosened in a loop that converges anyway) is listed with its reason but left out, and so
is a timeout: on a busy machine forked test runs stalled, so a timeout proves nothing. Every other survivor is listed with the diff, and either a test
for it was added (then the module was measured again) or ``REASONS`` below says in one
line why it stays (``message text``: only an error message's wording changes;
``logging``; ``equivalent``).

The run is slow (every mutant starts a pytest session; several hundred mutants per
module), so it is not part of CI. Each module runs in its own scratch copy of the package
under ``--workdir``, a few mutants at a time, under ``nice``; an interrupted run resumes.
``--sample N`` tests a seeded random sample of N mutants per module instead of all, and
the results then carry a 95% interval for the score. Results go to
``benchmarks/results/mutation_score.json``: a module run again replaces its entry, the
others are kept; ``--report-only`` rewrites the entries from the scratch copies (after
editing ``REASONS``) without running anything.
"""

from __future__ import annotations

import argparse
import filecmp
import fnmatch
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import RESULTS_DIR, machine_info, print_table, utc_now, command_line

ROOT = Path(__file__).resolve().parents[1]
RESULT_NAME = "mutation_score"

#: Each core module and the fast unit-test files that are meant to catch its bugs.
MODULES: dict[str, list[str]] = {
    "calibration": ["tests/test_calibration.py"],
    "images": ["tests/test_images.py"],
    "query": ["tests/test_query.py"],
    "zeroshot": ["tests/test_zeroshot.py"],
    "bpe": ["tests/test_dinotxt.py"],  # the tokenizer tests live beside the model that uses it,
    "index": ["tests/test_index.py"],
    "encoders": ["tests/test_encoders.py", "tests/test_bundled_models.py", "tests/test_naflex.py"],
}
#: Default order: the smallest modules first, so a time-boxed run measures as many as it can.
DEFAULT_ORDER = ["calibration", "images", "query", "zeroshot", "bpe", "index", "encoders"]
#: Modules the test files import besides the one under test (copied, never mutated).
_HELPER_TESTS = ["tests/conftest.py", "tests/test_dinotxt.py"]

#: Surviving mutants that stay, with the reason: (module glob, mutant-name glob, regex
#: searched in the original and mutated lines joined by " -> ", category, reason). The category
#: ``equivalent`` leaves the mutant out of the score; ``message text`` and ``logging``
#: count as survivors.
REASONS: list[tuple[str, str, str, str, str]] = [
    ("*", "*", r'(Error|Warning)\((f?"XX|None\))|warn\(f?"XX', "message text",
     "only an error's or warning's message changes (its wording, or no message); tests match its key words"),
    ("*", "*", r'side="left"\) -> .*searchsorted\(ref, s, \)', "equivalent", "side='left' is searchsorted's default"),
    ("calibration", "*x__sigmoid*", r"x >= 0, .* -> .*x > 0, ", "equivalent", "both branches give 0.5 at x = 0"),
    ("calibration", "*fit_calibration*", r"1e-12 \* np.eye", "equivalent",
     "the sign of a 1e-12 ridge cannot matter: the Hessian's diagonal is at least l2 (1e-3)"),
    ("calibration", "*fit_calibration*", r"while objective\(w - t \* step\) >= current", "equivalent",
     "at equal objective the step only shrinks further; the fit has converged either way"),
    ("calibration", "*reliability*", r'errstate\(invalid="ignore", divide="ignore"\): -> .*errstate\(invalid="ignore", (divide=None)?\)',
     "equivalent", "an empty bin divides 0 by 0 (invalid), never a non-zero sum by 0, so the divide setting never applies"),
    ("*", "*", r'kind="stable"\).* -> .*kind="STABLE"\)', "equivalent", "NumPy reads the sort kind case-insensitively"),
    ("*", "*", r"\.astype\(np.float64\).* -> .*\.astype\(None\)", "equivalent", "astype(None) is astype(float64)"),
    ("*", "*", r'\.(en|de)code\("utf-8".* -> .*\.(en|de)code\(("UTF-8"|errors=)', "equivalent",
     "codec names are case-insensitive, and UTF-8 is the default"),
    ("*", "*", r"np.argsort\(-\w+, axis=1, .* -> .*np.argsort\(-\w+, kind=", "equivalent",
     "argsort sorts along the last axis by default, which is axis 1 of these matrices"),
    ("*", "*", r"np.take_along_axis\(mask, top, axis=1\).* -> .*np.take_along_axis\(mask, top, \)", "equivalent",
     "take_along_axis works along the last axis by default (NumPy 2.3+), axis 1 here"),
    ("images", "*iter_image_files*", r"os.walk\(root, followlinks=False\).* -> .*os.walk\(root, (followlinks=None)?\)",
     "equivalent", "None is false, and False is os.walk's default: no links are followed either way"),
    ("images", "*to_rgb*", r"\(255, 255, 255, 255\)\) -> .*\((25[56], ){3}25[56]\)\)", "equivalent",
     "PIL clips a fill value of 256 to 255"),
    ("images", "*_decode*", r'exif = image.getexif\(\) -> exif = None|reduced.info\["exif"\] = .* -> reduced.info\["(XXexifXX|EXIF)"\]',
     "equivalent", ("Image.reduce copies info, which already holds the EXIF of PNG and WebP, and TIFF comes out of "
                    "the decoder upright (checked: orientation 6 survives reduced decoding without the copy); "
                    "JPEG takes the draft path")),
    ("query", "*query_vector*", r"np.zeros\(encoder.dim, dtype=np.float64\) -> .*np.zeros\(encoder.dim, (dtype=None)?\)",
     "equivalent", "np.zeros is float64 by default"),
    ("query", "*query_vector*", r"total \+= np.asarray\(\[t.weight for t in texts\]\).* -> total = np.asarray\(\[t.weight for t in texts\]\)",
     "equivalent", "text terms are added first, to zeros: = and += give the same sum"),
    ("query", "*query_vector*", r"term.weight > 0 for term .* -> .*term.weight >= 0 for term", "equivalent",
     "a QueryTerm's weight is never 0 (QueryTerm refuses it)"),
    ("query", "*query_vector*", r"if norm < 1e-6: -> if norm <= 1e-6:", "equivalent",
     "only a norm of exactly 1e-6 tells them apart: a guard against cancelled terms, not a value with a meaning"),
    ("images", "*to_rgb*", r'image = image.convert\("RGBA"\) -> image = image.convert\(None\)', "equivalent",
     "PIL's convert() of a palette image with transparency picks RGBA itself"),
    ("images", "*to_rgb*", r"grey.astype\(np.uint8\).* -> .*grey.astype\(None\)", "equivalent",
     "whole numbers in 0..255 as a float image convert to the same 8-bit grey"),
    ("zeroshot", "*per_template_accuracy*", r"np.asarray\(template_emb, dtype=np.float32\) -> .*np.asarray\(template_emb, (dtype=None)?\)",
     "equivalent", "classify converts each template's embeddings to float32 right after"),
    ("zeroshot", "*retrieval_recall_at_k*", r"sets = None if isinstance\(positives, np.ndarray\) else .* -> .*and False",
     "equivalent", "a boolean matrix read as a list of rows is not sets, and becomes the same matrix again"),
    ("zeroshot", "*retrieval_recall_at_k*", r"mask = np.asarray\(positives if sets is None else sets\) -> .*or True",
     "equivalent", "positives is a sequence (as documented): reading it again gives what list() read"),
    ("zeroshot", "*template_embeddings*", r"reshape\(len\(names\), len\(templates\), -1\).* -> .*len\(templates\), -2\)",
     "equivalent", "NumPy reads any negative size in reshape as the one to infer"),
    ("bpe", "*_normalizer*", r'Replace\(Regex\(r"\\s\+"\), " "\).* -> .*Regex\(r"XX\\s\+XX"\)', "equivalent",
     "whitespace never reaches a token (the pre-tokenizer drops it), so collapsing its runs first changes nothing"),
    ("bpe", "*ClipTokenizer*__init__*", r'continuing_subword_prefix="", / \) -> \)$', "equivalent",
     "a BPE model has no continuing-subword prefix by default"),
    ("bpe", "*ClipTokenizer*tokenize*", r"torch.tensor\(ids, dtype=torch.long\) -> .*torch.tensor\(ids, (dtype=None)?\)",
     "equivalent", "a tensor of Python ints is int64 (long) by default"),
    ("zeroshot", "*retrieval_recall_at_k*", r"mask = np.zeros\(scores.shape, dtype=bool\) -> .*np.zeros\(scores.shape, (dtype=None)?\)",
     "equivalent", "a 0/1 float mask answers any() and take_along_axis exactly as a boolean one"),
    ("zeroshot", "*template_embeddings*", r"emb.astype\(np.float64\).* -> .*emb.astype\(None\)", "equivalent",
     "astype(None) is astype(float64)"),
    ("bpe", "*_pre_tokenizer*", r"use_regex=False\).* -> .*(use_regex=True\)|add_prefix_space=False, \))", "equivalent",
     ("the pieces are already CLIP's split; GPT-2's pattern (same character classes) leaves each whole "
      "(checked on 20,000 random strings)")),
    ("bpe", "*ClipTokenizer*", r"add_special_tokens=False.* -> .*(add_special_tokens=True|text\), \)|texts\], \))",
     "equivalent", "the tokenizer has no post-processor, so there are no special tokens to add"),
    ("index", "*__init__*", r'metric="cos".* -> .*metric="COS"', "equivalent", "USearch reads the metric name case-insensitively"),
    ("index", "*_open*", r"if not header and not vectors_file.exists\(\): -> if not header or not",
     "equivalent", "Index.metadata returns None exactly when the file does not exist, so both tests agree"),
    ("index", "*", r"np.asarray\(keys, dtype=np.uint64\).* -> .*np.asarray\(keys, (dtype=None)?\)",
     "equivalent", "keys are small non-negative integers: USearch takes them as int64 just the same"),
    ("index", "*_search_rows*",
     r"np.zeros\(0, np.uint64\), np.zeros\(0, np.float32\)\) for .* -> "
     r"return \[\(np.zeros\([01], (np.uint64|None)?\), np.zeros\([01], (np.float32|None)?\)\) for", "equivalent",
     ("only an empty index returns these, and its callers zip keys with distances: an empty array of any "
      "type (or one element beside an empty partner) lists no hits")),
    ("index", "*recall_at_k*", r"replace=False\) -> .*replace=None\)", "equivalent",
     "NumPy's choice tests replace for truth: None samples without replacement too"),
    ("index", "*search*", r"np.asarray\(query, dtype=np.float32\) -> .*np.asarray\(query, (dtype=None)?\)",
     "equivalent", "_as_matrix converts the query to float32 right after"),
    ("calibration", "*fit_calibration*", r"and t > 1e-8: -> .*and t >= 1e-8:", "equivalent",
     "t is a power of two, never exactly 1e-8"),
    ("calibration", "*fit_calibration*", r"if np.max\(np.abs\(t \* step\)\) < tol: -> .*<= tol:", "equivalent",
     ("only an update exactly equal to tol tells them apart, which float updates do not hit (even with tol=0, "
      "where an exactly zero update would count, 100 steps made none)")),
    ("calibration", "*fit_calibration*", r"t /= 2 -> t /= 3", "equivalent",
     ("the backtracking factor changes only the path to the optimum of a convex objective (checked on 800 "
      "random fits: the same convergence, the same fit to 5e-8)")),
    ("calibration", "*fit_calibration*", r"converged = False -> converged = None", "equivalent",
     "the flag is only tested for truth, and None is false"),
    ("calibration", "*fit_calibration*", r'kind = "matches" if y\[0\] .* -> .*if y\[1\]', "equivalent",
     "every label is the same here (at least two of them), so any one names the class"),
    ("zeroshot", "*evaluate_zero_shot*", r'"top1": topk_accuracy\(scores, labels, 1\),.* -> .*topk_accuracy\(scores, labels, \),',
     "equivalent", "topk_accuracy's k defaults to 1"),
    ("index", "*__init__*", r'metric="cos", dtype=dtype.* -> .*Index\(ndim=self.dim, (metric=None, )?dtype=dtype',
     "equivalent", "USearch's metric defaults to cosine, and it reads None as that default"),
    ("index", "*_get*", r'dtype="f32"\) -> .*dtype="F32"\)', "equivalent",
     "USearch reads the dtype name case-insensitively"),
    ("index", "*_get*", r"astype\(np.float32, copy=False\) -> .*astype\(np.float32, (copy=None|copy=True|)\)",
     "equivalent", "np.stack made a new float32 array that nothing else holds: a copy of it has the same values"),
    ("index", "*_open*", r"view=view, \*\*options\) -> .*view=view, \)$", "equivalent",
     "the vectors file holds its connectivity, and the expansion settings are set right after the restore"),
    ("index", "*update_folder*", r"np.zeros\(\(0, self.dim\), dtype=np.float32\) -> .*np.zeros\(\(0, self.dim\), (dtype=None)?\)",
     "equivalent", "with nothing to encode the empty matrix goes to _insert with no records, which returns before using it"),
    ("index", "*save*", r"folder.mkdir\(parents=True, exist_ok=True\) -> folder.mkdir\((parents=(None|False), )?exist_ok=True\)",
     "equivalent", "writer_lock has already created the folder's parent (its lock file lies there)"),
    ("index", "*", r"_search_rows\(.*exact=False\) -> .*exact=None\)", "equivalent",
     "USearch reads exact=None as False (checked: the same hits from a sparse graph that misses neighbours)"),
    ("index", "*", r"(np.clip\(1.0 - distances, -1.0, 1.0\).* -> .*-1.0, (None|2.0)\)|min\(score, 1.0\)\) -> .*min\(score, 2.0\)\))",
     "equivalent", ("USearch clamps a cosine distance at 0, so a score never exceeds 1 (checked in f32, f16 and i8 "
                    "on self-matches, scaled copies and near copies in 3 to 768 dimensions)")),
    ("index", "*recall_at_k*", r"np.fromiter\(self._records, dtype=np.int64\) -> .*dtype=None\)", "equivalent",
     "float64 holds the keys exactly (they stay far below 2**53), and _get converts them back to uint64"),
    ("encoders", "*_progress*", r"steps = -\(-total_items // batch_size\) if total_items else 0 -> .*if \(total_items\) or True",
     "equivalent", "with no items the ceiling division gives 0 too"),
    ("encoders", "*_progress*", r"tqdm\(iterable, total=steps, .* -> .*tqdm\(iterable, (total=None, )?desc=", "equivalent",
     ("tqdm takes the total from len() of the iterable, which is the batch count in every caller (a range of "
      "batch starts, or a DataLoader without drop_last)")),
    ("encoders", "*_processor_sides*",
     r"size.get\(key\) if isinstance\(size, dict\) else getattr\(size, key, None\) .* -> "
     r".*(if \(isinstance\(size, dict\)\) or True else|getattr\(size, key, \) for)", "equivalent",
     ("a size is a dict or transformers' SizeDict, which has .get() and every side field (None when unset), "
      "so reading it either way gives the same")),
    ("encoders", "*", r"F.normalize\((emb|emb\[:, half:\]), dim=-1\)\)? -> .*F.normalize\((emb|emb\[:, half:\]), (dim=\+1)?\)",
     "equivalent", "the embeddings are (N, D) matrices: dim 1 (normalize's default) is their last dimension"),
    ("encoders", "*DinoV3Encoder*patch_features*", r'shape\[-2\] // self.patch_size -> .*shape\[\+2\] // self.patch_size',
     "equivalent", "pixel_values is (N, C, H, W): index 2 and index -2 are both the height"),
    ("encoders", "*encode_files*", r"persistent_workers=False, -> persistent_workers=None,", "equivalent",
     "DataLoader tests persistent_workers for truth, and None is false"),
    ("encoders", "*_patch_budget*", r'getattr\(self.model.config.vision_config, "image_size", "\?"\) -> .*"image_size", (None|"XX\?XX"|)\)',
     "equivalent", "a fixed-resolution SigLIP vision config always has image_size (224 by default), so the fallback is never read"),
    ("encoders", "*_embed_inputs*", r"\{'XX, XX'.join\(", "message text",
     "only the separator between the input names an error message lists changes"),
    ("encoders", "*encode_files*", r"persistent_workers=False, / \) -> \)$", "equivalent",
     "persistent_workers is False by default"),
    ("encoders", "*_DinoTxtPreprocess*", r"antialias=True\),.* -> .*InterpolationMode.BICUBIC, \),", "equivalent",
     "antialias=True is v2.Resize's default"),
    ("encoders", "*encode_texts*", r"self._embed_texts\(texts\)  # raises TextNotSupportedError -> self._embed_texts\(None\)",
     "equivalent", "an image-only model raises whatever it is given"),
    ("calibration", "*fit_calibration*", r"\+ 0.5 \* l2 \* w\[0\] \*\* 2\) -> .*- 0.5 \* l2 \* w\[0\] \*\* 2\)",
     "equivalent", ("the objective only guards Newton steps, and from zero the slope only grows, so either sign "
                    "accepts the steps that reach the optimum (checked on 800 random fits: the same result to 1e-8)")),
    ("calibration", "*reliability*", r"y.astype\(np.float64\).* -> .*y.astype\(None\)", "equivalent",
     "astype(None) is astype(float64)"),
    ("calibration", "*reliability*", r"np.where\(counts > 0, (conf|match)_sum / counts, np.nan\) -> .*counts >= 0",
     "equivalent", "an empty bin's 0/0 is NaN (silenced), the value np.where puts there anyway"),
    ("calibration", "*random_unit_cosines*", r'einsum\("IJ,IJ->I"', "equivalent",
     "einsum labels are just names: upper case means the same contraction"),
    ("calibration", "*score_percentile*", r"asarray\((reference|scores), dtype=np.float64\).* -> .*asarray\((reference|scores), (dtype=None)?\)",
     "equivalent", "ranks are comparisons: float32 or int values compare the same after an exact widening to float64"),
    ("*", "*", r'^f?"[^"]*" -> f?"(XX[^"]*XX|[^a-z"]*|[^A-Z"]*)"$', "message text",
     "one line of a message that runs over several lines changes its wording or case; tests match its key words"),
    ("*", "*", r"error.strerror or error\}.* -> .*error.strerror and error\}", "message text",
     "the reason in a 'cannot read' message becomes the whole OSError (with its errno) instead of its text"),
]


def _copy_tree(workdir: Path, module: str, fresh: bool) -> None:
    """A scratch project: the package, the test files, and a pyproject that configures mutmut.

    Without ``fresh`` an earlier run's results in ``workdir`` are kept (the module under test
    is unchanged, or the run would be fresh); the package's other modules and the test
    files are brought up to date, and mutmut's map of which tests call which function is
    dropped so that it is built again: mutmut adds new test names to it but never notices
    a test that now calls another function, so a survivor would be re-run without the
    test written to catch it.
    """
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    if fresh or not workdir.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ROOT / "vslib", workdir / "vslib", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        package = ROOT / "vslib"

        def others(folder: str, names: list[str]) -> list[str]:
            return [n for n in names if n == "__pycache__" or (Path(folder) == package and n == f"{module}.py")]

        shutil.copytree(package, workdir / "vslib", ignore=others, dirs_exist_ok=True)
        if (workdir / "mutants" / "vslib").is_dir():  # mutmut's copy, whose module under test holds the mutants
            shutil.copytree(package, workdir / "mutants" / "vslib", ignore=others, dirs_exist_ok=True)
        (workdir / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    (workdir / "tests").mkdir(exist_ok=True)
    for test in {*_HELPER_TESTS, *MODULES[module]}:
        shutil.copy2(ROOT / test, workdir / test)
    selection = json.dumps(MODULES[module])
    (workdir / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["vslib/"]\n'
        f'only_mutate = ["vslib/{module}.py"]\n'
        f"pytest_add_cli_args_test_selection = {selection}\n"
        'pytest_add_cli_args = ["-p", "no:nbval", "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-x"]\n'
        # torch is not fork-safe once it has run: fork workers from a clean server process.
        'process_isolation = "forkserver"\n'
        "use_git_change_detection = false\n"
        "use_setproctitle = false\n"
        # A mutant is stopped (and counted as caught) after 200x its tests' usual time (+1 s):
        # generous, because the limit is wall-clock time and a niced process on a busy
        # machine can get a few percent of a core (60x still stopped healthy runs there).
        "timeout_multiplier = 200.0\n"
    )


_COLLECT = r"""
import json, sys
from pathlib import Path
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
path = Path(sys.argv[1])
data = SourceFileMutationData(path=path)
data.load()
out = {}
for name, code in data.exit_code_by_key.items():
    status = status_by_exit_code[code]
    diff = get_diff_for_mutant(name, path=path) if status not in ("killed", "timeout", "not checked") else None
    out[name] = {"status": status, "diff": diff}
print(json.dumps(out))
"""


def _changed_lines(diff: str) -> tuple[str, str]:
    """The removed and added lines of a one-line mutant's diff."""
    lines = diff.splitlines()
    old = [line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")]
    new = [line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")]
    return " / ".join(old), " / ".join(new)


#: Survivors of the recorded run that a test added afterwards kills (checked by planting the
#: same change by hand); they count as survivors until the module is measured again.
KILLED_LATER: dict[str, tuple[str, str]] = {
    # mutant: (text of its mutated line, so a renumbered mutant never inherits it; the test)
    "vslib.calibration.x_fit_calibration__mutmut_14": ("if s.size < 3:", "test_fit_needs_two_distinct_finite_scores"),
    "vslib.calibration.x_fit_calibration__mutmut_15": ("raise ValueError(None)",
                                                       "test_fit_needs_two_distinct_finite_scores"),
    "vslib.calibration.x_fit_calibration__mutmut_22": ("scores contain nan", "test_fit_needs_two_distinct_finite_scores"),
    "vslib.calibration.x_fit_calibration__mutmut_39": ("if std == 1:", "test_fit_needs_two_distinct_finite_scores"),
    "vslib.calibration.x_fit_calibration__mutmut_82": ("- penalty @ w", "test_fit_is_the_penalised_maximum_likelihood"),
    "vslib.calibration.x_fit_calibration__mutmut_120": (
        "converged = None", "test_fit_recovers_the_threshold_and_temperature_of_the_generating_sigmoid"),
    "vslib.calibration.x_random_unit_cosines__mutmut_2": (
        "seed: int = 1", "test_random_unit_cosines_are_reproducible_from_the_seed"),
    "vslib.calibration.x_random_unit_cosines__mutmut_8": (
        "raise ValueError(None)", "test_random_unit_cosines_refuses_too_few_dimensions_or_pairs"),
}


def _reason(module: str, name: str, original: str, mutated: str) -> tuple[str, str] | None:
    if name in KILLED_LATER and KILLED_LATER[name][0] in mutated:
        return "test added", f"killed by tests/test_{module}.py::{KILLED_LATER[name][1]} (added after this run)"
    for mod, pattern, regex, category, reason in REASONS:
        if fnmatch.fnmatch(module, mod) and fnmatch.fnmatch(name, pattern) and re.search(regex, f"{original} -> {mutated}"):
            return category, reason
    return None


def _survivors(workdir: Path, module: str) -> list[str]:
    meta = workdir / "mutants" / "vslib" / f"{module}.py.meta"
    if not meta.is_file():
        return []
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    # Timeouts are tried again too: on a busy machine a slow test can look like a hung one.
    return [name for name, code in codes.items() if code not in (1, 3)]


def measure(module: str, workdir: Path, max_children: int, rerun_survivors: bool, fresh: bool,
            report_only: bool = False, sample: int = 0) -> dict:
    """Run mutmut on one module in a scratch copy and summarise the outcome.

    An interrupted run in ``workdir`` is resumed (mutmut keeps each mutant's result)
    unless ``fresh`` is set or the module's source has changed since. With
    ``rerun_survivors`` the mutants that survived are tested again, against the
    current test files.
    """
    if report_only:
        return _summarise(module, workdir, None, None, only=_sample(workdir, module, sample, env_for_mutmut())
                          if sample else None)
    copy = workdir / "vslib" / f"{module}.py"
    fresh = fresh or not copy.is_file() or not filecmp.cmp(copy, ROOT / "vslib" / f"{module}.py", shallow=False)
    again = _survivors(workdir, module) if rerun_survivors and not fresh else []
    _copy_tree(workdir, module, fresh=fresh)
    if sample:
        chosen = _sample(workdir, module, sample, env_for_mutmut())
        # Only the sampled mutants that have no result yet (or are being re-tested) run.
        codes = _codes(workdir, module)
        again = sorted(n for n in chosen if codes.get(n) is None or n in again)
        if not again:
            return _summarise(module, workdir, None, None, only=chosen)
    env = env_for_mutmut()
    mutmut = [sys.executable, "-m", "mutmut"]
    start = time.perf_counter()
    # Yield the CPU to other work (nice 10), without stacking on a nice the caller already set.
    nice = ["nice", "-n", str(10 - os.nice(0))] if os.nice(0) < 10 else []
    run = subprocess.run([*nice, *mutmut, "run", "--max-children", str(max_children), *again],
                         cwd=workdir, env=env, capture_output=True, text=True, preexec_fn=_limit_memory)
    seconds = time.perf_counter() - start
    (workdir / "mutmut-run.log").write_text(run.stdout + "\n--- stderr ---\n" + run.stderr)
    summary = _summarise(module, workdir, env, run, only=chosen if sample else None)
    summary.update(seconds=round(seconds, 1), rerun_of_survivors=len(again), mutmut_exit_code=run.returncode)
    return summary


#: Heap limit of mutmut and every test run it starts (RLIMIT_DATA, per process): a mutant that
#: grows a list forever (``i += 1`` turned into ``i = 1`` in a merge loop) then dies of
#: MemoryError, which its tests report, instead of taking a shared machine's memory.
MEMORY_LIMIT = 6 * 2**30


def _limit_memory() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def env_for_mutmut() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VSLIB_OFFLINE="1", MPLBACKEND="Agg",
               OMP_NUM_THREADS="1",
               # Every mutant starts a pytest session: skipping the installed plugins halves its cost.
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return env


def _codes(workdir: Path, module: str) -> dict[str, int | None]:
    meta = workdir / "mutants" / "vslib" / f"{module}.py.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}


def _sample(workdir: Path, module: str, n: int, env: dict[str, str]) -> list[str]:
    """A seeded random sample of the module's mutants (generating them first if needed)."""
    if not _codes(workdir, module):
        # Generates the mutants and the test statistics, then stops: no mutant matches.
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", "1", "no-such-mutant"],
                       cwd=workdir, env=env, capture_output=True, text=True, preexec_fn=_limit_memory)
    names = sorted(_codes(workdir, module))
    if not names:
        raise RuntimeError(f"mutmut generated no mutants for {module} in {workdir}")
    return sorted(random.Random(f"{module}-{n}").sample(names, min(n, len(names))))


def _summarise(module: str, workdir: Path, env: dict | None, run: subprocess.CompletedProcess | None,
               only: list[str] | None = None) -> dict:
    """Counts, score and the survivors (with diffs and reasons) of a module's mutmut results.

    With ``only``, just those mutants (a sample) are counted.
    """
    if env is None:
        env = env_for_mutmut()
    collected = subprocess.run([sys.executable, "-c", _COLLECT, f"vslib/{module}.py"], cwd=workdir, env=env,
                               capture_output=True, text=True)
    if collected.returncode != 0 or not collected.stdout.strip():
        log = f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}\n" if run is not None else ""
        raise RuntimeError(f"mutmut on {module} left no results (see {workdir / 'mutmut-run.log'}):\n"
                           f"{log}{collected.stderr[-2000:]}")
    mutants = json.loads(collected.stdout)
    generated = len(mutants)
    if only is not None:
        mutants = {name: mutants[name] for name in only}
    counts: dict[str, int] = {}
    survivors = []
    for name, item in sorted(mutants.items()):
        counts[item["status"]] = counts.get(item["status"], 0) + 1
        if item["status"] in ("killed", "timeout", "not checked"):
            continue  # timeouts are listed by count only
        old, new = _changed_lines(item["diff"] or "")
        known = _reason(module, name, old, new)
        survivors.append({
            "mutant": name,
            "status": item["status"],
            "original": old,
            "mutated": new,
            "category": known[0] if known else "unexplained",
            "reason": known[1] if known else None,
        })
    total = len(mutants)
    checked = total - counts.get("not checked", 0)
    detected = counts.get("killed", 0)
    equivalent = sum(s["category"] == "equivalent" for s in survivors)
    # Timeouts are left out of the score, not counted as caught: here they included mutants
    # that raise at once, i.e. forked runs that stalled, not mutants that loop.
    conclusive = checked - counts.get("timeout", 0) - equivalent
    low, high = _wilson(detected, conclusive)
    return {
        "test_files": MODULES[module],
        "generated": generated,
        "sampled": only is not None,
        "mutants": total,
        "checked": checked,
        "counts": counts,
        "killed": detected,
        "timeouts": counts.get("timeout", 0),
        "equivalent": equivalent,
        "killed_by_later_tests": sum(s["category"] == "test added" for s in survivors),
        # Killed over the conclusive checked mutants (not equivalent, not timed out);
        # "complete" says whether every mutant (of the sample) was checked.
        "score": round(detected / max(1, conclusive), 4),
        "raw_score": round(detected / max(1, checked), 4),
        "complete": checked == total,
        # 95% Wilson interval of the score: the uncertainty of a sample (or partial run).
        "score_95": [round(low, 3), round(high, 3)],
        "measured_utc": utc_now(),
        "survivors": survivors,
    }


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", choices=list(MODULES), default=DEFAULT_ORDER,
                        help="modules to measure, in this order (default: smallest first)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vslib-mutation",
                        help="scratch folder for the per-module copies (default: %(default)s)")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default: 2)")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="test the previous run's survivors and timeouts again, against the current tests")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming a run in --workdir")
    parser.add_argument("--sample", type=int, default=0, metavar="N",
                        help="test a seeded random sample of N mutants per module instead of all (0: all)")
    parser.add_argument("--report-only", action="store_true",
                        help="only summarise the results already in --workdir (with the current REASONS)")
    parser.add_argument("--target", type=float, default=0.85, help="score each module should reach")
    args = parser.parse_args(argv)

    path = RESULTS_DIR / f"{RESULT_NAME}.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    modules = previous.get("modules", {})
    before = {name: dict(entry) for name, entry in modules.items()}
    for module in args.modules:
        verb = "summarising" if args.report_only else "mutating"
        print(f"== {module}: {verb} vslib/{module}.py against {', '.join(MODULES[module])}", flush=True)
        modules[module] = measure(module, args.workdir / module, args.max_children, args.rerun_survivors,
                                  args.fresh, args.report_only, args.sample)
        if args.report_only and module in before:
            for key in ("seconds", "rerun_of_survivors", "mutmut_exit_code", "measured_utc"):
                if key in before[module]:
                    modules[module][key] = before[module][key]
        result = {
            "benchmark": RESULT_NAME,
            "created_utc": utc_now(),
            "command": command_line(),
            "tool": f"mutmut {_mutmut_version()}",
            "target": args.target,
            "machine": machine_info(),
            "modules": modules,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        m = modules[module]
        print(f"   {m['killed']}/{m['mutants']} killed, {m['equivalent']} equivalent, score {m['score']:.3f}, "
              f"{len(m['survivors'])} survivors, {m.get('seconds', 0):.0f} s", flush=True)
        for s in m["survivors"]:
            if s["category"] == "unexplained":
                print(f"   survived {s['mutant']}: {s['original']}  ->  {s['mutated']}")
    rows = [(name, m["mutants"], m.get("checked", m["mutants"]), m["killed"], m["equivalent"], len(m["survivors"]),
             m["score"], "yes" if m["score"] >= args.target else "no") for name, m in modules.items()]
    print_table(rows, ["module", "mutants", "checked", "killed", "equivalent", "survivors", "score",
                       f">= {args.target}"])
    print(f"wrote {path}")
    return 0


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    sys.exit(main())
