"""Run folders: every run writes into its own `runs/<time>-<id>/` (checkpoints, logs, reports, predictions).

A resumed fit (`--ckpt_path last` or a path inside a run folder) continues in the folder it resumes from;
`last` is the newest fit's folder (by start), never an older run's checkpoint.
Under multi-process launches every rank must agree on one folder: rank zero creates it and passes it to the
processes Lightning starts through an environment variable. Inside a SLURM job or a torchrun launch, each fit gets
`runs/fit-job<id>-<n>` (the job's n-th): rank zero claims it, the other ranks of its launch (srun step) wait for
the claim, and a requeued job (SLURM_RESTART_COUNT) claims the job's folders again in the same order, so its
fits resume where the first attempt stopped.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import ProjectError

RUN_DIR_ENV = "PROJECT_RUN_DIR"
SUMMARY_FILE = "summary.json"
STARTED_FILE = ".started"  # the run's start time (ns), written once when the folder is made
FIT_RUN = re.compile(r"(\d{8}-\d{6}-)?fit-.+")  # the folders `fit` makes (dated, or named after a job)
RANK_WAIT_SECONDS = 300  # how long a rank waits for rank zero's folder (a shared filesystem may lag)
# Folders this process made per job and command: the k-th fit of every rank of a launch is the same fit.
_made_in_job: defaultdict[str, itertools.count] = defaultdict(lambda: itertools.count(1))


def _job_id() -> str | None:
    """An id all ranks of one multi-process job share, when a launcher started them (SLURM, torchrun)."""
    for var in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        value = os.environ.get(var)
        if value and value != "none":
            return value
    if "RANK" in os.environ and "MASTER_ADDR" in os.environ:  # torchrun without --rdzv-id
        return f"{os.environ['MASTER_ADDR']}-{os.environ.get('MASTER_PORT', '')}".replace(".", "_")
    return None


def new_run_dir(runs_root: str | Path, subcommand: str) -> Path:
    """Create a fresh run folder, unique even when several runs start in the same second."""
    if os.environ.get(RUN_DIR_ENV):
        path = Path(os.environ[RUN_DIR_ENV])
        path.mkdir(parents=True, exist_ok=True)
        return path
    runs_root = Path(runs_root)
    job = _job_id()
    if job is not None:  # no date in the name: a job requeued the next day must find its folder again
        return _job_run_dir(runs_root, subcommand, job)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = runs_root / f"{stamp}-{subcommand}-{secrets.token_hex(3)}"
        if _make(path):
            return path


def _make(path: Path) -> bool:
    """Make a new run folder, stamped with its start; False when it exists already."""
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return False
    (path / STARTED_FILE).write_text(str(time.time_ns()), encoding="utf-8")
    return True


def _job_run_dir(runs_root: Path, subcommand: str, job: str) -> Path:
    """`<subcommand>-job<job>-<n>`: rank zero claims the job's first folder not yet claimed in this attempt (a new
    one after the last); the other ranks take the folder rank zero claimed for the same launch."""
    attempt = os.environ.get("SLURM_RESTART_COUNT") or os.environ.get("TORCHELASTIC_RESTART_COUNT") or "0"
    launch = f"{os.environ.get('SLURM_STEP_ID', '')}:{next(_made_in_job[f'{job}:{subcommand}'])}"
    claim = f".attempt-{attempt}"
    if int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0) != 0:
        return _wait_for_claim(runs_root, f"{subcommand}-job{job}-*/{claim}", launch)
    n = 0
    while True:
        n += 1
        path = runs_root / f"{subcommand}-job{job}-{n}"
        _make(path)
        try:
            with (path / claim).open("x", encoding="utf-8") as file:
                file.write(launch)
            return path
        except FileExistsError:  # an earlier fit of this attempt has it
            continue


def _wait_for_claim(runs_root: Path, pattern: str, launch: str) -> Path:
    deadline = time.monotonic() + RANK_WAIT_SECONDS
    while time.monotonic() < deadline:
        for claim in sorted(runs_root.glob(pattern), key=lambda p: started(p.parent), reverse=True):
            if claim.read_text(encoding="utf-8") == launch:
                return claim.parent
        time.sleep(0.2)
    raise ProjectError(
        f"no run folder from rank zero under {runs_root}/ after {RANK_WAIT_SECONDS} s ({pattern}): runs_dir must "
        "be a folder every node of the job shares"
    )


def share_with_child_processes(run_dir: Path) -> None:
    """Processes Lightning launches for DDP inherit the environment: they reuse this folder."""
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def started(run_dir: Path) -> int:
    """When a run folder was made (ns); older folders without the stamp: their modification time."""
    try:
        return int((run_dir / STARTED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return run_dir.stat().st_mtime_ns


def newest_fit(runs_root: str | Path) -> Path | None:
    """The run folder of the fit started last, with or without checkpoints."""
    runs = [path for path in Path(runs_root).glob("*") if path.is_dir() and FIT_RUN.fullmatch(path.name)]
    return max(runs, key=started) if runs else None


def find_last_checkpoint(runs_root: str | Path) -> Path:
    """`last.ckpt` of the newest fit: the run it resumes is the one started last, never an older run."""
    run = newest_fit(runs_root)
    if run is None:
        raise ProjectError(f"ckpt_path=last: no fit under {runs_root}/ yet; run `fit` first or pass a path")
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise ProjectError(
            f"ckpt_path=last: the newest fit, {run}, has no checkpoint yet (it stopped before its first epoch "
            "ended, or still runs); start it again without --ckpt_path, or pass an older run's "
            "runs/<run>/checkpoints/last.ckpt to resume that one"
        )
    return last


def find_best_checkpoint(runs_root: str | Path) -> Path:
    """The best checkpoint recorded by the most recent finished fit."""
    summary = _newest(list(Path(runs_root).glob(f"*/{SUMMARY_FILE}")))
    if summary is None:
        raise ProjectError(f"ckpt_path=best: no finished fit under {runs_root}/ yet; run `fit` first or pass a path")
    best = json.loads(summary.read_text(encoding="utf-8")).get("best_checkpoint")
    if not best or not Path(best).is_file():
        raise ProjectError(f"ckpt_path=best: {summary} names no existing best checkpoint ({best})")
    return Path(best)


def run_dir_of_checkpoint(ckpt_path: Path) -> Path | None:
    """`runs/<run>/` for `runs/<run>/checkpoints/<file>.ckpt`; None for a checkpoint kept elsewhere."""
    parent = ckpt_path.resolve().parent
    return parent.parent if parent.name == "checkpoints" else None


def saved_run_state(checkpoint: dict[str, Any]) -> tuple[list, int]:
    """(logger versions, global step) of a checkpoint: the logger runs (W&B run ids, CSV / TensorBoard versions) a
    resumed fit continues, and the step it continues from."""
    return list(checkpoint.get("logger_versions", [])), int(checkpoint.get("global_step", 0))


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Training epochs a checkpoint completed (Lightning counts an epoch once its training part ran)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", 0))


def check_resume(
    ckpt_path: Path, checkpoint: dict[str, Any], run_dir: Path | None, max_epochs: int, max_steps: int
) -> str | None:
    """Refuse (one line) a resume that would train nothing or silently extend a finished run; an info line when a
    finished run is extended on purpose (larger trainer.max_epochs / max_steps), else None."""
    summary_path = run_dir / SUMMARY_FILE if run_dir is not None else None
    if summary_path is not None and summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        old_epochs, old_steps = summary.get("max_epochs", summary.get("epochs")), summary.get("max_steps")
        if not (_grows(max_epochs, old_epochs) or _grows(max_steps, old_steps)):
            raise ProjectError(
                f"{run_dir} is a finished fit ({summary.get('epochs')} epochs, trainer.max_epochs={old_epochs}): "
                f"resuming it would rewrite its results; to train it longer raise --trainer.max_epochs above "
                f"{old_epochs}, else start a new fit without --ckpt_path"
            )
        return f"Extending the finished fit {run_dir}: trainer.max_epochs {old_epochs} -> {max_epochs}"
    done, step = epochs_done(checkpoint), int(checkpoint.get("global_step", 0))
    if (max_epochs != -1 and done >= max_epochs) or (max_steps != -1 and step >= max_steps):
        raise ProjectError(
            f"{ckpt_path} has already trained {done} epochs ({step} steps): nothing to train with "
            f"trainer.max_epochs={max_epochs}, trainer.max_steps={max_steps}; raise them to train longer"
        )
    return None


def _grows(new: int | None, old: int | None) -> bool:
    """A training limit raised above a finite old one (-1: no limit)."""
    return old is not None and old != -1 and new is not None and (new == -1 or new > old)


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def forget_shared_run_dir() -> None:
    """Called when a command ends, so the next run in the same process gets a folder of its own."""
    os.environ.pop(RUN_DIR_ENV, None)
