"""Every valid answer renders a clean project: no leftover Jinja, lint-clean, compiles, configs parse, and it holds
exactly the files its options need.

Nothing here installs or imports a rendered project, so the whole matrix stays fast: each answer set is baked
once per test session (per xdist worker) and every check below only reads the result.
"""

from __future__ import annotations

import ast
import json
import os
import re
import runpy
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TEMPLATE_DIR, bake

from hooks.pre_gen_project import CHOICES, valid_combinations

# Every valid (task, modality, fusion) with the default logger, and every logger with the default combination.
BAKES: list[dict[str, str]] = [*valid_combinations(), *({"logger": logger} for logger in CHOICES["logger"])]
LEFTOVER_JINJA = re.compile(r"\{\{|\{%|\{#")

# The files each option brings (project-relative, '{package}' is the package name), written out here rather
# than read back from the post-gen hook's table: a project keeps the files of its options and no others.
MODALITY_FILES: dict[str, tuple[str, ...]] = {
    "image": (
        "src/{package}/data/image.py",
        "src/{package}/data/augment.py",
        "src/{package}/models/encoders/image.py",
        "src/{package}/practices/callbacks/finetuning.py",
        "src/{package}/practices/callbacks/mixing.py",
        "src/{package}/practices/tta.py",
        "tests/test_data.py",
        "tests/test_pretrained.py",
    ),
    "tabular": (
        "src/{package}/data/tabular.py",
        "src/{package}/data/columns.py",
        "src/{package}/models/encoders/tabular.py",
        "tests/test_tabular.py",
    ),
    "sequence": (
        "src/{package}/data/sequence.py",
        "src/{package}/models/encoders/sequence.py",
        "tests/test_sequence.py",
    ),
}
TASK_FILES: dict[str, tuple[str, ...]] = {
    "multiclass": ("src/{package}/tasks/multiclass.py",),
    "binary": ("src/{package}/tasks/binary.py",),
    "multilabel": ("src/{package}/tasks/multilabel.py",),
    "regression": ("src/{package}/tasks/regression.py",),
    "segmentation": (
        "src/{package}/tasks/segmentation.py",
        "src/{package}/models/segmentation.py",
        "tests/test_segmentation.py",
    ),
}
# In every project, whatever the options (fusion 'none' is the single-input head of models/fusion.py).
SHARED_FILES: tuple[str, ...] = (
    "src/{package}/answers.py",
    "src/{package}/data/table.py",
    "src/{package}/data/toy.py",
    "src/{package}/tasks/__init__.py",
    "src/{package}/models/fusion.py",
    "tests/test_fusion.py",
    "tests/test_tasks.py",
)
FUSED_FILES: tuple[str, ...] = ("tests/test_fusion_training.py",)  # projects with two or more inputs
OPTION_FILES = {path for paths in [*MODALITY_FILES.values(), *TASK_FILES.values(), FUSED_FILES] for path in paths}


def bake_id(overrides: dict[str, str]) -> str:
    return "-".join(overrides.values())


@pytest.fixture(scope="session")
def baked(cookies_session: Any) -> Callable[[dict[str, str]], Path]:
    """`baked(overrides)` renders the template once per session and answer set; callers must only read."""
    cache: dict[tuple[tuple[str, str], ...], Path] = {}

    def get(overrides: dict[str, str]) -> Path:
        key = tuple(sorted(overrides.items()))
        if key not in cache:
            with pytest.MonkeyPatch.context() as monkeypatch:
                cache[key] = bake(cookies_session, monkeypatch, **overrides)
        return cache[key]

    return get


# One xdist group per answer set (`make test` runs `--dist loadgroup`): all checks of a project run on the
# worker that baked it.
@pytest.fixture(
    params=[pytest.param(b, id=bake_id(b), marks=pytest.mark.xdist_group(f"bake-{bake_id(b)}")) for b in BAKES]
)
def project(request: pytest.FixtureRequest, baked: Callable[[dict[str, str]], Path]) -> Path:
    return baked(request.param)


