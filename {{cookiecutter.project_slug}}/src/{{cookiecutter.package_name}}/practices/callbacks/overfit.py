"""Verdict of an overfit-one-batch run (configs/debug/overfit_batch.yaml).

A network that can learn anything can memorize one batch: the training loss falls close to zero. If it does
not, the bug is in the model, the loss or the labels, and training on the full data would only hide it.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn


class OverfitCheck(pl.Callback):
    """At the end of fit, prints `overfit one batch: PASS (loss 0.003 < 0.05)` or FAIL with what to look at.

    Args:
        threshold: the training loss must end below this.
        monitor: the logged training loss (its epoch mean is used, which over one batch is that batch's loss).
    """

    def __init__(self, threshold: float = 0.05, monitor: str = "train/loss"):
        super().__init__()
        self.threshold = threshold
        self.monitor = monitor
        self.loss: float | None = None
        self.passed: bool | None = None
        self._single_target: bool | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        target = batch.get("target") if isinstance(batch, dict) else None
        if self._single_target is None and torch.is_tensor(target) and target.ndim >= 1 and len(target) > 1:
            # Every sample with the same target (one class, the same labels, the same values or mask): a constant
            # output fits the batch without learning anything from the inputs.
            self._single_target = bool((target == target[:1]).all())
            if self._single_target:
                # Samples sorted by class and no shuffling (overfit_batches turns it off) give such a batch.
                rank_zero_warn(
                    "overfit one batch: the batch holds a single class (every sample has the same target), so a "
                    "constant prediction passes; order the training samples so that the first batch mixes targets"
                )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        value = metrics.get(f"{self.monitor}_epoch", metrics.get(self.monitor))
        if value is None:
            message = f"overfit one batch: no '{self.monitor}' was logged, nothing to judge"
        else:
            self.loss = float(value)
            self.passed = self.loss < self.threshold
            epochs = trainer.current_epoch
            if self.passed:
                message = f"overfit one batch: PASS (loss {self.loss:.4g} < {self.threshold:g} after {epochs} epochs)"
                if self._single_target:
                    message += " on a batch of one class only: this says little"
            else:
                message = (
                    f"overfit one batch: FAIL (loss {self.loss:.4g} >= {self.threshold:g} after {epochs} epochs): "
                    "the model, the loss or the labels are broken (inputs paired with the wrong targets, a head "
                    "with the wrong number of outputs, a loss that gets probabilities instead of logits, frozen "
                    "weights). If the loss is still falling, raise trainer.max_epochs or model.optimizer.lr"
                )
        if trainer.is_global_zero:
            print(message, flush=True)
