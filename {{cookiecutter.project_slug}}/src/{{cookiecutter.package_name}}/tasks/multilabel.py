"""Any number of L labels: L logits, sigmoid each, binary cross-entropy; macro F1 and mean average precision.

A label is predicted when its probability is above 0.5 (the threshold torchmetrics uses, so predictions,
error and F1 agree).
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
from torchmetrics.classification import (
    BinaryAveragePrecision,
    BinaryF1Score,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)

from ..data.toy import NAMES, ToyRows
from ..data.toy_shapes import SHAPES
from ..practices.baselines import frequency_logits
from ..practices.error_analysis import markdown_cell
from ..practices.evaluation import SplitEvaluation
from ..practices.label_issues import LabelScores, multilabel_label_issues
from . import PROBABILITY_EPS, Task


def per_label_table(outputs: torch.Tensor, targets: torch.Tensor, label_names: Sequence[str]) -> list[dict]:
    """Per label at the 0.5 threshold: support (true count), predicted count, precision, recall, F1."""
    predicted, true = outputs > 0, targets > 0.5
    rows = []
    for k, name in enumerate(label_names):
        hits = int((predicted[:, k] & true[:, k]).sum())
        support, count = int(true[:, k].sum()), int(predicted[:, k].sum())
        precision = hits / count if count else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "label": name,
                "support": support,
                "predicted": count,
                "precision": round(precision, 4),
                "recall": round(recall, 4),
                "f1": round(f1, 4),
            }
        )
    return rows


class MultilabelTask(Task):
    """Args:
    class_names: filled in from the data (`bind`): the label names in column order.
    """

    name = "multilabel"
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

    # --- diagnosis, baselines, error analysis, export ---------------------------------------------------------------
    error_meaning = "the fraction of wrong label decisions (Hamming error, threshold 0.5)"
    look_at = "the per-label table"
    output_name = "probabilities"
    output_meaning = "probability of each label (sigmoid), [batch, labels]"
    output_decoding = {"decode": "thresholds", "threshold": 0.5}  # prediction_rows' threshold

    def constant_outputs(self, targets: torch.Tensor) -> torch.Tensor:
        """The logit of each label's training frequency."""
        return frequency_logits(targets)

    def describe_constant(self, constant: torch.Tensor) -> str:
        probabilities = constant.sigmoid().tolist()
        frequencies = ", ".join(f"{n} {p:.2f}" for n, p in zip(self.class_names, probabilities, strict=True))
        return f"each label's training frequency as its probability ({frequencies})"

    def analyze_errors(self, evaluation: SplitEvaluation) -> tuple[dict[str, Any], list[str], dict[str, Image.Image]]:
        """Precision, recall, F1 and support per label."""
        table = per_label_table(evaluation.outputs, evaluation.targets, self.class_names)
        lines = ["Per label (threshold 0.5):", ""]
        lines += ["| label | support | predicted | precision | recall | F1 |", "|---|---:|---:|---:|---:|---:|"]
        lines += [
            f"| {markdown_cell(r['label'])} | {r['support']} | {r['predicted']} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['f1']:.3f} |"
            for r in table
        ]
        return {"per_label": table}, [*lines, ""], {}

    def describe_example(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        true = [n for n, t in zip(self.class_names, target.tolist(), strict=True) if t > 0.5]
        predicted = [n for n, o in zip(self.class_names, output.tolist(), strict=True) if o > 0]
        return {"true": ", ".join(true) or "(none)", "predicted": ", ".join(predicted) or "(none)"}

    def label_issues(self, targets: torch.Tensor, outputs: torch.Tensor) -> LabelScores:
        """Each label's self-confidence, aggregated per sample; flagged when any label of the sample looks wrong."""
        return multilabel_label_issues(self.class_names, targets > 0.5, outputs)

    # --- toy data ---------------------------------------------------------------------------------------------------
    @classmethod
    def toy_classes(cls, modalities: Sequence[str], classes: Sequence[str] | None = None) -> tuple[str, ...]:
        """Shapes where the image alone decides the labels, neutral names otherwise."""
        classes = tuple(classes or (SHAPES[:4] if tuple(modalities) == ("image",) else NAMES[:4]))
        if len(classes) < 2:
            raise ValueError(f"multilabel needs at least 2 classes, got {classes}")
        return classes

    @classmethod
    def toy_description(cls, classes: Sequence[str]) -> str:
        return f"target = {len(classes)} labels as 0/1 ('0 1 0 1': {', '.join(classes)})"

    @classmethod
    def toy_row(cls, toy: ToyRows, split: str, index: int, rng: random.Random) -> dict[str, str]:
        """Every input shows one or two labels (a tabular row one); the target is every label shown."""
        latents = {m: rng.sample(range(toy.k), rng.randint(1, 2) if m != "tabular" else 1) for m in toy.modalities}
        present = set().union(*latents.values())
        target = " ".join("1" if label in present else "0" for label in range(toy.k))
        return {"target": target, **toy.inputs(split, index, latents, rng)}
