"""Checkpoint files: writes that a crash cannot corrupt, reads that cannot run code.

Lightning's default writer stages the file in the system temp folder and then moves it; when that folder is on
another filesystem (tmpfs, a node-local disk next to NFS) the move is a copy, and a process killed during it
leaves a truncated file where the last good checkpoint was. Here the new file is written next to its target,
flushed to disk, and renamed over it: a reader sees either the old file or the complete new one. A process killed
while writing leaves its hidden `.<name>.partial-<pid>` file; the next write in that folder removes it.

A checkpoint is a pickle, and unpickling can call any function. Every checkpoint the project reads goes through
`read_checkpoint` or `AtomicCheckpointIO.load_checkpoint`: tensors, numbers, strings and containers only
(`torch.load(weights_only=True)`); a file that needs more is refused in one line naming it.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from ..errors import ProjectError

PARTIAL = re.compile(r"\.(?P<name>.+)\.partial-(?P<pid>\d+)")


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path) or storage_options is not None:  # object stores: Lightning's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partial_files(target.parent)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            with partial.open("wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)  # atomic on POSIX and Windows within one filesystem
        finally:
            partial.unlink(missing_ok=True)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # Lightning's own reads (resume, test/validate/predict --ckpt_path, SLURM requeue): data only, whatever the
        # caller asked; refused files were already named in one line by the CLI (read_checkpoint).
        located = {} if map_location is None else {"map_location": map_location}  # None: Lightning's default
        return super().load_checkpoint(path, weights_only=True, **located)


def remove_stale_partial_files(folder: Path) -> None:
    """Remove the partial files of writers that no longer run (killed mid-write); POSIX only (process check)."""
    if os.name != "posix":
        return
    for partial in folder.glob(".*.partial-*"):
        match = PARTIAL.fullmatch(partial.name)
        if match and not _running(int(match["pid"])):
            partial.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file's contents, loaded as data only (memory-mapped: cheap for a look at its metadata)."""
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip file
    except pickle.UnpicklingError as error:
        if "Unsupported operand" in str(error) or "load key" in str(error):  # not a pickle at all
            raise ProjectError(f"{path} is not a readable checkpoint (not a file torch.save wrote)") from None
        called = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        what = f"it calls {called[1]}" if called else "it holds objects other than tensors and plain data"
        raise ProjectError(
            f"{path} is refused: loading it would run code ({what}), which no checkpoint of this project needs; "
            "use only checkpoints you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ProjectError(f"{path} is not a readable checkpoint ({first})") from None
    if not isinstance(checkpoint, dict):
        raise ProjectError(f"{path} is not a Lightning checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint
