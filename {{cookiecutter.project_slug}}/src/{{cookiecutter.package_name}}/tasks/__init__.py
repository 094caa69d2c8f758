"""What the model predicts: one task object owns the loss, metrics, output activation and prediction rows.

The LightningModule runs one loop for every task. Each task type lives in its own module (a `Task` subclass);
the project keeps only the one it was rendered for (plus any a user adds). The config injects it:

    model:
      init_args:
        task:
          class_path: PACKAGE.tasks.multiclass.MulticlassTask
          init_args: {label_smoothing: 0.1}

Its own options come from there; the class names (and regression's target statistics) come from the data:
the Model calls `task.bind(class_names, target_stats)`. The data reads targets with the task class's
`target_reader` (the CLI links the task's class path into `data.task`), so a task type is one file.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torchmetrics import MetricCollection

# Keeps log(p) and logit(p) finite where a probability is exactly 0 or 1 (inverse_activation).
PROBABILITY_EPS = 1e-7


class Task:
    """The contract every task meets (the LightningModule, callbacks, diagnosis and export use only this).

    Attributes: `class_names` (classes / labels / target names, in output order), `num_outputs` (the width of the
    network's output), `monitor` (the optimizing metric, without the stage prefix) and `mode` ("max" or "min"),
    `chance_loss` (the loss of the near-zero initial outputs). Class attributes for the data and the recipes:
    `class_folder_labels` (labels may come from class folders), `reads_masks` (the target is a per-pixel mask read
    with the image), `mix_per_output` (mixup / cutmix blend each output's 0/1 target). Classification tasks add
    `soft_loss(outputs, soft_target)`, the loss of mixup / cutmix targets.
    """

    monitor: str = ""
    mode: str = "max"
    class_folder_labels = False
    reads_masks = False
    mix_per_output = False

    def __init__(self, class_names: list[str] | None = None, target_stats: dict[str, list[float]] | None = None):
        self.class_names: list[str] = []
        self.num_outputs = 0
        if class_names is not None:
            self.bind(class_names, target_stats)

    def bind(self, class_names: list[str], target_stats: dict[str, list[float]] | None = None) -> Task:
        """Size the task by the data: its class names (and regression's target statistics). Returns self."""
        self._set_targets(list(class_names), target_stats)
        return self

    def _set_targets(self, class_names: list[str], target_stats: dict[str, list[float]] | None) -> None:
        raise NotImplementedError

    @staticmethod
    def target_reader(target_columns: list[str], classes: list[str] | None) -> Any:
        """The data's reader of this task's target column(s) (data/targets.py); None: read with the image."""
        return None

    @property
    def chance_loss(self) -> float:
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self) -> MetricCollection:
        raise NotImplementedError

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def error(self, outputs: torch.Tensor, target: torch.Tensor) -> float:
        raise NotImplementedError

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse_activation(self, activated: torch.Tensor) -> torch.Tensor:
        """Raw outputs whose activation is `activated` (e.g. averaged probabilities), scored like a model's."""
        raise NotImplementedError

    def prediction_rows(self, activated: torch.Tensor) -> list[dict[str, object]]:
        raise NotImplementedError


def load_task_class(name: str) -> type[Task]:
    """The Task class `name` names: an import path ("pkg.tasks.binary.BinaryTask") or a module of this package
    ("binary": the Task subclass defined in tasks/binary.py)."""
    module_name, _, attribute = name.rpartition(".") if "." in name else (f"{__name__}.{name}", "", "")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ValueError(f"task {name!r} cannot be imported ({error}); this project's tasks are in tasks/") from None
    if attribute:
        task_class = getattr(module, attribute, None)
    else:  # the module's own Task subclass
        task_class = next(
            (v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Task) and v.__module__ == module_name),
            None,
        )
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise ValueError(f"task {name!r} is not a Task subclass (tasks/__init__.py)")
    return task_class


def build_task(name: str, class_names: list[str], target_stats: dict[str, list[float]] | None = None, **options: Any) -> Task:
    """The task `name` (see load_task_class) with its own `options`, bound to these classes."""
    return load_task_class(name)(**options).bind(class_names, target_stats)
