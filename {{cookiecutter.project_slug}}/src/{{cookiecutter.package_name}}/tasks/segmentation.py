"""A class per pixel: C logit maps, softmax over classes, cross-entropy + soft Dice; mean IoU and pixel accuracy.

Soft Dice (multiclass, from the softmax probabilities p and the one-hot target y), per class c:
    dice_c = 2 * sum(p_c * y_c) / (sum(p_c) + sum(y_c))      (sums over pixels)
and the Dice loss is the mean of (1 - dice_c) over the classes PRESENT in the target (no smoothing term: a
present class has sum(y_c) >= 1). Absent classes are left to the cross-entropy, which already penalizes
predicting them; averaging over all classes would instead let empty classes dominate small batches.
`loss` pools the pixels of the whole batch (batch Dice, stabler); `per_sample_loss` uses each image alone, so
`loss(outputs[i:i+1], target[i:i+1]) == per_sample_loss(outputs, target)[i]`.
"""

from __future__ import annotations

import math

import numpy
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from ..errors import DataError
from . import PROBABILITY_EPS, Task


class SegmentationTask(Task):
    """Args:
    class_names: filled in from the data (`bind`): class names by mask value.
    dice_weight: loss = cross-entropy + dice_weight * Dice.
    """

    monitor = "miou"
    mode = "max"
    reads_masks = True  # the target is the image's mask, read by the image reader

    def __init__(self, class_names: list[str] | None = None, dice_weight: float = 1.0):
        if dice_weight < 0:
            raise ValueError(f"model.task dice_weight must be >= 0, got {dice_weight}")
        self.dice_weight = float(dice_weight)
        super().__init__(class_names)

    def _set_targets(self, class_names: list[str], target_stats: dict[str, list[float]] | None) -> None:
        if len(class_names) < 2:
            raise ValueError(f"segmentation needs at least 2 classes (e.g. background and object), got {class_names}")
        self.class_names = list(class_names)
        self.num_outputs = self.num_classes = len(class_names)

    @property
    def chance_loss(self) -> float:
        """The loss of uniform predictions (p = 1/C everywhere): ln C + dice_weight * (1 - 1/C).

        The cross-entropy part is exactly ln C. The Dice part of a class covering a fraction f of the pixels is
        1 - 2f / (1 + C f), so it depends on the class balance: (1 - 1/C) is its value when every class covers
        1/C of the pixels. Over all possible balances it lies in [(C-1)/(C+1), 1 - 2/(C(C+1))], i.e. within
        C/(C+1) .. (C+2)/(C+1) (2/3 .. 4/3) of this value, so the whole loss is too.
        """
        return math.log(self.num_classes) + self.dice_weight * (1.0 - 1.0 / self.num_classes)

    def _check_target(self, target: torch.Tensor) -> None:
        # Out-of-range class indices would otherwise fail inside cross_entropy (a device-side assert on a GPU).
        if target.numel() == 0:
            return
        low, high = torch.stack(torch.aminmax(target)).tolist()  # one device sync
        if low < 0 or high >= self.num_classes:
            raise DataError(
                f"segmentation mask values must be class indices 0..{self.num_classes - 1} "
                f"({', '.join(self.class_names)}), found values {low}..{high}"
            )

    def _dice_loss(self, outputs: torch.Tensor, target: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """Mean over present classes of 1 - soft Dice, summing over `dims` of [B, C, H, W]."""
        probs = outputs.float().softmax(dim=1)
        onehot = F.one_hot(target, self.num_classes).movedim(-1, 1).to(probs.dtype)
        intersection = (probs * onehot).sum(dims)
        cardinality = (probs + onehot).sum(dims)
        present = onehot.sum(dims) > 0
        dice = 2 * intersection / cardinality.clamp_min(1e-6)
        return ((1 - dice) * present).sum(-1) / present.sum(-1).clamp_min(1)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check_target(target)
        loss = F.cross_entropy(outputs.float(), target)
        if self.dice_weight:
            loss = loss + self.dice_weight * self._dice_loss(outputs, target, dims=(0, 2, 3))
        return loss

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check_target(target)
        loss = F.cross_entropy(outputs.float(), target, reduction="none").flatten(1).mean(1)
        if self.dice_weight:
            loss = loss + self.dice_weight * self._dice_loss(outputs, target, dims=(2, 3))
        return loss

    def metrics(self) -> MetricCollection:
        # Both accumulate over every pixel of the epoch: miou from one confusion matrix, not a mean of batch IoUs.
        return MetricCollection(
            {
                "miou": MulticlassJaccardIndex(self.num_classes, average="macro"),
                "pixel_acc": MulticlassAccuracy(self.num_classes, average="micro", multidim_average="global"),
            }
        )

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted class maps [B, H, W] (torchmetrics would take the [B, C, H, W] logits too and argmax them)."""
        return outputs.argmax(dim=1), target

    def error(self, outputs: torch.Tensor, target: torch.Tensor) -> float:
        """Fraction of pixels misclassified (1 - pixel accuracy)."""
        return float((outputs.argmax(dim=1) != target).float().mean())

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.softmax(dim=1)

    def inverse_activation(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.clamp_min(PROBABILITY_EPS).log()  # softmax(log p) = p when p sums to 1 over classes

    def prediction_rows(self, activated: torch.Tensor) -> list[dict[str, object]]:
        """One CSV row per image: the fraction of its pixels predicted as each class, and the mean max probability."""
        confidence, index = activated.max(dim=1)
        counts = F.one_hot(index.flatten(1), self.num_classes).float().mean(dim=1)  # [B, C]
        rows = []
        for fractions, conf in zip(counts.tolist(), confidence.flatten(1).mean(1).tolist(), strict=True):
            row: dict[str, object] = {
                f"pixels_{name}": round(fraction, 6) for name, fraction in zip(self.class_names, fractions, strict=True)
            }
            row["confidence"] = round(conf, 6)
            rows.append(row)
        return rows

    def prediction_mask(self, activated: torch.Tensor) -> numpy.ndarray:
        """Predicted class per pixel as uint8 [B, H, W] (pixel value = class index, as in the input masks)."""
        if self.num_classes > 256:
            raise ValueError(f"{self.num_classes} classes do not fit a uint8 mask")
        return activated.argmax(dim=1).to(torch.uint8).cpu().numpy()
