"""What the task means: loss, metrics, output activation and how a prediction is written.

The LightningModule runs one loop for every task; everything task-specific lives in a task object here.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class MulticlassTask:
    """One class out of C: C logits, softmax, cross-entropy; accuracy and macro F1."""

    def __init__(self, num_classes: int, class_names: list[str] | None = None, label_smoothing: float = 0.0):
        if num_classes < 2:
            raise ValueError(f"multiclass needs at least 2 classes, got num_classes={num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
        self.num_classes = num_classes
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    @property
    def chance_loss(self) -> float:
        """Cross-entropy of a uniform prediction, what an untrained network should start near: ln C."""
        return math.log(self.num_classes)

    def metrics(self) -> MetricCollection:
        # micro accuracy is the usual "fraction correct"; torchmetrics' default would be macro.
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(self.num_classes, average="micro"),
                "f1": MulticlassF1Score(self.num_classes, average="macro"),
            }
        )

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(dim=-1)

    def prediction_rows(self, outputs: torch.Tensor) -> list[dict[str, object]]:
        """One CSV row per sample: predicted class, its probability, and every class's probability."""
        confidence, index = outputs.max(dim=-1)
        rows = []
        for probs, i, conf in zip(outputs.tolist(), index.tolist(), confidence.tolist(), strict=True):
            row: dict[str, object] = {"prediction": self.class_names[i], "confidence": round(conf, 6)}
            row.update({f"prob_{name}": round(p, 6) for name, p in zip(self.class_names, probs, strict=True)})
            rows.append(row)
        return rows
