"""The commands a user runs, end to end: fit, resume, test, predict, and the errors they can hit."""

from __future__ import annotations

import csv
import http.server
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR

from conftest import CLASS_FOLDERS, CONFIGS, MONITOR, cli_args
from {{ cookiecutter.package_name }}.answers import MODALITIES
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.practices.loggers import wandb_offline_when_unavailable
from {{ cookiecutter.package_name }}.practices.param_groups import find_backbone, param_groups

PACKAGE = "{{ cookiecutter.package_name }}"
FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", PACKAGE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_fast_dev_run_fit_and_test(tiny_data: Path, tmp_path: Path) -> None:
    fast = ["--config", str(CONFIGS / "debug" / "fast_dev_run.yaml")]
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *fast))
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    cli = main(cli_args("test", tiny_data, tmp_path / "runs", *fast))
    score = float(cli.trainer.callback_metrics[f"test/{MONITOR}"])
    assert score >= 0.0 if MONITOR == "rmse" else 0.0 <= score <= 1.0


def test_resume_from_last_continues_the_step_count(tiny_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, "--trainer.max_epochs", "1"))
    assert first.trainer.global_step == 2
    last = first.run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()

    resumed = main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    assert resumed.trainer.global_step == 4  # 2 steps restored + 2 new, not 2 from scratch
    assert resumed.trainer.current_epoch == 2
    assert resumed.run_dir == first.run_dir  # the resumed run continues in its own folder
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 4
    assert set(checkpoint["provenance"]) >= {"git_commit", "data_fingerprint", "template_version"}


def test_last_checkpoint_follows_epochs_that_did_not_improve(tiny_data: Path, tmp_path: Path) -> None:
    # Monitoring the epoch number with mode min: no epoch after the first improves, only epoch 0 is a top-k file.
    worse_each_epoch = ["--checkpoint.monitor", "epoch", "--checkpoint.mode", "min"]
    fit = main(
        cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, "--trainer.max_epochs", "3", *worse_each_epoch)
    )
    last = torch.load(fit.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    best = torch.load(fit.trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=False)
    assert (best["epoch"], best["global_step"]) == (0, 2)
    assert (last["epoch"], last["global_step"]) == (2, 6)  # resuming from last repeats no epoch


def run_identity(cli) -> tuple:  # noqa: ANN001
    """W&B: the run id; TensorBoard/CSV: the version folder."""
    logger = cli.trainer.logger
    return logger.version, getattr(logger, "log_dir", None)


@pytest.mark.parametrize("logger", ["wandb", "csv"])
def test_resume_continues_the_same_logger_run(logger: str, tiny_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, "--trainer.max_epochs", "1", logger=logger))
    resumed = main(
        cli_args(
            "fit", tiny_data, runs, *FEW_BATCHES, "--trainer.max_epochs", "2", "--ckpt_path", "last", logger=logger
        )
    )
    assert run_identity(resumed) == run_identity(first)
    fresh = main(
        cli_args("fit", tiny_data, tmp_path / "other_runs", *FEW_BATCHES, "--trainer.max_epochs", "1", logger=logger)
    )
    assert run_identity(fresh) != run_identity(first)  # a new fit is a new logger run


