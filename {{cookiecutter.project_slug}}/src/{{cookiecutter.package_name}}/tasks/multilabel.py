"""Any number of L labels: L logits, sigmoid each, binary cross-entropy; macro F1 and mean average precision.

A label is predicted when its probability is above 0.5 (the threshold torchmetrics uses, so predictions,
error and F1 agree).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAveragePrecision,
    BinaryF1Score,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)

from . import PROBABILITY_EPS, Task


class MultilabelTask(Task):
    """Args:
    class_names: filled in from the data (`bind`): the label names in column order.
    """

    monitor = "map"
    mode = "max"
    mix_per_output = True  # mixup / cutmix blend each label's 0/1 target (timm's multi_label)

    def __init__(self, class_names: list[str] | None = None):
        super().__init__(class_names)

    def _set_targets(self, class_names: list[str], target_stats: dict[str, list[float]] | None) -> None:
        if len(class_names) < 1:
            raise ValueError("multilabel needs at least 1 label name, got none")
        self.class_names = list(class_names)
        self.num_outputs = self.num_labels = len(class_names)

    @staticmethod
    def target_reader(target_columns: list[str], classes: list[str] | None) -> Any:
        from ..data.targets import MultilabelTarget

        return MultilabelTarget(target_columns[0], classes)

    @property
    def chance_loss(self) -> float:
        """Cross-entropy of 50/50 predictions, what an untrained network should start near: ln 2."""
        return math.log(2)

    def _check(self, target: torch.Tensor) -> None:
        if target.dim() != 2 or target.shape[1] != self.num_labels:
            raise ValueError(
                f"multilabel target has shape {tuple(target.shape)}, width {target.shape[-1] if target.dim() else 0}; "
                f"expected [batch, {self.num_labels}] (one 0/1 per label: {', '.join(self.class_names)})"
            )

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over labels."""
        self._check(target)
        return F.binary_cross_entropy_with_logits(outputs, target.to(outputs.dtype), reduction="none").mean(dim=1)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.per_sample_loss(outputs, target).mean()

    def soft_loss(self, outputs: torch.Tensor, soft_target: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy against a probability in [0, 1] per label (mixup / cutmix targets)."""
        return self.per_sample_loss(outputs, soft_target).mean()

    def metrics(self) -> MetricCollection:
        # torchmetrics' multilabel metrics need at least 2 labels; one label is the binary case.
        if self.num_labels == 1:
            return MetricCollection({"f1": BinaryF1Score(), "map": BinaryAveragePrecision()})
        return MetricCollection(
            {
                "f1": MultilabelF1Score(self.num_labels, average="macro"),
                "map": MultilabelAveragePrecision(self.num_labels, average="macro"),
            }
        )

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(target)
        probs, target = outputs.sigmoid(), target.long()
        return (probs[:, 0], target[:, 0]) if self.num_labels == 1 else (probs, target)

    def error(self, outputs: torch.Tensor, target: torch.Tensor) -> float:
        """Hamming error: the fraction of wrong label decisions at the 0.5 threshold."""
        self._check(target)
        return float(((outputs > 0) != (target > 0.5)).float().mean())

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.sigmoid()

    def inverse_activation(self, activated: torch.Tensor) -> torch.Tensor:
        return torch.logit(activated, eps=PROBABILITY_EPS)

    def prediction_rows(self, activated: torch.Tensor) -> list[dict[str, object]]:
        """One CSV row per sample: the predicted labels joined by "|" ("" for none), and every label's probability."""
        rows = []
        for probs in activated.tolist():
            predicted = [name for name, p in zip(self.class_names, probs, strict=True) if p > 0.5]
            row: dict[str, object] = {"predicted": "|".join(predicted)}
            row.update({f"prob_{name}": round(p, 6) for name, p in zip(self.class_names, probs, strict=True)})
            rows.append(row)
        return rows
