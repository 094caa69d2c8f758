"""Training monitors (gradient norms, update ratios, dead ReLUs, histograms, NaN stop), the overfit verdict and
the prediction writer."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from conftest import cli_args
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.practices.callbacks.monitors import TrainingMonitors, layer_groups, relu_groups
from {{ cookiecutter.package_name }}.practices.callbacks.overfit import OverfitCheck
from {{ cookiecutter.package_name }}.practices.callbacks.prediction_writer import CSVPredictionWriter
from {{ cookiecutter.package_name }}.tasks import build_task


class InjectNaN(pl.Callback):
    """Poisons the network's outputs in the training steps of the given epoch, as a diverging layer would."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # The steps call the network's halves (forward_features, forward_head), not its forward: poison the head.
        forward_head = pl_module.network.forward_head

        def poisoned(features: Any) -> torch.Tensor:
            output = forward_head(features)
            if trainer.training and trainer.current_epoch == self.epoch:
                return output * float("nan")
            return output

        pl_module.network.forward_head = poisoned


class TinyClassifier(pl.LightningModule):
    """Linear -> ReLU -> Linear on 6 features: trains in a blink, and each part is a layer group."""

    def __init__(self, loss_scale: float = 1.0, hidden_bias: float = 0.0, lr: float = 0.1):
        super().__init__()
        self.hidden = nn.Linear(6, 32)
        self.act = nn.ReLU()
        self.out = nn.Linear(32, 3)
        nn.init.constant_(self.hidden.bias, hidden_bias)
        self.loss_scale, self.lr = loss_scale, lr

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.out(self.act(self.hidden(batch["features"])))
        loss = nn.functional.cross_entropy(logits, batch["target"]) * self.loss_scale
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def tiny_loader(n: int = 32, batch_size: int = 8, single_class: bool = False) -> DataLoader:
    """Batches in the project's dict form; 3 classes learnable from two features (or class 0 only)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=generator)
    y = torch.zeros(n, dtype=torch.long) if single_class else (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return DataLoader([{"features": x[i], "target": y[i]} for i in range(n)], batch_size=batch_size)


def fit_tiny(
    module: pl.LightningModule, tmp_path: Path, callbacks: list, loader: DataLoader | None = None, **trainer_args
) -> pl.Trainer:
    args = {"max_epochs": 1, "log_every_n_steps": 1} | trainer_args
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **args,
    )
    trainer.fit(module, loader or tiny_loader())
    return trainer


def logged_rows(trainer: pl.Trainer) -> list[dict[str, str]]:
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as file:
        return list(csv.DictReader(file))


def test_project_model_logs_grad_norms_update_ratios_and_dead_units(tiny_data: Path, tmp_path: Path) -> None:
    extra = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *extra, "--trainer.log_every_n_steps", "1"))
    rows = logged_rows(cli.trainer)
    groups = layer_groups(cli.model)
    # Backbone stages, one group per input encoder, the fusion + head (or a segmentation decoder's parts).
    expected = {"fusion"} if hasattr(cli.model.network, "fusion") else {"classifier"}
    expected |= {f"encoders.{name}" for name in getattr(cli.model.network, "encoders", {}) if name != "image"}
    expected |= {"backbone.layer1", "backbone.layer4"} if "image" in MODALITIES else set()
    assert expected <= set(groups)
    for group in groups:
        norms = [float(r[f"grad_norm/{group}"]) for r in rows if r.get(f"grad_norm/{group}")]
        ratios = [float(r[f"update_ratio/{group}"]) for r in rows if r.get(f"update_ratio/{group}")]
        assert len(norms) == 2 and all(0 < n < math.inf for n in norms), group
        assert len(ratios) == 2 and all(0 < r < 1 for r in ratios), group  # AdamW moves every group a little
    # Dead units: only where the model has ReLUs (the image backbone, a decoder); GELU MLPs, GRUs have none.
    relu_parts = set(relu_groups(cli.model, groups).values())
    assert bool(relu_parts) is ("image" in MODALITIES)
    for group in relu_parts:
        dead = [float(r[f"dead_units/{group}"]) for r in rows if r.get(f"dead_units/{group}")]
        assert len(dead) == 2 and all(0 <= d <= 1 for d in dead)
    assert "grad_norm/total" in cli.trainer.callback_metrics


class SequenceTagger(pl.LightningModule):
    """Embedding -> GRU -> Transformer layer -> LayerNorm -> ReLU feed-forward on [B, T, D], masked mean pool."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16, padding_idx=0)
        self.rnn = nn.GRU(16, 8, batch_first=True, bidirectional=True)
        self.attention = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.ffn = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
        self.out = nn.Linear(16, 3)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        values, mask = batch["sequence"]["values"], batch["sequence"]["mask"]
        x = self.rnn(self.embed(values))[0]
        x = self.ffn(self.norm(self.attention(x, src_key_padding_mask=~mask)))
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        loss = nn.functional.cross_entropy(self.out(pooled), batch["target"])
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)


