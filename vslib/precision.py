"""Devices and number formats: pick a safe dtype, and audit what a dtype does to a model.

fp16 overflows above 65504, and DINOv3 has been reported to break in fp16 on Apple GPUs
(identical patch embeddings, while fp16 on CUDA works) and to crash fp16 training with
SIGFPE, so no family is given fp16 by default: bf16 where the device runs it well, fp32
otherwise. :func:`audit_dtypes` shows what a dtype does, layer by layer, and tells a range
overflow from a device fault. Introduced in chapter 2.
"""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_NAMES = {
    "fp32": torch.float32, "float32": torch.float32, "f32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "f16": torch.float16, "half": torch.float16,
}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.bfloat16`` from ``"bf16"``, ``"bfloat16"`` or the dtype itself.

    Raises:
        ValueError: For an unknown name.

    Introduced in chapter 2.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in _NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of fp32, bf16, fp16")
    return _NAMES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """``"bf16"`` for ``torch.bfloat16`` (and fp32, fp16)."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def pick_device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then CPU (introduced in chapter 2)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(device: str | torch.device) -> torch.device:
    """A torch device named by the user, checked: known to torch and available here.

    Raises:
        ValueError: For a name torch does not know (``"potato"``), or CUDA / MPS on a
            machine without them, with the devices that are available.

    Introduced in chapter 2.
    """
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {str(device)!r}; use {_available_devices()}") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: no CUDA GPU is available here; use {_available_devices()}")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif chosen.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(device)!r}: Apple's MPS is not available here; use {_available_devices()}")
    elif chosen.type != "cpu":
        raise ValueError(f"device {str(device)!r} is not supported; use {_available_devices()}")
    return chosen


def _available_devices() -> str:
    names = ["cpu"]
    if torch.cuda.is_available():
        names.insert(0, "cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.insert(0, "mps")
    return " or ".join(names)


def pick_dtype(family: str, device: torch.device | str) -> torch.dtype:
    """A safe default dtype for a model family on a device.

    - CPU: fp32 (bf16 matmuls are slower than fp32 on most CPUs, fp16 is unsafe);
    - CUDA: bf16 when the GPU runs it natively (Ampere or newer), else fp32 (fp16 has
      no range to spare; older GPUs only emulate bf16, slowly);
    - MPS: bf16 on macOS 14 or newer (DINOv3 in fp16 on Apple GPUs has been reported
      to return identical patch embeddings), fp32 on older macOS, where MPS has no bf16.

    Introduced in chapter 2.
    """
    device = torch.device(device)
    if family not in ("dinov3", "siglip", "dinotxt"):
        raise ValueError(f"unknown model family {family!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float32
    if device.type == "mps":
        return torch.bfloat16 if _mps_has_bf16() else torch.float32
    return torch.float32


def _mps_has_bf16() -> bool:
    """MPS runs bf16 from macOS 14 (Sonoma); off a Mac, answer for a current macOS."""
    release = platform.mac_ver()[0]
    return not release or int(release.split(".")[0]) >= 14


@dataclass(frozen=True)
class FormatInfo:
    """Bits, range and precision of a floating-point format (chapter 2's table)."""

    name: str
    bits: int
    exponent_bits: int
    mantissa_bits: int
    max: float
    smallest_normal: float
    eps: float


def format_table(dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16, torch.float16)) -> list[FormatInfo]:
    """``torch.finfo`` facts for each dtype (introduced in chapter 2)."""
    rows = []
    for dt in dtypes:
        info = torch.finfo(dt)
        mantissa = int(round(-np.log2(info.eps)))
        rows.append(FormatInfo(dtype_name(dt), info.bits, info.bits - 1 - mantissa, mantissa,
                               float(info.max), float(info.smallest_normal), float(info.eps)))
    return rows


# ---------------------------------------------------------------------------------------------
# The dtype audit
# ---------------------------------------------------------------------------------------------


@dataclass
class LayerStat:
    """The largest absolute activation a layer produced, and whether it was finite."""

    name: str
    max_abs: float
    finite: bool