def test_bf16_mixed_precision_trains_on_cpu(tiny_data: Path, tmp_path: Path) -> None:
    extra = ["--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "1"]
    if "image" in MODALITIES:
        extra += ["--model.channels_last", "true"]
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, *extra))
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    if "image" in MODALITIES:
        conv = next(m for m in cli.model.network.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_covers_the_training_steps_not_only_forward(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The steps call the network's halves (the loss may read the features), not its forward: `model.compile`
    # must reach them. torch.compile is replaced by a recorder (compiling on a CPU takes minutes).
    calls: dict[str, int] = {}

    def recording_compile(function, **options):  # noqa: ANN001, ANN003, ANN202
        def compiled(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            name = getattr(function, "__name__", type(function).__name__)
            calls[name] = calls.get(name, 0) + 1
            return function(*args, **kwargs)

        return compiled

    monkeypatch.setattr(torch, "compile", recording_compile)
    fast = ["--config", str(CONFIGS / "debug" / "fast_dev_run.yaml"), "--model.compile", "true"]
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *fast))
    assert cli.trainer.global_step == 1
    assert calls.get("network_parts", 0) >= 2  # the training step and the validation step


def test_top_level_optimizer_and_lr_scheduler_are_refused_naming_the_models_keys(
    tiny_data: Path, tmp_path: Path
) -> None:
    # LightningCLI's own --optimizer / --lr_scheduler would replace the model's optimizer: parameter groups,
    # schedule and fine-tuning would silently be gone.
    for flag, key in [("--optimizer", "model.optimizer"), ("--lr_scheduler", "model.lr_scheduler")]:
        with pytest.raises(SystemExit) as refused:
            main(cli_args("fit", tiny_data, tmp_path / "runs", flag, "torch.optim.SGD"))
        message = str(refused.value.code)
        assert message.startswith(f"error: {flag[2:]} is not a key") and key in message and "\n" not in message
    config = tmp_path / "sgd.yaml"
    config.write_text(yaml.safe_dump({"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}}))
    with pytest.raises(SystemExit, match="error: optimizer is not a key of this project: set model.optimizer"):
        main(cli_args("fit", tiny_data, tmp_path / "runs", f"--config={config}"))
    assert not (tmp_path / "runs").exists()  # refused before anything ran


SGD = ["--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.05", "--trainer.log_every_n_steps", "1"]


def logged_lrs(cli) -> dict[str, list[float]]:  # noqa: ANN001
    """LearningRateMonitor's lr-<optimizer>/<group> columns of the run's CSV log, one value per optimizer step."""
    with open(Path(cli.trainer.logger.log_dir) / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    columns = [name for name in rows[0] if name.startswith("lr-")]
    return {name: [float(row[name]) for row in rows if row[name]] for name in columns}


def test_sgd_from_the_command_line_trains_with_the_parameter_groups_and_the_schedule(
    tiny_data: Path, tmp_path: Path
) -> None:
    extra = ["--trainer.max_epochs", "1", "--model.optimizer.weight_decay", "0.01"]
    extra += ["--model.lr_ratio", "2"] if "image" in MODALITIES else []
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, *SGD, *extra))
    assert cli.trainer.global_step == 2
    (optimizer,) = cli.trainer.optimizers
    assert type(optimizer) is torch.optim.SGD
    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())["model"]["init_args"]["optimizer"]
    assert saved["class_path"] == "torch.optim.SGD"
    assert saved["init_args"]["lr"] == 0.05 and saved["init_args"]["weight_decay"] == 0.01
    # The project's named parameter groups, at their discriminative LRs, weight decay on weights only.
    model = cli.model
    groups = param_groups(model, find_backbone(model.network), model.lr_ratio, model.layer_decay)
    assert [group["name"] for group in optimizer.param_groups] == [group["name"] for group in groups]
    for group, expected in zip(optimizer.param_groups, groups, strict=True):
        assert group["initial_lr"] == pytest.approx(0.05 * expected["lr_scale"])
        assert group["weight_decay"] == (0.0 if group["name"].endswith("_no_decay") else 0.01)
    if "image" in MODALITIES:
        assert optimizer.param_groups[0]["initial_lr"] < 0.05  # the backbone's first stage trains slower
    # The per-step schedule, as LearningRateMonitor logged it for every group.
    (config,) = cli.trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, LambdaLR) and config.interval == "step"
    lrs = logged_lrs(cli)
    assert set(lrs) == {f"lr-SGD/{group['name']}" for group in groups}
    factors = [model.lr_schedule.factor(step, 2, 2) for step in range(2)]
    assert lrs["lr-SGD/head"] == pytest.approx([0.05 * factor for factor in factors])
    assert factors[0] != factors[1]  # the schedule moved the LR between the two steps


def test_onecycle_with_sgd_without_momentum_trains(tiny_data: Path, tmp_path: Path) -> None:
    # OneCycleLR cycles momentum by default and fails on an optimizer without one: schedules.py only asks for
    # it when the optimizer has a momentum (SGD's is 0 unless set) or betas.
    onecycle = ["--model.lr_scheduler.name", "onecycle", "--trainer.max_epochs", "2"]
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, *SGD, *onecycle))
    assert cli.trainer.global_step == 4
    (optimizer,) = cli.trainer.optimizers
    assert type(optimizer) is torch.optim.SGD and {group["momentum"] for group in optimizer.param_groups} == {0}
    assert isinstance(cli.trainer.lr_scheduler_configs[0].scheduler, OneCycleLR)
    head = logged_lrs(cli)["lr-SGD/head"]
    assert len(head) == 4 and head[0] == pytest.approx(0.05 / 25) and max(head) == pytest.approx(0.05)


