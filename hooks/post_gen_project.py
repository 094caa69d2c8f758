"""Tidy the freshly rendered project, link it to its template, then tell the user what to run next.

Cookiecutter renders this file with Jinja and runs it inside the new project folder, with the Python that
runs cookiecutter: standard library only. Steps:

1. remove the files that belong to options not chosen (the ``REMOVE_WHEN`` table, the one place to edit);
2. write ``.cruft.json`` (the template's absolute location or URL, the commit rendered, the answers) so that
   ``cruft check`` / ``cruft diff`` / ``cruft update`` work on the fresh project, whether it was made by
   ``cruft create`` or by plain ``cookiecutter``, and record the same location in ``.cookiecutter.json``;
3. ``git init`` and commit everything when git is available and the project is not already inside a git
   work tree (a clean tree is what ``cruft update`` wants);
4. print a short summary and the next steps (``TEMPLATE_VERBOSE=1`` lists the removed files).

When cruft renders the template into a throwaway folder to compute a diff (``cruft diff`` / ``cruft update``),
only step 1 runs and nothing is printed: its output would land in the user's patch.

Like the pre-gen hook, the pure helpers are importable from the raw file (``from hooks.post_gen_project
import paths_to_remove``); the only Jinja expression is the string literal ``_ANSWERS_JSON``, read by
``main()`` alone. Keep every other double brace out of this file: Jinja would interpret it too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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
        (
            "src/{package}/data/tabular.py",
            "src/{package}/data/columns.py",
            "src/{package}/models/encoders/tabular.py",
            "tests/test_tabular.py",
        ),
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


# --- Link to the template (.cruft.json) ------------------------------------------------------------------
CRUFT_FILE = ".cruft.json"
ANSWERS_FILE = ".cookiecutter.json"  # rendered from its Jinja file; the hook fixes its _template
# Context keys that describe one render on one machine (cookiecutter's output and clone folders, the checkout
# asked for, cruft's commit): .cruft.json keeps the checkout and commit in fields of their own.
PER_RENDER_KEYS = ("_output_dir", "_repo_dir", "_checkout", "_commit")
# A repository URL or an abbreviation (gh:, gl:, bb:, or the user's own), as cookiecutter tells them from a
# local path: a scheme of two letters or more ('C:' is a Windows drive), or scp-like user@host:path.
URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+:|[\w.-]+@[\w.-]+:)")


class TemplateSource(NamedTuple):
    """Where the project came from, as cruft records it."""

    url: str  # what `git clone` accepts: an absolute local path or the repository URL
    commit: str | None  # the template commit rendered; None when the template is not a git checkout
    checkout: str | None  # the branch/tag asked for (cookiecutter --checkout), if any
    directory: str | None  # the template's folder inside its repository; None at the repository root
    dirty: bool  # the template checkout had uncommitted changes, rendered but in no commit


def _git(args: list[str], cwd: Path) -> str | None:
    """``git ARGS`` in ``cwd``: its stripped output, or None when git is missing or fails."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        result = subprocess.run(
            [git, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _parent_cwd() -> Path | None:
    """The working folder of the process that runs this hook, where the platform tells (Linux: /proc)."""
    proc = Path(f"/proc/{os.getppid()}/cwd")
    try:
        return proc.resolve(strict=True)
    except OSError:
        return None


def locate_template(answers: dict[str, Any], parent_cwd: Path | None = None) -> Path | None:
    """The template folder cookiecutter rendered from, absolute, or None where it cannot be told.

    ``_repo_dir`` is the folder as typed (``.``, ``../template``) or cookiecutter's clone of a URL. A relative
    one is relative to the user's shell, not to this hook (which runs inside the new project): cookiecutter
    runs hooks from inside the template folder, so its working folder (``parent_cwd``) is the answer; the
    shell's $PWD and the output folder are the fallbacks. A candidate counts only if it holds
    cookiecutter.json and ends with the typed path.
    """
    typed = answers.get("_repo_dir")
    if not typed:
        return None
    path = Path(str(typed)).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        bases = [os.environ.get("PWD"), answers.get("_output_dir")]
        candidates = [parent_cwd] if parent_cwd else []
        candidates += [Path(base) / path for base in bases if base]
    tail = [part for part in Path(os.path.normpath(path)).parts if part not in (".", "..")]
    for candidate in candidates:
        try:
            resolved = candidate.resolve(strict=True)
        except OSError:
            continue
        ends_right = path.is_absolute() or list(resolved.parts[len(resolved.parts) - len(tail) :]) == tail
        if ends_right and (resolved / "cookiecutter.json").is_file():
            return resolved
    return None


def template_source(
    answers: dict[str, Any], template_dir: Path | None, project_dir: Path | None = None
) -> TemplateSource:
    """Where the project came from: cruft's own answers when cruft rendered it, else the template's git checkout.

    ``project_dir`` is left out of the uncommitted-changes check when it was rendered inside the template.
    """
    typed = str(answers.get("_template", ""))
    checkout = answers.get("_checkout") or None
    if answers.get("_commit"):  # rendered by cruft, which resolved the template and cloned it itself
        return TemplateSource(typed, str(answers["_commit"]), None, None, dirty=False)
    if template_dir is None:
        return TemplateSource(typed, None, checkout, None, dirty=False)
    is_url = bool(URL_RE.match(typed)) and not Path(typed).expanduser().exists()
    top = _git(["rev-parse", "--show-toplevel"], template_dir)
    if top is None:  # not a git checkout (a plain folder, an unpacked zip): nothing for cruft to clone
        unpacked = is_url or typed.lower().endswith(".zip")  # template_dir is a temporary folder then
        return TemplateSource(typed if unpacked else str(template_dir), None, checkout, None, dirty=False)
    toplevel = Path(top).resolve()
    inner = template_dir.relative_to(toplevel).as_posix() if template_dir != toplevel else None
    # cookiecutter cloned a URL with `git clone URL`: origin is the expanded URL (gh:x/y -> https://...).
    url = (_git(["remote", "get-url", "origin"], template_dir) or typed) if is_url else str(toplevel)
    commit = _git(["rev-parse", "HEAD"], template_dir)
    in_head = (
        commit is not None
        and _git(["cat-file", "-e", f"HEAD:{inner + '/' if inner else ''}cookiecutter.json"], toplevel) is not None
    )
    if not in_head:  # a repository without commits, or a template folder git does not track
        return TemplateSource(url, None, checkout, inner, dirty=False)
    pathspec = ["."]
    if project_dir is not None and project_dir.is_relative_to(template_dir):
        pathspec.append(f":(exclude){project_dir.relative_to(template_dir).as_posix()}")
    dirty = bool(_git(["status", "--porcelain", "--", *pathspec], template_dir))
    return TemplateSource(url, commit, checkout, inner, dirty)


def recorded_answers(answers: dict[str, Any], source: TemplateSource) -> dict[str, Any]:
    """The answers as cruft keeps them: cookiecutter.json's order, then ``_template`` and ``_commit``."""
    recorded = {key: value for key, value in answers.items() if key not in PER_RENDER_KEYS}
    recorded["_template"] = source.url
    if source.commit:
        recorded["_commit"] = source.commit
    return recorded


def cruft_state(answers: dict[str, Any], source: TemplateSource) -> dict[str, Any]:
    """The content of .cruft.json, field for field what ``cruft create`` writes for the same render."""
    return {
        "template": source.url,
        "commit": source.commit,
        "checkout": source.checkout,
        "context": {"cookiecutter": recorded_answers(answers, source)},
        "directory": source.directory,
    }


def cruft_json(state: dict[str, Any]) -> str:
    """``state`` formatted byte for byte as cruft writes it: after ``cruft create`` the committed file is
    unchanged and the git tree stays clean."""
    return json.dumps(state, ensure_ascii=False, indent=2, separators=(",", ": ")) + "\n"


def record_template(project_dir: Path, answers: dict[str, Any], source: TemplateSource) -> str:
    """Write .cruft.json (when the commit is known) and the template's location into .cookiecutter.json."""
    answers_file = project_dir / ANSWERS_FILE
    if answers_file.is_file():
        text = answers_file.read_text(encoding="utf-8")
        recorded = json.loads(text)
        if recorded.get("_template") != source.url:  # as typed ('.', '../x', 'gh:x/y'): useless later
            recorded["_template"] = source.url
            newline = "\n" if text.endswith("\n") else ""
            answers_file.write_text(json.dumps(recorded, sort_keys=True, indent=4) + newline, encoding="utf-8")
    if source.commit is None:
        return (
            f"{CRUFT_FILE} not written: no git commit known for the template {source.url}; to follow its "
            "updates, link the project to the template's repository later: cruft link <template git URL>"
        )
    (project_dir / CRUFT_FILE).write_text(cruft_json(cruft_state(answers, source)), encoding="utf-8")
    note = (
        "; note: the template had uncommitted changes, which are in the project but in no template commit"
        if source.dirty
        else ""
    )
    return f"linked to the template in {CRUFT_FILE} ({source.url} at {source.commit[:12]}){note}"


def is_throwaway_render(answers: dict[str, Any], project_dir: Path) -> bool:
    """True inside cruft's own render for ``cruft diff`` / ``cruft update``: a project folder directly in a
    fresh Python temporary folder (``<tmp>/tmpXXXXXXXX/<slug>``), with cruft's ``_commit`` among the answers.
    ``cruft create`` renders where the user asked, so it still gets its .cruft.json and git commit."""
    if not answers.get("_commit"):
        return False
    parent = project_dir.parent
    return parent.name.startswith("tmp") and parent.parent == Path(tempfile.gettempdir()).resolve()


# --- git ---------------------------------------------------------------------------------------------------
def init_git(project_dir: Path, message: str | None = None, author: tuple[str, str] | None = None) -> str:
    """``git init`` the project unless git is missing or it already sits in a work tree, then commit every
    file with ``message`` (when given and there is something to commit).

    The commit uses the user's git identity; where none is configured, ``author`` (name, e-mail from the
    answers) for that commit only. Never raises: a render must not fail because of git. Returns what
    happened, for the summary.
    """
    git = shutil.which("git")
    if git is None:
        return "git not found; skipped 'git init'"

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Output captured: with -q git may still print a hint about the default branch name.
        return subprocess.run(
            [git, *args],
            check=check,
            cwd=project_dir,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    try:
        # Outside a work tree git exits non-zero: that is an answer, not an error.
        inside = run("rev-parse", "--is-inside-work-tree", check=False)
        if inside.returncode == 0 and inside.stdout.strip() == "true":
            return "already inside a git work tree; skipped 'git init'"
        run("init", "-q")
        if message is None:
            return "initialized an empty git repository (nothing committed)"
        run("add", "--all")
        if not run("status", "--porcelain").stdout.strip():
            return "initialized an empty git repository (nothing to commit)"
        identity: list[str] = []
        for key, value in zip(("user.name", "user.email"), author or (), strict=False):
            if not run("config", key, check=False).stdout.strip():
                identity += ["-c", f"{key}={value}"]
        commit = run(*identity, "commit", "-q", "-m", message, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return f"git failed ({err}); the project is fine, run 'git init' yourself if you want"
    if commit.returncode != 0:
        reason = (commit.stderr.strip().splitlines() or ["no reason given"])[-1]
        return f"initialized a git repository; the initial commit failed ({reason}): commit the files yourself"
    return f"initialized a git repository and committed the project ({message!r})"


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


# --- main --------------------------------------------------------------------------------------------------
VERBOSE_ENV = "TEMPLATE_VERBOSE"  # "1": list every removed file instead of one summary line


def removal_summary(project_dir: Path, removed: list[Path], verbose: bool) -> list[str]:
    """One line for the removed files, or one line per file when ``verbose``."""
    if verbose:
        return [f"removed {path.relative_to(project_dir)} (not needed for these options)" for path in removed]
    if not removed:
        return []
    count = f"{len(removed)} file" + ("s" if len(removed) != 1 else "")
    return [f"removed {count} for options not chosen ({VERBOSE_ENV}=1 lists them)"]


def say(lines: Iterable[str]) -> None:
    """Print ``lines``; a closed pipe (``cookiecutter ... | head``) is not an error of the render."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again when flushing at exit: point stdout at nothing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# Rendered by cookiecutter into a one-line JSON list of [variable, answer] pairs, in cookiecutter's order
# (.cruft.json keeps that order: tojson on the dict would sort it). See the pre-gen hook for why no value can
# end this raw string early.
_ANSWERS_JSON = r"""{{ cookiecutter.items() | list | tojson }}"""


def _rendered_answers() -> dict[str, Any]:
    """The answers cookiecutter rendered into this file; fails clearly on the raw template file."""
    try:
        return dict(json.loads(_ANSWERS_JSON))
    except json.JSONDecodeError as err:
        raise RuntimeError("run this hook through cookiecutter: its answers were not rendered") from err


def main() -> int:
    answers = _rendered_answers()
    project_dir = Path.cwd().resolve()  # cookiecutter runs the post-gen hook inside the new project
    removed = remove_paths(project_dir, paths_to_remove(answers))
    if is_throwaway_render(answers, project_dir):
        return 0
    verbose = os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes")
    lines = removal_summary(project_dir, removed, verbose)
    source = template_source(answers, locate_template(answers, _parent_cwd()), project_dir)
    lines.append(record_template(project_dir, answers, source))
    message = f"Initial commit from template {answers.get('_template_version', '')}".rstrip()
    lines.append(init_git(project_dir, message, (str(answers["author"]), str(answers["email"]))))
    lines.append(f"\nCreated {answers['project_slug']}. Next steps:")
    lines += [f"  {step}" for step in next_steps(answers)]
    say(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
