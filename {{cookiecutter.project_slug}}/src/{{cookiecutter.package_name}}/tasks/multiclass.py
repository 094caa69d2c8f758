"""One class out of C: C logits, softmax, cross-entropy; accuracy and macro F1."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from ..data.toy import NAMES, ToyRows
from ..data.toy_shapes import CLASSES
from ..practices.baselines import log_frequencies
from ..practices.error_analysis import confusion_matrix, confusion_section
from ..practices.evaluation import SplitEvaluation
from ..practices.label_issues import LabelScores, class_label_issues
from . import PROBABILITY_EPS, Task


class MulticlassTask(Task):
    """Args:
    class_names: filled in from the data (`bind`); give them only when using the task on its own.
    label_smoothing: cross-entropy label smoothing (0 = off), e.g. 0.1; also smooths mixup / cutmix targets.
    """

    name = "multiclass"
    monitor = "acc"
    mode = "max"
    class_folder_labels = True

    def __init__(self, class_names: list[str] | None = None, label_smoothing: float = 0.0):
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"model.task label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        super().__init__(class_names)

    def _set_targets(self, class_names: list[str], target_stats: dict[str, list[float]] | None) -> None:
        if len(class_names) < 2:
            raise ValueError(f"multiclass needs at least 2 classes, got {class_names}")
        self.class_names = list(class_names)
        self.num_outputs = self.num_classes = len(class_names)

    @staticmethod
    def target_reader(target_columns: list[str], classes: list[str] | None) -> Any:
        from ..data.targets import ClassTarget

        return ClassTarget(target_columns[0], classes)

    @property
    def chance_loss(self) -> float:
        """Cross-entropy of a uniform prediction, what an untrained network should start near: ln C."""
        return math.log(self.num_classes)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, target, label_smoothing=self.label_smoothing)

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, target, label_smoothing=self.label_smoothing, reduction="none")

    def soft_loss(self, outputs: torch.Tensor, soft_target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with class probabilities [B, C] as targets (mixup / cutmix, already smoothed)."""
        return F.cross_entropy(outputs, soft_target.to(outputs.dtype))

    def metrics(self) -> MetricCollection:
        # micro accuracy is the usual "fraction correct"; torchmetrics' default would be macro.
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(self.num_classes, average="micro"),
                "f1": MulticlassF1Score(self.num_classes, average="macro"),
            }
        )

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs, target

    def error(self, outputs: torch.Tensor, target: torch.Tensor) -> float:
        """Fraction misclassified."""
        return float((outputs.argmax(dim=-1) != target).float().mean())

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.softmax(dim=-1)

    def inverse_activation(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.clamp_min(PROBABILITY_EPS).log()  # softmax(log p) = p when p sums to 1 over classes

    def prediction_rows(self, activated: torch.Tensor) -> list[dict[str, object]]:
        """One CSV row per sample: predicted class, its probability, and every class's probability."""
        confidence, index = activated.max(dim=-1)
        rows = []
        for probs, i, conf in zip(activated.tolist(), index.tolist(), confidence.tolist(), strict=True):
            row: dict[str, object] = {"prediction": self.class_names[i], "confidence": round(conf, 6)}
            row.update({f"prob_{name}": round(p, 6) for name, p in zip(self.class_names, probs, strict=True)})
            rows.append(row)
        return rows

    # --- diagnosis, baselines, error analysis, export ---------------------------------------------------------------
    error_meaning = "the fraction of samples misclassified"
    look_at = "the most-confused pairs"
    regularizers = ("`model.task.label_smoothing`",)
    output_name = "probabilities"
    output_meaning = "probability of each class (softmax), [batch, classes]"
    output_decoding = {"decode": "argmax"}

    def constant_outputs(self, targets: torch.Tensor) -> torch.Tensor:
        """Log class frequencies: the most frequent training class wins."""
        return log_frequencies(torch.bincount(targets.flatten().long(), minlength=self.num_outputs))

    def describe_constant(self, constant: torch.Tensor) -> str:
        return f"always `{self.majority_class(constant)}`, the most frequent training class"

    def majority_class(self, constant: torch.Tensor) -> str | None:
        return self.class_names[int(constant.argmax())]

    def analyze_errors(self, evaluation: SplitEvaluation) -> tuple[dict[str, Any], list[str], dict[str, Image.Image]]:
        """The confusion matrix and the most-confused pairs."""
        matrix = confusion_matrix(evaluation.outputs.argmax(dim=-1), evaluation.targets, self.num_classes)
        return confusion_section(matrix, self.class_names, evaluation.split)

    def describe_example(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        confidence, predicted = (float(v) for v in self.activation(output[None])[0].float().max(dim=-1))
        names = self.class_names
        return {"true": names[int(target)], "predicted": names[int(predicted)], "confidence": round(confidence, 4)}

    def label_issues(self, targets: torch.Tensor, outputs: torch.Tensor) -> LabelScores:
        """Self-confidence (the probability of the given class) and confident learning's verdict."""
        return class_label_issues(self.class_names, targets.long(), outputs)

    # --- toy data ---------------------------------------------------------------------------------------------------
    @classmethod
    def toy_classes(cls, modalities: Sequence[str], classes: Sequence[str] | None = None) -> tuple[str, ...]:
        """Shapes where the image alone decides the class (class folders), neutral names otherwise."""
        classes = tuple(classes or (CLASSES if tuple(modalities) == ("image",) else NAMES[:4]))
        if len(classes) < 2:
            raise ValueError(f"multiclass needs at least 2 classes, got {classes}")
        return classes

    @classmethod
    def toy_description(cls, classes: Sequence[str]) -> str:
        return f"target = class name ({', '.join(classes)})"

    @classmethod
    def toy_row(cls, toy: ToyRows, split: str, index: int, rng: random.Random) -> dict[str, str]:
        """Class `index % k` (every split holds every class equally often), shown by latents in its bin."""
        return toy.class_row(split, index, rng)
