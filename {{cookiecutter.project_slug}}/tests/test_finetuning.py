"""Fine-tuning a backbone (practices/param_groups.py, practices/callbacks/finetuning.py): parameter groups and
discriminative LRs, and, epoch
by epoch through real fits, which parameters train, at which LR, with frozen BatchNorm statistics, and after a
resume from a mid-run checkpoint."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import MODE, MONITOR, cli_args, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.data.datamodule import DataModule
from {{ cookiecutter.package_name }}.errors import ProjectError
from {{ cookiecutter.package_name }}.practices.param_groups import backbone_stages, find_backbone, param_groups

needs_image = pytest.mark.skipif("image" not in MODALITIES, reason="fine-tuning modes need an image backbone")


@pytest.fixture(scope="module")
def data(tiny_data: Path) -> DataModule:
    data = project_datamodule(tiny_data)
    data.setup("fit")
    return data


@pytest.fixture(scope="module")
def model(data: DataModule) -> pl.LightningModule:
    return project_model(data)


def built_optimizer(data: DataModule, lr: float, weight_decay: float, **overrides: object) -> torch.optim.Optimizer:
    """The optimizer the Model builds over its parameter groups (AdamW at `lr`, no schedule)."""
    optimizer = partial(torch.optim.AdamW, lr=lr, weight_decay=weight_decay)
    model = project_model(data, optimizer=optimizer, lr_scheduler=None, **overrides)
    return model.configure_optimizers()["optimizer"]


def test_weight_decay_only_on_weights_and_every_parameter_once(model: pl.LightningModule, data: DataModule) -> None:
    groups = param_groups(model, find_backbone(model.network))
    params = [p for group in groups for p in group["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))
    for group in groups:
        assert all((p.ndim <= 1) == group["name"].endswith("_no_decay") for p in group["params"])
    assert {group["lr_scale"] for group in groups} == {1.0}  # lr_ratio 1: one LR
    # The configured optimizer's weight decay applies to the weights only, its LR to every group.
    optimizer = built_optimizer(data, lr=1e-3, weight_decay=0.05)
    assert [group["name"] for group in optimizer.param_groups] == [group["name"] for group in groups]
    for group in optimizer.param_groups:
        assert group["weight_decay"] == (0.0 if group["name"].endswith("_no_decay") else 0.05)
    assert {group["lr"] for group in optimizer.param_groups} == {1e-3}


@pytest.mark.skipif("image" in MODALITIES, reason="this project has an image backbone")
@pytest.mark.parametrize("setting", [{"lr_ratio": 3.0}, {"layer_decay": 0.7}])
def test_backbone_settings_fail_clearly_without_a_backbone(data: DataModule, setting: dict) -> None:
    with pytest.raises(ProjectError, match="model.lr_ratio / model.layer_decay need a pretrained backbone"):
        project_model(data, **setting)


@pytest.mark.skipif("image" in MODALITIES, reason="this project has an image backbone")
@pytest.mark.parametrize("setting", [["--finetuning.mode", "frozen"], ["--finetuning.freeze_bn", "true"]])
def test_finetuning_is_not_a_section_without_a_backbone(
    setting: list[str], tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Fine-tuning recipes need an image backbone: projects without images have no `finetuning:` section.
    with pytest.raises(SystemExit) as done:
        main(cli_args("fit", tiny_data, tmp_path / "runs", *setting))
    assert done.value.code not in (0, None)
    assert "finetuning" in capsys.readouterr().err


@needs_image
def test_discriminative_lrs_follow_timms_stage_groups(model: pl.LightningModule, data: DataModule) -> None:
    from {{ cookiecutter.package_name }}.practices.callbacks.finetuning import StagedFinetuning

    backbone = find_backbone(model.network)
    stages = backbone_stages(backbone)
    assert [names[0].split(".")[0] for names in stages] == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    groups = param_groups(model, backbone, lr_ratio=10.0)
    scales = {group["name"]: group["lr_scale"] for group in groups}
    assert scales["head"] == scales["head_no_decay"] == 1.0
    for index in range(len(stages)):  # the last stage one step below the head, the stem five
        assert scales[f"backbone_{index}"] == pytest.approx(1 / 10 ** (len(stages) - index))
    # The Model multiplies the scales into the configured optimizer's LR.
    optimizer = built_optimizer(data, lr=1e-2, weight_decay=0.05, lr_ratio=10.0)
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs["head"] == lrs["head_no_decay"] == 1e-2
    for index in range(len(stages)):
        assert lrs[f"backbone_{index}"] == pytest.approx(1e-2 / 10 ** (len(stages) - index))
    decayed = built_optimizer(data, lr=1e-2, weight_decay=0.05, layer_decay=0.5)
    assert {g["name"]: g["lr"] for g in decayed.param_groups}["backbone_0"] == pytest.approx(1e-2 * 0.5 ** len(stages))
    with pytest.raises(ProjectError, match="finetuning.mode='partial' is not one of finetune, frozen, gradual"):
        StagedFinetuning(mode="partial")
    with pytest.raises(ProjectError, match="set only one"):
        project_model(data, lr_ratio=3.0, layer_decay=0.7)


class EpochRecord(pl.Callback):
    """Per epoch, at its first optimizer step: each group's LR, which groups require and got gradients, and
    whether the backbone's BatchNorms are in train mode; the backbone's state at the start and end of the fit."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict] = {}
        self.states: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:  # noqa: ANN001
        if trainer.current_epoch in self.epochs:
            return
        groups = optimizer.param_groups
        norms = [m for m in find_backbone(pl_module.network).modules() if isinstance(m, _BatchNorm)]
        self.epochs[trainer.current_epoch] = {
            "lr": {g["name"]: g["lr"] for g in groups},
            "requires_grad": {g["name"]: all(p.requires_grad for p in g["params"]) for g in groups},
            "has_grad": {g["name"]: any(p.grad is not None for p in g["params"]) for g in groups},
            "bn_training": {m.training for m in norms},
        }

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.states.append(backbone_state(pl_module))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.states.append(backbone_state(pl_module))


