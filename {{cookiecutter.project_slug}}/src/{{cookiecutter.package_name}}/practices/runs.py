"""Run folders: every run writes into its own `runs/<time>-<id>/` (checkpoints, logs, reports, predictions).

A resumed fit (`--ckpt_path last` or a path inside a run folder) continues in the folder it resumes from.
Under multi-process launches every rank must agree on one folder: rank zero creates it and passes it to the
processes Lightning starts through an environment variable; SLURM/torchrun ranks derive it from the job id.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from ..errors import ProjectError

RUN_DIR_ENV = "PROJECT_RUN_DIR"
SUMMARY_FILE = "summary.json"


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
    stamp = time.strftime("%Y%m%d-%H%M%S")
    job = _job_id()
    if job is not None:  # no date in the name: a job requeued the next day must find its folder again
        path = runs_root / f"{subcommand}-job{job}"
        path.mkdir(parents=True, exist_ok=True)
        return path
    while True:
        path = runs_root / f"{stamp}-{subcommand}-{secrets.token_hex(3)}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue


def share_with_child_processes(run_dir: Path) -> None:
    """Processes Lightning launches for DDP inherit the environment: they reuse this folder."""
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def find_last_checkpoint(runs_root: str | Path) -> Path:
    """The most recently written `last.ckpt` of any run."""
    found = _newest(list(Path(runs_root).glob("*/checkpoints/last.ckpt")))
    if found is None:
        raise ProjectError(
            f"ckpt_path=last: no {runs_root}/*/checkpoints/last.ckpt yet; run `fit` first or pass a path"
        )
    return found


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


def saved_run_state(ckpt_path: Path) -> tuple[list, int]:
    """(logger versions, global step) of a checkpoint: the logger runs (W&B run ids, CSV / TensorBoard versions) a
    resumed fit continues, and the step it continues from. Memory-mapped, so cheap."""
    import torch  # not at module level: run-folder helpers stay importable without torch

    checkpoint = torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=False)
    return list(checkpoint.get("logger_versions", [])), int(checkpoint.get("global_step", 0))


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def forget_shared_run_dir() -> None:
    """Called when a command ends, so the next run in the same process gets a folder of its own."""
    os.environ.pop(RUN_DIR_ENV, None)