def test_recurrent_and_attention_models_are_monitored(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 7, (16,), generator=generator)
    mask = torch.arange(6)[None] < lengths[:, None]
    values = torch.randint(1, 20, (16, 6), generator=generator) * mask
    samples = [{"sequence": {"values": values[i], "mask": mask[i]}, "target": lengths[i] % 3} for i in range(16)]
    trainer = fit_tiny(SequenceTagger(), tmp_path, [TrainingMonitors()], DataLoader(samples, batch_size=4))
    metrics = trainer.callback_metrics
    for group in ("embed", "rnn", "attention", "norm", "ffn", "out"):
        assert 0 < float(metrics[f"grad_norm/{group}"]) < math.inf and float(metrics[f"update_ratio/{group}"]) > 0
    assert 0 <= float(metrics["dead_units/ffn"]) <= 1  # the ReLU's 16 channels over batch and steps


@pytest.mark.parametrize(
    "target",
    [
        torch.tensor([2, 2, 2]),  # multiclass
        torch.tensor([1.0, 1.0, 1.0]),  # binary
        torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]),  # multilabel
        torch.zeros(3, 4, 4, dtype=torch.int64),  # segmentation: the same mask
    ],
)
def test_overfit_check_warns_on_a_batch_with_one_target_for_every_task(target: torch.Tensor) -> None:
    with pytest.warns(UserWarning, match="the batch holds a single class"):
        OverfitCheck().on_train_batch_start(None, None, {"target": target}, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixed = (
            torch.cat([target[:2], 1 - target[2:]])
            if target.is_floating_point()
            else torch.cat([target[:2], target[2:] + 1])
        )
        OverfitCheck().on_train_batch_start(None, None, {"target": mixed}, 0)


def test_nan_loss_stops_the_run_with_one_line_and_last_checkpoint_intact(tiny_data: Path, tmp_path: Path) -> None:
    poison = '{"class_path": "test_monitors.InjectNaN", "init_args": {"epoch": 1}}'
    extra = ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    with pytest.raises(SystemExit) as stopped:
        main(cli_args("fit", tiny_data, tmp_path / "runs", *extra, f"--trainer.callbacks+={poison}"))
    message = str(stopped.value.code)
    (run,) = (tmp_path / "runs").iterdir()
    last = run / "checkpoints" / "last.ckpt"
    assert "\n" not in message
    assert "training loss is NaN at global step 2 (epoch 1, batch 0)" in message
    assert f"last good checkpoint: {last}" in message

    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 2  # written at the end of epoch 0, not after
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values() if t.is_floating_point())


@pytest.mark.parametrize(("loss_scale", "expected"), [(1e6, "exploding gradients"), (1e-12, "vanishing gradients")])
def test_gradient_norm_far_out_of_range_warns_once(loss_scale: float, expected: str, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=expected) as record:
        fit_tiny(TinyClassifier(loss_scale=loss_scale), tmp_path, [TrainingMonitors()])
    assert len([w for w in record.list if expected in str(w.message)]) == 1  # 4 steps, one warning


