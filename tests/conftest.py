"""Shared helpers of the template tests: bake with checked overrides, install a rendered project in isolation."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scripts.rendered_env import install_rendered  # noqa: F401  (re-exported for the tests)

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


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 1800) -> str:
    """Run a command like a user in a terminal would; fail the test with its output if it fails (or hangs: a whole
    rendered suite on a loaded 2-core machine can take 15 minutes, so the limit only catches a hang)."""
    result = subprocess.run(
        command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr
