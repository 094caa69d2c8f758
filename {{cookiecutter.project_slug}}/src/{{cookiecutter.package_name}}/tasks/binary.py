"""Yes or no: one logit, sigmoid, binary cross-entropy; accuracy, AUROC and F1 of the positive class.

The positive class is the second class name (`class_names[1]`); a sample is predicted positive when its
probability is above 0.5 (the same threshold torchmetrics uses, so predictions, error and accuracy agree).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score

from . import PROBABILITY_EPS, Task


class BinaryTask(Task):
    """Args:
    class_names: filled in from the data (`bind`): negative, positive.
    pos_weight: weight of positive samples in the loss, e.g. n_negative / n_positive for rare positives.
    """

    monitor = "auroc"
    mode = "max"
    class_folder_labels = True
    mix_per_output = True  # mixup / cutmix blend the 0/1 target (timm's multi_label)

    def __init__(self, class_names: list[str] | None = None, pos_weight: float | None = None):
        if pos_weight is not None and not pos_weight > 0:
            raise ValueError(f"binary pos_weight must be a positive number or null, got {pos_weight}")
        self.pos_weight = pos_weight
        super().__init__(class_names)

    def _set_targets(self, class_names: list[str], target_stats: dict[str, list[float]] | None) -> None:
        if len(class_names) != 2:
            raise ValueError(f"binary needs exactly 2 classes (negative, positive), got {class_names}")
        self.class_names = list(class_names)
        self.num_outputs = 1

    @staticmethod
    def target_reader(target_columns: list[str], classes: list[str] | None) -> Any:
        from ..data.targets import ClassTarget

        return ClassTarget(target_columns[0], classes, binary=True)

    @property
    def chance_loss(self) -> float:
        """Cross-entropy of a 50/50 prediction, what an untrained network should start near: ln 2."""
        return math.log(2)

    @staticmethod
    def _logits(outputs: torch.Tensor) -> torch.Tensor:
        """[B, 1] -> [B] (reshape rather than squeeze, so a batch of one stays a batch and a wider head fails)."""
        return outputs.reshape(len(outputs))

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = self._logits(outputs)
        pos_weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(
            logits, target.to(logits.dtype), pos_weight=pos_weight, reduction="none"
        )

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.per_sample_loss(outputs, target).mean()

    def soft_loss(self, outputs: torch.Tensor, soft_target: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy against P(positive) in [0, 1] per sample (mixup / cutmix targets)."""
        return self.per_sample_loss(outputs, soft_target.reshape(len(outputs))).mean()

    def metrics(self) -> MetricCollection:
        return MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC(), "f1": BinaryF1Score()})

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._logits(outputs).sigmoid(), target.long()

    def error(self, outputs: torch.Tensor, target: torch.Tensor) -> float:
        """Fraction misclassified at the 0.5 threshold."""
        return float(((self._logits(outputs) > 0) != (target > 0.5)).float().mean())

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.sigmoid()

    def inverse_activation(self, activated: torch.Tensor) -> torch.Tensor:
        return torch.logit(activated, eps=PROBABILITY_EPS)

    def prediction_rows(self, activated: torch.Tensor) -> list[dict[str, object]]:
        """One CSV row per sample: predicted class, P(positive class), and the probability of the prediction."""
        rows = []
        for p in activated.reshape(len(activated)).tolist():
            positive = p > 0.5
            rows.append(
                {
                    "prediction": self.class_names[int(positive)],
                    "probability": round(p, 6),
                    "confidence": round(p if positive else 1 - p, 6),
                }
            )
        return rows
