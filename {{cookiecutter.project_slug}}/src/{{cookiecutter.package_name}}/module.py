"""The LightningModule: network + task, one loop for train/val/test, optimizer and schedule.

Extend this class for your project. The network (`models/network.py`) maps a batch dict to outputs; the task
(`tasks/`) owns loss, metrics and how predictions are written, so the steps below stay the same for every
task and modality.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch

from .models.encoders import build_encoder
from .models.fusion import build_fusion
from .models.network import Network
from .provenance import provenance
from .tasks import build_task


class Model(pl.LightningModule):
    """Encoders (one per input) -> fusion -> head, trained for one task.

    Args:
        task: multiclass, binary, multilabel, regression or segmentation (the project's own, see tasks/).
        class_names: classes / labels / target names in output order; filled in from the data.
        target_stats: regression: train mean and std of every target; filled in from the data.
        inputs: what each input holds (e.g. tabular feature counts, a vocabulary size); filled in from the data.
        backbone: any timm model name, e.g. "resnet18", "convnext_tiny", "efficientnet_b0.ra_in1k".
        pretrained: load the backbone's pretrained weights from the Hugging Face hub.
        pretrained_file: load the backbone's weights from this local file instead (safetensors or state dict).
        hidden_dim: width of the tabular MLP and of the sequence encoder.
        sequence_encoder: "gru" (bidirectional) or "transformer".
        fusion: how several inputs are combined: none (one input), concat, late or gated (models/fusion.py).
        fusion_dim: the low-dimensional feature each input is projected to before fusing.
        dropout: dropout before the output layer (and inside the tabular / sequence encoders).
        label_smoothing: multiclass: cross-entropy label smoothing (0 = off).
        pos_weight: binary: weight of positive samples in the loss, e.g. n_negative / n_positive for rare positives.
        regression_loss: regression: "mse" or "huber" (less sensitive to outliers).
        dice_weight: segmentation: weight of the Dice loss added to the cross-entropy.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay, applied to weights only (not to biases or normalization layers).
        warmup_fraction: fraction of all training steps spent warming the learning rate up linearly from 0.
        min_lr_ratio: the cosine schedule decays to lr * min_lr_ratio at the last step.
        channels_last: NHWC memory layout for the network and its image inputs (faster convolutions with
            mixed precision on tensor-core GPUs; usually slower on CPUs).
        compile: `torch.compile` the network (the first steps are slow while it compiles; checkpoints keep
            the same keys, so they load with or without it).
    """

    def __init__(
        self,
        task: str = "multiclass",
        class_names: list[str] | None = None,
        target_stats: dict[str, list[float]] | None = None,
        inputs: dict[str, dict[str, Any]] | None = None,
        backbone: str = "resnet18",
        pretrained: bool = True,
        pretrained_file: str | None = None,
        hidden_dim: int = 128,
        sequence_encoder: str = "gru",
        fusion: str = "none",
        fusion_dim: int = 64,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        pos_weight: float | None = None,
        regression_loss: str = "mse",
        dice_weight: float = 1.0,
        lr: float = 3e-4,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.01,
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.task = build_task(
            task,
            class_names or ["0", "1"],
            target_stats=target_stats,
            label_smoothing=label_smoothing,
            pos_weight=pos_weight,
            loss=regression_loss,
            dice_weight=dice_weight,
        )
        self.network = self._build_network(inputs or {"image": {}})
        self.train_metrics = self.task.metrics().clone(prefix="train/")
        self.val_metrics = self.task.metrics().clone(prefix="val/")
        self.test_metrics = self.task.metrics().clone(prefix="test/")

    def _build_network(self, inputs: dict[str, dict[str, Any]]) -> torch.nn.Module:
        hp = self.hparams
        if hp.task == "segmentation":
            from .models.segmentation import SegmentationNetwork

            return SegmentationNetwork(
                hp.backbone, self.task.num_outputs, hp.pretrained, hp.pretrained_file, dropout=hp.dropout
            )
        encoders = {
            name: build_encoder(
                name,
                spec,
                backbone=hp.backbone,
                pretrained=hp.pretrained,
                pretrained_file=hp.pretrained_file,
                hidden_dim=hp.hidden_dim,
                sequence_encoder=hp.sequence_encoder,
                dropout=hp.dropout,
            )
            for name, spec in inputs.items()
        }
        dims = {name: encoder.out_features for name, encoder in encoders.items()}
        return Network(encoders, build_fusion(hp.fusion, dims, self.task.num_outputs, hp.fusion_dim, hp.dropout))

    def configure_model(self) -> None:
        # Called by the Trainer once the module is on its device, before the optimizer is built.
        if self.hparams.channels_last:
            self.network.to(memory_format=torch.channels_last)
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.network.compile()  # in place: parameter names and checkpoints are unchanged
            self._compiled = True

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.hparams.channels_last and "image" in batch:
            batch = {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}
        return self.network(batch)

    # One loop for every stage: outputs -> loss -> metrics -> log.
    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        outputs = self(batch)
        loss = self.task.loss(outputs, batch["target"])
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
        return {"id": batch["id"], "outputs": self.task.activation(self(batch)).float().cpu()}

    def configure_optimizers(self) -> dict[str, Any]:
        # Weight decay on weights only: decaying biases and norm scales only hurts (they are 1-D tensors).
        decay, no_decay = [], []
        for param in self.parameters():
            if param.requires_grad:
                (decay if param.ndim > 1 else no_decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_fraction * total)
        floor = self.hparams.min_lr_ratio

        def lr_factor(step: int) -> float:
            """Linear warmup to 1, then cosine decay to `min_lr_ratio`."""
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        # interval="step": Lightning's default is per epoch, which would hold warmup for a whole epoch.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What is needed to reproduce this checkpoint: code version and data identity.
        checkpoint["provenance"] = provenance(getattr(self.trainer, "datamodule", None))
        # The logger runs (W&B run id, TensorBoard/CSV version) a resumed fit continues instead of starting anew.
        checkpoint["logger_versions"] = [logger.version for logger in self.trainer.loggers]
