"""Error of a model on one split, with the per-sample losses and outputs error analysis needs.

Every split is read with the evaluation transform (no augmentation), so train and val errors are measured the
same way and their difference is the model's, not the augmentation's.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import Precision
from torch.utils.data import DataLoader

from .data.image import ImageDataset


@dataclass
class SplitEvaluation:
    split: str
    error: float
    logits: torch.Tensor  # [N, C] raw outputs, float32 on the CPU
    targets: torch.Tensor  # [N]
    losses: torch.Tensor  # [N] the task's loss per sample
    paths: list[str]

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=-1)


def eval_dataset(datamodule: pl.LightningDataModule, split: str, max_samples: int | None = None) -> ImageDataset:
    """A split with the evaluation transform; at most `max_samples` of it (a seeded random subset)."""
    samples = datamodule.splits[split]
    if max_samples is not None and len(samples) > max_samples:
        samples = sorted(random.Random(0).sample(samples, max_samples))
    return ImageDataset(samples, datamodule.data_config.transform(train=False))


def eval_loader(datamodule: pl.LightningDataModule, dataset: ImageDataset) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=datamodule.hparams.batch_size,
        shuffle=False,
        num_workers=datamodule.num_workers,
        pin_memory=torch.cuda.is_available(),
    )


@torch.no_grad()
def predict(
    module: pl.LightningModule, loader: DataLoader, device: torch.device, precision: Precision | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Logits, targets and paths of every batch, in eval mode (the module's mode is restored after).

    `precision`: the Trainer's precision plugin, so inputs and autocast match training (bf16-mixed, 16-true...).
    """
    precision = precision or Precision()
    was_training = module.training
    module.eval()
    logits, targets, paths = [], [], []
    try:
        for batch in loader:
            inputs = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            inputs = precision.convert_input(inputs)
            with precision.forward_context():
                logits.append(module(inputs).float().cpu())
            targets.append(batch["target"])
            paths.extend(batch["path"])
    finally:
        module.train(was_training)
    return torch.cat(logits), torch.cat(targets), paths


def split_error(task: object, logits: torch.Tensor, targets: torch.Tensor) -> float:
    """1 - accuracy through the task's own metrics; a task without accuracy can define `error(logits, targets)`."""
    error_fn = getattr(task, "error", None)
    if callable(error_fn):
        return float(error_fn(logits, targets))
    metrics = task.metrics()
    if "acc" not in metrics:
        raise ValueError(f"{type(task).__name__} has no 'acc' metric and no error(logits, targets) method")
    return 1.0 - float(metrics["acc"](logits, targets))


def per_sample_losses(task: object, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The task's loss for every sample (the same loss training minimizes, unreduced)."""
    loss = task.loss
    if hasattr(loss, "reduction"):  # every torch loss module
        unreduced = copy.copy(loss)  # a shallow copy: the task's own loss keeps its reduction
        unreduced.reduction = "none"
        losses = unreduced(logits, targets)
        return losses.flatten(1).mean(1) if losses.ndim > 1 else losses
    return torch.stack([loss(logits[i : i + 1], targets[i : i + 1]) for i in range(len(targets))])


def evaluate_split(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    split: str,
    device: torch.device | None = None,
    precision: Precision | None = None,
    max_samples: int | None = None,
) -> SplitEvaluation:
    """Run the model over one split (evaluation transform) and measure its error."""
    device = device or module.device
    loader = eval_loader(datamodule, eval_dataset(datamodule, split, max_samples))
    logits, targets, paths = predict(module, loader, device, precision)
    task = module.task
    return SplitEvaluation(
        split, split_error(task, logits, targets), logits, targets, per_sample_losses(task, logits, targets), paths
    )
