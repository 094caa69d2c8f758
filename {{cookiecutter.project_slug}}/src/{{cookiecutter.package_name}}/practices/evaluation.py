"""Error of a model on one split, with the per-sample losses and outputs error analysis needs.

Every split is read with the evaluation transform (no augmentation), so train and val errors are measured the
same way and their difference is the model's, not the augmentation's. The same accumulation scores the
baselines, so a baseline's error and the model's are measured identically.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import Precision
from pytorch_lightning.utilities import move_data_to_device
from torch.utils.data import DataLoader
from torchmetrics import Metric, MetricCollection

from ..data.datamodule import RowDataset


@dataclass
class SplitEvaluation:
    split: str
    error: float  # task.error over the whole split
    # [N, K] raw network outputs (logits; regression: standardized values), float32 on the CPU. Per-pixel outputs
    # [N, C, H, W] are kept as their predicted class maps [N, H, W] instead: C logit maps per image of a large
    # split would not fit in memory.
    outputs: torch.Tensor
    targets: torch.Tensor  # [N, ...] as the dataset gives them (class maps: the same compact dtype as outputs)
    losses: torch.Tensor  # [N] the task's loss per sample
    ids: list[str]
    metrics: dict[str, float] = field(default_factory=dict)  # the task's metrics, when asked for

    @property
    def dense(self) -> bool:
        """True when `outputs` holds predicted class maps (segmentation), not raw outputs."""
        return self.outputs.dim() > 2


def _compact(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class maps in the smallest integer type that holds them (uint8 up to 256 classes)."""
    return classes.to(torch.uint8 if num_classes <= 256 else torch.int32).cpu()


class Accumulator:
    """Collects one model's outputs on one split batch by batch; `result()` gives the SplitEvaluation.

    The error is task.error over all outputs. For per-pixel outputs it is the sample-weighted mean of the batch
    errors instead, which is the same number for a per-pixel error over images of one size (the evaluation
    transform gives every image the same size). `metrics`, if given, are updated batch by batch.
    """

    def __init__(self, task: Any, split: str, metrics: MetricCollection | None = None):
        self.task, self.split, self.metrics = task, split, metrics
        for metric in metrics.modules() if metrics is not None else ():
            if isinstance(metric, Metric):
                # One process evaluates on its own (after a DDP fit only rank zero diagnoses, compares baselines
                # and averages): torchmetrics would sync at compute and wait for processes that never come.
                metric.distributed_available_fn = _evaluating_alone
        self.outputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self.ids: list[str] = []
        self.dense_errors: list[tuple[float, int]] = []

    def update(self, outputs: torch.Tensor, target: torch.Tensor, ids: list[str]) -> None:
        outputs, target = outputs.float(), target.to(outputs.device)
        self.losses.append(self.task.per_sample_loss(outputs, target).float().cpu())
        if self.metrics is not None:
            self.metrics.update(*self.task.metric_inputs(outputs, target))
        if outputs.dim() > 2:  # [B, C, H, W]: keep the class maps only
            self.dense_errors.append((self.task.error(outputs, target), len(outputs)))
            num_classes = outputs.shape[1]
            self.outputs.append(_compact(outputs.argmax(dim=1), num_classes))
            self.targets.append(_compact(target, num_classes))
        else:
            self.outputs.append(outputs.cpu())
            self.targets.append(target.cpu())
        self.ids.extend(ids)

    def result(self) -> SplitEvaluation:
        if not self.outputs:
            raise ValueError(f"the {self.split} split is empty: nothing to evaluate")
        outputs, targets = torch.cat(self.outputs), torch.cat(self.targets)
        if self.dense_errors:
            error = sum(e * n for e, n in self.dense_errors) / sum(n for _, n in self.dense_errors)
        else:
            error = self.task.error(outputs, targets)
        metrics = {}
        if self.metrics is not None:
            metrics = {name: float(value) for name, value in self.metrics.compute().items()}
        return SplitEvaluation(self.split, float(error), outputs, targets, torch.cat(self.losses), self.ids, metrics)


def _evaluating_alone() -> bool:
    """torchmetrics' `distributed_available_fn` for an evaluation one process runs on its own."""
    return False


def eval_dataset(datamodule: pl.LightningDataModule, split: str, max_samples: int | None = None) -> RowDataset:
    """A split without augmentation; at most `max_samples` of it (a seeded random subset, in split order)."""
    dataset = datamodule.dataset(split, train=False)
    if max_samples is not None and len(dataset.rows) > max_samples:
        keep = sorted(random.Random(0).sample(range(len(dataset.rows)), max_samples))
        dataset.rows = [dataset.rows[i] for i in keep]
    return dataset


def eval_loader(datamodule: pl.LightningDataModule, dataset: RowDataset) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=datamodule.batch_size,
        shuffle=False,
        num_workers=datamodule.num_workers,
        pin_memory=torch.cuda.is_available(),
    )


@torch.no_grad()
def run_model(
    forward: Callable[[dict[str, Any]], torch.Tensor],
    accumulator: Accumulator,
    loader: DataLoader,
    device: torch.device,
    precision: Precision | None = None,
) -> SplitEvaluation:
    """Every batch of `loader` through `forward` into `accumulator`.

    `precision`: the Trainer's precision plugin, so inputs and autocast match training (bf16-mixed, 16-true...);
    the targets keep their dtype, so the loss and error are measured in float32.
    """
    precision = precision or Precision()
    for batch in loader:
        inputs = precision.convert_input(move_data_to_device(batch, device))
        with precision.forward_context():
            outputs = forward(inputs)
        accumulator.update(outputs, move_data_to_device(batch["target"], device), list(batch["id"]))
    return accumulator.result()


def evaluate_split(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    split: str,
    device: torch.device | None = None,
    precision: Precision | None = None,
    max_samples: int | None = None,
    metrics: bool = False,
) -> SplitEvaluation:
    """Run the model over one split (evaluation transform, eval mode; the module's mode is restored after);
    `metrics`: also the task's metrics (`SplitEvaluation.metrics`, as validation logs them without the prefix)."""
    device = device or module.device
    loader = eval_loader(datamodule, eval_dataset(datamodule, split, max_samples))
    collection = module.task.metrics().to(device) if metrics else None
    was_training = module.training
    module.eval()
    try:
        return run_model(module, Accumulator(module.task, split, collection), loader, device, precision)
    finally:
        module.train(was_training)
