"""Tidy the freshly rendered project, then tell the user what to run next.

Cookiecutter renders this file with Jinja and runs it inside the new project folder, with the Python that
runs cookiecutter: standard library only. Steps:

1. remove the files that belong to options not chosen (the ``REMOVE_WHEN`` table, the one place to edit);
2. ``git init`` when git is available and the project is not already inside a git work tree;
3. print the next steps.

Like the pre-gen hook, the pure helpers are importable from the raw file (``from hooks.post_gen_project
import paths_to_remove``); the only Jinja expression is the string literal ``_ANSWERS_JSON``, read by
``main()`` alone. Keep every other double brace out of this file: Jinja would interpret it too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple


def _modality_lacks(part: str) -> Callable[[str], bool]:
    """Predicate on the modality answer: True when ``part`` ('image', ...) is not among its inputs."""
    return lambda modality: part not in modality.split("+")


def _other_than(value: str) -> Callable[[str], bool]:
    """Predicate on an answer: True when it is not ``value``."""
    return lambda answer: answer != value


class Removal(NamedTuple):
    """Remove ``paths`` (relative to the project root; '{package}' is the package name) when
    ``when(answers[variable])`` is true."""

    variable: str
    when: Callable[[str], bool]
    paths: tuple[str, ...]


# The one table of option -> files. A modality's modules are named after it (data/<modality>.py,
# models/encoders/<modality>.py, plus its tests); a task type lives in tasks/<task_type>.py. Add a row when
# a new option brings its own files. Paths that do not exist are skipped, so a row may name a file before
# every option that needs it is implemented. Shared modules (models/fusion.py, tasks/__init__.py, ...) and
# their tests stay in every project.
REMOVE_WHEN: tuple[Removal, ...] = (
    Removal(
        "modality",
        _modality_lacks("image"),
        (
            "src/{package}/data/image.py",
            "src/{package}/data/augment.py",
            "src/{package}/models/encoders/image.py",
            # Recipes for a pretrained image backbone and image batches (their config sections go with them).
            "src/{package}/practices/callbacks/finetuning.py",
            "src/{package}/practices/callbacks/mixing.py",
            "src/{package}/practices/tta.py",
            "tests/test_data.py",
            "tests/test_pretrained.py",
        ),
    ),
    Removal(
        "modality",
        _modality_lacks("tabular"),
        ("src/{package}/data/tabular.py", "src/{package}/models/encoders/tabular.py", "tests/test_tabular.py"),
    ),
    Removal(
        "modality",
        _modality_lacks("sequence"),
        ("src/{package}/data/sequence.py", "src/{package}/models/encoders/sequence.py", "tests/test_sequence.py"),
    ),
    Removal("task_type", _other_than("multiclass"), ("src/{package}/tasks/multiclass.py",)),
    Removal("task_type", _other_than("binary"), ("src/{package}/tasks/binary.py",)),
    Removal("task_type", _other_than("multilabel"), ("src/{package}/tasks/multilabel.py",)),
    Removal("task_type", _other_than("regression"), ("src/{package}/tasks/regression.py",)),
    Removal(
        "task_type",
        _other_than("segmentation"),
        (
            "src/{package}/tasks/segmentation.py",
            "src/{package}/models/segmentation.py",
            "tests/test_segmentation.py",
        ),
    ),
    # A single-input project has nothing to fuse (models/fusion.py stays: 'none' is its single-input head).
    Removal("fusion", lambda fusion: fusion == "none", ("tests/test_fusion_training.py",)),
)


def paths_to_remove(answers: dict[str, Any]) -> list[str]:
    """Project-relative paths that the chosen answers do not need, in table order."""
    package = answers["package_name"]
    return [
        path.format(package=package)
        for removal in REMOVE_WHEN
        if removal.when(str(answers[removal.variable]))
        for path in removal.paths
    ]


def remove_paths(root: Path, relative_paths: Iterable[str]) -> list[Path]:
    """Delete the existing ``relative_paths`` under ``root`` (files or folders) and return them.

    Missing paths are skipped silently. Parent folders left empty are removed too, up to (not including)
    ``root``.
    """
    root = root.resolve()
    removed = []
    for relative in relative_paths:
        path = root / relative
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path)
        parent = path.parent
        while parent != root and parent.is_relative_to(root) and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return removed


def init_git(project_dir: Path) -> str:
    """``git init`` the project unless git is missing or it already sits in a work tree.

    Never raises: a render must not fail because of git. Returns what happened, for the summary.
    """
    git = shutil.which("git")
    if git is None:
        return "git not found; skipped 'git init'"
    try:
        inside = subprocess.run(
            [git, "rev-parse", "--is-inside-work-tree"],
            check=False,  # outside a work tree git exits non-zero: that is an answer, not an error
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if inside.returncode == 0 and inside.stdout.strip() == "true":
            return "already inside a git work tree; skipped 'git init'"
        # Output captured: with -q git may still print a hint about the default branch name.
        subprocess.run([git, "init", "-q"], cwd=project_dir, capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"'git init' failed ({err}); the project is fine, run it yourself if you want"
    return "initialized an empty git repository (nothing committed)"


def next_steps(answers: dict[str, Any]) -> list[str]:
    """The shell commands a user runs after rendering, in order."""
    package = answers["package_name"]
    return [
        f"cd {answers['project_slug']}",
        "python -m venv .venv && . .venv/bin/activate",
        'pip install -e ".[dev]"',
        f"python -m {package} toy-data",
        f"python -m {package} fit --config configs/default.yaml --config configs/toy.yaml",
        "pytest",
    ]


# Rendered by cookiecutter into a one-line JSON object holding every answer (see the pre-gen hook for why
# no value can end this raw string early).
_ANSWERS_JSON = r"""{{ cookiecutter | tojson }}"""


def _rendered_answers() -> dict[str, Any]:
    """The answers cookiecutter rendered into this file; fails clearly on the raw template file."""
    try:
        return json.loads(_ANSWERS_JSON)
    except json.JSONDecodeError as err:
        raise RuntimeError("run this hook through cookiecutter: its answers were not rendered") from err


def main() -> int:
    answers = _rendered_answers()
    project_dir = Path.cwd().resolve()  # cookiecutter runs the post-gen hook inside the new project
    for path in remove_paths(project_dir, paths_to_remove(answers)):
        print(f"removed {path.relative_to(project_dir)} (not needed for these options)")
    print(init_git(project_dir))
    print(f"\nCreated {answers['project_slug']}. Next steps:")
    for step in next_steps(answers):
        print(f"  {step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