@dataclass
class DtypeReport:
    """What one dtype did to a model on one batch.

    Attributes:
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        dtype_max: The largest finite value of the dtype.
        layers: Per layer (execution order), the largest absolute activation.
        first_overflow: The first layer whose output is not finite, or None.
        first_over_range: The first layer whose fp32 activations exceed this dtype's
            range (where overflow is predicted from the fp32 run), or None.
        nan_count: NaN values in the embeddings.
        inf_count: Infinite values in the embeddings.
        cosine_to_fp32: Mean cosine of the embeddings to the fp32 embeddings (NaN if broken).
        seconds_per_image: Forward-pass time per image (best of the repeats).
        parameter_bytes: Memory of the weights in this dtype.
    """

    dtype: str
    dtype_max: float
    layers: list[LayerStat] = field(default_factory=list)
    first_overflow: str | None = None
    first_over_range: str | None = None
    nan_count: int = 0
    inf_count: int = 0
    cosine_to_fp32: float = float("nan")
    seconds_per_image: float = float("nan")
    parameter_bytes: int = 0

    @property
    def peak(self) -> LayerStat | None:
        """The layer with the largest activation."""
        finite = [s for s in self.layers if np.isfinite(s.max_abs)]
        return max(finite, key=lambda s: s.max_abs) if finite else None


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
        return None
    if hasattr(output, "to_tuple"):
        return _first_tensor(output.to_tuple())
    return None


def _leaf_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


def _run_with_hooks(model: torch.nn.Module, forward, inputs: dict[str, torch.Tensor]):
    stats: list[LayerStat] = []

    def hook(name: str):
        def record(_module, _args, output):
            t = _first_tensor(output)
            if t is None or not t.is_floating_point() or t.numel() == 0:
                return
            # One reduction: amax propagates NaN and inf, so it also answers "is it finite?"
            peak = float(t.detach().abs().amax())
            finite = bool(np.isfinite(peak))
            stats.append(LayerStat(name, peak if finite else float("inf"), finite))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in _leaf_modules(model)]
    try:
        with torch.inference_mode():
            emb = forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return emb, stats


def audit_dtypes(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    forward=None,
    dtypes: Sequence[torch.dtype | str] = ("fp32", "bf16", "fp16"),
    repeats: int = 2,
    device: torch.device | str = "cpu",
) -> list[DtypeReport]:
    """Run a model on one batch in several dtypes and report what each does.

    For every dtype: the largest activation of each leaf layer, the first layer whose
    output stops being finite, the first layer whose fp32 activations already exceed the
    dtype's range, NaN and inf counts in the embeddings, the mean cosine of the
    embeddings to fp32, time per image, and the weights' memory.

    Args:
        model: A torch module (for an :class:`~vslib.encoders.Encoder`, its ``.model``).
        inputs: Model inputs for one batch (floating tensors are cast to each dtype).
        forward: ``forward(model, inputs) -> embeddings``; default ``model(**inputs)``
            unwrapped to ``pooler_output``.
        dtypes: The dtypes to audit; fp32 is always run first as the reference.
        repeats: Timed repeats (the best is kept).
        device: Where to run.

    Introduced in chapter 2.
    """
    forward = forward or _default_forward
    wanted = [as_dtype(d) for d in dtypes]
    order = [torch.float32] + [d for d in wanted if d != torch.float32]
    n = next(iter(v for v in inputs.values() if isinstance(v, torch.Tensor))).shape[0]
    reports: dict[torch.dtype, DtypeReport] = {}
    reference: torch.Tensor | None = None
    ref_stats: list[LayerStat] = []
    for dt in order:
        m = copy.deepcopy(model).to(device=device, dtype=dt).eval()
        cast = {k: (v.to(device=device, dtype=dt) if v.is_floating_point() else v.to(device))
                for k, v in inputs.items()}
        emb, stats = _run_with_hooks(m, forward, cast)
        best = float("inf")
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            with torch.inference_mode():
                forward(m, cast)
            best = min(best, time.perf_counter() - start)
        emb = emb.float().cpu()
        limit = float(torch.finfo(dt).max)
        report = DtypeReport(
            dtype=dtype_name(dt),
            dtype_max=limit,
            layers=stats,
            first_overflow=next((s.name for s in stats if not s.finite), None),
            nan_count=int(torch.isnan(emb).sum()),
            inf_count=int(torch.isinf(emb).sum()),
            seconds_per_image=best / n,
            parameter_bytes=sum(p.numel() * p.element_size() for p in m.parameters()),
        )
        if dt == torch.float32:
            reference, ref_stats = emb, stats
        report.first_over_range = next((s.name for s in ref_stats if s.max_abs > limit), None)
        if reference is not None and torch.isfinite(emb).all():
            report.cosine_to_fp32 = float(F.cosine_similarity(emb, reference, dim=-1).mean())
        reports[dt] = report
        del m
    return [reports[d] for d in order if d in wanted]


