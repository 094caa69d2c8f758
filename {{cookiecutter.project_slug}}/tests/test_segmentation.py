"""Segmentation: the FPN network keeps the input size, the loss starts at chance, and a tiny batch is learnable."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch

from conftest import TINY_BACKBONE
from {{ cookiecutter.package_name }}.errors import DataError, PretrainedWeightsError
from {{ cookiecutter.package_name }}.models.encoders.image import ImageEncoder
from {{ cookiecutter.package_name }}.models.segmentation import SegmentationNetwork
from {{ cookiecutter.package_name }}.tasks.segmentation import SegmentationTask

CLASSES = ["background", "square", "disc"]
# The network's inputs as the data describes them: the Model builds it as `network(inputs, num_outputs)`.
INPUTS = {"image": {"image_size": 32}}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny convolutions: one thread is fastest, and several threads crawl on a busy shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def square_batch(size: int = 32) -> dict[str, torch.Tensor]:
    """Two images, each with a bright square of class 1 on a dark background (class 0)."""
    torch.manual_seed(0)
    image = torch.randn(2, 3, size, size) * 0.1
    target = torch.zeros(2, size, size, dtype=torch.int64)
    for i, (top, left) in enumerate([(4, 6), (14, 10)]):
        image[i, :, top : top + 12, left : left + 12] += 1.0
        target[i, top : top + 12, left : left + 12] = 1
    return {"image": image, "target": target}


@pytest.mark.parametrize(
    ("backbone", "size"),
    [(TINY_BACKBONE, 32), (TINY_BACKBONE, 40), (TINY_BACKBONE, 37), ("test_convnext", 40), ("test_efficientnet", 37)],
)
def test_network_output_matches_the_input_size(backbone: str, size: int) -> None:
    network = SegmentationNetwork(INPUTS, 3, backbone=backbone).eval()
    with torch.no_grad():
        out = network({"image": torch.randn(2, 3, size, size + 3)})
    assert out.shape == (2, 3, size, size + 3)


def test_network_reads_images_only_and_takes_its_data_config_from_the_backbone() -> None:
    with pytest.raises(ValueError, match="SegmentationNetwork reads images only; the data's inputs are image, tabular"):
        SegmentationNetwork({"image": {}, "tabular": {}}, 2, backbone=TINY_BACKBONE)
    config = SegmentationNetwork.data_config(backbone=TINY_BACKBONE, pretrained=True, decoder_dim=32)
    assert config == ImageEncoder.data_config(TINY_BACKBONE, pretrained=True)


def test_features_are_the_pyramid_and_the_head_upsamples_them() -> None:
    network = SegmentationNetwork(INPUTS, 3, backbone=TINY_BACKBONE).eval()
    batch = {"image": torch.randn(2, 3, 40, 44)}
    with torch.no_grad():
        features = network.forward_features(batch)
        assert features["size"] == (40, 44) and len(features["image"]) == len(network.backbone.feature_info)
        torch.testing.assert_close(network.forward_head(features), network(batch), rtol=0, atol=0)


def test_initial_loss_is_near_chance() -> None:
    torch.manual_seed(0)
    task = SegmentationTask(CLASSES)
    network = SegmentationNetwork(INPUTS, task.num_outputs, backbone=TINY_BACKBONE)
    batch = square_batch()
    with torch.no_grad():
        loss = float(task.loss(network(batch), batch["target"]))
    # 2 of 3 classes present: the exact uniform value is ln 3 + mean(1 - 2f / (1 + 3f)) over the present f.
    f = batch["target"].flatten().bincount(minlength=3)[:2].float() / batch["target"].numel()
    exact = math.log(3) + float((1 - 2 * f / (1 + 3 * f)).mean())
    assert loss == pytest.approx(exact, rel=0.02)
    assert 0.8 < loss / task.chance_loss < 1.25


def test_uniform_outputs_give_exactly_the_chance_loss_for_balanced_classes() -> None:
    task = SegmentationTask(CLASSES, dice_weight=2.0)
    target = torch.arange(3).repeat_interleave(4).reshape(1, 3, 4)
    assert float(task.loss(torch.zeros(1, 3, 3, 4), target)) == pytest.approx(task.chance_loss, rel=1e-5)


def test_perfect_logits_give_full_metrics_and_no_dice_loss() -> None:
    task = SegmentationTask(CLASSES)
    target = torch.randint(0, 3, (2, 8, 8))
    logits = 30.0 * torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    metrics = task.metrics()
    metrics.update(*task.metric_inputs(logits, target))
    values = metrics.compute()
    assert float(values["miou"]) == pytest.approx(1.0)
    assert float(values["pixel_acc"]) == pytest.approx(1.0)
    assert float(task._dice_loss(logits, target, dims=(0, 2, 3))) < 1e-6
    assert float(task.loss(logits, target)) < 1e-6
    assert task.error(logits, target) == 0.0


def test_per_sample_loss_is_the_loss_of_each_image_alone() -> None:
    task = SegmentationTask(CLASSES)
    logits, target = torch.randn(3, 3, 6, 6), torch.randint(0, 3, (3, 6, 6))
    per_sample = task.per_sample_loss(logits, target)
    assert per_sample.shape == (3,)
    alone = torch.stack([task.loss(logits[i : i + 1], target[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(per_sample, alone)


def test_prediction_rows_and_mask() -> None:
    task = SegmentationTask(CLASSES)
    logits = torch.zeros(2, 3, 2, 2)
    logits[0, 1] = 5.0  # image 0: all "square"
    logits[1, 2, 0] = 5.0  # image 1: top row "disc", bottom row a tie -> class 0
    activated = task.activation(logits)
    rows = task.prediction_rows(activated)
    assert rows[0]["pixels_square"] == 1.0 and rows[0]["pixels_background"] == 0.0
    assert rows[1]["pixels_disc"] == 0.5 and rows[1]["pixels_background"] == 0.5
    assert list(rows[0]) == ["pixels_background", "pixels_square", "pixels_disc", "confidence"]
    assert rows[0]["confidence"] == pytest.approx(float(activated[0].max(0).values.mean()), abs=1e-6)
    mask = task.prediction_mask(activated)
    assert mask.dtype.name == "uint8" and mask.shape == (2, 2, 2)
    assert mask[0].tolist() == [[1, 1], [1, 1]] and mask[1].tolist() == [[2, 2], [0, 0]]


def test_out_of_range_mask_values_are_a_data_error() -> None:
    task = SegmentationTask(CLASSES)
    with pytest.raises(DataError, match="0..2"):
        task.loss(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 255))


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    task = SegmentationTask(CLASSES[:2])
    network = SegmentationNetwork(INPUTS, 2, backbone=TINY_BACKBONE)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    batch = square_batch()
    for _ in range(60):
        optimizer.zero_grad()
        task.loss(network(batch), batch["target"]).backward()
        optimizer.step()
    network.eval()
    with torch.no_grad():
        outputs = network(batch)
    metrics = task.metrics()
    metrics.update(*task.metric_inputs(outputs, batch["target"]))
    assert float(metrics.compute()["pixel_acc"]) > 0.9
    assert task.error(outputs, batch["target"]) < 0.1


def test_pretrained_file_loads_the_feature_pyramid(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model(TINY_BACKBONE, num_classes=1000)  # the shape of a hub checkpoint
    weights = tmp_path / "weights.pth"
    torch.save(source.state_dict(), weights)
    network = SegmentationNetwork(INPUTS, 2, backbone=TINY_BACKBONE, pretrained_file=str(weights))
    loaded = network.backbone.state_dict()
    assert loaded.keys() <= source.state_dict().keys()
    assert all(torch.equal(loaded[k], source.state_dict()[k]) for k in loaded)
    with pytest.raises(PretrainedWeightsError, match="pretrained_file"):
        SegmentationNetwork(INPUTS, 2, backbone=TINY_BACKBONE, pretrained_file=str(tmp_path / "nope.pth"))