def recorded_answers(project: Path) -> dict[str, Any]:
    return json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))


def text_files(project: Path) -> list[Path]:
    return [p for p in project.rglob("*") if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts]


def test_no_unrendered_template_syntax(project: Path) -> None:
    for path in text_files(project):
        text = path.read_text(encoding="utf-8")
        if ".github" in path.parts:  # GitHub Actions' own ${{ }} expressions are meant to survive
            text = text.replace("${{", "")
        match = LEFTOVER_JINJA.search(text)
        assert match is None, f"{path.relative_to(project)}: {text[max(0, match.start() - 40) : match.end() + 40]!r}"


def test_ruff_check_and_format_pass(project: Path) -> None:
    # About 0.1 s a project: one call per project keeps failures attributed to their answers.
    for command in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=project, capture_output=True, text=True)
        assert result.returncode == 0, f"ruff {' '.join(command)}:\n{result.stdout}{result.stderr}"


def test_python_compiles_and_configs_parse(project: Path) -> None:
    for path in project.rglob("*.py"):  # compile() writes no __pycache__ into the shared bake
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    for config in project.glob("configs/**/*.yaml"):
        assert isinstance(yaml.safe_load(config.read_text(encoding="utf-8")), dict), config
    tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))


def test_answers_and_template_version_are_recorded(project: Path) -> None:
    recorded = recorded_answers(project)
    template = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8"))
    assert recorded["_template_version"] == template["_template_version"]
    for key in ("task_type", "modality", "fusion", "logger", "backbone", "package_name"):
        assert key in recorded
    package = recorded["package_name"]
    init = (project / "src" / package / "__init__.py").read_text(encoding="utf-8")
    assert f'__template_version__ = "{template["_template_version"]}"' in init
    # The answers module the defaults and the toy data read (plain assignments: safe to run without torch).
    rendered = runpy.run_path(str(project / "src" / package / "answers.py"))
    assert rendered["TASK_TYPE"] == recorded["task_type"]
    assert rendered["MODALITIES"] == tuple(recorded["modality"].split("+"))
    assert rendered["FUSION"] == recorded["fusion"]


def test_only_the_chosen_options_files_are_left(project: Path) -> None:
    recorded = recorded_answers(project)
    wanted = {*SHARED_FILES, *TASK_FILES[recorded["task_type"]]}
    for part in recorded["modality"].split("+"):
        wanted |= set(MODALITY_FILES[part])
    if recorded["fusion"] != "none":
        wanted |= set(FUSED_FILES)
    package = recorded["package_name"]
    missing = sorted(path for path in wanted if not (project / path.format(package=package)).is_file())
    leftover = sorted(path for path in OPTION_FILES - wanted if (project / path.format(package=package)).exists())
    assert not missing, f"files the chosen options need are missing: {missing}"
    assert not leftover, f"files of options not chosen are left: {leftover}"


