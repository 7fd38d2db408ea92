"""Friendly model names, where each model comes from, and finding its files offline.

A name resolves to a :class:`ModelSpec` (family, Hub id or bundled directory). Hub models
are looked up in the local Hugging Face cache first; without network and without a cached
copy the lookup fails at once with :class:`ModelNotAvailableError`, which names the model
and the bundled model to use instead. Introduced in chapter 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from vslib.zoo import BUNDLED, checkpoint_path

__all__ = ["MODELS", "ModelNotAvailableError", "ModelSpec", "available_models", "resolve", "detect_family"]


class ModelNotAvailableError(OSError):
    """A model's files are not on this machine and cannot be downloaded now."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a named model comes from.

    Attributes:
        name: The friendly name.
        family: ``"dinov3"``, ``"siglip"`` or ``"dinotxt"``.
        source: A Hugging Face Hub id, or a local directory for bundled models.
        bundled: True for the models shipped inside vslib.
        alternative: The bundled model of the same family (used in error messages).
        note: One line for tables of models.
    """

    name: str
    family: str
    source: str
    bundled: bool = False
    alternative: str = ""
    note: str = ""


def _dinov3(name: str, hub: str, note: str) -> ModelSpec:
    return ModelSpec(name, "dinov3", hub, alternative="tiny-dinov3", note=note)


def _siglip(name: str, hub: str, note: str) -> ModelSpec:
    return ModelSpec(name, "siglip", hub, alternative="tiny-siglip2", note=note)


def _naflex(name: str, hub: str, note: str) -> ModelSpec:
    return ModelSpec(name, "siglip", hub, alternative="tiny-siglip2-naflex", note=note)


#: The environment variable naming the folder with the official dino.txt files.
DINOTXT_ENV = "VSLIB_DINOTXT_DIR"
#: Official dino.txt ViT-L/16 file names (head + text tower, BPE vocabulary, backbone).
DINOTXT_FILES = {
    "weights": "dinov3_vitl16_dinotxt_vision_head_and_text_encoder.pth",
    "bpe_vocab": "bpe_simple_vocab_16e6.txt.gz",
    "backbone": "dinov3_vitl16_pretrain_lvd1689m.pth",
}
DINOTXT_BACKBONE_HUB = "facebook/dinov3-vitl16-pretrain-lvd1689m"
#: Optional, beside the official files: a DinoTxtConfig JSON for a release of another size
#: (without it the released ViT-L/16 sizes apply).
DINOTXT_CONFIG_FILE = "dinotxt_config.json"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _dinov3("dinov3-vits16", "facebook/dinov3-vits16-pretrain-lvd1689m", "ViT-S/16, 21M parameters, 384-d"),
        _dinov3("dinov3-vits16plus", "facebook/dinov3-vits16plus-pretrain-lvd1689m", "ViT-S+/16, 29M, 384-d"),
        _dinov3("dinov3-vitb16", "facebook/dinov3-vitb16-pretrain-lvd1689m", "ViT-B/16, 86M, 768-d"),
        _dinov3("dinov3-vitl16", "facebook/dinov3-vitl16-pretrain-lvd1689m", "ViT-L/16, 300M, 1024-d"),
        _dinov3("dinov3-vith16plus", "facebook/dinov3-vith16plus-pretrain-lvd1689m", "ViT-H+/16, 840M, 1280-d"),
        _dinov3("dinov3-vit7b16", "facebook/dinov3-vit7b16-pretrain-lvd1689m", "ViT-7B/16, 6.7B, 4096-d"),
        _naflex("siglip2-base-naflex", "google/siglip2-base-patch16-naflex", "B/16, native aspect ratio, 768-d"),
        _siglip("siglip2-base-patch16-224", "google/siglip2-base-patch16-224", "B/16 at 224 px, 768-d"),
        _siglip("siglip2-base-patch16-384", "google/siglip2-base-patch16-384", "B/16 at 384 px, 768-d"),
        _siglip("siglip2-so400m-patch14-384", "google/siglip2-so400m-patch14-384", "So400m/14 at 384 px, 1152-d"),
        _naflex("siglip2-so400m-naflex", "google/siglip2-so400m-patch16-naflex", "So400m/16, native aspect, 1152-d"),
        ModelSpec("dinotxt-vitl16", "dinotxt", f"${DINOTXT_ENV}", alternative="tiny-dinotxt",
                  note="dino.txt on DINOv3 ViT-L/16, 2048-d (official files in $VSLIB_DINOTXT_DIR)"),
        ModelSpec("tiny-dinov3", "dinov3", "tiny-dinov3", bundled=True, alternative="tiny-dinov3",
                  note="bundled: DINOv3 architecture trained on synthetic scenes"),
        ModelSpec("tiny-siglip2", "siglip", "tiny-siglip2", bundled=True, alternative="tiny-siglip2",
                  note="bundled: SigLIP dual encoder trained on synthetic scenes"),
        ModelSpec("tiny-siglip2-naflex", "siglip", "tiny-siglip2-naflex", bundled=True,
                  alternative="tiny-siglip2-naflex",
                  note="bundled: tiny-siglip2 converted to SigLIP 2 NaFlex (native aspect ratio), not retrained"),
        ModelSpec("tiny-dinotxt", "dinotxt", "tiny-dinotxt", bundled=True, alternative="tiny-dinotxt",
                  note="bundled: dino.txt recipe on the frozen tiny-dinov3"),
    )
}


def available_models() -> list[ModelSpec]:
    """All registered models, bundled ones first (introduced in chapter 1)."""
    return sorted(MODELS.values(), key=lambda s: (not s.bundled, s.family, s.name))


def detect_family(directory: Path) -> str:
    """Tell the model family of a local model directory from its files.

    Raises:
        ValueError: If the directory holds no model this library knows.
    """
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{directory} has no config.json: it is not a model directory")
    config = json.loads(config_file.read_text())
    model_type = config.get("model_type", "")
    if model_type.startswith("dinov3"):
        return "dinov3"
    if model_type in ("siglip", "siglip2"):
        return "siglip"
    if "text_vocab_size" in config and (directory / "bpe_vocab.txt.gz").is_file():
        return "dinotxt"
    raise ValueError(
        f"{directory} holds a model of type {model_type or 'unknown'!r}; vslib supports DINOv3, SigLIP / SigLIP 2 "
        "and dino.txt models"
    )


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _not_available(name: str, hub_id: str, alternative: str, why: str) -> ModelNotAvailableError:
    alt = f" For an offline model of the same family, use the bundled {alternative!r}." if alternative else ""
    return ModelNotAvailableError(
        f"Model {name!r} ({hub_id}) is not cached on this machine and {why}. Download it once with network "
        f"access (for example: hf download {hub_id}) and load it again.{alt}"
    )


def fetch_hub_snapshot(hub_id: str, name: str | None = None, alternative: str = "") -> Path:
    """Return the local snapshot directory of a Hub model: from the cache, else downloaded.

    Raises:
        ModelNotAvailableError: If the model is not cached and the hub is offline or
            unreachable, or the repository is gated and no access token allows it.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    name = name or hub_id
    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    if hub_offline():
        raise _not_available(name, hub_id, alternative, "the Hugging Face Hub is switched off (HF_HUB_OFFLINE=1)")
    try:
        return Path(snapshot_download(hub_id))
    except GatedRepoError:
        raise ModelNotAvailableError(
            f"Model {name!r} ({hub_id}) is gated: accept its licence on https://huggingface.co/{hub_id} and log "
            f"in (hf auth login) before loading it." + (f" Meanwhile, use the bundled {alternative!r}." if alternative else "")
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotAvailableError(f"{hub_id!r} is not a model on the Hugging Face Hub (or it is private)") from None
    except Exception as error:  # network errors come in many classes (httpx, OSError, hub errors)
        raise _not_available(name, hub_id, alternative, f"the Hub cannot be reached ({type(error).__name__})") from None


@dataclass(frozen=True)
class Resolved:
    """A model name resolved to a family and the local place its files are."""

    name: str
    family: str
    path: Path


def resolve(name_or_path: str | os.PathLike) -> Resolved:
    """Resolve a friendly name, a local directory or a Hub id to local files.

    Raises:
        ModelNotAvailableError: If a Hub model is not cached and cannot be downloaded,
            or the dino.txt files are not where ``$VSLIB_DINOTXT_DIR`` says.
        KeyError: If the name is neither registered, a directory, nor a Hub id.

    Introduced in chapter 1.
    """
    text = str(name_or_path)
    spec = MODELS.get(text)
    if spec is not None and spec.bundled:
        path = checkpoint_path(spec.name)
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"The bundled model {spec.name!r} is missing from {path}; reinstall vslib or rebuild it with "
                f"python -m vslib.zoo.train {spec.name}"
            )
        return Resolved(spec.name, spec.family, path)
    if spec is not None and spec.family == "dinotxt":
        return Resolved(spec.name, "dinotxt", dinotxt_official_dir(spec))
    if spec is not None:
        return Resolved(spec.name, spec.family, fetch_hub_snapshot(spec.source, spec.name, spec.alternative))
    path = Path(text).expanduser()
    if path.is_dir():
        return Resolved(text, detect_family(path), path)
    if text.startswith((".", "/", "~")) or isinstance(name_or_path, os.PathLike):
        raise FileNotFoundError(f"model directory {text!r} does not exist")
    if text.count("/") == 1 and " " not in text:
        snapshot = fetch_hub_snapshot(text)
        return Resolved(text, detect_family(snapshot), snapshot)
    names = ", ".join(MODELS)
    raise KeyError(f"unknown model {text!r}: not a registered name ({names}), a local directory or a Hub id")


