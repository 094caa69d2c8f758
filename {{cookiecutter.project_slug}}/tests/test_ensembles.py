"""Ensembles for free (EMA, SWA, snapshot ensembles) and test-time augmentation, from the command lines the README
shows. Weight averages are checked against averages this test computes itself from the weights it records."""

from __future__ import annotations

import csv
import json
import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from conftest import MONITOR, cli_args, default_config, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.errors import ProjectError
from {{ cookiecutter.package_name }}.module import Model
from {{ cookiecutter.package_name }}.practices.averaging import outputs_from_activations
from {{ cookiecutter.package_name }}.practices.callbacks.ensembles import EMA, Ensembles
from {{ cookiecutter.package_name }}.practices.evaluation import eval_dataset, eval_loader
from {{ cookiecutter.package_name }}.tasks import build_task

FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
needs_image = pytest.mark.skipif("image" not in MODALITIES, reason="test-time augmentation augments image inputs")

Weights = dict[str, torch.Tensor]


def parameters(module: nn.Module) -> Weights:
    return {name: param.detach().clone() for name, param in module.named_parameters()}


def assert_weights_close(actual: Weights, expected: Weights, atol: float = 1e-6) -> None:
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, atol=atol, rtol=1e-5, msg=name)


def max_difference(a: Weights, b: Weights) -> float:
    return max(float((a[name] - b[name]).abs().max()) for name in b)


class WeightRecorder(pl.Callback):
    """The parameters after every optimizer step, at every epoch start and at every validation.

    Listed after the averaging callback, so it sees the model as that callback leaves it in each hook.
    """

    def __init__(self) -> None:
        self.steps: list[Weights] = []
        self.epoch_starts: dict[int, Weights] = {}
        self.validations: list[tuple[int, Weights]] = []  # (optimizer steps so far, weights validated)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        self.steps.append(parameters(pl_module))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_starts[trainer.current_epoch] = parameters(pl_module)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validations.append((len(self.steps), parameters(pl_module)))


def fit_in_process(tiny_data: Path, tmp_path: Path, callbacks: list[pl.Callback], epochs: int) -> pl.LightningModule:
    data = project_datamodule(tiny_data)
    # Large steps: the averages differ clearly from the weights. The configured optimizer, at another LR.
    optimizer = default_config("model")["init_args"]["optimizer"]["init_args"]
    model = project_model(data, optimizer=partial(torch.optim.AdamW, **{**optimizer, "lr": 0.01}))
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[*callbacks, ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)],
    )
    trainer.fit(model, datamodule=data)
    return model


def independent_ema(steps: list[Weights], decay: float) -> Weights:
    """The first update copies the weights, each later one is decay * average + (1 - decay) * weights."""
    average = dict(steps[0])
    for weights in steps[1:]:
        average = {name: decay * average[name] + (1 - decay) * weights[name] for name in average}
    return average


def test_ema_is_what_validation_and_the_checkpoint_use(tiny_data: Path, tmp_path: Path) -> None:
    decay, recorder = 0.5, WeightRecorder()
    model = fit_in_process(tiny_data, tmp_path, [*Ensembles(ema_decay=decay).callbacks(), recorder], epochs=2)
    assert len(recorder.steps) == 6 and len(recorder.validations) == 2
    for steps_so_far, validated in recorder.validations:
        assert_weights_close(validated, independent_ema(recorder.steps[:steps_so_far], decay))
    average, raw = independent_ema(recorder.steps, decay), recorder.steps[-1]
    assert max_difference(average, raw) > 1e-4  # the average is not the last weights
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert_weights_close(checkpoint["state_dict"], average)
    assert_weights_close(checkpoint["current_model_state"], raw)  # what a resumed fit continues from
    assert_weights_close(parameters(model), average)  # after fit the model holds the average