def top_level_imports(path: Path, package_parts: list[str]) -> Iterator[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) of the imports a module runs when it is imported.

    Imports inside functions, `if` or `try` blocks are guarded or lazy and left out on purpose.
    """
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield node.lineno, module, [alias.name for alias in node.names]


def test_no_module_imports_a_removed_one(project: Path) -> None:
    """A file the post-gen hook removed must not be imported at module level by a file it kept."""
    package = recorded_answers(project)["package_name"]
    src = project / "src"

    def exists(module: str) -> bool:
        path = src.joinpath(*module.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()

    removed = {
        path.format(package=package).removeprefix("src/").removesuffix(".py").replace("/", ".")
        for path in OPTION_FILES
        if path.startswith("src/") and not (project / path.format(package=package)).exists()
    }
    problems = []
    for path in [*src.rglob("*.py"), *(project / "tests").rglob("*.py")]:
        parts = list(path.relative_to(src).parent.parts) if path.is_relative_to(src) else []
        for line, module, names in top_level_imports(path, parts):
            if module != package and not module.startswith(f"{package}."):
                continue
            targets = [module, *(f"{module}.{name}" for name in names)]
            if not exists(module) or any(target in removed for target in targets):
                problems.append(f"{path.relative_to(project)}:{line} imports {module} {names or ''}".rstrip())
    assert not problems, "imports of missing modules:\n" + "\n".join(problems)


@pytest.mark.parametrize("logger", CHOICES["logger"])
def test_default_config_names_the_chosen_logger(logger: str, baked: Callable[[dict[str, str]], Path]) -> None:
    classes = {"wandb": "WandbLogger", "tensorboard": "TensorBoardLogger", "csv": "CSVLogger"}
    project = baked({"logger": logger})
    config = yaml.safe_load((project / "configs" / "default.yaml").read_text(encoding="utf-8"))
    assert config["trainer"]["logger"]["class_path"].endswith(classes[logger])


def test_dev_requirements_cover_the_rendered_dependencies(baked: Callable[[dict[str, str]], Path]) -> None:
    """The test environment pre-installs what rendered projects need (see requirements-dev.txt)."""
    project = baked({"logger": "tensorboard"})
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = pyproject["optional-dependencies"]
    # rendered_env.py installs the project as `make install` does: .[dev,export,serve,stream,data-centric]
    wanted = pyproject["dependencies"] + extras["dev"] + extras["export"] + extras["serve"] + extras["data-centric"]
    wanted += extras["stream"]
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


def make_dry_run(project: Path, *args: str) -> str:
    """The commands `make ARGS` would run (`make -n`), with the Makefile's default PYTHON."""
    # As typed in a shell, not nested in the make that runs this suite (`make test`): its variables would add
    # "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    dry = subprocess.run(["make", "-n", *args], cwd=project, capture_output=True, text=True, env=env)
    assert dry.returncode == 0, dry.stderr
    return dry.stdout


def ci_workflow(project: Path) -> dict[str, Any]:
    return yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))


