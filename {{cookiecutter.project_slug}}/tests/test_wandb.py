"""What a W&B run holds after `fit` (offline, no server): the whole config with provenance, the media, and the
checkpoints as artifacts when `log_model` is on. CSV keeps the same config in hparams.yaml."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wandb.sdk.wandb_run import Run

from conftest import MODE, MONITOR, cli_args
from {{ cookiecutter.package_name }} import __template_version__
from {{ cookiecutter.package_name }} import cli as cli_module
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main

PACKAGE = "{{ cookiecutter.package_name }}"
ONE_EPOCH = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]


def media(run_dir: Path, kind: str, key: str) -> list[Path]:
    """Files W&B wrote for a logged image or table, e.g. media(run, "table", "diagnosis/worst_val_examples")."""
    return sorted(run_dir.glob(f"wandb/offline-run-*/files/media/{kind}/{key}_*"))


def test_wandb_run_holds_config_provenance_and_media(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summaries = []  # the run's summary just before the CLI finishes the run (which then still happens)
    real_finish = cli_module.finish_wandb_runs

    def recording(loggers: list) -> None:
        summaries.extend(dict(logger.experiment.summary) for logger in loggers)
        real_finish(loggers)

    monkeypatch.setattr(cli_module, "finish_wandb_runs", recording)
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *ONE_EPOCH, logger="wandb"))
    config = dict(cli.trainer.logger.experiment.config)
    assert config["provenance"]["template_version"] == __template_version__
    assert config["provenance"]["data_fingerprint"] == cli.datamodule.fingerprint
    assert config["trainer"]["max_epochs"] == 1 and config["seed_everything"] == cli.config.fit.seed_everything
    # The model's hyperparameters, logged by Lightning: each part as configured (class path and init args).
    optimizer = cli.model.hparams.optimizer
    assert config["optimizer"]["class_path"] == optimizer["class_path"] == "torch.optim.AdamW"
    assert config["optimizer"]["init_args"]["lr"] == optimizer["init_args"]["lr"]
    assert config["network"]["class_path"] == cli.model.hparams.network["class_path"]
    assert cli.trainer.logger.experiment.name == cli.run_dir.name  # the run folder's readable name
    # The optimizing metric's summary is its best value (what the runs table and sweeps rank by), not its last.
    (summary,) = summaries
    last = float(cli.trainer.callback_metrics[f"val/{MONITOR}"])  # one epoch: the best is the last
    assert dict(summary[f"val/{MONITOR}"]) == {MODE: pytest.approx(last)}

    if "image" in MODALITIES:
        assert media(cli.run_dir, "images", "sanity/sample_batch")
    if TASK_TYPE in ("multiclass", "binary", "segmentation"):
        assert media(cli.run_dir, "images", "diagnosis/confusion_matrix")
    (table,) = media(cli.run_dir, "table", "diagnosis/worst_val_examples")
    examples = json.loads(table.read_text())
    assert {"id", "true", "predicted", "loss"} <= set(examples["columns"]) and examples["data"]
    assert ("confidence" in examples["columns"]) == (TASK_TYPE in ("multiclass", "binary"))


def test_csv_logger_keeps_the_same_config(tiny_data: Path, tmp_path: Path) -> None:
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *ONE_EPOCH, logger="csv"))
    hparams = yaml.safe_load(Path(cli.trainer.logger.log_dir, "hparams.yaml").read_text())
    assert hparams["provenance"]["data_fingerprint"] == cli.datamodule.fingerprint
    assert hparams["trainer"]["max_epochs"] == 1
    assert hparams["optimizer"]["init_args"]["lr"] == cli.model.hparams.optimizer["init_args"]["lr"]
    assert hparams["task"] == cli.model.hparams.task and hparams["task"]["class_path"].startswith(f"{PACKAGE}.tasks.")


def test_log_model_uploads_the_checkpoints_as_artifacts(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = []  # what reached W&B's own log_artifact (which still runs: offline, it stages the files)
    real = Run.log_artifact

    def recording(run: Run, artifact, *args, **kwargs):  # noqa: ANN001, ANN202
        logged.append((artifact.type, sorted(artifact.manifest.entries), kwargs.get("aliases") or []))
        return real(run, artifact, *args, **kwargs)

    monkeypatch.setattr(Run, "log_artifact", recording)
    log_model = ["--trainer.logger.init_args.log_model", "true"]
    main(cli_args("fit", tiny_data, tmp_path / "runs", *ONE_EPOCH, *log_model, logger="wandb"))
    models = [(files, aliases) for kind, files, aliases in logged if kind == "model"]  # tables are "run_table"
    assert models and all(files == ["model.ckpt"] for files, _ in models)
    assert any("best" in aliases for _, aliases in models)  # the best checkpoint, findable by its alias


LAUNCH_CHECK = """
import sys
import wandb
import wandb.sdk.wandb_run
from {package}.practices.loggers import skip_wandb_launch_import_when_nothing_staged

skip_wandb_launch_import_when_nothing_staged()
wandb.init(mode="offline", dir=sys.argv[1], project="launch-check").finish()
print("imported without staged inputs:", "wandb.sdk.launch" in sys.modules)
from wandb.sdk.launch.inputs import internal

applied = []
internal._publish_job_input = lambda staged, run: applied.append(staged)
internal.StagedLaunchInputs().add_staged_input("an input")
wandb.init(mode="offline", dir=sys.argv[1], project="launch-check").finish()
print("applied when staged:", applied)
"""


def test_wandb_runs_start_without_importing_launch_unless_inputs_are_staged(tmp_path: Path) -> None:
    """A fresh process, as a user's run: W&B Launch's import is skipped, and staged launch inputs still apply."""
    script = LAUNCH_CHECK.format(package=PACKAGE)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported without staged inputs: False" in result.stdout
    assert "applied when staged: ['an input']" in result.stdout
