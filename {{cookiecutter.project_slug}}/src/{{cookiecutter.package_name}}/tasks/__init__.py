"""What the model predicts: one task object owns everything that differs between task types.

That is the loss, metrics, output activation and prediction rows the LightningModule uses, and what the
machinery needs to know about the task: how the data reads its targets, the baselines it is compared with, how
its errors are analysed and described, what an exported model outputs, and how the toy data draws its targets.
The LightningModule and the machinery run one code path for every task. Each task type lives in its own module
(a `Task` subclass); the project keeps only the one it was rendered for (plus any a user adds), and deleting a
task's module removes all of its behaviour. The config injects it:

    model:
      init_args:
        task:
          class_path: PACKAGE.tasks.multiclass.MulticlassTask
          init_args: {label_smoothing: 0.1}

Its own options come from there; the class names (and regression's target statistics) come from the data:
the Model calls `task.bind(class_names, target_stats)`. The data reads targets with the task class's
`target_reader` (the CLI links the task's class path into `data.task_class`), so a task type is one file.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torchmetrics import MetricCollection

if TYPE_CHECKING:
    import random

    from PIL import Image

    from ..data.toy import ToyRows
    from ..practices.evaluation import SplitEvaluation
    from ..practices.label_issues import LabelScores

# Keeps log(p) and logit(p) finite where a probability is exactly 0 or 1 (inverse_activation).
PROBABILITY_EPS = 1e-7


class Task:
    """The contract every task meets (the LightningModule, callbacks, diagnosis, baselines and export use only this).

    Attributes: `class_names` (classes / labels / target names, in output order), `num_outputs` (the width of the
    network's output), `monitor` (the optimizing metric, without the stage prefix) and `mode` ("max" or "min"),
    `chance_loss` (the loss of the near-zero initial outputs). Class attributes for the data and the recipes:
    `class_folder_labels` (labels may come from class folders), `reads_masks` (the target is a per-pixel mask read
    with the image), `mix_per_output` (mixup / cutmix blend each output's 0/1 target). Classification tasks add
    `soft_loss(outputs, soft_target)`, the loss of mixup / cutmix targets.

    The sections below the loop's methods are for the machinery; their defaults suit a task with one output row
    per sample, and a task overrides what differs: baselines (practices/baselines.py), error analysis
    (practices/error_analysis.py, practices/bias_variance.py), export (practices/export.py) and the toy data
    (data/toy.py).
    """

    name = ""  # the task type, as reports and exports record it ("multiclass")
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

    # --- what `error` means (diagnosis, baselines) ----------------------------------------------------------------
    error_meaning = "the task's error"  # `error` in words, heading the diagnosis and the baseline report
    error_is_rate = True  # `error` is a rate in [0, 1] (written as a percentage); False: a plain number

    # --- baselines (practices/baselines.py): the floor the model has to beat --------------------------------------
    linear_baseline = "logistic regression"  # what the linear baseline is, in the report
    constant_baseline = "majority"  # the constant baseline's name: the most frequent class ("mean" for numbers)

    def baseline_features(self, inputs: dict[str, dict[str, Any]], feature_size: int) -> torch.nn.Module:
        """What the linear baseline sees of a batch: flat [B, D] features of every input (baselines.Features)."""
        from ..practices.baselines import Features  # imported here: practices/ imports the data, which imports tasks/

        return Features(inputs, feature_size)

    def fit_baselines(self, train: Iterable[tuple], steps: int) -> dict[str, torch.nn.Module]:
        """The constant baseline (named `constant_baseline`: the best constant, `constant_outputs`) and the
        "linear" one, fitted on the train batches of (features, targets, ids); the linear model with the task's
        own loss."""
        from ..practices.baselines import Constant, fit_linear

        features, targets = zip(*((x, y) for x, y, _ in train), strict=True)
        x, y = torch.cat(features), torch.cat(targets)
        linear = fit_linear(x, y, self.num_outputs, self.loss, steps)
        return {self.constant_baseline: Constant(self.constant_outputs(y)), "linear": linear}

    def constant_outputs(self, targets: torch.Tensor) -> torch.Tensor:
        """The best constant outputs [K] for the train targets [N, ...] (the constant baseline)."""
        raise NotImplementedError

    def describe_constant(self, constant: torch.Tensor) -> str:
        """The constant baseline's outputs [K] in words, for the report."""
        return "the best constant outputs for the training targets"

    def majority_class(self, constant: torch.Tensor) -> str | None:
        """The class the constant baseline always predicts; None when it predicts no single class."""
        return None

    def persistence_outputs(self, last_values: torch.Tensor) -> torch.Tensor | None:
        """The persistence forecast's raw outputs [B, K] from a numeric series' last observed values [B] (in the
        series' own units); None: the task has no such baseline (it predicts classes, not the series' values)."""
        return None

    # --- error analysis (practices/error_analysis.py) and the diagnosis' next steps (practices/bias_variance.py) ---
    look_at = "the error analysis"  # what of the error analysis to look at for data mismatch
    regularizers: tuple[str, ...] = ()  # the task's own regularization knobs, named in the next steps
    example_pictures: tuple[str, ...] = ("image",)  # the pictures of a worst example, as `example_tiles` draws them

    def analyze_errors(self, evaluation: SplitEvaluation) -> tuple[dict[str, Any], list[str], dict[str, Image.Image]]:
        """The task's own part of a split's error analysis: (what diagnosis.json holds, Markdown lines, images by
        file stem). `evaluation.outputs` are raw outputs (per-pixel outputs: their predicted class maps)."""
        return {}, [], {}

    def describe_example(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        """One sample's "true" and "predicted" target as text (classification adds "confidence")."""
        values = [", ".join(f"{v:.4g}" for v in tensor.flatten().tolist()) for tensor in (target, output)]
        return {"true": values[0], "predicted": values[1]}

    def example_tiles(self, image: Image.Image, target: torch.Tensor, output: torch.Tensor) -> list[Image.Image]:
        """The pictures of one worst example (`example_pictures`), from its input image as the model saw it."""
        return [image]

    def example_captions(self, example: dict[str, Any]) -> list[str]:
        """A caption under each of `example_tiles`, from the example's `describe_example` entries and loss."""
        confidence = f" {example['confidence']:.2f}" if "confidence" in example else ""
        return [f"true {example['true']}\npred {example['predicted']}{confidence}"]

    # --- export (practices/export.py) -------------------------------------------------------------------------------
    output_name = "outputs"  # the exported model's output, named after what `activation` gives
    output_meaning = ""  # what it holds, with its shape; "" says "<Task class>.activation of the outputs"
    # How the exported preprocess.py (practices/deploy_preprocess.py) turns the output into predictions.csv's
    # columns, as {"decode": one of DECODERS there, ...its options}; {} when it has no decoder for this task.
    output_decoding: dict[str, Any] = {}

    # --- label issues (practices/label_issues.py): which given labels look wrong ------------------------------------
    def label_issues(self, targets: torch.Tensor, outputs: torch.Tensor) -> LabelScores:
        """Score out-of-fold predictions against the given labels: `targets` as the dataset gives them, `outputs`
        the task's `activation` of a model that never trained on them. NotImplementedError: the task has no such
        scoring (the `label-issues` command refuses it in one line)."""
        raise NotImplementedError

    # --- toy data (data/toy.py): a small learnable dataset in the format the data reads ---------------------------
    toy_target_columns: tuple[str, ...] = ("target",)  # the CSV columns a toy row's target is written to

    @classmethod
    def toy_classes(cls, modalities: Sequence[str], classes: Sequence[str] | None = None) -> tuple[str, ...]:
        """The toy data's class names for these inputs: `classes`, checked, or the defaults (ValueError if wrong)."""
        raise ValueError(f"{cls.__name__} has no toy data: give it toy_classes, toy_description and toy_row")

    @classmethod
    def toy_description(cls, classes: Sequence[str]) -> str:
        """The toy targets in one line, e.g. "target = class name (a, b)"."""
        raise NotImplementedError

    @classmethod
    def toy_row(cls, toy: ToyRows, split: str, index: int, rng: random.Random) -> dict[str, str]:
        """The CSV cells of toy sample `index` of `split`: draw its target and what each input shows of it
        (`toy` draws the inputs), with every random draw from `rng`."""
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
            (
                v
                for v in vars(module).values()
                if isinstance(v, type) and issubclass(v, Task) and v.__module__ == module_name
            ),
            None,
        )
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise ValueError(f"task {name!r} is not a Task subclass (tasks/__init__.py)")
    return task_class


def build_task(
    name: str, class_names: list[str], target_stats: dict[str, list[float]] | None = None, **options: Any
) -> Task:
    """The task `name` (see load_task_class) with its own `options`, bound to these classes."""
    return load_task_class(name)(**options).bind(class_names, target_stats)
