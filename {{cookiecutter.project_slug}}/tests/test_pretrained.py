"""Backbone weights: local files load through timm; an unreachable hub fails at once with what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from conftest import TINY_BACKBONE
from {{ cookiecutter.package_name }}.errors import PretrainedWeightsError
from {{ cookiecutter.package_name }}.models.encoders import image as image_encoder
from {{ cookiecutter.package_name }}.models.encoders.image import ImageEncoder


def test_pretrained_file_loads_the_backbone_and_drops_the_files_classifier(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model(TINY_BACKBONE, num_classes=1000)  # the shape of a hub checkpoint
    weights = tmp_path / "weights.pth"
    torch.save(source.state_dict(), weights)

    encoder = ImageEncoder(TINY_BACKBONE, pretrained_file=str(weights))
    loaded = encoder.backbone.state_dict()
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_missing_pretrained_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="pretrained_file.*nope.pth"):
        ImageEncoder(TINY_BACKBONE, pretrained_file=str(tmp_path / "nope.pth"))


def test_unreachable_hub_fails_with_a_message_naming_pretrained_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(image_encoder, "hub_reachable", lambda *args, **kwargs: False)
    with pytest.raises(PretrainedWeightsError, match="pretrained_file"):
        ImageEncoder(TINY_BACKBONE, pretrained=True)


def test_offline_cache_miss_fails_with_a_message_naming_pretrained_file(tmp_path: Path) -> None:
    # A fresh process with an empty Hugging Face cache and HF_HUB_OFFLINE=1: nothing to load, no network tried.
    code = (
        "from {{ cookiecutter.package_name }}.models.encoders.image import ImageEncoder\n"
        f"ImageEncoder({TINY_BACKBONE!r}, pretrained=True)\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "PretrainedWeightsError" in result.stderr and "pretrained_file" in result.stderr


def test_hub_probe_gives_up_quickly_on_an_unreachable_host() -> None:
    # 192.0.2.0/24 is reserved for documentation: nothing answers there.
    assert image_encoder.hub_reachable("192.0.2.1", timeout=0.5) is False
