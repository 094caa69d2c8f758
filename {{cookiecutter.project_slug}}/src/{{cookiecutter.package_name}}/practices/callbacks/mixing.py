"""Mixup and CutMix on training batches (timm.data.Mixup), with the soft targets the task's loss then takes.

A callback, configured in the config's `mixing:` section (the CLI adds it to the Trainer when an alpha is > 0),
for image-only classification (multiclass, binary, multilabel: a task with `soft_loss`). A training batch is
blended with itself reversed: mixup gives lam * x + (1 - lam) * x.flip(0), cutmix pastes a box of the reversed
batch (lam = the share of the image kept), and the targets are blended with the same lam. The mixed images
replace the batch's "image" and the blended targets go in as "soft_target", which `Model.compute_loss` hands to
the task's `soft_loss`. Training metrics still compare the outputs with each image's own hard label (the one it
keeps the larger share of when lam > 0.5). Validation, test and predict are never mixed.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from ...errors import ProjectError

KNOBS = "mixing.mixup_alpha / mixing.cutmix_alpha"


class MixupCutmix(pl.Callback):
    """Mix training batches (see the module docstring).

    Args:
        mixup_alpha: Beta(alpha, alpha) draws the mixup lam, e.g. 0.2-0.8; 0 = no mixup.
        cutmix_alpha: Beta(alpha, alpha) draws the cutmix lam, e.g. 1.0; 0 = no cutmix. With both on, each mixed
            batch uses one of them, 50/50.
        prob: the share of training batches that are mixed.
        off_epoch: from this epoch on nothing is mixed (the last epochs train on clean images); None: never.
    """

    def __init__(
        self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0, off_epoch: int | None = None
    ):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ProjectError(f"{KNOBS} must be >= 0 (0 = off), got {mixup_alpha} / {cutmix_alpha}")
        if not 0 <= prob <= 1:
            raise ProjectError(f"mixing.prob is the share of mixed batches, in [0, 1]; got {prob}")
        if off_epoch is not None and off_epoch < 0:
            raise ProjectError(f"mixing.off_epoch must be an epoch >= 0 or null (never off), got {off_epoch}")
        self.mixup_alpha, self.cutmix_alpha, self.prob, self.off_epoch = mixup_alpha, cutmix_alpha, prob, off_epoch
        self.mixing: BatchMixing | None = None

    @property
    def active(self) -> bool:
        return bool(self.mixup_alpha or self.cutmix_alpha)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        task, inputs = pl_module.task, sorted(pl_module.inputs)
        if not hasattr(task, "soft_loss"):
            raise ProjectError(
                f"{KNOBS} = {self.mixup_alpha} / {self.cutmix_alpha}: mixup and cutmix need a classification task "
                f"with soft targets (multiclass, binary, multilabel), not {type(task).__name__}; set both to 0"
            )
        if inputs != ["image"]:
            raise ProjectError(
                f"{KNOBS} = {self.mixup_alpha} / {self.cutmix_alpha}: mixup and cutmix blend images and need "
                f"image-only inputs, but this model reads {', '.join(inputs)}; set both to 0"
            )
        self.mixing = BatchMixing(
            task.mix_per_output,
            task.num_outputs,
            self.mixup_alpha,
            self.cutmix_alpha,
            self.prob,
            self.off_epoch,
            getattr(task, "label_smoothing", 0.0),
        )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: dict[str, Any], batch_idx: int
    ) -> None:
        batch.pop("soft_target", None)
        if self.mixing is None:
            return
        mixed, soft_target = self.mixing(batch, trainer.current_epoch)
        if soft_target is not None:
            batch["image"], batch["soft_target"] = mixed["image"], soft_target


class BatchMixing:
    """timm's Mixup for one task: `(batch, epoch) -> (batch with mixed images, soft targets)`.

    Args:
        multi_label: mix the 0/1 target of every output (binary, multilabel: timm's multi_label), not class indices.
        num_outputs: the task's output width (classes, labels, or 1 for binary).
        mixup_alpha: Beta(alpha, alpha) draws the mixup lam; 0 = no mixup.
        cutmix_alpha: Beta(alpha, alpha) draws the cutmix lam; 0 = no cutmix. With both on, each mixed batch
            uses one of them, 50/50.
        prob: the share of training batches that are mixed.
        off_epoch: from this epoch on nothing is mixed (the last epochs train on clean images); None: never.
        label_smoothing: applied to the soft targets (timm's own default is 0.1; ours follows the task's).
    """

    def __init__(
        self,
        multi_label: bool,
        num_outputs: int,
        mixup_alpha: float,
        cutmix_alpha: float,
        prob: float = 1.0,
        off_epoch: int | None = None,
        label_smoothing: float = 0.0,
    ):
        self.multi_label = multi_label
        self.off_epoch = off_epoch
        from timm.data import Mixup  # here, not at the top: the CLI's parser imports this module at start-up

        self.mixup = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=prob,
            label_smoothing=label_smoothing,
            num_classes=num_outputs,
            multi_label=self.multi_label,
        )
        self._warned_odd_batch = False

    def active(self, epoch: int) -> bool:
        return self.off_epoch is None or epoch < self.off_epoch

    def __call__(self, batch: dict[str, Any], epoch: int) -> tuple[dict[str, Any], torch.Tensor | None]:
        """The batch with mixed images and its soft targets; the batch unchanged and None when not mixing."""
        image, target = batch["image"], batch["target"]
        if not self.active(epoch):
            return batch, None
        if len(image) % 2:
            # timm pairs sample i with sample B-1-i and asserts an even batch. The train loader drops its last
            # partial batch when there are several, so an odd batch means an odd data.batch_size or a train split
            # that is one odd batch: train such a batch unmixed rather than stop the run.
            if not self._warned_odd_batch:
                rank_zero_warn(f"mixup/cutmix skipped a batch of {len(image)}: they need an even data.batch_size")
                self._warned_odd_batch = True
            return batch, None
        # binary [B] -> [B, 1]: one "label" to mix; the clone keeps the loader's batch (seen by callbacks) intact.
        dense = target.reshape(len(target), -1).float() if self.multi_label else target
        mixed, soft = self.mixup(image.clone(), dense)
        return {**batch, "image": mixed}, soft.reshape(target.shape) if self.multi_label else soft
