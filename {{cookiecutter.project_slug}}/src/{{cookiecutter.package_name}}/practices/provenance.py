"""Where a checkpoint came from: code version, data identity, template version."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from typing import Any

from .. import __template_version__, __version__


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The current commit, with "-dirty" when tracked files have uncommitted changes; None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def provenance(datamodule: Any = None) -> dict[str, Any]:
    return {
        "git_commit": git_commit(),
        "data_fingerprint": getattr(datamodule, "fingerprint", None),
        "package_version": __version__,
        "template_version": __template_version__,
    }
