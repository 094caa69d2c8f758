"""Every valid answer renders a clean project: no leftover Jinja, lint-clean, compiles, configs parse."""

from __future__ import annotations

import compileall
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import TEMPLATE_DIR, bake

from hooks.pre_gen_project import CHOICES, valid_combinations

# Every supported (task, modality, fusion) with the default logger, and every logger with the default combination.
BAKES = [combo for combo in valid_combinations()] + [{"logger": logger} for logger in CHOICES["logger"]]
LEFTOVER_JINJA = re.compile(r"\{\{|\{%|\{#")


def bake_id(overrides: dict) -> str:
    return "-".join(f"{v}" for v in overrides.values())


@pytest.fixture(params=BAKES, ids=bake_id)
def project(request: pytest.FixtureRequest, cookies, monkeypatch: pytest.MonkeyPatch) -> Path:
    return bake(cookies, monkeypatch, **request.param)


def text_files(project: Path) -> list[Path]:
    return [p for p in project.rglob("*") if p.is_file() and ".git" not in p.parts]


def test_no_unrendered_template_syntax(project: Path) -> None:
    for path in text_files(project):
        text = path.read_text(encoding="utf-8")
        if ".github" in path.parts:  # GitHub Actions' own ${{ }} expressions are meant to survive
            text = text.replace("${{", "")
        match = LEFTOVER_JINJA.search(text)
        assert match is None, f"{path.relative_to(project)}: {text[max(0, match.start() - 40) : match.end() + 40]!r}"


def test_ruff_check_and_format_pass(project: Path) -> None:
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=project, capture_output=True, text=True)
        assert result.returncode == 0, f"ruff {' '.join(command)}:\n{result.stdout}{result.stderr}"


def test_python_compiles_and_configs_parse(project: Path) -> None:
    assert compileall.compile_dir(project, quiet=1, force=True)
    for config in project.glob("configs/**/*.yaml"):
        assert isinstance(yaml.safe_load(config.read_text(encoding="utf-8")), dict), config
    tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))


def test_answers_and_template_version_are_recorded(project: Path) -> None:
    recorded = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))
    template = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8"))
    assert recorded["_template_version"] == template["_template_version"]
    for key in ("task_type", "modality", "fusion", "logger", "backbone", "package_name"):
        assert key in recorded
    package = recorded["package_name"]
    init = (project / "src" / package / "__init__.py").read_text(encoding="utf-8")
    assert f'__template_version__ = "{template["_template_version"]}"' in init


def test_default_config_names_the_chosen_logger(cookies, monkeypatch: pytest.MonkeyPatch) -> None:
    classes = {"wandb": "WandbLogger", "tensorboard": "TensorBoardLogger", "csv": "CSVLogger"}
    for logger, class_name in classes.items():
        project = bake(cookies, monkeypatch, logger=logger)
        config = yaml.safe_load((project / "configs" / "default.yaml").read_text(encoding="utf-8"))
        assert config["trainer"]["logger"]["class_path"].endswith(class_name)


def test_dev_requirements_cover_the_rendered_dependencies(cookies, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test environment pre-installs what rendered projects need (see requirements-dev.txt)."""
    project = bake(cookies, monkeypatch, logger="tensorboard")
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = pyproject["dependencies"] + pyproject["optional-dependencies"]["dev"]
    have = (TEMPLATE_DIR / "requirements-dev.txt").read_text(encoding="utf-8")
    names = {re.split(r"[\[<>=!~ ]", line, maxsplit=1)[0].lower() for line in have.splitlines() if line[:1].isalnum()}
    missing = [req for req in wanted if re.split(r"[\[<>=!~ ]", req, maxsplit=1)[0].lower() not in names]
    assert not missing, f"add to requirements-dev.txt: {missing}"


def test_every_template_file_is_tracked_by_git() -> None:
    """A .gitignore pattern (the rendered project's or ours) must never hide template files from commits."""
    git = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=TEMPLATE_DIR, capture_output=True)
    if git.returncode != 0:
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--", "{{cookiecutter.project_slug}}"],
        cwd=TEMPLATE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ignored = [path for path in ignored if "__pycache__" not in path and not path.endswith(".pyc")]
    assert not ignored, f"ignored by a .gitignore, so missing from every clone: {ignored}"


def test_ci_workflow_keeps_github_expressions_and_parses(project: Path) -> None:
    text = (project / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    assert "${{ vars.PYTHON_VERSION" in text  # GitHub's own expression syntax survives rendering
    workflow = yaml.safe_load(text)
    steps = workflow["jobs"]["test"]["steps"]
    assert any("pytest" in step.get("run", "") for step in steps)


def test_makefile_targets_resolve(project: Path) -> None:
    help_text = subprocess.run(["make", "help"], cwd=project, capture_output=True, text=True, check=True).stdout
    for target in ("install", "data", "train", "test", "lint"):
        assert target in help_text
        dry = subprocess.run(["make", "-n", target], cwd=project, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
    package = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))["package_name"]
    assert (
        f"-m {package} fit"
        in subprocess.run(["make", "-n", "train"], cwd=project, capture_output=True, text=True).stdout
    )
