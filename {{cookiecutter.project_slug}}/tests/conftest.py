"""Shared fixtures: a tiny dataset written by the project's own toy writer, and CLI argument helpers.

Tests run on the project's own task and inputs (answers.py), with a 0.4M-parameter timm model at 32 px for
images, so the whole suite stays fast on a laptop CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.data.datamodule import DataModule
from {{ cookiecutter.package_name }}.data.toy import uses_class_folders, write_toy_dataset
from {{ cookiecutter.package_name }}.module import Model
from {{ cookiecutter.package_name }}.tasks import build_task

PROJECT = Path(__file__).resolve().parents[1]
CONFIGS = PROJECT / "configs"
TINY_BACKBONE = "test_resnet"
CLASS_FOLDERS = uses_class_folders(TASK_TYPE, MODALITIES)
# The class folders of the tiny multiclass data (binary keeps the toy writer's two classes).
CLASSES = ("circle", "square", "triangle") if CLASS_FOLDERS and TASK_TYPE == "multiclass" else None
# The optimizing metric (acc, auroc, map, rmse or miou) and whether higher ("max") or lower ("min") is better.
MONITOR, MODE = build_task(TASK_TYPE, ["a", "b"]).monitor, build_task(TASK_TYPE, ["a", "b"]).mode
# The network's image-backbone options as the config nests them: segmentation networks take them directly.
SEGMENTATION = TASK_TYPE == "segmentation"


# The smoke subset (`pytest -m smoke`, what the template's full matrix runs for every combination of answers): the
# tests of every part the answers change (data reading, networks and fusion, tasks) and one fit/test/predict through
# the command line. The whole suite still runs by default.
SMOKE_MODULES = {"test_data.py", "test_network.py", "test_fusion.py", "test_tasks.py"}
SMOKE_TESTS = {"test_fast_dev_run_fit_and_test", "test_fit_writes_summary_and_predict_writes_one_row_per_input"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SMOKE_MODULES or item.originalname in SMOKE_TESTS:
            item.add_marker(pytest.mark.smoke)


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_test_process() -> None:
    # The test models are tiny: threads only add overhead, and with several test processes (pytest -n, DDP tests)
    # on a few cores, oversubscribed threads make the suite many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _offline_and_quiet(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same for the commands tests start as subprocesses
    # Caches (the checked-images list) go to the test session's folder, not the user's ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    # No test may reach a server or wait for input.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Tests started inside a SLURM job or torchrun must still get a run folder per command.
    job = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT")
    for var in (*job, "TORCHELASTIC_RUN_ID", "RANK", "PROJECT_RUN_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's toy data, small: train/val/test = 36/12/12 samples (class folders: 12/4/4 per class), 32 px."""
    root = tmp_path_factory.mktemp("data") / "toy"
    return write_toy_dataset(root, sizes=toy_sizes(train=36, val=12, test=12), image_size=32, classes=CLASSES)


def toy_sizes(**samples: int) -> dict[str, int]:
    """`write_toy_dataset` sizes for these samples per split (the class-folder layout counts images per class)."""
    if not CLASS_FOLDERS:
        return samples
    num_classes = len(CLASSES) if CLASSES else 2  # binary: two class folders
    return {split: n // num_classes for split, n in samples.items()}


def tiny_run_args(data: Path, runs: Path) -> list[str]:
    """The flags that make a run small enough for a test: tiny model and data, on the CPU, in `runs`."""
    args = ["--data.image.size", "32", *backbone_args(TINY_BACKBONE)] if "image" in MODALITIES else []
    return args + [
        "--runs_dir", str(runs),
        "--data.root", str(data),
        "--data.batch_size", "8",
        "--data.num_workers", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def backbone_args(backbone: str, *options: str) -> list[str]:
    """Command-line flags that set the image backbone (and e.g. "pretrained_file=...") of the configured network."""
    pairs = [f"backbone={backbone}", *options]
    if SEGMENTATION:
        flags = [(f"--model.network.init_args.{pair.split('=')[0]}", pair.split("=", 1)[1]) for pair in pairs]
        return [part for flag in flags for part in flag]
    # `encoders` is a dict, which a flag replaces whole: every input's entry is given, the image's changed.
    encoders = default_config("model")["init_args"]["network"]["init_args"]["encoders"]
    encoders["image"].update(pretrained=False, **dict(pair.split("=", 1) for pair in pairs))
    return ["--model.network.init_args.encoders", json.dumps(encoders)]


def cli_args(command: str, data: Path, runs: Path, *extra: str, logger: str | None = "csv") -> list[str]:
    """Arguments for `python -m <package> <command>` with the tiny model and data, as a user would type them."""
    args = [command, "--config", str(CONFIGS / "default.yaml"), "--config", str(CONFIGS / "toy.yaml")]
    if logger:
        args += ["--config", str(CONFIGS / "logger" / f"{logger}.yaml")]
    return [*args, *tiny_run_args(data, runs), *extra]


def default_config(section: str) -> dict:
    return yaml.safe_load((CONFIGS / "default.yaml").read_text())[section]


def project_datamodule(root: Path, **overrides: object) -> DataModule:
    """The DataModule as configs/default.yaml configures it (columns, task), on `root`, small and in-process.

    `overrides` replace DataModule arguments; a dict for a group (image, tabular, sequence, target, splits, source)
    updates the configured group, e.g. `image={"augment": "strong"}` or `source={"id_column": "key"}`.
    """
    config = default_config("data")
    config.update(root=str(root), task_class=TASK_TYPE, batch_size=8, num_workers=0)
    if "image" in MODALITIES:
        from {{ cookiecutter.package_name }}.models.encoders.image import ImageEncoder

        config.update(image_config=ImageEncoder.data_config(TINY_BACKBONE), image={**config["image"], "size": 32})
    for key, value in overrides.items():
        group = config.get(key)
        config[key] = {**group, **value} if isinstance(group, dict) and isinstance(value, dict) else value
    return DataModule(**config)


def project_model(
    data: DataModule,
    network_args: dict | None = None,
    task_args: dict | None = None,
    **overrides: object,
) -> Model:
    """The Model as configs/default.yaml configures it, sized by `data` as the CLI does, with the tiny backbone.

    `network_args` / `task_args` update the network's / task's init args; `overrides` replace Model arguments
    (objects, e.g. `task=MulticlassTask(label_smoothing=0.1)`, or plain values, e.g. `lr_ratio=3`).
    """
    config = default_config("model")["init_args"]
    network = config["network"]["init_args"]
    if "image" in MODALITIES:
        image = network if SEGMENTATION else network["encoders"]["image"]
        image.update(backbone=TINY_BACKBONE, pretrained=False)
    network.update(network_args or {})
    config["task"].setdefault("init_args", {}).update(task_args or {})
    config.update(class_names=data.class_names, target_stats=data.target_stats, inputs=data.input_specs)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Model, "model", instantiate=False, sub_configs=True)
    parts = parser.instantiate_classes(parser.parse_object({"model": config})).model  # task, network, optimizer...
    return Model(**{**vars(parts), **overrides})