@pytest.mark.parametrize("preset", sorted(p.name for p in (CONFIGS / "debug").glob("*.yaml")))
def test_every_debug_preset_composes_with_the_default_and_toy_configs(
    preset: str, capsys: pytest.CaptureFixture
) -> None:
    args = ["fit", "--config", str(CONFIGS / "default.yaml"), "--config", str(CONFIGS / "toy.yaml")]
    with pytest.raises(SystemExit) as done:
        main([*args, "--config", str(CONFIGS / "debug" / preset), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    if preset == "overfit_batch.yaml":  # regularization off
        model = printed["model"]["init_args"]
        assert model["optimizer"]["init_args"]["weight_decay"] == 0.0
        assert model["lr_scheduler"]["warmup_fraction"] == 0.0
        network = model["network"]["init_args"]
        assert network.get("head", network)["dropout"] == 0.0  # segmentation: the network's own dropout
        assert model["task"].get("init_args", {}).get("label_smoothing", 0.0) == 0.0
        assert (
            printed.get("mixing", {}).get("mixup_alpha", 0.0)
            == printed.get("mixing", {}).get("cutmix_alpha", 0.0)
            == 0.0
        )
        assert printed["trainer"]["overfit_batches"] == 1 and printed["checkpoint"]["save_top_k"] == 0


def inputs_to_predict(data: Path, folder: Path) -> tuple[Path, list[str]]:
    """What a user hands `predict`, and the ids its predictions should carry: a folder of new images for
    class-folder data, else the test CSV without its target columns."""
    folder.mkdir()
    if CLASS_FOLDERS:
        for i in range(5):
            Image.new("RGB", (40, 30), (50 * i, 0, 0)).save(folder / f"img{i}.png")
        return folder, [str(folder / f"img{i}.png") for i in range(5)]
    with open(data / "test.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    inputs = [{k: v for k, v in row.items() if not k.startswith("target") and k != "mask"} for row in rows]
    path = folder / "new.csv"
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(inputs[0]))
        writer.writeheader()
        writer.writerows(inputs)
    # Image paths in the CSV stay relative to data.root, where predict resolves them.
    return path, [f"new.csv:{line}" for line in range(2, len(rows) + 2)]


@pytest.mark.skipif(not CLASS_FOLDERS, reason="a folder of images to predict: class-folder projects")
def test_predict_reads_a_folder_named_relative_to_where_the_user_stands(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, "--trainer.max_epochs", "1"))
    (tmp_path / "work" / "new_images").mkdir(parents=True)
    for image in sorted((tiny_data / "test").rglob("*.png"))[:3]:
        shutil.copy(image, tmp_path / "work" / "new_images" / image.name)
    monkeypatch.chdir(tmp_path / "work")  # the user's shell, not data.root
    predict = main(cli_args("predict", tiny_data, runs, "--data.predict_path", "new_images", "--ckpt_path", "best"))
    with open(predict.run_dir / "predictions.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 3
    with pytest.raises(SystemExit, match=r"predict_path='no_such_folder' does not exist \(a relative path starts at"):
        main(cli_args("predict", tiny_data, runs, "--data.predict_path", "no_such_folder", "--ckpt_path", "best"))


def test_fit_writes_summary_and_predict_writes_one_row_per_input(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    fit = main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, "--trainer.max_epochs", "1"))
    summary = json.loads((fit.run_dir / "summary.json").read_text())
    assert Path(summary["best_checkpoint"]).is_file() and f"val/{MONITOR}" in summary["val_metrics"]
    printed = capsys.readouterr().out  # the last epoch's metrics, and the kept checkpoint's own value: not mixed up
    assert "Validation metrics of the last epoch (0):" in printed
    assert f"Kept checkpoint (val/{MONITOR} {summary['optimize']['value']:.4f}; monitored" in printed

    source, ids = inputs_to_predict(tiny_data, tmp_path / "to_predict")
    predict = main(cli_args("predict", tiny_data, runs, "--data.predict_path", str(source), "--ckpt_path", "best"))
    with open(predict.run_dir / "predictions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["id"] for row in rows) == sorted(ids)
    model, batch = predict.model.eval(), next(iter(predict.datamodule.predict_dataloader()))
    with torch.no_grad():
        expected = model.task.prediction_rows(model.task.activation(model(batch)))
    # The task's columns, e.g. the predicted class and every class's probability.
    assert list(rows[0])[: len(expected[0]) + 1] == ["id", *expected[0]]


def test_default_logger_runs_without_server_or_key(tiny_data: Path, tmp_path: Path) -> None:
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, "--trainer.max_epochs", "1", logger=None))
    assert cli.trainer.logger is not None and cli.trainer.global_step == 2
    assert any(cli.run_dir.iterdir())


