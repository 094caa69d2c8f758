"""Backbone weights: local files load through timm; an unreachable hub fails at once with what to do."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch

from conftest import SEGMENTATION, TINY_BACKBONE, cli_args, default_config, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.data.image import ImageDataConfig
from {{ cookiecutter.package_name }}.errors import PretrainedWeightsError
from {{ cookiecutter.package_name }}.models.encoders import image as image_encoder
from {{ cookiecutter.package_name }}.models.encoders.image import BACKBONE_PREFIXES, ImageEncoder


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
    # Already offline: the message says what is missing, not to set what is set.
    assert "HF_HUB_OFFLINE is set and the Hugging Face cache does not hold them" in result.stderr
    assert "set HF_HUB_OFFLINE=1" not in result.stderr


def test_hub_probe_gives_up_quickly_on_an_unreachable_host() -> None:
    # 192.0.2.0/24 is reserved for documentation: nothing answers there.
    assert image_encoder.hub_reachable("192.0.2.1", timeout=0.5) is False


def image_encoder_args(**options: object) -> dict:
    """`project_model` network args that set these options of the tiny image backbone (segmentation networks take
    them directly; the other networks through their image encoder, in a dict replaced whole)."""
    options = {"backbone": TINY_BACKBONE, **options}
    if SEGMENTATION:
        return options
    encoders = default_config("model")["init_args"]["network"]["init_args"]["encoders"]
    encoders["image"].update(options)
    return {"encoders": encoders}


def test_a_checkpoint_of_this_project_pretrains_the_next_run(tiny_data: Path, tmp_path: Path) -> None:
    """Transfer from an earlier fit: its backbone loads through pretrained_file, the head starts fresh and is sized
    for the new run's outputs."""
    few = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    fit = main(cli_args("fit", tiny_data, tmp_path / "runs", *few))
    checkpoint = fit.trainer.checkpoint_callback.best_model_path
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    prefix = next(p for p in BACKBONE_PREFIXES if any(key.startswith(p) for key in saved))

    data = project_datamodule(tiny_data)
    names = list(data.class_names)
    if TASK_TYPE in ("multiclass", "multilabel", "segmentation"):
        names.append("new_class")  # the new run predicts one class more than the checkpoint did
    model = project_model(data, image_encoder_args(pretrained=True, pretrained_file=checkpoint), class_names=names)
    state = model.state_dict()

    backbone = {key: value for key, value in saved.items() if key.startswith(prefix)}
    assert backbone and all(torch.equal(state[key], value) for key, value in backbone.items())
    head = [key for key in state if not key.startswith(prefix) and key.endswith(".weight")][-1]  # the output layer
    if len(names) > len(data.class_names):
        assert state[head].shape[0] == len(names) and saved[head].shape[0] == len(data.class_names)
    else:
        assert state[head].shape == saved[head].shape and not torch.equal(state[head], saved[head])


def test_a_checkpoint_without_an_image_backbone_is_named(tmp_path: Path) -> None:
    checkpoint = tmp_path / "tabular.ckpt"
    torch.save({"state_dict": {"network.encoders.tabular.mlp.0.weight": torch.zeros(2, 2)}}, checkpoint)
    with pytest.raises(PretrainedWeightsError, match="tabular.ckpt.*holds no image backbone"):
        ImageEncoder(TINY_BACKBONE, pretrained_file=str(checkpoint))


def test_an_image_size_far_from_the_pretrained_one_is_warned_about() -> None:
    def size_warnings(image_size: int | None, pretrained: bool = True) -> list[str]:
        config = ImageEncoder.data_config("resnet18", pretrained=pretrained)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = ImageDataConfig.for_encoder(config, image_size)
        assert data.image_size == (image_size or 224)
        return [str(warning.message) for warning in caught]

    assert size_warnings(None) == []  # null: the pretrained size itself
    assert size_warnings(160) == []
    (warning,) = size_warnings(32)
    assert "224 px" in warning and "data.image.size=32" in warning
    assert size_warnings(32, pretrained=False) == []  # weights learned from scratch have no size to keep to
