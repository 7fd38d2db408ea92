"""Device and dtype choices, the format table, and the dtype audit on a deliberately scaled model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vslib import precision
from vslib.encoders import Encoder


def test_dinov3_is_never_fp16_by_default():
    for device in ("cpu", "mps", "cuda"):
        if device == "cuda" and not torch.cuda.is_available():
            continue
        for family in ("dinov3", "siglip", "dinotxt"):
            assert precision.pick_dtype(family, device) != torch.float16
    assert precision.pick_dtype("dinov3", "mps") == torch.bfloat16
    assert precision.pick_dtype("dinov3", "cpu") == torch.float32
    with pytest.raises(ValueError, match="unknown model family 'clip'"):
        precision.pick_dtype("clip", "cpu")


def test_dtype_names():
    assert precision.as_dtype("bf16") is torch.bfloat16
    assert precision.as_dtype("float16") is torch.float16
    assert precision.as_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        precision.as_dtype("fp8")


def test_format_table_matches_the_formats():
    rows = {r.name: r for r in precision.format_table()}
    assert (rows["fp32"].exponent_bits, rows["fp32"].mantissa_bits) == (8, 23)
    assert (rows["bf16"].exponent_bits, rows["bf16"].mantissa_bits) == (8, 7)
    assert (rows["fp16"].exponent_bits, rows["fp16"].mantissa_bits) == (5, 10)
    assert rows["fp16"].max == 65504.0
    assert rows["bf16"].max > 1e38  # bf16 keeps fp32's range, not its precision
    assert rows["bf16"].eps > rows["fp16"].eps > rows["fp32"].eps


class Scaled(nn.Module):
    """Four linear layers; the third multiplies activations far past fp16's range."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c, self.d = (nn.Linear(16, 16) for _ in range(4))
        with torch.no_grad():
            self.c.weight.mul_(3e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.a(x))
        x = torch.tanh(self.b(x))
        x = self.c(x)
        return self.d(x / x.norm(dim=-1, keepdim=True))


def test_audit_finds_the_first_overflowing_layer():
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    reports = {r.dtype: r for r in precision.audit_dtypes(Scaled(), {"x": x}, forward=lambda m, i: m(i["x"]))}
    assert list(reports) == ["fp32", "bf16", "fp16"]
    fp32, bf16, fp16 = reports["fp32"], reports["bf16"], reports["fp16"]
    peak = max(s.max_abs for s in fp32.layers if s.name == "c")
    assert peak > 65504  # the fp32 run shows the layer that would overflow fp16
    assert fp16.first_over_range == "c" and fp16.first_overflow == "c"
    assert fp16.nan_count + fp16.inf_count > 0
    assert bf16.first_overflow is None and bf16.nan_count == 0
    assert bf16.cosine_to_fp32 > 0.98
    assert fp32.cosine_to_fp32 == pytest.approx(1.0, abs=1e-6)
    assert fp16.parameter_bytes * 2 == fp32.parameter_bytes


class ScaledEncoder(Encoder):
    """An Encoder around :class:`Scaled`: an image's first 16 pixel values are its input."""

    name, dim, family = "scaled", 16, "fake"

    def __init__(self) -> None:
        self.model = Scaled()

    def preprocess(self, images):
        return {"x": torch.tensor(np.stack([np.asarray(im, np.float32).reshape(-1)[:16] / 255 for im in images]))}

    def _embed_inputs(self, inputs):
        return self.model(inputs["x"])


