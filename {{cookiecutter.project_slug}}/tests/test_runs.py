"""Run folders and progress output: the parts of a run that are not the model."""

from __future__ import annotations

import io
import itertools
import os
import re
import subprocess
import sys
from collections import defaultdict
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


def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a process that has made no run folder yet (a new srun step, a requeued batch script)."""
    monkeypatch.setattr(runs, "_made_in_job", defaultdict(lambda: itertools.count(1)))


def test_fits_in_one_slurm_job_get_their_own_folders_and_a_requeue_finds_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    new_process(monkeypatch)
    first, second = runs.new_run_dir(tmp_path, "fit"), runs.new_run_dir(tmp_path, "fit")  # e.g. `repeat`
    new_process(monkeypatch)
    third = runs.new_run_dir(tmp_path, "fit")  # a second `python -m ... fit` in the batch script
    assert [p.name for p in (first, second, third)] == ["fit-job4242-1", "fit-job4242-2", "fit-job4242-3"]
    assert runs.newest_fit(tmp_path) == third
    # Requeued, the batch script runs again: its fits claim the job's folders in the same order (Lightning resumes
    # each from the checkpoint it saved there), then new ones.
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    new_process(monkeypatch)
    assert [runs.new_run_dir(tmp_path, "fit") for _ in range(4)] == [first, second, third, tmp_path / "fit-job4242-4"]


def test_every_rank_of_an_srun_step_takes_the_folder_rank_zero_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    new_process(monkeypatch)
    earlier = runs.new_run_dir(tmp_path, "fit")  # an earlier srun step's fit
    monkeypatch.setenv("SLURM_STEP_ID", "1")
    code = f"from {runs.__name__} import new_run_dir; print(new_run_dir({str(tmp_path)!r}, 'fit'))"
    # Rank 1 starts first and waits for rank zero's claim for its step.
    rank_one = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "SLURM_PROCID": "1"}, stdout=subprocess.PIPE, text=True
    )
    new_process(monkeypatch)
    zero = runs.new_run_dir(tmp_path, "fit")
    out, _ = rank_one.communicate(timeout=120)
    assert zero != earlier and Path(out.strip()) == zero and rank_one.returncode == 0


def test_last_is_the_newest_fit_by_start_not_the_newest_checkpoint(tmp_path: Path) -> None:
    older = runs.new_run_dir(tmp_path, "fit")
    newer = runs.new_run_dir(tmp_path, "fit")
    runs.new_run_dir(tmp_path, "test")  # other commands' folders are not resumed
    (older / "checkpoints").mkdir()
    (older / "checkpoints" / "last.ckpt").write_bytes(b"written after the newer fit started")
    with pytest.raises(ProjectError, match=f"the newest fit, {re.escape(str(newer))}, has no checkpoint yet"):
        runs.find_last_checkpoint(tmp_path)
    (newer / "checkpoints").mkdir()
    (newer / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert runs.find_last_checkpoint(tmp_path) == newer / "checkpoints" / "last.ckpt"


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
