"""Keeping a project in step with its template, with cruft (the client people use for that), run for real.

A local git copy of the template stands in for its public repository. A project is made from it with `cruft create`
and with plain `cookiecutter .` (a relative path, the case that used to record an unusable `_template`); both must
be linked at birth: `cruft check` says up to date and the git tree is clean (the post-gen hook committed everything,
.cruft.json included). Then the template changes and commits; `cruft check` says out of date, `cruft diff` prints
a clean patch (no hook chatter), and `cruft update` brings the change in while the user's own edit survives.

Git runs without the user's global config (no identity): the hook must commit with the answers' author instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COOKIECUTTER_JSON, TEMPLATE_DIR

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
pytest.importorskip("cruft", reason="cruft is a template dev tool (requirements-dev.txt)")

# What a template is made of; the rest of the repository (.venv, tests, benchmarks) is not part of it.
TEMPLATE_PARTS = ("cookiecutter.json", "dl_template_answers.py", "hooks", "{{cookiecutter.project_slug}}")
IDENTITY = ["-c", "user.name=Template Maintainer", "-c", "user.email=maintainer@example.com"]
ADDED_LINE = "# added by a newer template: {{ cookiecutter.package_name }}"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: no git identity, cookiecutter's config and replay files kept in tmp_path, no timm lookup."""
    home = tmp_path / "cookiecutter_home"
    home.mkdir()
    config = home / "config.yaml"
    config.write_text(f"cookiecutters_dir: {home / 'cookiecutters'}\nreplay_dir: {home / 'replay'}\n", encoding="utf-8")
    return {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "COOKIECUTTER_CONFIG": str(config),
        "TEMPLATE_SKIP_TIMM_CHECK": "1",
    }


def sh(command: list[str], cwd: Path, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
    )
    if ok:
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def git(cwd: Path, env: dict[str, str], *args: str) -> str:
    return sh(["git", *IDENTITY, *args], cwd, env).stdout.strip()


def cruft(cwd: Path, env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return sh([sys.executable, "-m", "cruft", *args], cwd, env, ok=ok)


@pytest.fixture
def template(tmp_path: Path, env: dict[str, str]) -> Path:
    """A git repository holding a copy of this template, one commit."""
    repo = tmp_path / "template"
    repo.mkdir()
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", ".ruff_cache", ".pytest_cache")
    for part in TEMPLATE_PARTS:
        source = TEMPLATE_DIR / part
        if source.is_dir():
            shutil.copytree(source, repo / part, ignore=junk)
        else:
            shutil.copy2(source, repo / part)
    git(repo, env, "init", "-q")
    git(repo, env, "add", "--all")
    git(repo, env, "commit", "-q", "-m", "template v1")
    return repo


def create(how: str, template: Path, tmp_path: Path, env: dict[str, str]) -> Path:
    out = tmp_path / "projects"
    out.mkdir()
    if how == "cruft create":
        cruft(out, env, "create", "--no-input", str(template))
    else:  # plain cookiecutter, run inside the template with a relative path, as a template developer does
        sh([sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(out), ".", "logger=csv"], template, env)
    [project] = out.iterdir()
    return project


@pytest.mark.parametrize("how", ["cruft create", "cookiecutter ."])
def test_create_then_template_change_then_cruft_update(
    how: str, template: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    project = create(how, template, tmp_path, env)
    first_commit = git(template, env, "rev-parse", "HEAD")

    # Linked at birth: the template's absolute location and the commit it was rendered from.
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["template"] == str(template)
    assert state["commit"] == first_commit
    assert state["context"]["cookiecutter"]["_template"] == str(template)
    assert json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))["_template"] == str(template)
    # Everything committed, .cruft.json included: `cruft update` needs no --allow-untracked-files.
    assert git(project, env, "status", "--porcelain") == ""
    # One commit; git has no identity here, so the hook used the answers' author for it.
    version, author = COOKIECUTTER_JSON["_template_version"], COOKIECUTTER_JSON["author"]
    assert git(project, env, "log", "--format=%s|%an") == f"Initial commit from template {version}|{author}"

    check = cruft(project, env, "check")
    assert "up to date" in check.stdout
    no_diff = cruft(project, env, "diff")
    assert no_diff.stdout == "", no_diff.stdout  # a fresh project is the template: no diff, no hook output

    # The user edits and commits a file of their own...
    config = project / "configs" / "default.yaml"
    config.write_text(config.read_text(encoding="utf-8") + "# my own note\n", encoding="utf-8")
    git(project, env, "commit", "-q", "-am", "my edit")
    diff = cruft(project, env, "diff").stdout
    assert diff.startswith("diff --git "), diff[:500]  # only the patch: no "removed ..." lines from the hook
    assert "-# my own note" in diff

    # ... while the template gains a line in another file.
    makefile = template / "{{cookiecutter.project_slug}}" / "Makefile"
    makefile.write_text(makefile.read_text(encoding="utf-8") + ADDED_LINE + "\n", encoding="utf-8")
    git(template, env, "commit", "-q", "-am", "template v2")

    outdated = cruft(project, env, "check", ok=False)
    assert outdated.returncode == 1 and "out of date" in outdated.stdout, outdated.stdout + outdated.stderr

    cruft(project, env, "update", "--skip-apply-ask")
    package = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))["package_name"]
    assert (project / "Makefile").read_text(encoding="utf-8").endswith(f"# added by a newer template: {package}\n")
    assert config.read_text(encoding="utf-8").endswith("# my own note\n")  # the user's edit survived
    assert json.loads((project / ".cruft.json").read_text(encoding="utf-8"))["commit"] == git(
        template, env, "rev-parse", "HEAD"
    )
    status = sh(["git", "status", "--porcelain"], project, env).stdout
    changed = sorted(line[3:] for line in status.splitlines())
    assert changed == [".cruft.json", "Makefile"]
    assert not list(project.rglob("*.rej"))
    assert "up to date" in cruft(project, env, "check").stdout