def test_audit_encoder_runs_the_encoder_in_each_dtype_and_restores_it(tmp_path):
    enc = ScaledEncoder()
    original = enc.model
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)) for _ in range(3)]
    images[2].save(tmp_path / "third.png")
    reports = {r.dtype: r for r in precision.audit_encoder(enc, [*images[:2], tmp_path / "third.png"], repeats=1)}
    assert list(reports) == ["fp32", "bf16", "fp16"]
    assert reports["fp16"].first_overflow == "c" and reports["fp16"].first_over_range == "c"
    assert reports["fp16"].nan_count + reports["fp16"].inf_count > 0
    assert reports["bf16"].first_overflow is None and reports["bf16"].cosine_to_fp32 > 0.98
    assert reports["fp32"].cosine_to_fp32 == pytest.approx(1.0, abs=1e-6)
    assert [s.name for s in reports["fp32"].layers] == ["a", "b", "c", "d"]
    # The encoder is left as it was: same fp32 model, same embeddings.
    assert enc.model is original and next(enc.model.parameters()).dtype == torch.float32
    np.testing.assert_allclose(enc.encode_images(images), ScaledEncoder().encode_images(images), atol=1e-6)


def test_audit_of_a_healthy_model_reports_no_overflow():
    model = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 4))
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    for report in precision.audit_dtypes(model, {"input": x}, forward=lambda m, i: m(i["input"])):
        assert report.first_overflow is None and report.first_over_range is None
        assert report.nan_count == 0 and report.cosine_to_fp32 > 0.99
        assert report.seconds_per_image > 0


def test_pick_dtype_refuses_emulated_bf16_and_old_macos(monkeypatch):
    # a GPU that only emulates bf16 (before Ampere) gets fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert precision.pick_dtype("dinov3", "cuda") == torch.float32
    # MPS has bf16 from macOS 14 only
    monkeypatch.setattr(precision.platform, "mac_ver", lambda: ("13.6.1", ("", "", ""), "arm64"))
    assert precision.pick_dtype("dinov3", "mps") == torch.float32
    monkeypatch.setattr(precision.platform, "mac_ver", lambda: ("14.2", ("", "", ""), "arm64"))
    assert precision.pick_dtype("dinov3", "mps") == torch.bfloat16


def test_scaled_copy_scales_one_layer_and_leaves_the_original():
    model = Scaled()
    before = model.b.weight.detach().clone()
    scaled = precision.scaled_copy(model, "b", 10.0)
    assert torch.equal(model.b.weight, before)
    assert torch.allclose(scaled.b.weight, before * 10)
    assert torch.allclose(scaled.b.bias, model.b.bias * 10)
    assert torch.equal(scaled.a.weight, model.a.weight)
    with pytest.raises(AttributeError):
        precision.scaled_copy(model, "nope", 2.0)
    with pytest.raises(ValueError, match="has no weight"):
        precision.scaled_copy(nn.Sequential(nn.ReLU()), "0", 2.0)


def test_mean_patch_cosine_is_one_for_collapsed_patches_and_the_pairwise_mean_otherwise():
    rng = np.random.default_rng(0)
    distinct = rng.standard_normal((2, 3, 4, 16))  # (N, rows, cols, D), not normalised
    flat = distinct.reshape(2, 12, 16)
    unit = flat / np.linalg.norm(flat, axis=-1, keepdims=True)
    expected = [(u @ u.T)[~np.eye(12, dtype=bool)].mean() for u in unit]
    np.testing.assert_allclose(precision.mean_patch_cosine(distinct), expected, rtol=1e-12)
    np.testing.assert_allclose(precision.mean_patch_cosine(flat), expected, rtol=1e-12)
    # Every patch the same vector (the reported fp16-on-MPS failure), at any length.
    collapsed = np.broadcast_to(rng.standard_normal(16) * [[1.0], [2.0], [0.5]], (1, 3, 16))
    assert precision.mean_patch_cosine(collapsed)[0] == pytest.approx(1.0)
    assert precision.mean_patch_cosine([[[1.0, 0.0], [-1.0, 0.0]]])[0] == pytest.approx(-1.0)
    for bad in (np.ones((1, 1, 8)), np.ones((2, 8)), np.zeros((1, 3, 8)), np.full((1, 3, 8), np.nan)):
        with pytest.raises(ValueError):
            precision.mean_patch_cosine(bad)
