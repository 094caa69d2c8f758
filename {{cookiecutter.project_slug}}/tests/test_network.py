"""The network on the project's own inputs and task: shapes, loss at initialization, and whether it can learn.

Before any long run: the initial loss should sit at chance (a model that starts confidently wrong wastes the
first epochs), and the network must be able to drive the loss of a single batch to almost zero.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_BACKBONE, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.module import Model


@pytest.fixture()
def model_and_batch(tiny_data) -> tuple[Model, dict]:
    torch.manual_seed(0)
    data = project_datamodule(tiny_data, augment=False)
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
    model = Model(task=TASK_TYPE, class_names=names, backbone=backbone, pretrained=False)
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
