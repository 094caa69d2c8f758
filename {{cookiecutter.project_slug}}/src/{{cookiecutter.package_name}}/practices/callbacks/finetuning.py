"""Fine-tuning a pretrained backbone: frozen, gradual unfreezing (last stage first), frozen BatchNorm statistics.

Configured in the `finetuning:` section of the config (the CLI adds it to the Trainer's callbacks when `mode` is
not "finetune" or `freeze_bn` is set). All parameters are in the optimizer from the start (param_groups.py); this
callback only
flips `requires_grad` (AdamW skips parameters without a gradient), so the optimizer's groups and the LR schedule
over them never change. What trains in an epoch is a function of the epoch number alone, which makes a run
resumed from a checkpoint mid-way pick up exactly where it stopped.

Frozen BatchNorm layers run in eval mode: they normalize with their running statistics and never update them.
(Lightning's `freeze(train_bn=False)` sets `track_running_stats=False` instead, which makes a BatchNorm in train
mode normalize with each batch's statistics: not a frozen layer.)
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from ...errors import ProjectError
from ..param_groups import backbone_stages, find_backbone, unfrozen_stage_count

FINETUNE_MODES = ("finetune", "frozen", "gradual")


class StagedFinetuning(BaseFinetuning):
    """Which backbone stages train in each epoch.

    Args:
        mode: "finetune": every stage trains; "frozen": the backbone is a fixed feature extractor (no gradients,
            eval mode: BatchNorm statistics and dropout fixed); "gradual": only the head trains for
            `unfreeze_after` epochs, then one more backbone stage every `unfreeze_every` epochs, the last first.
        unfreeze_after: gradual: epochs of head-only training.
        unfreeze_every: gradual: epochs between two unfreezings.
        freeze_bn: keep every backbone BatchNorm in eval mode (running statistics fixed; its scale and shift still
            train when their stage does). Frozen stages always keep their BatchNorm statistics fixed.
    """

    def __init__(
        self, mode: str = "finetune", unfreeze_after: int = 1, unfreeze_every: int = 1, freeze_bn: bool = False
    ):
        super().__init__()
        if mode not in FINETUNE_MODES:
            raise ProjectError(f"finetuning.mode={mode!r} is not one of {', '.join(FINETUNE_MODES)}")
        if unfreeze_after < 0 or unfreeze_every < 1:
            raise ProjectError(
                f"finetuning.unfreeze_after={unfreeze_after} must be >= 0 and "
                f"finetuning.unfreeze_every={unfreeze_every} >= 1"
            )
        self.mode = mode
        self.unfreeze_after = unfreeze_after
        self.unfreeze_every = unfreeze_every
        self.freeze_bn = freeze_bn
        self._stages: list[list[nn.Parameter]] = []
        self._unfrozen = -1

    @property
    def active(self) -> bool:
        """False when every stage trains with live BatchNorm statistics: nothing for this callback to do."""
        return self.mode != "finetune" or self.freeze_bn

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.mode == "gradual" and trainer.world_size > 1:
            # DDP registers the parameters that require a gradient once, when it wraps the model: a stage
            # unfrozen later would never have its gradients averaged across processes.
            raise ProjectError("finetuning.mode='gradual' runs on one device only; use 'finetune' or 'frozen' with DDP")
        super().setup(trainer, pl_module, stage)  # -> freeze_before_training, before the optimizer is built

    def _backbone(self, pl_module: pl.LightningModule) -> nn.Module:
        backbone = find_backbone(pl_module.network)
        if backbone is None:
            raise ProjectError(
                f"finetuning.mode={self.mode!r} / finetuning.freeze_bn need a pretrained backbone; "
                "this network has none"
            )
        return backbone

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        backbone = self._backbone(pl_module)
        params = dict(backbone.named_parameters())
        self._stages = [[params[name] for name in names] for names in backbone_stages(backbone)]
        self._unfrozen = -1
        if self.mode != "finetune":
            # Each epoch then unfreezes its stages. (Not `self.freeze`: it leaves BatchNorm trainable, or with
            # train_bn=False switches off its running statistics, see the module docstring.)
            for param in backbone.parameters():
                param.requires_grad = False

    def stages_to_train(self, epoch: int) -> int:
        """How many backbone stages (counted from the last) train in `epoch`."""
        if self.mode == "finetune":
            return len(self._stages)
        if self.mode == "frozen":
            return 0
        return unfrozen_stage_count(epoch, len(self._stages), self.unfreeze_after, self.unfreeze_every)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        count = self.stages_to_train(epoch)
        first_trained = len(self._stages) - count
        for index, params in enumerate(self._stages):
            for param in params:
                param.requires_grad = index >= first_trained
        if self.mode == "gradual" and count != self._unfrozen:
            rank_zero_info(f"Epoch {epoch}: training the last {count} of {len(self._stages)} backbone stages")
        self._unfrozen = count

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # BaseFinetuning would also record the optimizer's groups to re-add them on resume; ours never change.
        for optimizer in trainer.optimizers:
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
        self.hold_eval_mode(pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        # Again before every step: code that measures the model (evaluation, satisficing) restores train mode
        # on the whole module afterwards.
        self.hold_eval_mode(pl_module)

    def hold_eval_mode(self, pl_module: pl.LightningModule) -> None:
        """Eval mode for the frozen backbone (mode "frozen"), or for its frozen (or, freeze_bn, all) BatchNorms."""
        backbone = self._backbone(pl_module)
        if self.mode == "frozen":
            backbone.eval()
            return
        for module in backbone.modules():
            if isinstance(module, _BatchNorm):
                params = list(module.parameters(recurse=False))
                frozen = bool(params) and not any(p.requires_grad for p in params)
                # Back to train mode once its stage is unfrozen (unless freeze_bn).
                module.train(pl_module.training and not (self.freeze_bn or frozen))
