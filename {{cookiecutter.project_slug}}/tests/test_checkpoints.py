"""Checkpoints a command is given: read as data only, checked against the project's task, classes, inputs and model,
resumed only into the run they belong to, with the optimizer settings of the config."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import cli_args
from {{ cookiecutter.package_name }}.answers import TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.errors import ProjectError
from {{ cookiecutter.package_name }}.practices import compatibility, runs
from {{ cookiecutter.package_name }}.practices.checkpoint_io import AtomicCheckpointIO
from {{ cookiecutter.package_name }}.tasks import build_task

FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
COMMANDS = ["fit", "validate", "test", "predict", "diagnose", "export"]  # every command that takes --ckpt_path


def refusal(args: list[str]) -> str:
    """The one-line error a command stops with (it must stop)."""
    with pytest.raises(SystemExit) as stopped:
        main(args)
    message = str(stopped.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch fit's run folder."""
    runs_dir = tmp_path_factory.mktemp("trained") / "runs"
    return main(cli_args("fit", tiny_data, runs_dir, *FEW_BATCHES, "--trainer.max_epochs", "1")).run_dir


def variant(trained: Path, folder: Path, **changes: object) -> Path:
    """The trained last.ckpt, with `changes` to what it records (hyperparameters and trained_on alike)."""
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for key, value in changes.items():
        if key == "task":
            checkpoint["hyper_parameters"]["task"]["class_path"] = value
        else:
            checkpoint["hyper_parameters"][key] = value
        checkpoint.get(compatibility.TRAINED_ON, {})[key] = value
    path = folder / "checkpoints" / "other.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


# --- 1. `last` is the newest fit; a finished run is not extended by accident ---------------------------------------
def test_last_names_the_newest_fit_and_refuses_while_it_has_no_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    finished = main(cli_args("fit", tiny_data, runs_dir, *FEW_BATCHES, "--trainer.max_epochs", "1")).run_dir
    summary = (finished / "summary.json").read_text()
    killed = runs.new_run_dir(runs_dir, "fit")  # a second fit, killed in its first epoch: a folder, no checkpoint
    (finished / "checkpoints" / "last.ckpt").touch()  # the older run's checkpoint is the newest file: no matter

    args = cli_args("fit", tiny_data, runs_dir, *FEW_BATCHES, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    message = refusal([*args, "--model.optimizer.lr", "1e-4"])
    assert str(killed) in message and "no checkpoint yet" in message
    assert (finished / "summary.json").read_text() == summary  # the finished run is untouched
    assert not (finished / "checkpoints" / "epoch01.ckpt").exists() and len(list(runs_dir.iterdir())) == 2


def test_a_finished_fit_is_extended_only_by_a_higher_epoch_limit(
    trained: Path, tiny_data: Path, tmp_path: Path
) -> None:
    summary = (trained / "summary.json").read_text()
    last = trained / "checkpoints" / "last.ckpt"
    same_limit = cli_args("fit", tiny_data, tmp_path / "runs", "--trainer.max_epochs", "1", "--ckpt_path", str(last))
    message = refusal(same_limit)
    assert f"{trained} is a finished fit" in message and "raise --trainer.max_epochs above 1" in message
    assert (trained / "summary.json").read_text() == summary

    # A checkpoint at the final epoch without a summary (killed before it was written): nothing to train, said so.
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "summary.json").unlink()
    message = refusal([*same_limit[:-1], str(copy / "checkpoints" / "last.ckpt")])
    assert "has already trained 1 epochs" in message and "nothing to train" in message
    assert not (copy / "summary.json").exists()  # no summary with empty metrics


