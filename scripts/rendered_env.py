"""Install a rendered project the way its README says, into a venv of its own, without downloading anything.

The venv sees this environment's packages (PyTorch and friends) through a .pth file, so `pip install -e
".[dev,export]"` finds every dependency satisfied (onnx and onnxruntime included) and installs only the project
itself. Each rendered package stays out of this environment and out of every other rendered project's import path.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


def install_rendered(project: Path, venv: Path | None = None) -> Path:
    """Create `venv` (default `<project>/.venv`), `pip install -e ".[dev,export]"` into it; return its python."""
    venv = venv or project / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "_shared_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-build-isolation"]
    result = subprocess.run([*pip, "-e", ".[dev,export]"], cwd=project, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip install -e .[dev,export] failed in {project}:\n{result.stdout}\n{result.stderr}")
    return python
