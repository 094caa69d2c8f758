"""The LightningModule: a network and a task, one loop for train/val/test, the optimizer over parameter groups.

Extend this class for your project (README, "Extending the model"). It receives its parts instead of building
them from flags, so each is chosen in the config (`model.init_args.<part>`):

    task          loss, metrics, activation and prediction rows (tasks/); its own options, e.g. label_smoothing
    network       encoders -> fusion -> head (models/); any nn.Module class taking (inputs, num_outputs) first
    optimizer     any torch optimizer; it receives the parameter groups (weight decay on weights only,
                  discriminative LRs), so groups, schedule and fine-tuning work with SGD as with AdamW
    lr_scheduler  the per-step LR schedule (practices/schedules.py): cosine, onecycle, sgdr, step or constant

`inputs`, `class_names` and `target_stats` come from the data (the CLI links them). Recipes that are not the
model (mixup / cutmix, staged fine-tuning, test-time augmentation, EMA / SWA) are callbacks configured in their
own config sections; the machinery reads this module only through `contract.ProjectModule`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from .models.network import Network
from .practices.param_groups import check_param_group_args, find_backbone, param_groups
from .practices.provenance import provenance
from .practices.schedules import Schedule, stepping
from .tasks import Task

# What builds the network: an nn.Module class whose constructor starts with (inputs, num_outputs).
NetworkFactory = Callable[[dict[str, dict[str, Any]], int], nn.Module]
# What builds the optimizer from the parameter groups (LightningCLI's OptimizerCallable).
OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]


class Model(pl.LightningModule):
    """A network trained for one task.

    Args:
        task: the task (tasks/), bound here to the data's class names.
        network: builds the network from the data's inputs and the task's output width (models/network.py).
        optimizer: builds the optimizer from the parameter groups; its `lr` is the peak LR of the head.
        lr_scheduler: the LR schedule, stepped every optimizer step; None: the optimizer's LR throughout.
        lr_ratio: discriminative LRs: each backbone stage (timm's stage groups) trains at the LR of the next stage
            divided by lr_ratio, the last stage at lr / lr_ratio, the head and new layers at lr. 1 = one LR.
        layer_decay: timm-style layer-wise LR decay instead of lr_ratio (e.g. 0.75 per block); None = off.
        inputs: what each input holds (feature counts, a vocabulary size); filled in from the data.
        class_names: classes / labels / target names in output order; filled in from the data.
        target_stats: regression: train mean and std of every target; filled in from the data.
        channels_last: NHWC memory layout for the network and its image inputs (faster convolutions with mixed
            precision on tensor-core GPUs; usually slower on CPUs).
        compile: `torch.compile` the network (slow first steps; checkpoints keep the same keys).
    """

    def __init__(
        self,
        task: Task,
        network: NetworkFactory = Network,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        lr_scheduler: Schedule | None = None,
        lr_ratio: float = 1.0,
        layer_decay: float | None = None,
        inputs: dict[str, dict[str, Any]] | None = None,
        class_names: list[str] | None = None,
        target_stats: dict[str, list[float]] | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["task", "network", "optimizer"] if not _from_cli(self) else [])
        self.inputs = inputs or {"image": {}}  # filled in from the data by the CLI; an image model when built bare
        self.task = task.bind(class_names or ["0", "1"], target_stats)
        self.network = network(self.inputs, self.task.num_outputs)
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_scheduler
        self.lr_ratio, self.layer_decay = lr_ratio, layer_decay
        check_param_group_args(find_backbone(self.network) is not None, lr_ratio, layer_decay)
        self.channels_last, self.compile_network = channels_last, compile
        self._network_parts = network_parts  # torch.compile'd by configure_model when `compile`
        self.train_metrics = self.task.metrics().clone(prefix="train/")
        self.val_metrics = self.task.metrics().clone(prefix="val/")
        self.test_metrics = self.task.metrics().clone(prefix="test/")

    def configure_model(self) -> None:
        # Called by the Trainer once the module is on its device, before the optimizer is built.
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)
        if self.compile_network and not getattr(self, "_compiled", False):
            self.network.compile()  # in place (forward: predict, export): parameter names and checkpoints unchanged
            # The steps call the network's two halves, not its forward: compiled as a function of the network (not
            # a bound method, which a deep copy of the model, e.g. a snapshot ensemble's member, would still call).
            self._network_parts = torch.compile(network_parts)
            self._compiled = True

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The task's raw outputs for a batch dict (the network's forward)."""
        return self.network(self._layout(batch))

    def _layout(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.channels_last and "image" in batch:
            return {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}
        return batch

    def compute_loss(
        self, outputs: torch.Tensor, batch: dict[str, Any], features: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The training objective. Override to add terms (an auxiliary loss reads `features`, the network's
        per-input features). A batch mixed by mixup / cutmix carries its blended targets as "soft_target"."""
        if "soft_target" in batch:
            return self.task.soft_loss(outputs, batch["soft_target"])
        return self.task.loss(outputs, batch["target"])

    # One loop for every stage: features -> outputs -> loss -> metrics -> log.
    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        features, outputs = self._network_parts(self.network, self._layout(batch))
        loss = self.compute_loss(outputs, batch, features)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(*self.task.metric_inputs(outputs.detach(), batch["target"]))
        on_step, size = stage == "train", len(batch["target"])
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=not on_step, batch_size=size
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=size)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        # Activations (probabilities, values in target units); a TTA callback may replace them with an average.
        return {"id": batch["id"], "outputs": self.task.activation(self(batch)).float().cpu()}

    def configure_optimizers(self) -> dict[str, Any]:
        # Weight decay on weights only; backbone stages at discriminative LRs (practices/param_groups.py). The
        # groups carry an `lr_scale`, applied to whatever LR the configured optimizer starts with.
        groups = param_groups(self, find_backbone(self.network), lr_ratio=self.lr_ratio, layer_decay=self.layer_decay)
        optimizer = self.optimizer_factory(groups)
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        if self.lr_schedule is None:
            return {"optimizer": optimizer}
        scheduler = self.lr_schedule.build(optimizer, *stepping(self.trainer))
        # interval="step": Lightning's default is per epoch, which would hold warmup for a whole epoch.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What is needed to reproduce this checkpoint: code version and data identity.
        checkpoint["provenance"] = provenance(getattr(self.trainer, "datamodule", None))
        # The logger runs (W&B run id, TensorBoard/CSV version) a resumed fit continues instead of starting anew.
        checkpoint["logger_versions"] = [logger.version for logger in self.trainer.loggers]


def network_parts(network: nn.Module, batch: dict[str, Any]) -> tuple[Any, torch.Tensor]:
    """(features, outputs) of a batch: what a training / validation / test step computes."""
    features = network.forward_features(batch)
    return features, network.forward_head(features)


def _from_cli(module: pl.LightningModule) -> bool:
    """True while LightningCLI builds the module: it then hands `save_hyperparameters` the config (class paths and
    init args) of every part, which is what checkpoints should keep; built in Python, the parts are objects."""
    from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters

    return _given_hyperparameters.get() is not None
