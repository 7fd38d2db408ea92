"""Model cards (``README.md``) for the bundled checkpoints, written from measured numbers only."""

from __future__ import annotations

import json
import math
from pathlib import Path

from vslib import synth

DESCRIPTIONS = {
    "tiny-dinov3": {
        "architecture": "transformers `DINOv3ViTModel` (ViT with RoPE, {registers} register tokens), "
        "{layers} layers, width {hidden_size}, {heads} heads, patch {patch_size}, {image_size} px input.",
        "objective": "DINO self-distillation without labels: student and EMA teacher, sharpened "
        "teacher output, multi-crop (2 global {image_size} px crops, "
        "{local_crops} local {local_size} px crops), {out_dim} prototypes.",
        "embedding": "CLS token after the final norm (`pooler_output`), {hidden_size}-d.",
    },
    "tiny-siglip2": {
        "architecture": "transformers `SiglipModel` (the architecture of the fixed-resolution SigLIP 2 "
        "checkpoints): vision ViT {vision_layers} layers, text transformer {text_layers} layers, "
        "width {width}, {heads} heads, patch {patch_size}, {image_size} px input, text padded to "
        "{max_length} tokens; word-level tokenizer over the caption vocabulary.",
        "objective": "SigLIP pairwise sigmoid loss, initialised with t' = {init_logit_scale:.2f} (t = 100) and b = {init_logit_bias:g}, "
        "{warmup} warmup steps, batch {batch_size}.",
        "embedding": "image: attention-pooled vision output; text: last-token output through the "
        "text head; both {width}-d; scores are sigmoid(cos * exp(logit_scale) + logit_bias).",
    },
    "tiny-dinotxt": {
        "architecture": "the dino.txt recipe in miniature: frozen `tiny-dinov3` backbone (bit-identical "
        "weights, checked by sha256) read at {image_size} px, a {head_blocks}-block vision head, a causal text transformer "
        "({text_layers} layers, width {text_width}) with a CLIP BPE tokenizer (context {text_context}).",
        "objective": "CLIP symmetric cross-entropy over cosines times a temperature t.",
        "embedding": "image: concat(head CLS output, mean of head patch outputs); text: end-of-text "
        "token through a linear projection.",
    },
}

METRIC_NAMES = {
    "knn20_top1": "20-NN top-1 on frozen image embeddings (synthetic Imagenette test split)",
    "zero_shot_top1_80_templates": "zero-shot top-1, 80-template ensemble",
    "zero_shot_top5_80_templates": "zero-shot top-5, 80-template ensemble",
    "zero_shot_top1_single_template": "zero-shot top-1, single template \"a photo of a {}.\"",
    "color_class_recall_at_5": "text-to-image recall@5, \"a {colour} {class}\" queries",
    "dominant_object_caption_cosine_full_scene": "cosine of \"a {colour} {class}\" for the dominant object, full scene",
    "small_object_caption_cosine_full_scene": "cosine of \"a {colour} {class}\" for a small object, full scene",
    "small_object_caption_cosine_crop": "cosine of the same small-object caption, crop around the object",
    "small_object_crop_beats_full_scene": "fraction of scenes where the crop scores higher than the full scene",
    "copy_detection_recall_at_1": "copy detection recall@1 (crop 75-90%, rescale, brightness +-20%, JPEG 60)",
    "zero_shot_top1_en": "zero-shot top-1, English prompts of `vslib.lexicon`",
    "zero_shot_top1_fr": "zero-shot top-1, French prompts",
    "zero_shot_top1_de": "zero-shot top-1, German prompts",
    "zero_shot_top1_es": "zero-shot top-1, Spanish prompts",
    "median_cos_matched_image_caption": "median cosine, image and its own caption",
    "median_cos_same_class_images": "median cosine, two images of the same class",
    "patch_peak_on_dominant": "top patch of \"a {colour} {class}\" on the dominant object",
    "patch_peak_chance": "chance of a random patch being on it",
    "cos_to_source_native_min": "lowest cosine to the source model's image embedding, square scenes at the native size",
    "cos_to_source_native_mean": "mean cosine to the source model's image embedding, square scenes at the native size",
    "cos_to_source_large_square_min": "lowest cosine to the source model's image embedding, larger square scenes "
    "(both processors resize them to the native size)",
    "cos_to_source_text_min": "lowest cosine to the source model's text embedding (the scenes' captions)",
    "verify_images": "held-out scenes in each check",
    "load_seconds": "load time through vslib.load_encoder (s, median of 3)",
    "size_mb": "size on disk (MB)",
}


