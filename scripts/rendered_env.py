"""Install a rendered project the way its README says, into a venv of its own, without downloading anything.

The venv sees this environment's packages (PyTorch and friends) through a .pth file, so `pip install -e
".[dev,export,serve,stream,data-centric]"` (as `make install`) finds every dependency satisfied, the extras' onnx,
onnxruntime, LitServe, LitData and cleanlab included, and installs only the project itself. Each rendered package
stays out of this environment and out of every other rendered project's import path.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

# What `make install` installs: the project, its dev tools and every optional extra the tests exercise.
EXTRAS = ".[dev,export,serve,stream,data-centric]"


def install_rendered(project: Path, venv: Path | None = None) -> Path:
    """Create `venv` (default `<project>/.venv`), `pip install -e EXTRAS` into it; return its python."""
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
    result = subprocess.run([*pip, "-e", EXTRAS], cwd=project, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip install -e {EXTRAS} failed in {project}:\n{result.stdout}\n{result.stderr}")
    return python
