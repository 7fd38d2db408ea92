"""The chapters never handle device tensors: a scan of every notebook's code cells.

On a GPU or a Mac the model runs on its device, often in bf16. A chapter that calls
``.numpy()`` on what a model returned fails there (``TypeError: Got unsupported
ScalarType BFloat16``, or a CUDA tensor that NumPy cannot read), and one that passes
tensors to ``encoder.model`` itself sends CPU inputs to an on-device model. Whatever a
chapter needs from inside a model comes from :class:`vslib.encoders.Encoder` methods
that return float32 NumPy on the CPU, so these patterns are refused outright.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("0[1-7]_*.ipynb"))
#: Calls on a model that take no tensor and return nothing on a device.
HARMLESS = {"parameters", "named_parameters", "modules", "named_modules", "children", "tokenize", "eval"}


def _dotted(node: ast.AST) -> list[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return parts[::-1]


def violations(source: str) -> list[str]:
    """Lines of one code cell that call ``.numpy()`` or run a model inside an encoder directly."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    tree = ast.parse(code)
    aliases = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Attribute) and node.value.attr == "model"
               for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        names = _dotted(node.func)
        line = ast.get_source_segment(code, node) or ""
        if names and names[-1] == "numpy" or isinstance(node.func, ast.Attribute) and node.func.attr == "numpy":
            found.append(f".numpy() on a tensor: {line}")
            continue
        if not names:
            continue
        inside_model = "model" in names[1:] and names[-1] not in HARMLESS
        via_alias = names[0] in aliases and names[-1] not in HARMLESS
        if inside_model or via_alias:
            found.append(f"calls the model inside an encoder: {line}")
    return found


def notebook_violations(path: Path) -> list[str]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return [f"{path.name} cell {i}: {v}" for i, cell in enumerate(notebook["cells"])
            if cell["cell_type"] == "code" for v in violations("".join(cell["source"]))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_chapters_take_float32_numpy_from_encoder_methods(path):
    assert notebook_violations(path) == []


def test_the_scan_finds_the_patterns_it_refuses(tmp_path):
    notebook = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    planted = [
        "pixels = dino.preprocess(images)['pixel_values']\nout = dino.model(pixel_values=pixels)",
        "raw = siglip.model.get_image_features(**inputs).pooler_output.numpy()",
        "model = encoder.model\ntokens = model.backbone_tokens(pixels)\nn = sum(p.numel() for p in model.parameters())",
        "%matplotlib inline\ncls = tokens[0].cpu().numpy()",
    ]
    for source in planted:
        notebook["cells"].append({"cell_type": "code", "metadata": {}, "source": source, "outputs": [],
                                  "execution_count": None})
    copy = tmp_path / NOTEBOOKS[0].name
    copy.write_text(json.dumps(notebook), encoding="utf-8")
    found = notebook_violations(copy)
    kinds = [v.split(": ", 1)[1].split(":")[0] for v in found]
    assert sorted(kinds) == [".numpy() on a tensor"] * 2 + ["calls the model inside an encoder"] * 3
    assert not any("model.parameters" in v for v in found)