#: The project's targets for the bundled models (issue tracker), shown beside the measurements.
TARGETS = {
    "tiny-dinov3": {"knn20_top1": 0.85, "copy_detection_recall_at_1": 0.90},
    "tiny-siglip2": {"zero_shot_top1_80_templates": 0.95, "color_class_recall_at_5": 0.80,
                     "zero_shot_top1_fr": 0.85, "zero_shot_top1_de": 0.85, "zero_shot_top1_es": 0.85},
    "tiny-dinotxt": {"zero_shot_top1_80_templates": 0.90},
}


def _metric_name(key: str) -> str:
    split, _, base = key.rpartition("/")
    return METRIC_NAMES.get(base, base) + (f" ({split} split)" if split else "")


def _metric_rows(name: str, values: dict) -> list[str]:
    rows = ["| metric | value | target |", "|---|---|---|"]
    order = list(METRIC_NAMES)
    def rank(key: str) -> tuple:
        split, _, base = key.rpartition("/")
        return (split, order.index(base) if base in order else len(order), base)

    for key, value in sorted(values.items(), key=lambda kv: rank(kv[0])):
        target = TARGETS.get(name, {}).get(key)
        verdict = "" if target is None else f">= {target:.2f} ({'met' if value >= target else 'not met'})"
        rows.append(f"| {_metric_name(key)} | {_fmt(value)} | {verdict} |")
    return rows


def _parameters(report: dict) -> str:
    frozen = report.get("frozen_parameters")
    if not frozen:
        return f"{report['parameters']:,}"
    return (f"{report['parameters']:,} trained, plus {frozen:,} in the frozen backbone "
            f"({report['parameters'] + frozen:,} in all)")


def _objective(name: str, recipe: dict) -> str:
    """The model's objective, with the recipe's optional training choices."""
    text = DESCRIPTIONS[name]["objective"].format(**recipe)
    if name == "tiny-dinotxt":
        text += " " + _dinotxt_temperature(recipe)
    if recipe.get("appearances") and recipe.get("restyled_locals"):
        text += (f" Each scene is rendered {recipe['appearances']} times: as itself and with new backgrounds, "
                 "colours and textures on the same geometry (`vslib.synth.render_appearances`). The two global "
                 "views are crops of the scene's own rendering; each local view is cropped, with probability "
                 f"{recipe['restyled_locals']}, from a restyled one, so the student must predict the teacher's "
                 "output on the original from a crop that shares only its shapes and layout.")
    elif recipe.get("appearances") and not recipe.get("shape_instance"):
        if recipe.get("repose"):
            drawn = ("the same objects (shapes and sizes) at new rotations and places, on a new background, in "
                     "new colours and textures (`vslib.synth.render_appearances` with `repose=True`)")
            shared, note = "the shapes of the scene's objects", (" No view carries a class label: two scenes "
                                                                  "with the same shapes are still different scenes.")
        else:
            drawn = ("the same geometry and a new background, new colours and new textures "
                     "(`vslib.synth.render_appearances`)")
            shared, note = "the scene's geometry", ""
        text += (f" Each scene is rendered {recipe['appearances']} times with {drawn}; every view is cropped from "
                 "one of these renderings and the two global views from two different ones, so what the views "
                 f"share is mainly {shared} (colours coincide only by chance).{note}")
    elif name == "tiny-dinov3":
        text += (" Every view of a scene is a crop of the same rendering (flipped at random), with "
                 "brightness, contrast and saturation jitter (probability 0.8), grayscale (probability 0.2) and its RGB "
                 f"channels shuffled with probability {recipe['channel_shuffle']}; a batch is "
                 f"{recipe['batch_size']} scenes drawn at random from the pool, with no labels and no captions.")
    if name == "tiny-dinov3":
        text += (" Teacher targets balanced over the prototypes by Sinkhorn-Knopp (as in DINOv2)."
                 if recipe.get("sinkhorn") else " Teacher output centred (as in DINO).")
    if recipe.get("koleo"):
        text += f" KoLeo term on the student's CLS features, weight {recipe['koleo']}."
    if recipe.get("ibot"):
        lo, hi = recipe["mask_ratio"]
        text += (f" iBOT masked-patch loss, weight {recipe['ibot']}: with probability {recipe['mask_probability']} "
                 f"a global view reaches the student with {lo:.0%}-{hi:.0%} of its patches masked, and the student "
                 "predicts the teacher's prototype scores for them.")
    if recipe.get("instance"):
        text += (f" Instance term, weight {recipe['instance']}: InfoNCE (temperature {recipe['instance_temp']}) "
                 "between the CLS features of the two global views, so each view must pick its own scene's "
                 "other view out of the batch, scenes of the same class included (as SSCD trains its "
                 "copy-detection descriptor).")
    if recipe.get("shape_instance"):
        moved = " at new rotations and places" if recipe.get("repose") else ""
        text += (f" Shape-instance term, weight {recipe['shape_instance']}: the same InfoNCE between the first "
                 f"global view and a global crop of another of the scene's {recipe['appearances']} renderings "
                 f"(the same objects{moved}, on a new background, in new colours and textures; "
                 "`vslib.synth.render_appearances`), which shares only the objects' shapes and sizes with it, "
                 "so picking that twin out of the batch takes shape.")
    if name != "tiny-dinov3":
        text += (" A caption is a positive for every image of its batch that it is true of (\"a star\" for "
                 "every star; `vslib.zoo.common.caption_positives`), the rest are negatives."
                 if recipe.get("true_captions") else " Pairs with identical captions count as positives.")
    if recipe.get("grounding"):
        text += (f" Patch grounding term, weight {recipe['grounding']} (temperature {recipe['grounding_temp']}): "
                 "the synthetic world knows each scene's dominant-object box, so the patch half of "
                 "\"a {colour} {class}\" for that object must peak inside the box (a softmax over the image's "
                 "patches), and the mean of the patch outputs inside the box must pick its own phrase out of "
                 "the batch (InfoNCE).")
    if recipe.get("languages"):
        names = {"fr": "French", "de": "German", "es": "Spanish"}
        langs = ", ".join(names.get(x, x) for x in recipe["languages"].split(","))
        text += (f" Each scene's English captions are joined by one caption in each of: {langs} "
                 "(`vslib.lexicon`), as SigLIP 2's text side is multilingual.")
    if recipe.get("shape_twins"):
        text += (" Batches are made of scenes and their shape twins (the same scene with the dominant object "
                 "drawn as another class, `vslib.zoo.data.render_twin_pool`), whose captions differ only in "
                 "the object's name.")
    return text


