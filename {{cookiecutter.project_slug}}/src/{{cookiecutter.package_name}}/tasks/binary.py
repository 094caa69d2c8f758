"""Yes or no: one logit, sigmoid, binary cross-entropy; accuracy, AUROC and F1 of the positive class.

The positive class is the second class name (`class_names[1]`); a sample is predicted positive when its
probability is above 0.5 (the same threshold torchmetrics uses, so predictions, error and accuracy agree).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score

from ..data.toy import ToyRows
from ..practices.baselines import frequency_logits
from ..practices.error_analysis import confusion_matrix, confusion_section
from ..practices.evaluation import SplitEvaluation
from ..practices.label_issues import LabelScores, class_label_issues
from . import PROBABILITY_EPS, Task


class BinaryTask(Task):
    """Args:
    class_names: filled in from the data (`bind`): negative, positive.
    pos_weight: weight of positive samples in the loss, e.g. n_negative / n_positive for rare positives.
    """

    name = "binary"
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

    # --- diagnosis, baselines, error analysis, export ---------------------------------------------------------------
    error_meaning = "the fraction of samples misclassified (threshold 0.5)"
    look_at = "the confusion matrix"
    output_name = "probabilities"
    output_meaning = "probability of the positive class, class_names[1] (sigmoid), [batch, 1]"
    output_decoding = {"decode": "threshold", "threshold": 0.5}  # prediction_rows' threshold

    def constant_outputs(self, targets: torch.Tensor) -> torch.Tensor:
        """The logit of the positive class's training frequency."""
        return frequency_logits(targets)

    def describe_constant(self, constant: torch.Tensor) -> str:
        names, p = self.class_names, float(constant.sigmoid())
        return f"always `{names[int(p > 0.5)]}` (P({names[1]}) = {p:.3f}, its training frequency)"

    def majority_class(self, constant: torch.Tensor) -> str | None:
        return self.class_names[int(constant.item() > 0)]

    def analyze_errors(self, evaluation: SplitEvaluation) -> tuple[dict[str, Any], list[str], dict[str, Image.Image]]:
        """The 2x2 confusion matrix and the most-confused pairs."""
        predictions = (self._logits(evaluation.outputs) > 0).long()
        matrix = confusion_matrix(predictions, evaluation.targets, len(self.class_names))
        return confusion_section(matrix, self.class_names, evaluation.split)

    def describe_example(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        positive = float(self.activation(output[None])[0].float().reshape(()))
        predicted, confidence = int(positive > 0.5), max(positive, 1 - positive)
        names = self.class_names
        return {"true": names[int(target)], "predicted": names[predicted], "confidence": round(confidence, 4)}

    def label_issues(self, targets: torch.Tensor, outputs: torch.Tensor) -> LabelScores:
        """Self-confidence (the probability of the given class) and confident learning's verdict."""
        positive = outputs.reshape(len(outputs), 1)
        return class_label_issues(self.class_names, targets.long().reshape(-1), torch.cat([1 - positive, positive], 1))

    # --- toy data ---------------------------------------------------------------------------------------------------
    @classmethod
    def toy_classes(cls, modalities: Sequence[str], classes: Sequence[str] | None = None) -> tuple[str, ...]:
        """Two shapes where the image alone decides the class (class folders), negative / positive otherwise."""
        shapes_only = tuple(modalities) == ("image",)
        classes = tuple(classes or (("circle", "square") if shapes_only else ("negative", "positive")))
        if len(classes) != 2:
            raise ValueError(f"binary needs exactly 2 classes, got {classes}")
        return classes

    @classmethod
    def toy_description(cls, classes: Sequence[str]) -> str:
        return f"target = {' | '.join(classes)} (positive: {classes[-1]})"

    @classmethod
    def toy_row(cls, toy: ToyRows, split: str, index: int, rng: random.Random) -> dict[str, str]:
        """Class `index % 2` (every split holds both classes equally often), shown by latents in its bin."""
        return toy.class_row(split, index, rng)
