"""The network on the project's own inputs and task: shapes, loss at initialization, and whether it can learn; and
the parts it is built from: the registry (models/registry.py), the features / head split and the data config.

Before any long run: the initial loss should sit at chance (a model that starts confidently wrong wastes the
first epochs), and the network must be able to drive the loss of a single batch to almost zero.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import SEGMENTATION, TINY_BACKBONE, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.errors import DataError
from {{ cookiecutter.package_name }}.models import registry
from {{ cookiecutter.package_name }}.models.heads import LinearHead
from {{ cookiecutter.package_name }}.models.network import DEFAULT_ENCODERS, Network
from {{ cookiecutter.package_name }}.models.registry import build, register, registered
from {{ cookiecutter.package_name }}.module import Model
from {{ cookiecutter.package_name }}.tasks import load_task_class

PACKAGE = "{{ cookiecutter.package_name }}"
needs_image = pytest.mark.skipif("image" not in MODALITIES, reason="no image input")
# An encoder class without a `data_config`, named by its import path (no registration needed).
PLAIN_ENCODER = {"name": "torch.nn.Linear", "in_features": 3, "out_features": 4}


@pytest.fixture()
def model_and_batch(tiny_data) -> tuple[Model, dict]:
    torch.manual_seed(0)
    data = project_datamodule(tiny_data, **({"image": {"augment": False}} if "image" in MODALITIES else {}))
    return project_model(data), next(iter(data.train_dataloader()))


def test_output_shape_matches_the_task(model_and_batch: tuple[Model, dict]) -> None:
    model, batch = model_and_batch
    outputs = model(batch)
    if TASK_TYPE == "segmentation":  # a class score per pixel, at the input's size
        assert outputs.shape == (len(batch["id"]), model.task.num_outputs, *batch["image"].shape[-2:])
    else:
        assert outputs.shape == (len(batch["id"]), model.task.num_outputs)


# mobilenetv3 has a layer after pooling, so its feature width differs from num_features.
@pytest.mark.skipif(MODALITIES != ("image",) or TASK_TYPE == "segmentation", reason="image classifier backbones")
@pytest.mark.parametrize("backbone", [TINY_BACKBONE, "mobilenetv3_small_050"])
def test_output_shape_with_asymmetric_input(backbone: str) -> None:
    names = ["a", "b"] if TASK_TYPE == "binary" else ["a", "b", "c"]  # binary: exactly two classes
    network = partial(Network, encoders={"image": {"name": "timm", "backbone": backbone, "pretrained": False}})
    model = Model(task=load_task_class(TASK_TYPE)(), class_names=names, network=network)
    # Height != width, so swapped axes anywhere in the network would show up as a wrong shape or an error.
    outputs = model({"image": torch.randn(2, 3, 32, 48)})
    assert outputs.shape == (2, model.task.num_outputs)


def test_loss_at_initialization_is_near_chance(model_and_batch: tuple[Model, dict]) -> None:
    model, batch = model_and_batch
    model.eval()
    with torch.no_grad():
        loss = model.task.loss(model(batch), batch["target"]).item()
    chance = model.task.chance_loss
    assert chance / 2 < loss < chance * 2, f"initial loss {loss:.3f} is far from chance {chance:.3f}"


def test_overfits_one_batch(model_and_batch: tuple[Model, dict]) -> None:
    model, batch = model_and_batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = model.task.loss(model(batch), batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.1 * losses[0], f"loss only went from {losses[0]:.3f} to {losses[-1]:.3f}"


# --- forward_features / forward_head, backbone -------------------------------------------------------------------
def test_forward_is_forward_head_of_forward_features(model_and_batch: tuple[Model, dict]) -> None:
    model, batch = model_and_batch
    network = model.network.eval()
    with torch.no_grad():
        features = network.forward_features(batch)
        torch.testing.assert_close(network.forward_head(features), network(batch), rtol=0, atol=0)
    if not SEGMENTATION:  # one [B, D] feature vector per input, D as the network reports it
        assert {name: tuple(f.shape) for name, f in features.items()} == {
            name: (len(batch["id"]), dim) for name, dim in network.feature_dims.items()
        }
        assert sorted(features) == sorted(MODALITIES)


def test_backbone_is_the_image_encoders_pretrained_part(model_and_batch: tuple[Model, dict]) -> None:
    network = model_and_batch[0].network
    if SEGMENTATION:
        assert isinstance(network.backbone, nn.Module) and hasattr(network.backbone, "feature_info")
    elif "image" in MODALITIES:
        assert network.backbone is network.encoders["image"].backbone
        assert sum(p.numel() for p in network.backbone.parameters()) > 0
    else:
        assert network.backbone is None  # nothing pretrained: one LR group, no staged fine-tuning


# --- the registry ----------------------------------------------------------------------------------------------
@pytest.fixture()
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_REGISTRY", {kind: dict(parts) for kind, parts in registry._REGISTRY.items()})


def test_a_registered_name_builds_with_its_options() -> None:
    head = build("head", "linear", 8, 3)
    assert isinstance(head, LinearHead) and head(torch.randn(2, 8)).shape == (2, 3)
    head = build("head", {"name": "linear", "dropout": 0.25}, 8, 3)
    assert head.dropout.p == 0.25


def test_an_import_path_builds_without_registration() -> None:
    head = build("head", {"name": f"{PACKAGE}.models.heads.LinearHead", "dropout": 0.1}, 8, 3)
    assert isinstance(head, LinearHead) and head.dropout.p == 0.1
    linear = build("head", "torch.nn.Linear", 8, 3)  # any class with the kind's leading arguments
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (8, 3)
    with pytest.raises(ValueError, match=r"head 'torch\.nn\.NoSuchHead' cannot be imported"):
        build("head", "torch.nn.NoSuchHead", 8, 3)


@pytest.mark.parametrize("kind", registry.KINDS)
def test_an_unknown_name_fails_in_one_line_listing_the_registered_names(kind: str) -> None:
    with pytest.raises(ValueError) as error:
        build(kind, "no_such_part")
    message = str(error.value)
    assert "\n" not in message
    assert f"{kind} 'no_such_part' is not registered; registered: {', '.join(registered(kind))}" in message


def test_an_unknown_option_fails_naming_the_entry_and_the_options_the_class_takes() -> None:
    with pytest.raises(ValueError) as error:
        build("head", {"name": "linear", "dropuot": 0.1}, 8, 3, where="model.network head")
    assert str(error.value) == "model.network head: unknown option(s) dropuot; it takes dropout"
    with pytest.raises(
        ValueError, match=r"^model\.network fusion: unknown option\(s\) fusion_dims; it takes fusion_dim$"
    ):
        Network(
            {"a": {}, "b": {}},
            2,
            encoders={"a": PLAIN_ENCODER, "b": PLAIN_ENCODER},
            fusion={"name": "concat", "fusion_dims": 8},
        )
    with pytest.raises(ValueError, match="a head entry needs a 'name'"):
        build("head", {"dropout": 0.1}, 8, 3)


@pytest.mark.skipif(SEGMENTATION, reason="a segmentation network takes its backbone options as its own arguments")
def test_an_unknown_encoder_option_names_the_input_and_the_encoders_options(tiny_data: Path) -> None:
    inputs = project_datamodule(tiny_data).input_specs
    for name in MODALITIES:
        encoders = {name: {"name": DEFAULT_ENCODERS[name], "hiden_dim": 8}}
        with pytest.raises(ValueError) as error:
            Network(inputs, 2, encoders=encoders)
        message = str(error.value)
        assert message.startswith(f"model.network encoders.{name}: unknown option(s) hiden_dim; it takes "), message
        assert "\n" not in message
    if "sequence" in MODALITIES:  # from_spec passes **options on to the class: its own keywords count too
        with pytest.raises(ValueError, match=r"unknown option\(s\) num_layer; it takes .*num_layers"):
            Network(inputs, 2, encoders={"sequence": {"name": "sequence", "num_layer": 2}})


def test_nulls_of_a_nested_command_line_flag_read_as_null() -> None:
    # jsonargparse re-reads `--model.network.init_args.head '{"dropout": null}'` from its Python repr ("None").
    assert registry.split_spec("head", {"name": "linear", "dropout": "None"}) == ("linear", {"dropout": None})


def test_register_makes_a_class_buildable_by_name(scratch_registry: None) -> None:
    @register("head", "test_mlp")
    class MLPHead(nn.Module):
        def __init__(self, in_features: int, out_features: int, hidden: int = 16):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    assert "test_mlp" in registered("head")
    head = build("head", {"name": "test_mlp", "hidden": 5}, 8, 3)
    assert isinstance(head, MLPHead) and head(torch.randn(2, 8)).shape == (2, 3)
    network = Network({"a": {}}, 3, encoders={"a": PLAIN_ENCODER}, head={"name": "test_mlp", "hidden": 5})
    assert isinstance(network.fusion.head, MLPHead) and network({"a": torch.randn(2, 3)}).shape == (2, 3)
    with pytest.raises(ValueError, match="registered twice"):
        register("head", "test_mlp")(LinearHead)
    assert register("head", "test_mlp")(MLPHead) is MLPHead  # the same class again (a module reloaded): fine
    with pytest.raises(ValueError, match="unknown part kind 'neck'; choose one of encoder, fusion, head"):
        register("neck", "x")


def test_the_project_parts_are_registered() -> None:
    assert registered("fusion") == ["concat", "gated", "late", "none"]
    assert "linear" in registered("head")
    assert registered("encoder") == sorted(DEFAULT_ENCODERS[name] for name in MODALITIES)


def test_a_new_module_under_models_is_discovered(
    scratch_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new file next to the project's models/ modules, and no other file edited: the first unknown name
    # makes the registry import every module under models/.
    (tmp_path / "scratch_head.py").write_text(
        "from torch import nn\n"
        "from .registry import register\n\n\n"
        "@register('head', 'scratch_head')\n"
        "class ScratchHead(nn.Linear):\n"
        "    pass\n"
    )
    models = sys.modules[f"{PACKAGE}.models"]
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        head = build("head", "scratch_head", 8, 3)
        assert type(head).__name__ == "ScratchHead" and "scratch_head" in registered("head")
    finally:
        sys.modules.pop(f"{PACKAGE}.models.scratch_head", None)
        vars(models).pop("scratch_head", None)


def test_an_input_without_an_encoder_or_an_encoder_without_an_input_is_named() -> None:
    with pytest.raises(ValueError, match=r"input 'audio' has no encoder: add one under model\.network\.init_args"):
        Network({"audio": {}}, 2)
    with pytest.raises(ValueError, match=r"encoders \['b'\] name no input of the data \(a\)"):
        Network({"a": {}}, 2, encoders={"a": PLAIN_ENCODER, "b": PLAIN_ENCODER})


# --- what the image encoder asks of the data -------------------------------------------------------------------
@needs_image
def test_data_config_of_the_timm_encoder_follows_its_backbone() -> None:
    from {{ cookiecutter.package_name }}.models.encoders.image import ImageEncoder

    config = Network.data_config(encoders={"image": {"name": "timm", "backbone": TINY_BACKBONE, "pretrained": True}})
    assert config == ImageEncoder.data_config(TINY_BACKBONE, pretrained=True)
    assert (config["image_size"], config["mean"], config["pretrained"]) == (160, [0.5, 0.5, 0.5], True)
    resnet = Network.data_config(encoders={"image": {"name": "timm", "backbone": "resnet18", "pretrained": False}})
    assert (resnet["image_size"], resnet["std"], resnet["pretrained"]) == (224, [0.229, 0.224, 0.225], False)
    # Without an image entry the default encoder's (timm, resnet18) config applies.
    assert Network.data_config(encoders={}) == ImageEncoder.data_config()


@pytest.mark.skipif("image" in MODALITIES, reason="the project has an image encoder")
def test_data_config_is_none_without_an_image_encoder() -> None:
    encoders = {name: DEFAULT_ENCODERS[name] for name in MODALITIES}
    assert Network.data_config(encoders=encoders) is None


def test_data_config_of_an_encoder_without_one_is_empty() -> None:
    assert Network.data_config(encoders={"image": PLAIN_ENCODER}) == {}


@needs_image
def test_the_data_of_an_encoder_without_data_config_takes_imagenet_statistics_and_needs_a_size() -> None:
    from {{ cookiecutter.package_name }}.data.image import IMAGENET_MEAN, IMAGENET_STD, ImageDataConfig

    empty = Network.data_config(encoders={"image": PLAIN_ENCODER})
    for config in (empty, None):
        data = ImageDataConfig.for_encoder(config, image_size=40)
        assert (data.image_size, data.mean, data.std, data.interpolation) == (
            40,
            IMAGENET_MEAN,
            IMAGENET_STD,
            "bilinear",
        )
        with pytest.raises(DataError) as error:
            ImageDataConfig.for_encoder(config)
        assert "\n" not in str(error.value) and "data.image.size" in str(error.value)