def dinotxt_official_dir(spec: ModelSpec) -> Path:
    """The folder of the official dino.txt files, from ``$VSLIB_DINOTXT_DIR``."""
    value = os.environ.get(DINOTXT_ENV, "").strip()
    needed = ", ".join(DINOTXT_FILES[k] for k in ("weights", "bpe_vocab"))
    if not value:
        raise ModelNotAvailableError(
            f"Model {spec.name!r} (dino.txt, official Meta release) is not on this machine: download its files "
            f"({needed}, and the DINOv3 ViT-L/16 backbone) into a folder and set {DINOTXT_ENV} to it. "
            f"For an offline model of the same family, use the bundled {spec.alternative!r}."
        )
    folder = Path(value).expanduser()
    missing = [f for k, f in DINOTXT_FILES.items() if k != "backbone" and not _find(folder, f)]
    if missing:
        raise ModelNotAvailableError(
            f"Model {spec.name!r}: {DINOTXT_ENV}={value!r} does not hold {', '.join(missing)}. "
            f"For an offline model of the same family, use the bundled {spec.alternative!r}."
        )
    return folder


def _find(folder: Path, file_name: str) -> Path | None:
    """A file in ``folder`` whose name matches ``file_name`` up to a release hash suffix."""
    stem, dot, suffix = file_name.partition(".")
    for candidate in sorted(folder.glob(f"{stem}*")):
        if candidate.is_file() and candidate.name.endswith(dot + suffix):
            return candidate
    return None


def dinotxt_official_files(folder: Path) -> dict[str, Path | str]:
    """Paths of the official dino.txt files in ``folder`` (backbone: file there, else the Hub id).

    ``"config"`` is present when the folder holds :data:`DINOTXT_CONFIG_FILE`.
    """
    files: dict[str, Path | str] = {k: _find(folder, v) for k, v in DINOTXT_FILES.items()}  # type: ignore[misc]
    if files["backbone"] is None:
        files["backbone"] = DINOTXT_BACKBONE_HUB
    config = folder / DINOTXT_CONFIG_FILE
    if config.is_file():
        files["config"] = config
    return files
