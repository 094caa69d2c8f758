"""Run folders and progress output: the parts of a run that are not the model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pytorch_lightning.callbacks import RichProgressBar

from {{ cookiecutter.package_name }}.errors import ProjectError
from {{ cookiecutter.package_name }}.practices import runs
from {{ cookiecutter.package_name }}.practices.callbacks.progress import PlainProgressBar, progress_bar_for


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    folders = {runs.new_run_dir(tmp_path, "fit") for _ in range(20)}
    assert len(folders) == 20 and all(folder.is_dir() for folder in folders)


def test_ranks_of_one_launch_share_the_folder_rank_zero_made(tmp_path: Path) -> None:
    first = runs.new_run_dir(tmp_path, "fit")
    runs.share_with_child_processes(first)
    try:
        assert runs.new_run_dir(tmp_path, "fit") == first.resolve()
    finally:
        runs.forget_shared_run_dir()
    assert runs.new_run_dir(tmp_path, "fit") != first


def test_ranks_of_a_slurm_job_share_one_folder_across_requeues(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    first = runs.new_run_dir(tmp_path, "fit")
    assert first.name == "fit-job4242" and runs.new_run_dir(tmp_path, "fit") == first


def test_last_and_best_without_any_run_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="ckpt_path=last.*run `fit` first"):
        runs.find_last_checkpoint(tmp_path)
    with pytest.raises(ProjectError, match="ckpt_path=best.*run `fit` first"):
        runs.find_best_checkpoint(tmp_path)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_bar_on_a_terminal_plain_lines_in_a_log_file() -> None:
    assert isinstance(progress_bar_for(_Terminal()), RichProgressBar)
    assert isinstance(progress_bar_for(io.StringIO()), PlainProgressBar)
