"""The network on its own: shapes, loss at initialization, and whether it can learn at all."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY_BACKBONE
from {{ cookiecutter.package_name }}.module import Model

NUM_CLASSES = 5


@pytest.fixture()
def model() -> Model:
    torch.manual_seed(0)
    return Model(backbone=TINY_BACKBONE, pretrained=False, num_classes=NUM_CLASSES)


# mobilenetv3 has a layer after pooling, so its feature width differs from num_features.
@pytest.mark.parametrize("backbone", [TINY_BACKBONE, "mobilenetv3_small_050"])
def test_output_shape_with_asymmetric_input(backbone: str) -> None:
    model = Model(backbone=backbone, pretrained=False, num_classes=NUM_CLASSES)
    # Height != width, so swapped axes anywhere in the network would show up as a wrong shape or an error.
    logits = model({"image": torch.randn(2, 3, 32, 48)})
    assert logits.shape == (2, NUM_CLASSES)


def test_loss_at_initialization_is_near_chance(model: Model) -> None:
    model.eval()
    batch = {"image": torch.randn(16, 3, 32, 32), "target": torch.randint(0, NUM_CLASSES, (16,))}
    with torch.no_grad():
        loss = model.task.loss(model(batch), batch["target"]).item()
    chance = math.log(NUM_CLASSES)
    assert chance / 2 < loss < chance * 2, f"initial loss {loss:.3f} is far from ln({NUM_CLASSES})={chance:.3f}"


def test_overfits_one_batch(model: Model) -> None:
    torch.manual_seed(0)
    batch = {"image": torch.randn(8, 3, 32, 32), "target": torch.arange(8) % NUM_CLASSES}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model.task.loss(model(batch), batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.1 * losses[0], f"loss only went from {losses[0]:.3f} to {losses[-1]:.3f}"
