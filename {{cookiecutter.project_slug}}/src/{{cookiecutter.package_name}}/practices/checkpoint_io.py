"""Checkpoint writes that a crash cannot corrupt.

Lightning's default writer stages the file in the system temp folder and then moves it; when that folder is on
another filesystem (tmpfs, a node-local disk next to NFS) the move is a copy, and a process killed during it
leaves a truncated file where the last good checkpoint was. Here the new file is written next to its target,
flushed to disk, and renamed over it: a reader sees either the old file or the complete new one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path) or storage_options is not None:  # object stores: Lightning's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            with partial.open("wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)  # atomic on POSIX and Windows within one filesystem
        finally:
            partial.unlink(missing_ok=True)
