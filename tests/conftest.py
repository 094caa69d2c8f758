"""Shared helpers of the template tests: bake with checked overrides, install a rendered project in isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
COOKIECUTTER_JSON: dict[str, Any] = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8"))
SKIP_TIMM_CHECK = {"TEMPLATE_SKIP_TIMM_CHECK": "1"}  # the pre-gen hook's timm lookup imports torch (~7 s)


def assert_known_keys(overrides: dict[str, Any]) -> None:
    """Cookiecutter silently ignores unknown extra_context keys: a typo would quietly test the defaults."""
    unknown = sorted(set(overrides) - set(COOKIECUTTER_JSON))
    assert not unknown, f"not variables of cookiecutter.json: {unknown}"


def bake(cookies: Any, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Path:
    """Render the template with `overrides` (in-process, pytest-cookies); return the project folder."""
    assert_known_keys(overrides)
    for name, value in SKIP_TIMM_CHECK.items():
        monkeypatch.setenv(name, value)
    result = cookies.bake(extra_context=overrides)
    assert result.exit_code == 0, result.exception
    assert result.exception is None
    return Path(result.project_path)


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    """Run a command like a user in a terminal would; fail the test with its output if it fails."""
    result = subprocess.run(
        command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def install_rendered(project: Path, venv: Path) -> Path:
    """`pip install -e ".[dev]"` of the rendered project into its own venv; return that venv's python.

    The venv sees this environment's packages through a .pth file, so the project's dependencies are already
    satisfied and pip installs only the project itself, while each rendered package stays out of the others'
    import path.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "_template_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-build-isolation", "-e", ".[dev]"],
        cwd=project,
    )
    return python
