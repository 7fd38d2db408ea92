from pathlib import Path

import pytest

from vslib import config


def test_default_model_set_is_tiny(monkeypatch):
    monkeypatch.delenv("VSLIB_MODELS", raising=False)
    m = config.models()
    assert m.set_name == "tiny"
    assert (m.image, m.multimodal, m.dinotxt) == ("tiny-dinov3", "tiny-siglip2", "tiny-dinotxt")


def test_switch_to_real(monkeypatch):
    monkeypatch.setenv("VSLIB_MODELS", " Real ")
    m = config.models()
    assert m.set_name == "real"
    assert m.image.startswith("dinov3-") and m.dinotxt.startswith("dinotxt-")


def test_unknown_model_set_names_the_value(monkeypatch):
    monkeypatch.setenv("VSLIB_MODELS", "huge")
    with pytest.raises(ValueError, match="'huge'"):
        config.models()


def test_image_folder(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("VSLIB_IMAGES", raising=False)
    assert config.image_folder() is None
    monkeypatch.setenv("VSLIB_IMAGES", str(tmp_path))
    assert config.image_folder() == tmp_path
    monkeypatch.setenv("VSLIB_IMAGES", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        config.image_folder()


def test_forced_device_and_dtype(monkeypatch):
    monkeypatch.delenv("VSLIB_DEVICE", raising=False)
    monkeypatch.delenv("VSLIB_DTYPE", raising=False)
    assert config.forced_device() is None and config.forced_dtype() is None
    monkeypatch.setenv("VSLIB_DEVICE", " CUDA:1 ")
    monkeypatch.setenv("VSLIB_DTYPE", "BFloat16")
    assert config.forced_device() == "cuda:1" and config.forced_dtype() == "bfloat16"


@pytest.mark.parametrize("name, value", [("VSLIB_DEVICE", "gpu"), ("VSLIB_DEVICE", "cuda:x"),
                                         ("VSLIB_DTYPE", "int8"), ("VSLIB_DTYPE", "bf32")])
def test_unknown_device_or_dtype_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    read = config.forced_device if name == "VSLIB_DEVICE" else config.forced_dtype
    with pytest.raises(ValueError, match=f"{name}='{value}'"):
        read()


def test_per_class_cap(monkeypatch):
    monkeypatch.delenv("VSLIB_PER_CLASS", raising=False)
    assert config.per_class(30) == 30
    monkeypatch.setenv("VSLIB_PER_CLASS", "4")
    assert config.per_class(30) == 4 and config.per_class(2) == 2
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("VSLIB_PER_CLASS", bad)
        with pytest.raises(ValueError, match=f"VSLIB_PER_CLASS='{bad}'"):
            config.per_class(30)


def test_naflex_model_follows_the_switch(monkeypatch):
    monkeypatch.delenv("VSLIB_MODELS", raising=False)
    assert config.naflex_model() == "tiny-siglip2-naflex"
    monkeypatch.setenv("VSLIB_MODELS", "real")
    assert config.naflex_model() == "siglip2-base-naflex"
    with pytest.raises(ValueError, match="'huge'"):
        config.naflex_model("huge")