def _default_forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(**inputs)
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    return pooled if pooled is not None else _first_tensor(out)


def audit_encoder(encoder, images: Sequence[Any], dtypes: Sequence[torch.dtype | str] = ("fp32", "bf16", "fp16"),
                  repeats: int = 2) -> list[DtypeReport]:
    """:func:`audit_dtypes` for an :class:`~vslib.encoders.Encoder` on a list of images.

    Introduced in chapter 2.
    """
    from vslib.images import as_image

    inputs = encoder.preprocess([as_image(im) for im in images])

    def forward(model, batch):
        return _embed_with(encoder, model, batch)

    return audit_dtypes(encoder.model, inputs, forward=forward, dtypes=dtypes, repeats=repeats,
                        device=encoder.device)


def _embed_with(encoder, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    original = encoder.model
    encoder.model = model
    try:
        return encoder._embed_inputs(inputs)
    finally:
        encoder.model = original


def mean_patch_cosine(features: np.ndarray) -> np.ndarray:
    """Mean cosine between the distinct patches of each image, one number per image.

    ``features`` are an encoder's patch features, ``(N, rows, cols, D)`` as
    :meth:`~vslib.encoders.Encoder.patch_features` returns them, or ``(N, patches, D)``.
    Patches of a real photo differ, so the mean stays well below 1; a value at 1 means
    every patch came out as the same vector, the failure reported for DINOv3 in fp16 on
    Apple GPUs. Introduced in chapter 2.

    Raises:
        ValueError: If there are fewer than two patches per image or a feature is zero
            or not finite.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim == 4:
        f = f.reshape(f.shape[0], -1, f.shape[-1])
    if f.ndim != 3 or f.shape[1] < 2:
        raise ValueError(f"expected (N, rows, cols, D) or (N, patches, D) with >= 2 patches, got {np.shape(features)}")
    norms = np.linalg.norm(f, axis=-1, keepdims=True)
    if not np.isfinite(f).all() or (norms == 0).any():
        raise ValueError("patch features contain NaN, inf or zero vectors")
    f = f / norms
    p = f.shape[1]
    # The sum of all pairwise cosines is |sum of the vectors|^2; remove the p self-pairs.
    total = np.sum(f.sum(axis=1) ** 2, axis=-1)
    return (total - p) / (p * (p - 1))


def scaled_copy(model: torch.nn.Module, layer: str, factor: float) -> torch.nn.Module:
    """A deep copy of ``model`` with one layer's weights (and bias) multiplied by ``factor``.

    A controlled way to push activations past a dtype's range, so that
    :func:`audit_dtypes` has an overflow to find; the original model is left untouched.

    Args:
        model: A torch module.
        layer: The dotted name of a submodule with a ``weight`` (e.g. ``"model.layer.1.mlp.up_proj"``).
        factor: What to multiply its weight and bias by.

    Raises:
        AttributeError: If the model has no such submodule.
        ValueError: If the submodule has no ``weight``.

    Introduced in chapter 2.
    """
    copied = copy.deepcopy(model)
    module = copied.get_submodule(layer)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"layer {layer!r} ({type(module).__name__}) has no weight to scale")
    with torch.no_grad():
        weight.mul_(factor)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.mul_(factor)
    return copied