def test_resume_checks_limits_against_the_finished_runs_summary(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = {"global_step": 30, "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 3}}}}}
    runs.write_json(run / "summary.json", {"epochs": 3, "max_epochs": 10, "max_steps": -1})  # stopped early
    with pytest.raises(ProjectError, match="finished fit .*max_epochs above 10"):
        runs.check_resume(run / "last.ckpt", checkpoint, run, max_epochs=10, max_steps=-1)
    assert "10 -> 12" in runs.check_resume(run / "last.ckpt", checkpoint, run, max_epochs=12, max_steps=-1)
    (run / "summary.json").unlink()  # unfinished: resumes while epochs remain
    assert runs.check_resume(run / "last.ckpt", checkpoint, run, max_epochs=4, max_steps=-1) is None
    with pytest.raises(ProjectError, match="nothing to train"):
        runs.check_resume(run / "last.ckpt", checkpoint, run, max_epochs=3, max_steps=-1)


# --- 2. a checkpoint of other classes, another task, other inputs is refused, naming both sides ------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_a_checkpoint_of_other_classes_is_refused_by_every_command(
    command: str, trained: Path, tiny_data: Path, tmp_path: Path
) -> None:
    classes = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["class_names"]
    renamed = [*classes[:-1], "zebra"]  # a class folder renamed: as many classes, other names
    path = variant(trained, tmp_path / "other", class_names=renamed)
    message = refusal(cli_args(command, tiny_data, tmp_path / "runs", "--ckpt_path", str(path)))
    assert str(path) in message and "other classes" in message
    assert "zebra" in message and classes[-1] in message  # both sides named


def test_a_checkpoint_of_another_task_names_both_tasks(trained: Path, tiny_data: Path, tmp_path: Path) -> None:
    other = "multiclass" if TASK_TYPE == "regression" else "regression"
    path = variant(trained, tmp_path / "other", task=f"some_project.tasks.{other}.{other.capitalize()}Task")
    message = refusal(cli_args("test", tiny_data, tmp_path / "runs", "--ckpt_path", str(path)))
    assert f"the checkpoint is for task {other}, the project is {TASK_TYPE}" in message


class _Stub(torch.nn.Module):
    """A module meeting the contract, with one weight."""

    def __init__(self, inputs: dict, width: int = 3) -> None:
        super().__init__()
        classes = ["a", "b"] if TASK_TYPE == "binary" else ["a", "b", "c"]  # binary: exactly two
        self.task, self.inputs, self.head = build_task(TASK_TYPE, classes), inputs, torch.nn.Linear(4, width)


def _tabular(columns: list[str], colors: list[str]) -> SimpleNamespace:
    spec = {
        "kind": "tabular",
        "numeric_columns": [{"column": name, "mean": 0.0, "std": 1.0} for name in columns],
        "categorical_columns": [{"column": "color", "vocabulary": colors, "unknown_index": 0}],
    }
    return SimpleNamespace(preprocessing=spec)


def _sequence(vocabulary: list[str]) -> SimpleNamespace:
    spec = {"kind": "sequence", "column": "text", "sequence_kind": "tokens", "vocabulary": vocabulary}
    return SimpleNamespace(preprocessing=spec)


def test_test_on_other_data_than_the_checkpoints_says_so(
    trained: Path, tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = Path(shutil.copytree(tiny_data, tmp_path / "other"))  # the same data, one test sample fewer
    if (other / "test.csv").is_file():
        lines = (other / "test.csv").read_text(encoding="utf-8").splitlines(keepends=True)
        (other / "test.csv").write_text("".join(lines[:-1]), encoding="utf-8")
    else:
        sorted((other / "test").rglob("*.png"))[-1].unlink()
    checkpoint = str(trained / "checkpoints" / "last.ckpt")
    with caplog.at_level(logging.INFO):
        main(cli_args("test", other, tmp_path / "runs", "--ckpt_path", checkpoint))
    assert any("The data differ from the checkpoint's" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        main(cli_args("test", tiny_data, tmp_path / "runs", "--ckpt_path", checkpoint))
    assert not any("The data differ" in record.getMessage() for record in caplog.records)


def test_inputs_columns_vocabularies_and_weights_are_compared() -> None:
    inputs = {"tabular": {"numeric": 4, "categorical": [3]}, "sequence": {"vocab_size": 4, "max_length": 8}}
    trained_on = {"tabular": _tabular(["age", "height"], ["red", "blue"]), "sequence": _sequence(["a", "b"])}
    module = _Stub(inputs)
    checkpoint = {"state_dict": module.state_dict()}
    checkpoint[compatibility.TRAINED_ON] = compatibility.trained_on(module, SimpleNamespace(inputs=trained_on))
    checkpoint = compatibility.metadata(checkpoint)

    def check(inputs: dict = inputs, width: int = 3, **readers: SimpleNamespace) -> None:
        data = SimpleNamespace(inputs={**trained_on, **readers})
        compatibility.check("m.ckpt", checkpoint, _Stub(inputs, width), data)

    check(inputs={**inputs, "sequence": {"vocab_size": 4, "max_length": 16}})  # a longer sequence limit: allowed
    with pytest.raises(ProjectError, match="trained on inputs sequence, tabular, the data gives tabular"):
        check(inputs={"tabular": inputs["tabular"]})
    with pytest.raises(ProjectError, match="other tabular inputs .*numeric: checkpoint 4, data 6"):
        check(inputs={**inputs, "tabular": {"numeric": 6, "categorical": [3]}})
    with pytest.raises(ProjectError, match="input tabular .*numeric_columns: checkpoint age, height; data age, w"):
        check(tabular=_tabular(["age", "weight"], ["red", "blue"]))
    with pytest.raises(ProjectError, match="categorical_columns: checkpoint .*red.*; data .*green"):
        check(tabular=_tabular(["age", "height"], ["red", "green"]))
    with pytest.raises(ProjectError, match="encodes input sequence .*vocabulary: checkpoint a, b; data a, c"):
        check(sequence=_sequence(["a", "c"]))
    with pytest.raises(ProjectError, match=r"does not fit the configured model .*head.weight: checkpoint \[3, 4\]"):
        check(width=5)


# --- 3. a new learning rate / weight decay applies on resume -----------------------------------------------------
def test_a_new_learning_rate_applies_on_resume(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs_dir = tmp_path / "runs"
    first = main(cli_args("fit", tiny_data, runs_dir, *FEW_BATCHES, "--trainer.max_epochs", "1"))
    peak = max(group["initial_lr"] for group in first.trainer.optimizers[0].param_groups)
    capsys.readouterr()
    change = ["--model.optimizer.lr", "1e-9", "--model.optimizer.weight_decay", "0.2"]
    resumed = main(
        cli_args("fit", tiny_data, runs_dir, *FEW_BATCHES, "--trainer.max_epochs", "2", "--ckpt_path", "last", *change)
    )
    assert resumed.trainer.global_step == 4
    assert f"lr changed on resume: {peak:.4g} -> 1e-09" in capsys.readouterr().out
    groups = resumed.trainer.optimizers[0].param_groups
    assert max(group["initial_lr"] for group in groups) == pytest.approx(1e-9)  # the schedule's new peak
    assert all(group["lr"] <= 1e-9 * (1 + 1e-6) for group in groups)  # what the resumed steps trained with
    assert {group["weight_decay"] for group in groups} <= {0.0, 0.2}  # no-decay groups stay at 0


# --- 5. a checkpoint whose pickle would run code is refused by every command, unread ---------------------------
class _RunsCode:
    """Unpickling it creates `marker`: what a malicious checkpoint could do with any function."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return Path.touch, (self.marker,)


def plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "payload": _RunsCode(marker)}, path)
    return path


@pytest.mark.parametrize("form", ["path", "last", "best"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_checkpoint_that_would_run_code_is_refused_unread(
    command: str, form: str, tiny_data: Path, tmp_path: Path
) -> None:
    runs_dir, marker = tmp_path / "runs", tmp_path / "code-ran"
    run = runs.new_run_dir(runs_dir, "fit")  # where `last` and `best` look
    last = plant(run / "checkpoints" / "last.ckpt", marker)
    best = plant(run / "checkpoints" / "epoch00.ckpt", marker)
    runs.write_json(run / "summary.json", {"best_checkpoint": str(best), "epochs": 1, "max_epochs": 1})
    ckpt_path = {"path": str(last), "last": "last", "best": "best"}[form]
    message = refusal(cli_args(command, tiny_data, runs_dir, "--ckpt_path", ckpt_path))
    assert f"{best if form == 'best' else last} is refused: loading it would run code" in message
    assert not marker.exists()


def test_lightnings_own_reads_are_data_only_even_when_the_environment_allows_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's default would then unpickle anything
    path = plant(tmp_path / "last.ckpt", tmp_path / "code-ran")
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not (tmp_path / "code-ran").exists()


def test_a_file_that_is_no_checkpoint_gets_one_line(tiny_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint")
    message = refusal(cli_args("test", tiny_data, tmp_path / "runs", "--ckpt_path", str(path)))
    assert f"{path} is not a readable checkpoint" in message


# --- 11. partial files of killed writers are removed ---------------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="processes are checked with signal 0")
def test_the_next_write_removes_partial_files_of_killed_writers(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".last.ckpt.partial-{int(gone.stdout)}"
    alive = tmp_path / f".last.ckpt.partial-{os.getppid()}"  # a writer still at work: left alone
    for partial in (dead, alive):
        partial.write_bytes(b"PK half a checkpoint")
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "last.ckpt"])
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"epoch": 1}
