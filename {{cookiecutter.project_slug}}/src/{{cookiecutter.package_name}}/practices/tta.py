"""Test-time augmentation: predict several views of each image and average the predictions.

A callback, configured in the config's `tta:` section (the CLI adds it to the Trainer when `mode` is set): at
`test` it reports `test_tta/*` next to the plain `test/*` metrics; at `predict` the written predictions are the
averaged ones. Modes (`tta.mode`):
    flip        the image and its horizontal mirror (2 forward passes)
    flip_crops  the image, and 5 crops (4 corners + centre, CROP_FRACTION of each side) resized back to the input
                size, each also mirrored (12 forward passes)
Only the image input is augmented (other inputs of a multi-input model are passed unchanged). Predictions are
averaged as activations (probabilities, values). Per-pixel outputs (segmentation) are first mapped back onto the
original image: a mirrored view's output is mirrored back, a crop's output is resized to the crop and averaged
only over the pixels that crop covers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from ..errors import ProjectError
from .averaging import outputs_from_activations

MODES = ("flip", "flip_crops")
CROP_FRACTION = 0.875  # of the image's height and width, as in the classic 10-crop evaluation


class TestTimeAugmentation(pl.Callback):
    """Average test and predict outputs over augmented views of each image.

    Args:
        mode: None (off), "flip" or "flip_crops" (see the module docstring).
    """

    def __init__(self, mode: str | None = None):
        if mode is not None and mode not in MODES:
            raise ProjectError(f"tta.mode={mode!r} is not a test-time augmentation; choose null, {' or '.join(MODES)}")
        self.mode = mode
        self.metrics: Any = None

    @property
    def active(self) -> bool:
        return self.mode is not None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.mode and "image" not in pl_module.inputs:
            raise ProjectError(
                f"tta.mode={self.mode!r} augments images; this model's inputs are {', '.join(pl_module.inputs)}"
            )

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.metrics = pl_module.task.metrics().clone(prefix="test_tta/").to(pl_module.device)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        task = pl_module.task
        averaged = outputs_from_activations(task, tta_activations(pl_module, batch, self.mode))
        self.metrics.update(*task.metric_inputs(averaged, batch["target"]))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Computed here (synced across processes by torchmetrics) and logged as plain values.
        pl_module.log_dict({name: value for name, value in self.metrics.compute().items()})
        self.metrics.reset()

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # The prediction writer runs after this callback (the CLI puts recipes first) and writes the average.
        outputs["outputs"] = tta_activations(pl_module, batch, self.mode).float().cpu()


# A view: (image -> augmented image, the crop box (top, left, height, width) it shows, mirrored or not).
View = tuple[Callable[[torch.Tensor], torch.Tensor], tuple[int, int, int, int], bool]


def views(height: int, width: int, mode: str) -> list[View]:
    """The views of a `height` x `width` image that `mode` averages over."""
    boxes = [(0, 0, height, width)]
    if mode == "flip_crops":
        h, w = round(height * CROP_FRACTION), round(width * CROP_FRACTION)
        corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w)]
        boxes += [(top, left, h, w) for top, left in corners] + [((height - h) // 2, (width - w) // 2, h, w)]
    result = []
    for box in boxes:
        for mirrored in (False, True):
            result.append((_transform(box, mirrored, height, width), box, mirrored))
    return result


def _transform(box: tuple[int, int, int, int], mirrored: bool, height: int, width: int) -> Callable:
    top, left, h, w = box

    def apply(image: torch.Tensor) -> torch.Tensor:
        view = image[..., top : top + h, left : left + w]
        if (h, w) != (height, width):  # the network sees the input size it was trained at
            view = F.interpolate(view, size=(height, width), mode="bilinear", align_corners=False)
        return view.flip(-1) if mirrored else view

    return apply


def tta_activations(model: Any, batch: dict[str, Any], mode: str) -> torch.Tensor:
    """The task's activations of `batch`, averaged over the views of its images (model: the LightningModule)."""
    image = batch["image"]
    height, width = image.shape[-2:]
    all_views = views(height, width, mode)
    total, count = None, None
    for transform, (top, left, h, w), mirrored in all_views:
        activated = model.task.activation(model({**batch, "image": transform(image)}).float())
        if activated.dim() < 4:  # one prediction per image
            total = activated if total is None else total + activated
            continue
        # A map per pixel, in the view's geometry: un-mirror, then put it back where the crop came from.
        if mirrored:
            activated = activated.flip(-1)
        if (h, w) != (height, width):
            activated = F.interpolate(activated, size=(h, w), mode="bilinear", align_corners=False)
        if total is None:
            total = torch.zeros(*activated.shape[:2], height, width, dtype=activated.dtype, device=activated.device)
            count = torch.zeros(height, width, dtype=activated.dtype, device=activated.device)
        total[..., top : top + h, left : left + w] += activated
        count[top : top + h, left : left + w] += 1
    # Every pixel is covered by the full views, so no count is 0.
    return total / (len(all_views) if count is None else count)