def test_ema_from_the_command_line_with_the_project_callbacks_and_resume(tiny_data: Path, tmp_path: Path) -> None:
    runs, ema = tmp_path / "runs", ["--ensembles.ema_decay", "0.5"]
    first = main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, *ema, "--trainer.max_epochs", "1"))
    best = first.trainer.checkpoint_callback.best_model_path  # chosen by satisficing/score on the EMA weights
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    assert max_difference(checkpoint["state_dict"], checkpoint["current_model_state"]) > 0
    diagnosis = json.loads((first.run_dir / "diagnosis.json").read_text())
    assert diagnosis["weights"] == best  # the diagnosis evaluated the averaged weights
    resumed = main(
        cli_args("fit", tiny_data, runs, *FEW_BATCHES, *ema, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    )
    assert resumed.trainer.global_step == 4
    callback = next(c for c in resumed.trainer.callbacks if isinstance(c, EMA))
    assert int(callback._average_model.n_averaged) == 4  # 2 updates restored + 2 new: the average continued


def test_swa_averages_the_epoch_weights(tiny_data: Path, tmp_path: Path) -> None:
    recorder = WeightRecorder()
    swa = Ensembles(swa_lrs=0.05, swa_epoch_start=2, swa_annealing_epochs=1).callbacks()
    model = fit_in_process(tiny_data, tmp_path, [*swa, recorder], epochs=3)
    # Lightning averages the weights at the start of each epoch from swa_epoch_start (1-based: epoch index 1) on.
    averaged = [recorder.epoch_starts[1], recorder.epoch_starts[2]]
    assert max_difference(*averaged) > 1e-4
    mean = {name: (averaged[0][name] + averaged[1][name]) / 2 for name in averaged[0]}
    assert_weights_close(parameters(model), mean, atol=1e-5)
    saved = torch.load(tmp_path / "checkpoints" / "swa.ckpt", map_location="cpu", weights_only=False)
    assert_weights_close(saved["state_dict"], mean, atol=1e-5)
    result = json.loads((tmp_path / "swa.json").read_text())
    assert result["averaged_epochs"] == 2 and MONITOR in result["val"]


def test_swa_from_the_command_line_writes_its_checkpoint_and_score(tiny_data: Path, tmp_path: Path) -> None:
    swa = ["--ensembles.swa_lrs", "1e-4", "--ensembles.swa_epoch_start", "1"]
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, *swa, "--trainer.max_epochs", "2"))
    result = json.loads((cli.run_dir / "swa.json").read_text())
    assert result["averaged_epochs"] == 2 and Path(result["checkpoint"]).is_file()
    assert math.isfinite(result["val"][MONITOR])


def test_snapshot_ensemble_from_the_command_line(tiny_data: Path, tmp_path: Path) -> None:
    sgdr = ["--model.lr_scheduler.name", "sgdr", "--model.lr_scheduler.restart_epochs", "1"]
    sgdr += ["--model.lr_scheduler.restart_mult", "2"]
    snapshots = ["--ensembles.snapshots", "true", "--ensembles.snapshot_splits", "[val, test]"]
    cli = main(
        cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, *sgdr, *snapshots, "--trainer.max_epochs", "3")
    )
    # Cycles of 1 and 2 epochs end after epochs 1 and 3 (0-based 0 and 2).
    files = sorted((cli.run_dir / "checkpoints").glob("snapshot-*.ckpt"))
    assert [file.name for file in files] == ["snapshot-epoch00.ckpt", "snapshot-epoch02.ckpt"]
    snapshots = [torch.load(file, map_location="cpu", weights_only=False) for file in files]
    assert [snapshot["epoch"] for snapshot in snapshots] == [0, 2]
    assert_weights_close(snapshots[1]["state_dict"], parameters(cli.model))  # the last cycle ends with the fit
    result = json.loads((cli.run_dir / "snapshots.json").read_text())
    assert (cli.run_dir / "snapshots.md").read_text().count("| snapshot-epoch") == 2

    # Recompute: each snapshot's activations on every split, their mean, scored by the task's metrics.
    data = project_datamodule(tiny_data)
    members = [Model.load_from_checkpoint(file, map_location="cpu").eval() for file in files]
    task = members[0].task
    for split in ("val", "test"):
        metrics = {name: task.metrics() for name in ("snapshot-epoch00", "snapshot-epoch02", "ensemble")}
        with torch.no_grad():
            for batch in eval_loader(data, eval_dataset(data, split)):
                activations = []
                for name, member in zip(("snapshot-epoch00", "snapshot-epoch02"), members, strict=True):
                    outputs = member(batch)
                    metrics[name].update(*task.metric_inputs(outputs, batch["target"]))
                    activations.append(task.activation(outputs))
                mean = torch.stack(activations).mean(dim=0)
                metrics["ensemble"].update(*task.metric_inputs(outputs_from_activations(task, mean), batch["target"]))
        for name, metric in metrics.items():
            assert result["metrics"][split][name][MONITOR] == pytest.approx(float(metric.compute()[MONITOR]), abs=1e-5)


def test_averaged_activations_go_back_to_outputs_the_metrics_score_alike() -> None:
    stats = {"mean": [1.0, -2.0], "std": [2.0, 0.5]}
    task = build_task(
        TASK_TYPE, ["a", "b"] if TASK_TYPE in ("binary", "regression") else ["a", "b", "c"], target_stats=stats
    )
    torch.manual_seed(0)
    outputs = (
        torch.randn(4, task.num_outputs, 5, 5) if TASK_TYPE == "segmentation" else torch.randn(4, task.num_outputs)
    )
    activated = task.activation(outputs)
    torch.testing.assert_close(task.activation(outputs_from_activations(task, activated)), activated)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ema_decay": 1.5}, "ensembles.ema_decay=1.5"),
        ({"swa_lrs": 0.01, "ema_decay": 0.99}, "ensembles.swa_lrs cannot be combined"),
        ({"snapshots": True, "snapshot_splits": ["holdout"]}, "ensembles.snapshot_splits"),
    ],
)
def test_bad_ensemble_settings_fail_naming_the_key(settings: dict, message: str) -> None:
    with pytest.raises(ProjectError, match=message):
        Ensembles(**settings)