def backbone_state(pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in find_backbone(pl_module.network).state_dict().items()}


class StopAfter(pl.Callback):
    """Ends the fit after `epoch` (0-based), as an interrupted run would, with last.ckpt written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


QUIET = ["--trainer.logger", "false", "--trainer.callbacks", "[]"]
QUIET += ["--checkpoint.monitor", f"val/{MONITOR}", "--checkpoint.mode", MODE]
FEW = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
GRADUAL = ["--finetuning.mode", "gradual", "--finetuning.unfreeze_after", "1", "--model.lr_ratio", "3"]


def callback_arg(name: str, **init_args: object) -> str:
    return "--trainer.callbacks+=" + json.dumps({"class_path": f"{__name__}.{name}", "init_args": init_args})


def fit(data: Path, runs: Path, *extra: str) -> tuple[EpochRecord, pl.Trainer]:
    cli = main(cli_args("fit", data, runs, *QUIET, *FEW, callback_arg("EpochRecord"), *extra, logger=None))
    (record,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "EpochRecord"]
    return record, cli.trainer


@pytest.fixture(scope="module")
def gradual_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> EpochRecord:
    record, _ = fit(tiny_data, tmp_path_factory.mktemp("gradual"), *GRADUAL, "--trainer.max_epochs", "3")
    return record


@needs_image
def test_gradual_unfreezes_one_stage_per_epoch_last_first(gradual_run: EpochRecord) -> None:
    # test_resnet has 5 stage groups; head only in epoch 0, then layer4, then layer3 + layer4.
    trained = {0: [], 1: [4], 2: [3, 4]}
    for epoch, stages in trained.items():
        record = gradual_run.epochs[epoch]
        for index in range(5):
            for name in (f"backbone_{index}", f"backbone_{index}_no_decay"):
                assert record["requires_grad"][name] == record["has_grad"][name] == (index in stages), (epoch, name)
        assert record["requires_grad"]["head"] and record["has_grad"]["head"]
        # Frozen stages' BatchNorms are in eval mode, the unfrozen ones' in train mode.
        assert record["bn_training"] == ({False, True} if stages else {False})
        lrs = record["lr"]
        for index in range(5):  # discriminative LRs under the schedule: each stage a third of the next
            assert lrs[f"backbone_{index}"] / lrs["head"] == pytest.approx(3.0 ** -(5 - index))
    assert gradual_run.epochs[1]["lr"]["head"] != gradual_run.epochs[2]["lr"]["head"]  # the schedule moves on
    before, after = gradual_run.states
    assert torch.equal(before["layer1.0.conv1.weight"], after["layer1.0.conv1.weight"])  # never unfrozen
    assert torch.equal(before["layer1.0.bn1.running_mean"], after["layer1.0.bn1.running_mean"])
    assert not torch.equal(before["layer4.0.conv1.weight"], after["layer4.0.conv1.weight"])


@needs_image
@pytest.mark.parametrize(
    ("setting", "weights_train"), [(["--finetuning.mode", "frozen"], False), (["--finetuning.freeze_bn", "true"], True)]
)
def test_frozen_batchnorm_statistics_do_not_move(
    setting: list[str], weights_train: bool, tiny_data: Path, tmp_path: Path
) -> None:
    record, _ = fit(tiny_data, tmp_path / "runs", *setting, "--trainer.max_epochs", "1")
    before, after = record.states
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    weights = [k for k in before if k.endswith("conv1.weight")]
    assert any(not torch.equal(before[k], after[k]) for k in weights) == weights_train
    assert record.epochs[0]["bn_training"] == {False}
    assert record.epochs[0]["has_grad"]["head"] and record.epochs[0]["has_grad"]["backbone_0"] == weights_train


@needs_image
def test_resume_mid_run_keeps_the_frozen_stages_and_the_lr(
    gradual_run: EpochRecord, tiny_data: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    # The same 3-epoch run, interrupted after epoch 1, then resumed from its last.ckpt. (Lightning refreshes
    # last.ckpt only on epochs that save a top-k checkpoint: keep every epoch's.)
    every_epoch = ["--checkpoint.save_top_k", "-1"]
    fit(tiny_data, runs, *GRADUAL, *every_epoch, "--trainer.max_epochs", "3", callback_arg("StopAfter", epoch=1))
    # A stop is a finished fit (its summary.json says so); a killed one writes no summary: make it one.
    next(runs.glob("*/summary.json")).unlink()
    resumed, trainer = fit(tiny_data, runs, *GRADUAL, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    assert list(resumed.epochs) == [2] and trainer.current_epoch == 3
    expected = gradual_run.epochs[2]
    assert resumed.epochs[2]["requires_grad"] == expected["requires_grad"]
    assert resumed.epochs[2]["has_grad"] == expected["has_grad"]
    assert resumed.epochs[2]["lr"] == pytest.approx(expected["lr"])