def test_wandb_goes_offline_without_an_api_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert wandb_offline_when_unavailable() is True
    assert os.environ["WANDB_MODE"] == "offline"
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:  # a server that answers: W&B stays online
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        monkeypatch.delenv("WANDB_MODE")
        assert wandb_offline_when_unavailable() is False
        assert "WANDB_MODE" not in os.environ
    finally:
        server.shutdown()


# Refused; and an address that never answers (no route, or a proxy that accepts the connection and says nothing).
@pytest.mark.parametrize("server", ["http://127.0.0.1:{closed}", "https://10.255.255.1"])
def test_wandb_with_a_key_but_no_server_goes_offline_within_seconds(
    server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        closed = unused.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", server.format(closed=closed))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE")
    started = time.perf_counter()
    with caplog.at_level(logging.INFO):
        assert wandb_offline_when_unavailable("runs/r") is True
    assert time.perf_counter() - started < 5  # wandb.init itself would wait about 90 s, then raise
    assert os.environ["WANDB_MODE"] == "offline"
    (line,) = [record.getMessage() for record in caplog.records if record.getMessage().startswith("W&B:")]
    assert "did not answer" in line and "wandb sync runs/r/wandb/offline-run-*" in line, line


def test_unknown_config_key_is_named(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as error:
        main(cli_args("fit", tiny_data, tmp_path / "runs", "--model.learning_rate", "0.1"))
    assert error.value.code != 0
    assert "learning_rate" in capsys.readouterr().err


@pytest.mark.skipif("image" not in MODALITIES, reason="the project has no image input")
def test_corrupt_image_gives_one_line_naming_the_file(tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    broken = sorted((data / "train").rglob("*.png") if CLASS_FOLDERS else (data / "images" / "train").glob("*.png"))[0]
    # A PNG whose structure and checksums are right (the check before training passes it) but whose pixel data
    # is not compressed data: it fails only when decoded, in a loader worker.
    with Image.open(broken) as original:  # its own size, so that a segmentation mask still matches it
        header = struct.pack(">IIBBBBB", *original.size, 8, 2, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", b"not zlib data"), (b"IEND", b"")]
    broken.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks)
    )
    # One loader worker, so the error crosses a process boundary like it does in real training.
    args = cli_args(
        "fit",
        data,
        tmp_path / "runs",
        "--data.num_workers",
        "1",
        "--data.batch_size",
        "64",
        "--config",
        str(CONFIGS / "debug" / "fast_dev_run.yaml"),
    )
    with pytest.raises(SystemExit) as error:  # in-process: the worker's error still crosses a process boundary
        main(args)
    message = str(error.value.code)
    assert message.startswith("error: cannot read image") and str(broken) in message and "\n" not in message


def test_missing_data_folder_gives_one_line(tmp_path: Path) -> None:
    result = run_module(*cli_args("fit", tmp_path / "nowhere", tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: data.root=")
    assert "Traceback" not in result.stderr


def test_a_module_that_misses_the_contract_is_refused_in_one_line(tiny_data: Path, tmp_path: Path) -> None:
    # Lightning's BoringModel is a LightningModule without task, network and inputs (contract.ProjectModule).
    boring = ["--model", "pytorch_lightning.demos.boring_classes.BoringModel", "--trainer.fast_dev_run", "true"]
    with pytest.raises(SystemExit) as error:
        main(cli_args("fit", tiny_data, tmp_path / "runs", *boring))
    message = str(error.value.code)
    assert "BoringModel lacks task, network, inputs" in message and "ProjectModule" in message and "\n" not in message