def test_healthy_training_raises_no_monitor_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_tiny(TinyClassifier(), tmp_path, [TrainingMonitors()])
    assert not [w for w in caught if str(w.message).startswith("training monitor:")]


def test_dead_units_are_measured_on_logging_steps_only(tmp_path: Path) -> None:
    # A bias of -100 puts every hidden ReLU below zero for every input: all units dead.
    trainer = fit_tiny(TinyClassifier(hidden_bias=-100.0), tmp_path, [TrainingMonitors()], log_every_n_steps=2)
    dead = {int(r["step"]): float(r["dead_units/hidden"]) for r in logged_rows(trainer) if r.get("dead_units/hidden")}
    assert dead == {1: 1.0, 3: 1.0}  # 4 steps, logged on every second one
    trainer = fit_tiny(TinyClassifier(), tmp_path / "healthy", [TrainingMonitors()])
    assert float(trainer.callback_metrics["dead_units/hidden"]) < 0.5


def test_histograms_reach_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=TensorBoardLogger(tmp_path),
        callbacks=[TrainingMonitors(histogram_every_n_steps=2)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyClassifier(), tiny_loader())
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"histograms": 0}).Reload()  # 0: keep all
    assert {"weights/hidden", "weights/out", "grads/hidden", "grads/out"} <= set(events.Tags()["histograms"])
    assert [e.step for e in events.Histograms("grads/out")] == [0, 2]


@pytest.mark.parametrize(("lr", "epochs", "verdict"), [(0.1, 12, "PASS"), (0.0, 3, "FAIL")])
def test_overfit_check_prints_the_verdict(lr: float, epochs: int, verdict: str, tmp_path: Path, capsys) -> None:
    check = OverfitCheck(threshold=0.05)
    fit_tiny(TinyClassifier(lr=lr), tmp_path, [check], overfit_batches=1, max_epochs=epochs)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("overfit one batch"))
    assert line.startswith(f"overfit one batch: {verdict} (loss ")
    assert check.passed is (verdict == "PASS")
    if verdict == "FAIL":
        assert "the model, the loss or the labels are broken" in line


def test_overfit_check_warns_when_the_batch_holds_one_class(tmp_path: Path, capsys) -> None:
    with pytest.warns(UserWarning, match="the batch holds a single class"):
        loader = tiny_loader(single_class=True)
        fit_tiny(TinyClassifier(), tmp_path, [OverfitCheck()], loader, overfit_batches=1, max_epochs=20)
    assert "this says little" in capsys.readouterr().out


def test_prediction_writer_writes_the_task_columns_and_segmentation_masks(tmp_path: Path) -> None:
    task = build_task(TASK_TYPE, ["background", "circle", "square"] if TASK_TYPE != "binary" else ["no", "yes"])
    masks = hasattr(task, "prediction_mask")  # segmentation
    torch.manual_seed(0)
    batches = [
        {"id": ids, "outputs": task.activation(torch.randn(len(ids), task.num_outputs, *((4, 6) if masks else ())))}
        for ids in (["test.csv:2", "test.csv:3"], ["test.csv:4"])
    ]
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), world_size=1, global_rank=0, is_global_zero=True)
    writer = CSVPredictionWriter()
    writer.write_on_epoch_end(trainer, SimpleNamespace(task=task), batches, [])
    with open(tmp_path / "predictions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["id"] for row in rows] == ["test.csv:2", "test.csv:3", "test.csv:4"]
    expected = task.prediction_rows(batches[0]["outputs"])[0]
    assert list(rows[0]) == ["id", *expected, *(["mask_file"] if masks else [])]
    assert (tmp_path / "predicted_masks").is_dir() is masks
    if masks:
        assert rows[2]["mask_file"] == "predicted_masks/test.csv_4.png"
        saved = np.asarray(Image.open(tmp_path / rows[2]["mask_file"]))
        assert saved.dtype == np.uint8 and np.array_equal(saved, batches[1]["outputs"][0].argmax(0).numpy())
