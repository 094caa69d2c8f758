"""The W&B sweep files drive this project's `fit`: a trial's command line, built as the W&B agent builds it,
trains with the trial's values and reports the metric the sweep optimizes. No W&B server: W&B runs offline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, MODE, MONITOR, PROJECT, tiny_run_args
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.practices.schedules import SCHEDULES
from {{ cookiecutter.package_name }}.practices.sweep import load_sweep, sample_values, trial_command

PACKAGE = "{{ cookiecutter.package_name }}"
SWEEP_FILES = ["sweep.yaml", "sweep_bayes.yaml"]


def fit_arguments(command: list[str]) -> list[str]:
    """What `python -m PACKAGE` receives from the agent's command line (the agent runs it in the project folder)."""
    assert command[:4] == ["/usr/bin/env", "python", "-m", PACKAGE], command
    return command[4:]


def tiny_run(data: Path, runs: Path) -> list[str]:
    """Arguments that make a trial small enough for a test: toy settings, tiny data and model, a few batches.
    They go before the trial's values, which override them (e.g. data.batch_size)."""
    few_batches = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
    return ["--config", "configs/toy.yaml", *tiny_run_args(data, runs), "--trainer.max_epochs", "1", *few_batches]


def config_value(config: dict, key: str) -> object:
    """The value of a command-line key (model.optimizer.lr) in a printed or saved config, where the arguments of a
    configured class sit under its init_args (model: init_args: optimizer: init_args: lr)."""
    value = config
    for part in key.split("."):
        if part not in value and "init_args" in value:
            value = value["init_args"]
        value = value[part]
    return value


def expected(value: object) -> object:
    return pytest.approx(value, rel=1e-12) if isinstance(value, float) else value


@pytest.mark.parametrize("name", SWEEP_FILES)
def test_sweep_optimizes_the_tasks_metric_with_fit(name: str) -> None:
    sweep = load_sweep(CONFIGS / name)
    assert sweep["metric"] == {"name": f"val/{MONITOR}", "goal": "maximize" if MODE == "max" else "minimize"}
    command = trial_command(sweep, {"model.optimizer.lr": 0.001})
    # W&B logs the metric the agent reads, whatever this project's default logger; the trial's values come last
    # so they win over every config file.
    assert fit_arguments(command)[:5] == [
        "fit", "--config", "configs/default.yaml", "--config", "configs/logger/wandb.yaml"
    ]  # fmt: skip
    assert command[-1] == "--model.optimizer.lr=0.001"


@pytest.mark.parametrize("name", SWEEP_FILES)
def test_every_sweep_parameter_is_a_fit_argument(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    sweep = load_sweep(CONFIGS / name)
    values = sample_values(sweep["parameters"], random.Random(0))
    monkeypatch.chdir(PROJECT)
    # A renamed or misspelled hyperparameter fails here, not in every trial of a sweep.
    with pytest.raises(SystemExit) as done:
        main([*fit_arguments(trial_command(sweep, values)), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for key, value in values.items():
        assert config_value(printed, key) == expected(value), key
    # Values the parser takes as plain strings or ints, checked for meaning.
    schedules = sweep["parameters"]["model.lr_scheduler.name"]
    assert set(schedules.get("values", [schedules.get("value")])) <= set(SCHEDULES)
    batch_sizes = sweep["parameters"]["data.batch_size"]["values"]
    assert all(size > 0 and size & (size - 1) == 0 for size in batch_sizes), batch_sizes


def test_one_trial_trains_with_its_values_and_logs_the_sweep_metric(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = load_sweep(CONFIGS / "sweep.yaml")
    values = sample_values(sweep["parameters"], random.Random(1))
    # The test's small settings go in just before the trial's values (${args}), which must still win over them.
    position = sweep["command"].index("${args}")
    sweep["command"][position:position] = tiny_run(tiny_data, tmp_path / "runs")
    monkeypatch.chdir(PROJECT)  # the agent runs the command where it was started: the project folder
    cli = main(fit_arguments(trial_command(sweep, values)))

    assert cli.trainer.state.finished
    assert type(cli.trainer.logger).__name__ == "WandbLogger"
    assert sweep["metric"]["name"] in cli.trainer.callback_metrics
    saved = yaml.safe_load((cli.run_dir / "config.yaml").read_text(encoding="utf-8"))
    for key, value in values.items():
        assert config_value(saved, key) == expected(value), key
    assert cli.model.hparams.optimizer["init_args"]["lr"] == values["model.optimizer.lr"]
    assert cli.model.lr_schedule.name == values["model.lr_scheduler.name"]
    assert cli.datamodule.hparams.batch_size == values["data.batch_size"]


def test_dry_run_prints_a_trial_and_a_real_sweep_refuses_offline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(PROJECT)
    main(["sweep", "--dry-run", "--file", "configs/sweep_bayes.yaml"])
    printed = capsys.readouterr().out.split()
    assert printed[:5] == ["/usr/bin/env", "python", "-m", PACKAGE, "fit"]
    assert "--model.lr_scheduler.name=cosine" in printed
    with pytest.raises(SystemExit, match="error: WANDB_MODE=offline: sweeps need the W&B server"):
        main(["sweep"])  # the tests' W&B is offline (conftest): nothing is created, nothing prompts


def test_macros_expand_as_the_wandb_agent_expands_them(monkeypatch: pytest.MonkeyPatch) -> None:
    try:  # W&B's own helper (internal: skip rather than fail if a new wandb moves it)
        from wandb.sdk.launch.sweeps.utils import create_sweep_command_args
    except ImportError:
        pytest.skip("wandb.sdk.launch.sweeps.utils.create_sweep_command_args is gone from this wandb")
    values = {
        "model.optimizer.lr": 1e-05,
        "data.batch_size": 32,
        "model.lr_scheduler.name": "sgdr",
        "model.compile": False,
    }
    wandb_args = create_sweep_command_args({"args": {key: {"value": value} for key, value in values.items()}})
    monkeypatch.setenv("SWEEP_TEST_VAR", "from-env")
    sweep = {
        "program": "train.py",
        "command": ["${env}", "${interpreter}", "${program}", "x${envvar:SWEEP_TEST_VAR}", "${unknown}", "${args}"],
    }
    expected = ["/usr/bin/env", "python", "train.py", "xfrom-env", *wandb_args["args"]]
    assert trial_command(sweep, values) == expected
    for macro in ("args_no_hyphens", "args_no_equals"):
        assert trial_command({"program": "p", "command": ["${" + macro + "}"]}, values) == wandb_args[macro]
    assert json.loads(trial_command({"program": "p", "command": ["${args_json}"]}, values)[0]) == values
