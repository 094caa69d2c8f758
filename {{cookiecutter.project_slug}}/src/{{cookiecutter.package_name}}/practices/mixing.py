"""Mixup and CutMix on training batches (timm.data.Mixup), with the soft targets the task's loss then takes.

`model.mixup_alpha` / `model.cutmix_alpha` > 0 switch them on, for image-only classification (multiclass,
binary, multilabel). A training batch is blended with itself reversed: mixup gives lam * x + (1 - lam) *
x.flip(0), cutmix pastes a box of the reversed batch (lam = the share of the image kept), and the targets are
blended with the same lam, so the loss is the task's `soft_loss`. Training metrics still compare the outputs
with each image's own hard label (the one it keeps the larger share of when lam > 0.5). Validation, test and
predict are never mixed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from timm.data import Mixup

from ..errors import ProjectError

MIXABLE_TASKS = ("multiclass", "binary", "multilabel")
KNOBS = "model.mixup_alpha / model.cutmix_alpha"


class BatchMixing:
    """timm's Mixup for one task: `(batch, epoch) -> (batch with mixed images, soft targets)`.

    Args:
        task: the task type; binary and multilabel mix their 0/1 targets per output (timm's multi_label).
        num_outputs: the task's output width (classes, labels, or 1 for binary).
        mixup_alpha: Beta(alpha, alpha) draws the mixup lam; 0 = no mixup.
        cutmix_alpha: Beta(alpha, alpha) draws the cutmix lam; 0 = no cutmix. With both on, each mixed batch
            uses one of them, 50/50.
        prob: the share of training batches that are mixed.
        off_epoch: from this epoch on nothing is mixed (the last epochs train on clean images); None: never.
        label_smoothing: applied to the soft targets (timm's own default is 0.1; ours follows the model's).
    """

    def __init__(
        self,
        task: str,
        num_outputs: int,
        mixup_alpha: float,
        cutmix_alpha: float,
        prob: float = 1.0,
        off_epoch: int | None = None,
        label_smoothing: float = 0.0,
    ):
        self.multi_label = task != "multiclass"
        self.off_epoch = off_epoch
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


def build_mixing(
    task: str,
    num_outputs: int,
    inputs: Iterable[str],
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    prob: float = 1.0,
    off_epoch: int | None = None,
    label_smoothing: float = 0.0,
) -> BatchMixing | None:
    """The model's mixing, None when both alphas are 0; a bad combination fails with one line naming the key."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ProjectError(f"{KNOBS} must be >= 0 (0 = off), got {mixup_alpha} / {cutmix_alpha}")
    if not 0 <= prob <= 1:
        raise ProjectError(f"model.mixup_prob is the share of mixed batches, in [0, 1]; got {prob}")
    if off_epoch is not None and off_epoch < 0:
        raise ProjectError(f"model.mixup_off_epoch must be an epoch >= 0 or null (never off), got {off_epoch}")
    if not mixup_alpha and not cutmix_alpha:
        return None
    if task not in MIXABLE_TASKS:
        raise ProjectError(
            f"{KNOBS} = {mixup_alpha} / {cutmix_alpha}: mixup and cutmix apply to image classification "
            f"({', '.join(MIXABLE_TASKS)}), not {task}; set both to 0"
        )
    inputs = sorted(inputs)
    if inputs != ["image"]:
        raise ProjectError(
            f"{KNOBS} = {mixup_alpha} / {cutmix_alpha}: mixup and cutmix blend images and need image-only inputs, "
            f"but this model reads {', '.join(inputs)}; set both to 0"
        )
    return BatchMixing(task, num_outputs, mixup_alpha, cutmix_alpha, prob, off_epoch, label_smoothing)
