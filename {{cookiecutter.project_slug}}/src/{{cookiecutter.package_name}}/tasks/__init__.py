"""What the model predicts: one task object owns the loss, metrics, output activation and prediction rows.

The LightningModule runs one loop for every task. Each task type lives in its own module; the project keeps
only the one it was rendered for (plus any a user adds), so modules are imported by name on demand.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Protocol

import torch
from torchmetrics import MetricCollection

TASK_CLASSES = {
    "multiclass": "MulticlassTask",
    "binary": "BinaryTask",
    "multilabel": "MultilabelTask",
    "regression": "RegressionTask",
    "segmentation": "SegmentationTask",
}


# Keeps log(p) and logit(p) finite where a probability is exactly 0 or 1 (inverse_activation).
PROBABILITY_EPS = 1e-7


class Task(Protocol):
    class_names: list[str]  # classes / labels / target names, in output order
    num_outputs: int  # width of the network's output
    monitor: str  # the optimizing metric, without the stage prefix
    mode: str  # "max" or "min"
    chance_loss: float  # the loss of the near-zero initial outputs

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...
    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...
    def metrics(self) -> MetricCollection: ...
    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def error(self, outputs: torch.Tensor, target: torch.Tensor) -> float: ...
    def activation(self, outputs: torch.Tensor) -> torch.Tensor: ...
    # Raw outputs whose activation is `activated` (e.g. averaged probabilities), scored like a model's outputs.
    def inverse_activation(self, activated: torch.Tensor) -> torch.Tensor: ...
    def prediction_rows(self, activated: torch.Tensor) -> list[dict[str, object]]: ...

    # Classification tasks add soft_loss(outputs, soft_target), the loss of mixup / cutmix targets (mixing.py).


def build_task(name: str, class_names: list[str], **options: Any) -> Task:
    """The task `name` (a key of TASK_CLASSES) for these classes.

    `options` may hold the settings of every task type (the model's arguments); the task takes the ones its
    constructor names, e.g. `label_smoothing` for multiclass, `pos_weight` for binary.
    """
    if name not in TASK_CLASSES:
        raise ValueError(f"model.task={name!r} is not a task type; choose one of {', '.join(TASK_CLASSES)}")
    try:
        module = importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as error:
        raise ValueError(f"model.task={name!r}: this project has no tasks/{name}.py ({error})") from None
    task_class = getattr(module, TASK_CLASSES[name])
    accepted = inspect.signature(task_class).parameters
    return task_class(class_names, **{key: value for key, value in options.items() if key in accepted})
