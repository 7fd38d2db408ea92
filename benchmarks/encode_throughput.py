"""Image-encoding throughput at real model sizes: a per-image loop, vslib's batched loader, the model alone.

    python benchmarks/encode_throughput.py            # full run, within a 13-minute budget
    python benchmarks/encode_throughput.py --quick    # smoke run, results in a temporary folder

Two real architectures are built from their published sizes with random weights (speed does not
depend on the weights): DINOv3 ViT-S+/16 and SigLIP 2 base patch16 224. Each is saved with
``save_pretrained`` plus its image processor (and, for SigLIP, a tokenizer) into a temporary
folder and loaded through ``vslib.load_encoder(path, device="cpu", dtype=...)``, the same code
path as a downloaded checkpoint. Only image encoding is timed, so SigLIP's text tower is kept
small (2 layers, width 128, the bundled tiny tokenizer's vocabulary); the vision tower has the
real size.

For each model and dtype (fp32, then bf16) three figures are measured side by side, in one
run, on the same PNG/JPEG files (512x384 synthetic scenes with pixel noise, so they compress
like photos):

(a) ``seed_loop``: the usual first attempt. One image at a time: ``PIL.Image.open`` from disk,
    the transformers image processor, the model on a batch of one.
(b) ``vslib``: ``Encoder.encode_files`` at each batch size (1, 8, 32, 64); a torch DataLoader
    reads, decodes and preprocesses in worker processes while the model runs.
(c) ``forward_only``: the ceiling; the model's forward pass alone on tensors made beforehand.

Every measurement runs twice (the second round in reverse order) and keeps the faster run, as
other work on the machine only ever slows a run down. The script keeps to a time budget
(``--budget-min``): a per-image time taken during each configuration's warm-up decides how many
images a measurement uses (up to 64 in fp32, 32 in bf16) and, when even that is too slow (bf16
on a CPU without native bf16 arithmetic), which batch sizes are left out; the plan is recorded.

Targets: (b)/(a) >= 3 at batch 32 and (b)/(c) >= 0.85. When a configuration misses one, a
cProfile of the vslib path (loading in-process, so every call is seen) is saved with a
breakdown of where an image's time goes.

Writes ``benchmarks/results/encode_throughput.json`` and ``encode_throughput.png`` (and
``encode_throughput_profile.txt`` when a target is missed).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import io
import json
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import vslib  # noqa: E402
from bench_common import RESULTS_DIR, Stopwatch, load_average, machine_info, print_table, write_result  # noqa: E402
from vslib import encoders, images, registry, synth  # noqa: E402
from vslib.zoo import checkpoint_path  # noqa: E402

NAME = "encode_throughput"
IMAGE_SIZE = 224
FILE_SIZE = (512, 384)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGET_VSLIB_OVER_SEED = 3.0  # (b)/(a) at batch 32
TARGET_VSLIB_OVER_FORWARD = 0.85  # (b)/(c)
TARGET_BATCH = 32

BATCH_SIZES = [1, 8, 32, 64]
#: The most images one measurement uses (a batch larger than the count uses one full batch).
MAX_IMAGES = {"fp32": 64, "bf16": 32}
#: Fewer images per measurement are tried in this order when the time budget is short, then
#: fewer batch sizes (the largest goes first; 32 stays as long as possible, its ratio is a target).
IMAGE_STEPS = (64, 32, 16, 8, 4)
MIN_IMAGES = 16
#: Every measurement runs this many times (the second round in reverse order); the fastest counts.
ROUNDS = 2
#: Share of the remaining time a configuration may use, relative to the others.
DTYPE_WEIGHT = {"fp32": 1.5, "bf16": 1.0}


# -- the two architectures -----------------------------------------------------------------------


def build_dinov3(folder: Path) -> dict:
    """DINOv3 ViT-S+/16: width 384, 12 layers, 6 heads, gated (SwiGLU) MLP 1536, 4 registers."""
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    config = DINOv3ViTConfig(
        patch_size=16, image_size=IMAGE_SIZE, hidden_size=384, intermediate_size=1536, num_hidden_layers=12,
        num_attention_heads=6, use_gated_mlp=True, hidden_act="silu", num_register_tokens=4,
        layerscale_value=1e-5, rope_theta=100.0,
    )
    torch.manual_seed(0)
    model = DINOv3ViTModel(config).eval()
    model.save_pretrained(folder)
    DINOv3ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return {
        "architecture": "DINOv3ViTModel (transformers), random weights",
        "hidden_size": 384, "layers": 12, "heads": 6, "mlp": "gated SiLU (SwiGLU), 1536", "register_tokens": 4,
        "patch_size": 16, "image_size": IMAGE_SIZE,
        "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "timed_parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }


def build_siglip2(folder: Path) -> dict:
    """SigLIP 2 base patch16 224 vision tower (768, 12 layers, 12 heads, MLP 3072); small text tower."""
    from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    tiny = checkpoint_path("tiny-siglip2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, folder / name)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = 64  # SigLIP 2's text length
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    vocab = len(AutoTokenizer.from_pretrained(folder))
    config = SiglipConfig(
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "patch_size": 16, "image_size": IMAGE_SIZE},
        # Only images are timed: a small text tower (the real one is 768 wide, 12 layers, 256k vocabulary).
        text_config={"vocab_size": vocab, "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "projection_size": 768,
                     "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": None},
    )
    torch.manual_seed(0)
    model = SiglipModel(config).eval()
    model.save_pretrained(folder)
    SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=Image.Resampling.BICUBIC,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(folder)
    return {
        "architecture": "SiglipModel (transformers), random weights",
        "hidden_size": 768, "layers": 12, "heads": 12, "mlp": "GELU (tanh), 3072", "patch_size": 16,
        "image_size": IMAGE_SIZE,
        "text_tower": f"small on purpose (2 layers, width 128, vocabulary {vocab}): only images are timed",
        "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "timed_parameters_millions": round(sum(p.numel() for p in model.vision_model.parameters()) / 1e6, 2),
    }


MODELS = {"dinov3-vits16plus": build_dinov3, "siglip2-base-patch16-224": build_siglip2}


def image_features(model: torch.nn.Module, family: str, pixel_values: torch.Tensor) -> torch.Tensor:
    """The raw image embedding, as vslib takes it (DINOv3: CLS after the norm; SigLIP: pooled head)."""
    if family == "dinov3":
        return model(pixel_values=pixel_values).pooler_output
    out = model.get_image_features(pixel_values=pixel_values)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# -- test files ----------------------------------------------------------------------------------


def make_files(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 512x384 scenes with mild pixel noise, alternately PNG and JPEG (quality 90)."""
    rng = np.random.default_rng(seed)
    width, height = FILE_SIZE
    paths = []
    for i in range(n):
        scene = synth.render_scene(i, width, split="test").image
        top = (width - height) // 2
        pixels = np.asarray(scene.crop((0, top, width, top + height)), dtype=np.float32)
        pixels += rng.normal(0.0, 6.0, pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        path = folder / f"scene-{i:04d}.{'png' if i % 2 == 0 else 'jpg'}"
        image.save(path, quality=90) if path.suffix == ".jpg" else image.save(path)
        paths.append(path)
    return paths


# -- the three measurements ----------------------------------------------------------------------


def seed_loop(model, family: str, processor, paths: list[Path], dtype: torch.dtype) -> tuple[float, np.ndarray]:
    """(a) One image at a time: open from disk, image processor, model on a batch of one."""
    out = []
    with Stopwatch() as watch:
        for path in paths:
            image = Image.open(path).convert("RGB")
            inputs = processor(images=image, return_tensors="pt")
            with torch.no_grad():
                emb = image_features(model, family, inputs["pixel_values"].to(dtype))
            out.append(F.normalize(emb.float(), dim=-1)[0])
    return watch.seconds, torch.stack(out).numpy()


def vslib_files(encoder, paths: list[Path], batch_size: int, workers: int) -> tuple[float, np.ndarray]:
    """(b) vslib: ``encode_files`` with a DataLoader (``workers`` processes) at ``batch_size``."""
    with Stopwatch() as watch:
        result = encoder.encode_files(paths, batch_size=batch_size, progress=False, num_workers=workers)
    if result.skipped:
        raise RuntimeError(f"vslib skipped files: {result.skipped[:3]}")
    return watch.seconds, result.vectors


def forward_only(model, family: str, batches: list[torch.Tensor]) -> tuple[float, np.ndarray]:
    """(c) The ceiling: the model alone on preprocessed tensors that are already in memory."""
    out = []
    with Stopwatch() as watch:
        with torch.inference_mode():
            for pixel_values in batches:
                out.append(F.normalize(image_features(model, family, pixel_values).float(), dim=-1))
    return watch.seconds, torch.cat(out).numpy()


def premade_batches(encoder, paths: list[Path], batch_size: int, dtype: torch.dtype) -> list[torch.Tensor]:
    pixels = encoder.preprocess([images.load_image(p) for p in paths])["pixel_values"].to(dtype)
    return list(pixels.split(batch_size))


def images_for(base: int, batch_size: int) -> int:
    return max(base, batch_size)


def planned_images(base: int, batch_sizes: list[int], extra: bool) -> int:
    """Images a configuration pushes through the model: :data:`ROUNDS` rounds of (a), then (c) and
    (b) per batch size, and the optional in-process (b) at batch 32; then one profile run of the
    largest batch up to 32."""
    one_round = base + sum(2 * images_for(base, bs) for bs in batch_sizes)
    if extra and TARGET_BATCH in batch_sizes:
        one_round += images_for(base, TARGET_BATCH)
    profile_batch = max(bs for bs in batch_sizes if bs <= TARGET_BATCH)
    return ROUNDS * one_round + images_for(base, profile_batch)


def choose_plan(seconds_per_image: float, budget_s: float, max_images: int, max_batch_sizes: list[int]):
    """The most images per measurement and batch sizes whose estimated time fits ``budget_s``."""
    removal = sorted((bs for bs in max_batch_sizes if bs != 1), key=lambda bs: (bs == TARGET_BATCH, -bs))
    fallbacks = [[bs for bs in max_batch_sizes if bs not in removal[:i]] for i in range(len(removal) + 1)]
    # Batch sizes are given up before a measurement drops below MIN_IMAGES images; only then fewer.
    for smallest in (min(MIN_IMAGES, max_images), IMAGE_STEPS[-1]):
        for batch_sizes in fallbacks:
            for base in IMAGE_STEPS:
                if not smallest <= base <= max_images:
                    continue
                if planned_images(base, batch_sizes, False) * seconds_per_image <= budget_s:
                    extra = TARGET_BATCH in batch_sizes and (
                        planned_images(base, batch_sizes, True) * seconds_per_image <= budget_s)
                    return base, batch_sizes, extra
    return IMAGE_STEPS[-1], [1], False


def measure_config(model_name: str, family: str, folder: Path, dtype_name: str, paths: list[Path],
                   budget_s: float, max_images: int, max_batch_sizes: list[int], workers: int,
                   profile_file: Path) -> tuple[dict, list[dict], dict | None]:
    """All measurements for one model and dtype, in :data:`ROUNDS` rounds; a profile if a target is missed.

    A round runs (a), then per batch size (c) and (b); the second round runs the same steps in
    reverse order, so slow drifts in the machine's load fall on both sides. Each figure keeps the
    faster of its rounds (other work on the machine only ever slows a run down). The number of
    images per measurement (and, if need be, the batch sizes) are chosen to fit ``budget_s``,
    from per-image times taken during the warm-up.
    """
    from transformers import AutoImageProcessor

    dtype = DTYPES[dtype_name]
    encoder = vslib.load_encoder(folder, device="cpu", dtype=dtype)
    processor = AutoImageProcessor.from_pretrained(folder)
    model = encoder.model

    # Warm-up (first calls allocate, pick kernels, import lazily), then three per-image timings
    # whose median calibrates the plan.
    forward_only(model, family, premade_batches(encoder, paths[:1], 1, dtype))
    vslib_files(encoder, paths[:1], 1, 0)
    seed_loop(model, family, processor, paths[:1], dtype)
    timings = [seed_loop(model, family, processor, paths[1:2], dtype)[0],
               vslib_files(encoder, paths[2:3], 1, 0)[0],
               forward_only(model, family, premade_batches(encoder, paths[3:5], 2, dtype))[0] / 2]
    calibration = float(np.median(timings))
    base, batch_sizes, extra = choose_plan(calibration, budget_s, max_images, max_batch_sizes)
    plan = {"images_per_measurement": base, "batch_sizes": batch_sizes, "in_process_extra": extra,
            "rounds": ROUNDS, "calibration_seconds_per_image": round(calibration, 3), "budget_s": round(budget_s, 1),
            "estimated_s": round(planned_images(base, batch_sizes, extra) * calibration, 1)}
    print(f"  {dtype_name}: {calibration:.2f} s per image -> {base} images per measurement, batch sizes "
          f"{batch_sizes}, {ROUNDS} rounds (about {plan['estimated_s']:.0f} s of {budget_s:.0f} s)", flush=True)

    steps = [("seed_loop", 1)]
    for batch_size in batch_sizes:
        steps += [("forward_only", batch_size), ("vslib", batch_size)]
        if extra and batch_size == TARGET_BATCH:
            steps.append(("vslib_in_process", batch_size))
    timed: dict[tuple[str, int], list[tuple[float, float | None]]] = {step: [] for step in steps}
    vectors: dict[tuple[str, int], np.ndarray] = {}
    for round_index in range(ROUNDS):
        for method, batch_size in steps if round_index % 2 == 0 else steps[::-1]:
            n = base if method == "seed_loop" else images_for(base, batch_size)
            batches = premade_batches(encoder, paths[:n], batch_size, dtype) if method == "forward_only" else None
            load = load_average()
            if method == "seed_loop":
                seconds, out = seed_loop(model, family, processor, paths[:n], dtype)
            elif method == "forward_only":
                seconds, out = forward_only(model, family, batches)
            else:
                seconds, out = vslib_files(encoder, paths[:n], batch_size, workers if method == "vslib" else 0)
            del batches
            timed[(method, batch_size)].append((seconds, load))
            vectors[(method, batch_size)] = out
            print(f"  {dtype_name} round {round_index + 1} {method:16s} batch {batch_size:>3d}  {n:3d} images  "
                  f"{seconds:7.2f} s  {n / seconds:7.2f} images/s  (load {load})", flush=True)

    rows: list[dict] = []
    for method, batch_size in steps:
        n = base if method == "seed_loop" else images_for(base, batch_size)
        runs = timed[(method, batch_size)]
        best = min(seconds for seconds, _ in runs)
        row = {"model": model_name, "dtype": dtype_name, "method": method, "batch_size": batch_size, "images": n,
               "seconds": round(best, 4), "images_per_s": round(n / best, 3),
               "images_per_s_rounds": [round(n / seconds, 3) for seconds, _ in runs],
               "load_average_before": [load for _, load in runs]}
        if method.startswith("vslib"):
            row["num_workers"] = workers if method == "vslib" else 0
        rows.append(row)
    # The per-image loop and vslib must compute the same embeddings.
    largest = vectors[("vslib", max(batch_sizes))]
    seed_vectors = vectors[("seed_loop", 1)]
    common = min(len(largest), len(seed_vectors))
    cosines = np.sum(largest[:common] * seed_vectors[:common], axis=1)
    rows[0]["min_cosine_seed_vs_vslib"] = round(float(cosines.min()), 5)

    profile = None
    config_targets = targets(ratios(rows))
    if any(not r["met"] for t in config_targets.values() for r in t["results"]):
        profile_batch = max(bs for bs in batch_sizes if bs <= TARGET_BATCH)
        n = images_for(base, profile_batch)
        print(f"  {dtype_name}: a target is missed; profiling encode_files on {n} images at batch {profile_batch}",
              flush=True)
        profile = profile_vslib(encoder, model_name, dtype_name, paths[:n], rows, profile_file, profile_batch)
    del encoder, model
    gc.collect()
    return plan, rows, profile


# -- ratios, targets, profile --------------------------------------------------------------------


def ratios(rows: list[dict]) -> list[dict]:
    out = []
    configs = sorted({(r["model"], r["dtype"]) for r in rows}, key=lambda c: (c[0], list(DTYPES).index(c[1])))
    for model, dtype in configs:
        mine = [r for r in rows if (r["model"], r["dtype"]) == (model, dtype)]
        seed = next(r["images_per_s"] for r in mine if r["method"] == "seed_loop")
        for r in mine:
            if r["method"] != "vslib":
                continue
            ceiling = next(c["images_per_s"] for c in mine
                           if c["method"] == "forward_only" and c["batch_size"] == r["batch_size"])
            out.append({"model": model, "dtype": dtype, "batch_size": r["batch_size"],
                        "vslib_over_seed_loop": round(r["images_per_s"] / seed, 3),
                        "vslib_over_forward_only": round(r["images_per_s"] / ceiling, 3),
                        "forward_only_over_seed_loop": round(ceiling / seed, 3)})
    return out


def targets(ratio_rows: list[dict]) -> dict:
    at_target = [r for r in ratio_rows if r["batch_size"] == TARGET_BATCH]
    return {
        "vslib_over_seed_loop_at_batch_32": {
            "target": TARGET_VSLIB_OVER_SEED,
            "results": [{"model": r["model"], "dtype": r["dtype"], "value": r["vslib_over_seed_loop"],
                         "met": r["vslib_over_seed_loop"] >= TARGET_VSLIB_OVER_SEED} for r in at_target],
        },
        "vslib_over_forward_only": {
            "target": TARGET_VSLIB_OVER_FORWARD,
            "results": [{"model": r["model"], "dtype": r["dtype"], "batch_size": r["batch_size"],
                         "value": r["vslib_over_forward_only"],
                         "met": r["vslib_over_forward_only"] >= TARGET_VSLIB_OVER_FORWARD} for r in ratio_rows],
        },
    }


def _function_key(function) -> tuple[str, int, str]:
    code = inspect.unwrap(function).__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def profile_vslib(encoder, model_name: str, dtype_name: str, paths: list[Path], rows: list[dict],
                  out_file: Path, batch_size: int) -> dict:
    """cProfile one ``encode_files`` run with in-process loading (every call is seen), and a breakdown."""
    profiler = cProfile.Profile()
    profiler.enable()
    start = time.perf_counter()
    encoder.encode_files(paths, batch_size=batch_size, progress=False, num_workers=0)
    total = time.perf_counter() - start
    profiler.disable()
    stats = pstats.Stats(profiler)
    cumulative = {key: value[3] for key, value in stats.stats.items()}  # type: ignore[attr-defined]
    parts = {
        "decode": cumulative.get(_function_key(images.load_image), 0.0),
        "preprocess": cumulative.get(_function_key(encoders._Collate.__call__), 0.0),
        "forward": cumulative.get(_function_key(encoders.Encoder._forward), 0.0),
    }
    parts["other"] = max(0.0, total - sum(parts.values()))
    n = len(paths)
    per_image_ms = {k: round(v / n * 1000, 2) for k, v in parts.items()}
    share = {k: round(v / total, 3) for k, v in parts.items()}

    mine = [r for r in rows if r["model"] == model_name and r["dtype"] == dtype_name]
    seed = next(r for r in mine if r["method"] == "seed_loop")
    ceiling = next(r for r in mine if r["method"] == "forward_only" and r["batch_size"] == batch_size)
    ceiling_1 = next(r for r in mine if r["method"] == "forward_only" and r["batch_size"] == 1)
    vslib_row = next(r for r in mine if r["method"] == "vslib" and r["batch_size"] == batch_size)
    bound = ceiling["images_per_s"] / seed["images_per_s"]
    explanation = (
        f"{model_name} {dtype_name}, batch {batch_size}, loading in-process: the model's forward pass takes "
        f"{share['forward']:.0%} of the time ({per_image_ms['forward']:.0f} ms per image), decoding "
        f"{share['decode']:.0%} ({per_image_ms['decode']:.1f} ms) and preprocessing {share['preprocess']:.0%} "
        f"({per_image_ms['preprocess']:.1f} ms). The forward pass alone ran at {ceiling_1['images_per_s']:.2f} "
        f"images/s at batch 1 and {ceiling['images_per_s']:.2f} at batch {batch_size}, so even a loader that cost "
        f"nothing could be at most {bound:.2f}x faster than the per-image loop ({seed['images_per_s']:.2f} images/s). "
        f"With {vslib_row.get('num_workers', 0)} loader workers vslib ran at {vslib_row['images_per_s']:.2f} "
        f"images/s, {vslib_row['images_per_s'] / ceiling['images_per_s']:.0%} of the forward pass alone."
    )
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
    header = (f"cProfile of {model_name} {dtype_name} encode_files({n} files, batch_size={batch_size}, "
              f"num_workers=0): {total:.2f} s\n\nms per image: {json.dumps(per_image_ms)}\n\n{explanation}\n\n")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with out_file.open("a") as handle:
        handle.write(header + text.getvalue() + "\n" + "=" * 100 + "\n")
    return {"model": model_name, "dtype": dtype_name, "batch_size": batch_size, "images": n,
            "seconds": round(total, 3), "ms_per_image": per_image_ms, "share": share,
            "forward_only_over_seed_loop": round(bound, 3), "explanation": explanation}


# -- figure --------------------------------------------------------------------------------------


def save_figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.8), squeeze=False)
    colours = {"fp32": "tab:blue", "bf16": "tab:orange"}
    for ax, model in zip(axes[0], models):
        for dtype in DTYPES:
            mine = [r for r in rows if r["model"] == model and r["dtype"] == dtype]
            if not mine:
                continue
            for method, style in (("forward_only", ":"), ("vslib", "-")):
                pts = sorted((r["batch_size"], r["images_per_s"]) for r in mine if r["method"] == method)
                ax.plot(*zip(*pts), style, marker="o", color=colours[dtype], label=f"{method} {dtype}")
            seed = next(r["images_per_s"] for r in mine if r["method"] == "seed_loop")
            ax.axhline(seed, ls="--", color=colours[dtype], alpha=0.6, label=f"seed_loop {dtype}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted({r["batch_size"] for r in rows if r["model"] == model}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_title(model, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Image encoding throughput on CPU (224 px)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few images, results in a temporary folder")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers for vslib (default: vslib's own default count, min(4, CPUs))")
    parser.add_argument("--budget-min", type=float, default=13.0,
                        help="time budget in minutes; images per measurement (then batch sizes) are reduced to fit")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help=f"where results go (default: {RESULTS_DIR}, or a temporary folder with --quick)")
    args = parser.parse_args()
    out_dir = args.out_dir or (Path(tempfile.gettempdir()) / "vslib-bench-quick" if args.quick else RESULTS_DIR)
    budget = args.budget_min * 60
    max_images = {d: (4 if args.quick else n) for d, n in MAX_IMAGES.items()}
    max_batch_sizes = [1, 4] if args.quick else BATCH_SIZES

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    machine = machine_info()
    n_files = max(8, *max_images.values(), *max_batch_sizes)

    rows: list[dict] = []
    plans: dict[str, dict] = {}
    model_info: dict[str, dict] = {}
    profiles: list[dict] = []
    profile_file = out_dir / f"{NAME}_profile.txt"
    if profile_file.exists():
        profile_file.unlink()
    with tempfile.TemporaryDirectory(prefix="vslib-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        with Stopwatch() as watch:
            paths = make_files(tmp / "images", n_files)
        sizes = [p.stat().st_size for p in paths]
        print(f"{n_files} files ({FILE_SIZE[0]}x{FILE_SIZE[1]}, PNG and JPEG, mean {np.mean(sizes) / 1024:.0f} KiB) "
              f"in {watch.seconds:.1f} s; {torch.get_num_threads()} torch threads, {args.workers} loader workers",
              flush=True)
        folders = {}
        for model_name in args.models:
            folders[model_name] = tmp / model_name
            folders[model_name].mkdir()
            with Stopwatch() as watch:
                model_info[model_name] = MODELS[model_name](folders[model_name])
            model_info[model_name]["build_seconds"] = round(watch.seconds, 1)
            model_info[model_name]["family"] = registry.detect_family(folders[model_name])
            print(f"built {model_name}: {model_info[model_name]['timed_parameters_millions']}M parameters timed "
                  f"({watch.seconds:.1f} s)", flush=True)

        # fp32 first (the CPU default and the targets' main case), then bf16.
        configs = [(m, d) for d in args.dtypes for m in args.models]
        for i, (model_name, dtype_name) in enumerate(configs):
            left = budget - (time.perf_counter() - started) - 20  # 20 s for tables, JSON and figure
            weights = [DTYPE_WEIGHT[d] for _, d in configs[i:]]
            share = max(0.0, left) * weights[0] / sum(weights)
            print(f"== {model_name} {dtype_name}", flush=True)
            plan, more, profile = measure_config(
                model_name, model_info[model_name]["family"], folders[model_name], dtype_name, paths, share,
                max_images[dtype_name], max_batch_sizes, args.workers, profile_file)
            plans[f"{model_name}/{dtype_name}"] = plan
            rows += more
            if profile is not None:
                profiles.append(profile)

    ratio_rows = ratios(rows)
    target_rows = targets(ratio_rows)
    print()
    print_table([(r["model"], r["dtype"], r["method"], r["batch_size"], r["images"], r["images_per_s"])
                 for r in rows], ["model", "dtype", "method", "batch", "images", "images/s"])
    print()
    print_table([(r["model"], r["dtype"], r["batch_size"], r["vslib_over_seed_loop"], r["vslib_over_forward_only"])
                 for r in ratio_rows], ["model", "dtype", "batch", "(b)/(a)", "(b)/(c)"])
    for name, target in target_rows.items():
        met = sum(r["met"] for r in target["results"])
        print(f"target {name} >= {target['target']}: met in {met} of {len(target['results'])}")
    for p in profiles:
        print("profile:", p["explanation"])

    wall = time.perf_counter() - started
    result = {
        "quick": args.quick,
        "machine": machine,
        "settings": {
            "image_size": IMAGE_SIZE,
            "files": {"count": n_files, "size": list(FILE_SIZE), "formats": "alternately PNG and JPEG (quality 90)",
                      "mean_kib": round(float(np.mean(sizes)) / 1024, 1),
                      "content": "vslib.synth test scenes with Gaussian pixel noise (sd 6)"},
            "num_workers": args.workers,
            "budget_minutes": args.budget_min,
            "max_images_per_measurement": max_images,
            "batch_sizes": max_batch_sizes,
            "device": "cpu",
            "order": "fp32 configurations first; per configuration: warm-up, seed_loop, then for each batch "
                     "size forward_only and vslib",
        },
        "plans": plans,
        "models": model_info,
        "measurements": rows,
        "ratios": ratio_rows,
        "targets": target_rows,
        "profiles": profiles,
        "profile_file": profile_file.name if profiles else None,
        "wall_seconds": round(wall, 1),
    }
    path = write_result(NAME, result, out_dir)
    save_figure(rows, out_dir / f"{NAME}.png")
    print(f"wrote {path} and {NAME}.png in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
