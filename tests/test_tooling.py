"""The rendered project's tooling, run for real on a fresh render: its recorded answers re-render it, pre-commit
passes (and catches a badly formatted file), and the Makefile's targets run.

The rendered package runs from its src/ folder with this environment's Python (which holds the rendered
project's dependencies and dev tools, see requirements-dev.txt), so nothing is installed: a few seconds a test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import bake, run

# Rendered with answers unlike the defaults, so a re-render from defaults could not pass for a round trip.
ANSWERS = {
    "project_name": "Weather Model",
    "task_type": "regression",
    "modality": "tabular+sequence",
    "fusion": "gated",
    "logger": "csv",
    "python_version": "3.12",
}


def files(project: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(project)): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(project).parts
    }


def make(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`make ARGS` in the project with this environment's Python, the package importable from src/."""
    # As a user types it in a shell: not nested in the make that runs this suite (`make test`), whose variables
    # would make the inner make print "Entering directory" lines.
    outer = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS"}
    env = {k: v for k, v in os.environ.items() if k not in outer} | {
        "PYTHONPATH": str(project / "src"),
        "WANDB_MODE": "offline",
        **(env or {}),
    }
    return subprocess.run(
        ["make", f"PYTHON={sys.executable}", *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def test_recorded_answers_rerender_the_same_project(cookies, monkeypatch: pytest.MonkeyPatch) -> None:
    first = bake(cookies, monkeypatch, **ANSWERS)
    recorded = json.loads((first / ".cookiecutter.json").read_text(encoding="utf-8"))
    assert recorded["_template_version"] and recorded["_template"]
    # Where it was rendered and the local template copy differ per machine: recording them would break the trip.
    assert not {"_output_dir", "_repo_dir"} & set(recorded)
    answers = {key: value for key, value in recorded.items() if not key.startswith("_")}
    assert {key: answers[key] for key in ANSWERS} == ANSWERS
    second = bake(cookies, monkeypatch, **answers)
    assert second != first
    assert files(second) == files(first)


def test_pre_commit_passes_from_a_plain_shell_and_catches_a_badly_formatted_file(
    cookies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = bake(cookies, monkeypatch)
    env = {
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit"),  # no hook environments in the user's cache
        "PATH": "/usr/bin:/bin",  # a plain shell: no venv activated, no ruff on the PATH
        "HOME": str(tmp_path),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    pre_commit = [sys.executable, "-m", "pre_commit", "run", "--all-files"]
    # Straight after rendering: the post-gen hook's first commit holds every file, so there is something to check.
    output = run(pre_commit, cwd=project, env=env, timeout=300)
    assert re.search(r"ruff check.*Passed", output) and re.search(r"ruff format.*Passed", output), output

    bad = project / "src" / "bad.py"
    bad.write_text("import os\nx = {'a':1}\n", encoding="utf-8")
    run(["git", "add", "--all"], cwd=project, env=env)
    failed = subprocess.run(pre_commit, cwd=project, env={**os.environ, **env}, capture_output=True, text=True)
    assert failed.returncode != 0, failed.stdout
    assert "F401" in failed.stdout or "os" not in bad.read_text(encoding="utf-8")  # unused import found (or fixed)
    assert 'x = {"a": 1}' in bad.read_text(encoding="utf-8")  # ruff format rewrote it


def test_pre_commit_pins_the_ruff_of_the_dev_extra(cookies, monkeypatch: pytest.MonkeyPatch) -> None:
    project = bake(cookies, monkeypatch)
    hooks = yaml.safe_load((project / ".pre-commit-config.yaml").read_text(encoding="utf-8"))["repos"][0]["hooks"]
    dev = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    (ruff,) = [requirement for requirement in dev["dev"] if requirement.startswith("ruff")]
    assert [hook["additional_dependencies"] for hook in hooks] == [[ruff]] * len(hooks)
    assert all(hook["language"] == "python" for hook in hooks)  # its own environment, not the shell's


def test_makefile_targets_run(cookies, monkeypatch: pytest.MonkeyPatch) -> None:
    project = bake(cookies, monkeypatch)
    makefile = (project / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE).group(1).split()
    listed = [line.split("\t")[0] for line in make(project, "help").stdout.splitlines()]
    assert set(listed) == set(phony) - {"help"}, listed

    lint = make(project, "lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    data = make(project, "data")
    assert data.returncode == 0, data.stdout + data.stderr
    assert any((project / "data" / "toy").rglob("*.png")), "make data wrote no toy images"
    # The sweep target reaches the project's command, which refuses without a W&B server in one line.
    sweep = make(project, "sweep", "SWEEP=configs/sweep_bayes.yaml", "COUNT=2")
    assert sweep.returncode != 0
    assert "--file configs/sweep_bayes.yaml --count 2" in sweep.stdout
    assert "error: WANDB_MODE=offline: sweeps need the W&B server" in sweep.stderr