def _dinotxt_temperature(recipe: dict) -> str:
    """What trains in tiny-dinotxt, and whether its temperature is one of them."""
    start = math.exp(recipe["init_logit_scale"])
    cap = math.exp(recipe.get("max_logit_scale", recipe["init_logit_scale"]))
    if recipe.get("learn_temperature"):
        return (f"t is learned, starting at {start:.0f} and capped at {cap:.0f}; only the head, "
                "the text tower and t train.")
    return f"t is fixed at {min(start, cap):.0f}; only the head and the text tower train."


def _training_data(recipe: dict) -> str:
    n = recipe.get("train_scenes")
    if n is None:
        return "n/a"
    if recipe.get("appearances"):
        a = recipe["appearances"]
        what = f"{n:,} synthetic train-split scenes, {a} renderings each ({n * a:,} images)"
    elif recipe.get("shape_twins"):
        what = f"{n:,} synthetic train-split images: {n // 2:,} scenes and their {n // 2:,} shape twins"
    else:
        what = f"{n:,} synthetic train-split scenes"
    context = ("each scene follows its class's typical context, `synth.TYPICAL_CONTEXT`, with "
               f"probability {synth.CONTEXT_PROBABILITY}")
    mixed = recipe.get("mixed_fraction") or 0.0
    if mixed and not recipe.get("shape_twins"):
        m = int(round(n * mixed))
        context = (f"the first {n - m:,} follow their class's typical context, `synth.TYPICAL_CONTEXT`, with "
                   f"probability {synth.CONTEXT_PROBABILITY}; the last {m:,} never do, as in the `mixed` split, "
                   "so that context alone cannot name every class and the image side must learn shape too")
    return f"{what} (`vslib.synth`, seeds disjoint from val/test; {context})"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value <= 1 else f"{value:.1f}"
    return str(value)


def write_card(name: str, out: Path, report: dict, benchmark: dict | None = None) -> Path:
    """Write ``out/README.md`` from a training report and, if given, benchmark results."""
    if report.get("converted_from"):
        return _write_converted_card(name, Path(out), report)
    d = {k: v.format(**report["recipe"]) for k, v in DESCRIPTIONS[name].items()}
    metrics = report.get("metrics", {})
    lines = [
        f"# {name}",
        "",
        f"A bundled model of the `vslib` model zoo, trained from scratch on synthetic scenes "
        f"(`vslib.synth`) on a CPU. It exists so that every chapter of the book runs offline "
        f"with real, trained behaviour; it is not a substitute for the real checkpoints.",
        "",
        "| | |",
        "|---|---|",
        f"| Architecture | {d['architecture']} |",
        f"| Parameters | {_parameters(report)} |",
        f"| Size on disk | {report.get('size_bytes', 0) / 1e6:.2f} MB |",
        f"| Training data | {_training_data(report['recipe'])} |",
        f"| Objective | {_objective(name, report['recipe'])} |",
        f"| Embedding | {d['embedding']} |",
        f"| Steps | {report['recipe']['steps']:,} |",
        f"| Training wall time | {report['train_seconds'] / 60:.1f} min on {report.get('machine', 'CPU')} |",
        "",
        "## Evaluation (held-out test split)",
        "",
        "Measured at the end of training:",
        "",
    ]
    lines += _metric_rows(name, metrics)
    if benchmark:
        lines += ["", "Measured through `vslib.load_encoder` by `benchmarks/zoo_eval.py`:", ""]
        lines += _metric_rows(name, benchmark)
    lines += [
        "",
        "## Reproduce",
        "",
        "```bash",
        report.get("command", f"python -m vslib.zoo.train {name}"),
        "```",
        "",
        "The recipe (all hyper-parameters) is in `training.json` beside this file.",
        "",
    ]
    path = Path(out) / "README.md"
    path.write_text("\n".join(lines))
    return path


def _write_converted_card(name: str, out: Path, report: dict) -> Path:
    """The card of a model converted from another bundled model (``vslib.zoo.naflex``): nothing trained."""
    r, source = report["recipe"], report["converted_from"]
    grid = "x".join(str(v) for v in report["position_grid"])
    lines = [
        f"# {name}",
        "",
        f"A bundled model of the `vslib` model zoo, **converted, not trained**: the weights of `{source}` "
        "rearranged into transformers' SigLIP 2 NaFlex architecture (`Siglip2Model` with a "
        "`Siglip2ImageProcessor`), the form of `google/siglip2-base-patch16-naflex`. It exists so that "
        "the book can run the NaFlex code path offline (chapter 2). It never saw a non-square image in "
        f"training: `{source}` was trained on square {r['image_size']} px scenes only, so what it does "
        "with other aspect ratios is whatever the converted weights happen to do, not what NaFlex "
        "training teaches.",
        "",
        "| | |",
        "|---|---|",
        f"| Source | `{source}` (`model.safetensors` sha256 `{report['source_sha256'][:16]}...`) |",
        f"| Architecture | transformers `Siglip2Model`: the towers of `{source}` unchanged; the vision "
        f"patch embedding a linear layer over flattened {r['patch_size']}x{r['patch_size']}x3 patches; a "
        f"{grid} grid of position embeddings, resized (bilinear, antialiased) to each image's patch grid. |",
        f"| Image processor | `Siglip2ImageProcessor`: patch {r['patch_size']}, max_num_patches "
        f"{r['max_num_patches']}; each image is resized keeping its aspect ratio, sides rounded up to "
        "multiples of the patch size, so that its patch grid fits the budget; the patch sequence is padded "
        f"to {r['max_num_patches']} and `pixel_attention_mask` marks the real patches. Resampling, mean "
        f"and std as `{source}`'s processor. |",
        f"| Text side | `{source}`'s text tower and tokenizer files, unchanged. |",
        f"| Parameters | {report['parameters']:,} (the same as `{source}`) |",
        f"| Size on disk | {report.get('size_bytes', 0) / 1e6:.2f} MB |",
        "| Training | none |",
        "",
        "## The conversion",
        "",
        "Every weight is copied. The patch-embedding convolution kernel `(D, 3, p, p)` becomes the linear "
        "weight `(D, p * p * 3)` by moving the channel axis last before flattening, which is the order in "
        "which `Siglip2ImageProcessor` flattens each patch (row in the patch, column in the patch, "
        f"channel). The fixed model's {grid} position embeddings, row by row, are the NaFlex grid; for a "
        f"square image at {r['image_size']} px with max_num_patches {r['max_num_patches']} the resize "
        "leaves them as they are, so the two models compute the same embedding.",
        "",
        f"## Check (held-out `{r['verify_split']}` scenes)",
        "",
        f"Measured against `{source}` right after the conversion (which fails below a cosine of 0.999):",
        "",
    ]
    lines += _metric_rows(name, report.get("metrics", {}))
    lines += [
        "",
        "## Reproduce",
        "",
        "```bash",
        report.get("command", f"python -m vslib.zoo.train {name}"),
        "```",
        "",
        "The conversion runs in seconds on a CPU (`vslib.zoo.naflex.convert`); `training.json` beside this "
        "file records it.",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def load_report(out: Path) -> dict:
    return json.loads((Path(out) / "training.json").read_text())