def test_ci_workflow_keeps_github_expressions_and_parses(project: Path) -> None:
    text = (project / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    assert "${{ matrix.python-version }}" in text  # GitHub's own expression syntax survives rendering
    runs = [step["run"] for step in ci_workflow(project)["jobs"]["test"]["steps"] if "run" in step]
    # CI runs the Makefile's targets, so it checks with the very commands `make lint` / `make test` run locally;
    # it installs torch's CPU wheels (CPU=1), as a CPU-only user would.
    for command in ("install CPU=1", "lint", "test"):
        assert any(re.search(rf"^make {command}$", run, re.MULTILINE) for run in runs), (command, runs)
    assert "ruff check ." in make_dry_run(project, "lint") and "ruff format --check ." in make_dry_run(project, "lint")
    assert "-m pytest" in make_dry_run(project, "test")


def test_make_install_cpu_installs_the_cpu_wheels_before_the_project(project: Path) -> None:
    cpu = make_dry_run(project, "install", "CPU=1").splitlines()
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu[0] and "torch torchvision" in cpu[0], cpu
    assert '-e ".[dev,export,serve,stream,data-centric]"' in cpu[1], cpu
    default = make_dry_run(project, "install")
    assert "download.pytorch.org" not in default and '-e ".[dev,export,serve,stream,data-centric]"' in default
    assert "download.pytorch.org" not in make_dry_run(project, "install", "CPU=0")


@pytest.mark.parametrize("python_version", CHOICES["python_version"])
def test_ci_tests_the_lowest_answered_python_and_the_newest(
    python_version: str, baked: Callable[[dict[str, str]], Path]
) -> None:
    project = baked({"python_version": python_version})
    matrix = ci_workflow(project)["jobs"]["test"]["strategy"]["matrix"]["python-version"]
    assert all(isinstance(version, str) for version in matrix), matrix  # 3.10 unquoted would be the float 3.1
    requires = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    newest = max(CHOICES["python_version"], key=lambda version: tuple(map(int, version.split("."))))
    assert requires == f">={python_version}"
    assert matrix == sorted({python_version, newest}, key=lambda version: tuple(map(int, version.split("."))))


def test_makefile_targets_resolve(project: Path) -> None:
    help_text = subprocess.run(["make", "help"], cwd=project, capture_output=True, text=True, check=True).stdout
    for target in ("install", "data", "train", "test", "test-slow", "lint", "sweep", "export"):
        assert re.search(rf"^{target}\t", help_text, re.MULTILINE), (target, help_text)
        make_dry_run(project, target)
    package = recorded_answers(project)["package_name"]
    assert f"-m {package} fit" in make_dry_run(project, "train")
    sweep = make_dry_run(project, "sweep", "SWEEP=configs/sweep_bayes.yaml", "COUNT=3")
    assert f"-m {package} sweep --file configs/sweep_bayes.yaml --count 3" in sweep
    assert f"-m {package} export --config configs/default.yaml --config configs/toy.yaml --ckpt_path best" in (
        make_dry_run(project, "export")
    )


# Config keys that mean something only with an image input, and the task options of each task type.
IMAGE_ONLY_KEYS = {
    "image", "image_column", "image_size", "augment", "image_size_schedule", "backbone", "pretrained",
    "pretrained_file", "lr_ratio", "layer_decay", "channels_last", "finetuning", "mixing", "tta",
}  # fmt: skip
TASK_OPTION_KEYS = {
    "label_smoothing": "multiclass",
    "pos_weight": "binary",
    "loss": "regression",
    "dice_weight": "segmentation",
}


def config_keys(value: object) -> set[str]:
    """Every mapping key anywhere in a parsed YAML document."""
    if isinstance(value, dict):
        return set(value).union(*(config_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(config_keys(v) for v in value))
    return set()


def test_default_config_shows_only_keys_of_its_answers(project: Path) -> None:
    """A render's default.yaml carries no image keys without an image input and no other task type's options."""
    recorded = recorded_answers(project)
    keys = config_keys(yaml.safe_load((project / "configs" / "default.yaml").read_text(encoding="utf-8")))
    if "image" not in recorded["modality"].split("+"):
        assert not keys & IMAGE_ONLY_KEYS, (
            f"image-only keys in a {recorded['modality']} project: {keys & IMAGE_ONLY_KEYS}"
        )
    foreign = {key for key, task in TASK_OPTION_KEYS.items() if key in keys and task != recorded["task_type"]}
    assert not foreign, f"options of other task types in a {recorded['task_type']} project: {foreign}"


TASK_TYPE_LITERAL = re.compile(r"[\"'](multiclass|binary|multilabel|regression|segmentation)[\"']")


def test_task_behaviour_lives_in_tasks(project: Path) -> None:
    """No task-type name as a string outside tasks/ (and answers.py, which records the answer): a task's behaviour
    lives in its own tasks/<type>.py, so adding or deleting a task type touches no other module."""
    package = project / "src" / recorded_answers(project)["package_name"]
    found = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in package.rglob("*.py")
        if "tasks" not in path.relative_to(package).parts[:1] and path.name != "answers.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if TASK_TYPE_LITERAL.search(line)
    ]
    assert not found, "task-type names outside tasks/:\n" + "\n".join(found)


MAX_CONSTRUCTOR_PARAMETERS = 12


def test_no_constructor_takes_more_than_twelve_arguments(project: Path) -> None:
    """What a user extends or configures stays small: a new capability is a component, a callback or a group of
    options (data/options.py), never one more constructor argument past twelve."""
    package = project / "src" / recorded_answers(project)["package_name"]
    too_wide = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for init in (item for item in node.body if isinstance(item, ast.FunctionDef)):
                    arguments = init.args
                    count = len(arguments.posonlyargs + arguments.args + arguments.kwonlyargs) - 1  # not self
                    if init.name == "__init__" and count > MAX_CONSTRUCTOR_PARAMETERS:
                        too_wide.append(f"{path.relative_to(package)}: {node.name}.__init__ takes {count}")
    assert not too_wide, "\n".join(too_wide)
