"""The LightningModule: network + task, one loop for train/val/test, optimizer and schedule.

Extend this class for your project. The network (`models/network.py`) maps a batch dict to outputs; the task
(`tasks/`) owns loss, metrics and how predictions are written, so the steps below stay the same for every
task and modality.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from .practices.callbacks.finetuning import StagedFinetuning
from .practices.averaging import outputs_from_activations
from .practices.mixing import build_mixing
from .models.encoders import build_encoder
from .models.fusion import build_fusion
from .models.network import Network
from .practices.param_groups import check_finetune_args, find_backbone, param_groups
from .practices.provenance import provenance
from .practices.schedules import Schedule, stepping
from .tasks import build_task
from .practices.tta import check_tta, tta_activations


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
        label_smoothing: multiclass: cross-entropy label smoothing (0 = off); also smooths mixup / cutmix targets.
        mixup_alpha: image classification: mixup of training batches, lam ~ Beta(alpha, alpha), e.g. 0.2-0.8;
            0 = off (mixing.py: timm's Mixup, the task's soft-target loss, metrics on the hard labels).
        cutmix_alpha: image classification: cutmix of training batches, e.g. 1.0; 0 = off.
        mixup_prob: share of training batches mixed (with both alphas > 0, each uses one of the two, 50/50).
        mixup_off_epoch: no mixing from this epoch on (train the last epochs on clean images); None: never.
        pos_weight: binary: weight of positive samples in the loss, e.g. n_negative / n_positive for rare positives.
        regression_loss: regression: "mse" or "huber" (less sensitive to outliers).
        dice_weight: segmentation: weight of the Dice loss added to the cross-entropy.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay, applied to weights only (not to biases or normalization layers).
        schedule: the LR schedule, stepped every optimizer step (schedules.py): "cosine" (linear warmup, then
            cosine decay), "onecycle", "sgdr" (cosine with warm restarts), "step" or "constant".
        warmup_fraction: warmup length as a fraction of all optimizer steps (used when the two below are null).
        warmup_steps: warmup length in optimizer steps.
        warmup_epochs: warmup length in epochs (not both warmup_steps and warmup_epochs).
        min_lr_ratio: cosine, onecycle and each sgdr cycle end at lr * min_lr_ratio.
        restart_epochs: sgdr: length of the first cycle in epochs.
        restart_mult: sgdr: each cycle is this many times longer than the one before.
        step_epochs: step: multiply the LR by step_gamma every step_epochs epochs.
        step_gamma: step: the decay factor.
        finetune: the image backbone: "finetune" (every layer trains), "frozen" (a fixed feature extractor:
            no gradients, eval mode) or "gradual" (the head alone first, then one backbone stage at a time,
            the last first; callbacks/finetuning.py).
        unfreeze_after: gradual: epochs of head-only training before the first backbone stage unfreezes.
        unfreeze_every: gradual: epochs between unfreezing two stages.
        lr_ratio: discriminative LRs: each backbone stage (timm's stage groups) trains at the LR of the next
            stage divided by lr_ratio, the last stage at lr / lr_ratio, the head and new layers at lr (optim.py).
            1 = one LR for all; 3 to 10 is usual when fine-tuning pretrained weights.
        layer_decay: timm-style layer-wise LR decay instead of lr_ratio: timm's finer block groups at
            lr * layer_decay ** depth (e.g. 0.75); null = off.
        freeze_bn: keep the backbone's BatchNorm running statistics fixed (eval mode) while it fine-tunes.
        channels_last: NHWC memory layout for the network and its image inputs (faster convolutions with
            mixed precision on tensor-core GPUs; usually slower on CPUs).
        compile: `torch.compile` the network (the first steps are slow while it compiles; checkpoints keep
            the same keys, so they load with or without it).
        tta: test-time augmentation at test and predict (image inputs): null, "flip" or "flip_crops" (tta.py).
            Not saved with the hyperparameters, so a checkpoint never overrides the command line's choice.
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
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_off_epoch: int | None = None,
        pos_weight: float | None = None,
        regression_loss: str = "mse",
        dice_weight: float = 1.0,
        lr: float = 3e-4,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.01,
        schedule: str = "cosine",
        warmup_steps: int | None = None,
        warmup_epochs: float | None = None,
        restart_epochs: int = 10,
        restart_mult: int = 1,
        step_epochs: int = 10,
        step_gamma: float = 0.1,
        finetune: str = "finetune",
        unfreeze_after: int = 1,
        unfreeze_every: int = 1,
        lr_ratio: float = 1.0,
        layer_decay: float | None = None,
        freeze_bn: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        tta: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["tta"])
        inputs = inputs or {"image": {}}  # filled in from the data by the CLI; an image classifier when built bare
        self.tta = check_tta(tta, inputs)
        self.task = build_task(
            task,
            class_names or ["0", "1"],
            target_stats=target_stats,
            label_smoothing=label_smoothing,
            pos_weight=pos_weight,
            loss=regression_loss,
            dice_weight=dice_weight,
        )
        self.network = self._build_network(inputs)
        self.mixing = build_mixing(
            task, self.task.num_outputs, inputs, mixup_alpha, cutmix_alpha, mixup_prob,
            mixup_off_epoch, label_smoothing,
        )  # fmt: skip
        self.lr_schedule = Schedule(  # checks the schedule's values now, not when training starts
            name=schedule,
            warmup_fraction=warmup_fraction,
            warmup_steps=warmup_steps,
            warmup_epochs=warmup_epochs,
            min_lr_ratio=min_lr_ratio,
            restart_epochs=restart_epochs,
            restart_mult=restart_mult,
            step_epochs=step_epochs,
            step_gamma=step_gamma,
        )
        has_backbone = find_backbone(self.network) is not None
        check_finetune_args(has_backbone, finetune, lr_ratio, layer_decay, freeze_bn, unfreeze_after, unfreeze_every)
        self.train_metrics = self.task.metrics().clone(prefix="train/")
        self.val_metrics = self.task.metrics().clone(prefix="val/")
        self.test_metrics = self.task.metrics().clone(prefix="test/")
        self.test_tta_metrics = self.task.metrics().clone(prefix="test_tta/")

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

    def on_fit_start(self) -> None:
        hp, datamodule = self.hparams, getattr(self.trainer, "datamodule", None)
        if "image" in (hp.inputs or {"image": {}}) and (hp.pretrained or hp.pretrained_file) and datamodule is not None:
            from .models.encoders.image import input_size_mismatch

            warning = input_size_mismatch(hp.backbone, datamodule.hparams.get("image_size"))
            if warning:
                rank_zero_warn(warning)

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
        soft_target = None
        if stage == "train" and self.mixing:  # mixup / cutmix: mixed images, soft targets (None: not mixed)
            batch, soft_target = self.mixing(batch, self.current_epoch)
        outputs = self(batch)
        if soft_target is None:
            loss = self.task.loss(outputs, batch["target"])
        else:
            loss = self.task.soft_loss(outputs, soft_target)
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
        loss = self._shared_step(batch, "test")
        if self.tta:  # the same batch averaged over augmented views, reported next to test/* as test_tta/*
            outputs = outputs_from_activations(self.task, tta_activations(self, batch, self.tta))
            self.test_tta_metrics.update(*self.task.metric_inputs(outputs, batch["target"]))
            self.log_dict(self.test_tta_metrics, on_step=False, on_epoch=True, batch_size=len(batch["target"]))
        return loss

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        activated = tta_activations(self, batch, self.tta) if self.tta else self.task.activation(self(batch))
        return {"id": batch["id"], "outputs": activated.float().cpu()}

    def configure_optimizers(self) -> dict[str, Any]:
        # Weight decay on weights only; backbone stages at discriminative LRs; all groups from the start (optim.py).
        hp = self.hparams
        groups = param_groups(
            self, find_backbone(self.network), hp.lr, hp.weight_decay, lr_ratio=hp.lr_ratio, layer_decay=hp.layer_decay
        )
        optimizer = torch.optim.AdamW(groups, lr=hp.lr)
        scheduler = self.lr_schedule.build(optimizer, *stepping(self.trainer))
        # interval="step": Lightning's default is per epoch, which would hold warmup for a whole epoch.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self) -> list[pl.Callback]:
        # Frozen / gradually unfrozen backbone stages and frozen BatchNorm statistics.
        hp = self.hparams
        if hp.finetune == "finetune" and not hp.freeze_bn:
            return []
        return [StagedFinetuning(hp.finetune, hp.unfreeze_after, hp.unfreeze_every, hp.freeze_bn)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What is needed to reproduce this checkpoint: code version and data identity.
        checkpoint["provenance"] = provenance(getattr(self.trainer, "datamodule", None))
        # The logger runs (W&B run id, TensorBoard/CSV version) a resumed fit continues instead of starting anew.
        checkpoint["logger_versions"] = [logger.version for logger in self.trainer.loggers]
