"""Shared fixtures: a tiny dataset written by the project's own toy writer, and CLI argument helpers.

Tests run on a 0.4M-parameter timm model at 32 px so the whole suite stays fast on a laptop CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.data.toy import write_toy_dataset

PROJECT = Path(__file__).resolve().parents[1]
CONFIGS = PROJECT / "configs"
TINY_BACKBONE = "test_resnet"
CLASSES = ("circle", "square", "triangle")


@pytest.fixture(autouse=True)
def _offline_and_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    # No test may reach a server or wait for input.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Tests started inside a SLURM job or torchrun must still get a run folder per command.
    for var in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "RANK", "PROJECT_RUN_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/val/test with 3 classes: 12/4/4 images per class, 32 px."""
    root = tmp_path_factory.mktemp("data") / "toy"
    return write_toy_dataset(root, size=32, per_class={"train": 12, "val": 4, "test": 4}, classes=CLASSES)


def cli_args(command: str, data: Path, runs: Path, *extra: str, logger: str | None = "csv") -> list[str]:
    """Arguments for `python -m <package> <command>` with the tiny model and data, as a user would type them."""
    args = [command, "--config", str(CONFIGS / "default.yaml"), "--config", str(CONFIGS / "toy.yaml")]
    if logger:
        args += ["--config", str(CONFIGS / "logger" / f"{logger}.yaml")]
    return args + [
        "--runs_dir", str(runs),
        "--data.root", str(data),
        "--data.image_size", "32",
        "--data.batch_size", "8",
        "--data.num_workers", "0",
        "--model.backbone", TINY_BACKBONE,
        "--trainer.accelerator", "cpu",
        "--trainer.enable_model_summary", "false",
        *extra,
    ]  # fmt: skip