def test_weight_averaging_refuses_sharded_strategies() -> None:
    trainer = SimpleNamespace(strategy=type("FSDPStrategy", (), {})())
    with pytest.raises(ProjectError, match="ensembles.ema_decay averages whole models, which FSDPStrategy shards"):
        EMA(decay=0.9).setup(trainer, None, "fit")


def test_tta_is_refused_without_images_and_for_unknown_modes(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if "image" not in MODALITIES:  # no tta section in the config: the parser names the unknown key
        with pytest.raises(SystemExit):
            main(cli_args("test", tiny_data, tmp_path / "runs", "--tta.mode", "flip"))
        assert "unrecognized arguments: --tta.mode flip" in capsys.readouterr().err
        return
    from {{ cookiecutter.package_name }}.practices.tta import TestTimeAugmentation  # image projects only

    with pytest.raises(ProjectError, match="tta.mode='rotate' is not a test-time augmentation"):
        TestTimeAugmentation(mode="rotate")
    # A model of this project without its image input (e.g. the data's image column unset).
    with pytest.raises(ProjectError, match="tta.mode='flip' augments images; this model's inputs are tabular"):
        TestTimeAugmentation(mode="flip").setup(SimpleNamespace(), SimpleNamespace(inputs={"tabular": {}}), "test")
    with pytest.raises(SystemExit, match="error: tta.mode='rotate' is not a test-time augmentation"):
        main(cli_args("test", tiny_data, tmp_path / "runs", "--tta.mode", "rotate"))


@needs_image
@pytest.mark.skipif(TASK_TYPE == "segmentation", reason="per-pixel outputs are mirrored back: see the next test")
def test_flip_tta_of_a_mirror_symmetric_image_is_the_plain_prediction(tiny_data: Path) -> None:
    from {{ cookiecutter.package_name }}.practices.tta import tta_activations  # image projects only

    data = project_datamodule(tiny_data)
    model = project_model(data).eval()
    batch = next(iter(eval_loader(data, eval_dataset(data, "val"))))
    batch["image"] = (batch["image"] + batch["image"].flip(-1)) / 2
    with torch.no_grad():
        plain = model.task.activation(model(batch))
        torch.testing.assert_close(tta_activations(model, batch, "flip"), plain, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(tta_activations(model, batch, "flip_crops"), plain, atol=1e-5)


class PositionalNet(nn.Module):
    """Per-pixel logits that depend on a pixel's column, not only its value: not mirror-equivariant."""

    task = SimpleNamespace(activation=lambda outputs: outputs.softmax(dim=1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        image = batch["image"]
        ramp = torch.linspace(0, 4, image.shape[-1])
        return torch.stack([image[:, 0] + ramp, image[:, 1] - ramp, image[:, 2]], dim=1)


class PointwiseNet(PositionalNet):
    """Per-pixel logits from the pixel's value alone: mirroring or cropping the input moves the output alike."""

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return 2 * batch["image"]


@needs_image
def test_tta_maps_per_pixel_outputs_back_onto_the_image() -> None:
    from {{ cookiecutter.package_name }}.practices.tta import tta_activations  # image projects only

    torch.manual_seed(0)
    batch = {"image": torch.randn(2, 3, 16, 16)}
    net = PositionalNet()
    mirrored = net.task.activation(net({"image": batch["image"].flip(-1)}))
    plain = net.task.activation(net(batch))
    tta = tta_activations(net, batch, "flip")
    torch.testing.assert_close(tta, (plain + mirrored.flip(-1)) / 2)
    assert (tta - (plain + mirrored) / 2).abs().max() > 0.1  # without mirroring back it would differ
    # Crops are resized back and put where they came from: on a smooth image a pointwise net's average is the
    # plain output (up to bilinear resampling at the borders).
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    smooth = {"image": torch.stack([rows, cols, rows * 0.5 - cols], dim=0).unsqueeze(0)}
    pointwise = PointwiseNet()
    expected = pointwise.task.activation(pointwise(smooth))
    torch.testing.assert_close(tta_activations(pointwise, smooth, "flip_crops"), expected, atol=0.005, rtol=0)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@needs_image
def test_tta_at_test_and_predict_from_the_command_line(tiny_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, "--trainer.max_epochs", "1"))
    tested = main(cli_args("test", tiny_data, runs, "--ckpt_path", "best", "--tta.mode", "flip"))
    metrics = json.loads((tested.run_dir / "test_metrics.json").read_text())
    assert {f"test/{MONITOR}", f"test_tta/{MONITOR}"} <= set(metrics)  # side by side
    plain = main(cli_args("predict", tiny_data, runs, "--ckpt_path", "best"))
    tta = main(cli_args("predict", tiny_data, runs, "--ckpt_path", "best", "--tta.mode", "flip_crops"))
    plain_rows, tta_rows = read_csv(plain.run_dir / "predictions.csv"), read_csv(tta.run_dir / "predictions.csv")
    assert len(tta_rows) == 12 and [row["id"] for row in tta_rows] == [row["id"] for row in plain_rows]
    assert plain_rows != tta_rows  # the averaged views predict other probabilities
