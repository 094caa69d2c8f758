"""ModelCheckpoint whose `last.ckpt` follows every epoch.

Lightning 2.6 rewrites `last.ckpt` (save_last=True) only when the same validation also saved a top-k checkpoint,
so after an epoch that did not improve the monitored metric, `last.ckpt` still holds an older epoch and
`--ckpt_path last` resumes from there, repeating epochs. This subclass saves it after every validation.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class LastEveryEpochCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` (same arguments) that also saves `last.ckpt` after validations that saved no top-k file."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_if_behind(trainer, on_train_epoch_end=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_if_behind(trainer, on_train_epoch_end=True)

    def _save_last_if_behind(self, trainer: pl.Trainer, on_train_epoch_end: bool) -> None:
        # The parent's own conditions for saving at this hook; `_should_skip_saving_checkpoint` is also true when
        # this step was already saved (then `last.ckpt` is current).
        if not self.save_last or self._should_save_on_train_epoch_end(trainer) != on_train_epoch_end:
            return
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
