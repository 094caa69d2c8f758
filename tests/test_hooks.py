"""Tests of the pre/post-gen hooks: their rules as pure functions, and cookiecutter run like a user runs it.

BAD_ANSWERS is the table of every kind of bad answer: each must give exactly one error from the rules, and the
real command line must refuse it with that one line, no traceback and no folder (the answer check runs inside
cookiecutter, through the template's Jinja extension dl_template_answers.py, before any folder exists).

Looking a backbone up in timm imports torch (about 7 s): the unit tests use a stand-in list, the other
command-line bakes set the hook's skip variable, and one end-to-end test pays for the real lookup.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import pytest
import yaml
from conftest import COOKIECUTTER_JSON, TEMPLATE_DIR, assert_known_keys, bake
from cookiecutter.exceptions import FailedHookException
from cookiecutter.generate import generate_context
from cookiecutter.main import cookiecutter
from cookiecutter.prompt import prompt_for_config
from cookiecutter.utils import create_env_with_context

import dl_template_answers as answer_checks
import hooks.post_gen_project as post
import hooks.pre_gen_project as pre

HAS_TIMM = importlib.util.find_spec("timm") is not None  # find_spec does not import it (no torch cost)
HAS_GIT = shutil.which("git") is not None
FAST = {pre.SKIP_TIMM_CHECK_ENV: "1"}  # environment that skips the timm lookup in the pre-gen hook


@functools.cache
def _default_context() -> dict[str, Any]:
    context = generate_context(context_file=str(TEMPLATE_DIR / "cookiecutter.json"))
    with mock.patch.dict(os.environ, FAST):  # the answer check inside cookiecutter: no timm lookup (torch import)
        return dict(prompt_for_config(context, no_input=True))


def default_answers() -> dict[str, Any]:
    """The context a --no-input render uses, derived values (slug, package name) rendered by cookiecutter."""
    return copy.deepcopy(_default_context())


def answers(**overrides: Any) -> dict[str, Any]:
    """The default answers with ``overrides``, each of them a variable of cookiecutter.json."""
    assert_known_keys(overrides)
    return {**default_answers(), **overrides}


# --- pre-gen hook: tables agree with cookiecutter.json -----------------------------------------------------
def test_choices_mirror_cookiecutter_json() -> None:
    json_choices = {
        key: tuple(value)
        for key, value in COOKIECUTTER_JSON.items()
        if isinstance(value, list) and not key.startswith("_")
    }
    assert json_choices == pre.CHOICES


def test_defaults_are_a_valid_combination() -> None:
    defaults = default_answers()
    assert {key: defaults[key] for key in pre.COMBINATION_KEYS} in pre.valid_combinations()


# --- pre-gen hook: validate() --------------------------------------------------------------------------------
def test_default_answers_are_valid() -> None:
    assert pre.validate(default_answers(), check_timm=False) == []


@pytest.mark.parametrize("slug", ["My Project!", "my-project!", "1abc", "my_project", "my--project", "-x", "x-", ""])
def test_bad_project_slug(slug: str) -> None:
    errors = pre.validate(answers(project_slug=slug), check_timm=False)
    assert len(errors) == 1, errors
    assert f"project_slug={slug!r} is not a valid folder/distribution name; allowed: " in errors[0]


@pytest.mark.parametrize("name", ["1abc", "My_pkg", "my-pkg", "my pkg", "", "_private"])
def test_malformed_package_name(name: str) -> None:
    errors = pre.validate(answers(package_name=name), check_timm=False)
    assert len(errors) == 1, errors
    assert f"package_name={name!r} is not a valid Python package name; allowed: " in errors[0]


@pytest.mark.parametrize(
    "name",
    ["torch", "timm", "lightning", "pytorch_lightning", "wandb", "test", "tests", "data", "models", "json"],
)
def test_package_name_shadowing_a_module(name: str) -> None:
    errors = pre.validate(answers(package_name=name), check_timm=False)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"package_name={name!r} would shadow the module {name!r}")


@pytest.mark.parametrize("key", sorted(pre.CHOICES))
def test_unknown_choice(key: str) -> None:
    errors = pre.validate(answers(**{key: "bogus"}), check_timm=False)
    # One line only: the combination rules are not applied to an unknown value.
    assert errors == [f"{key}='bogus' is not a valid choice; allowed: {', '.join(pre.CHOICES[key])}"]


def test_missing_answer_is_reported() -> None:
    context = default_answers()
    del context["logger"]
    assert pre.validate(context, check_timm=False) == [
        f"logger=None is not a valid choice; allowed: {', '.join(pre.CHOICES['logger'])}"
    ]


SEGMENTATION_NEEDS_IMAGE = (
    "task_type='segmentation' predicts a class per pixel of one image, so modality must be 'image' (got modality={!r})"
)
SINGLE_INPUT = "modality={!r} is a single input, so fusion must be 'none' (got fusion={!r})"
SEVERAL_INPUTS = "modality={!r} has several inputs, so fusion must be one of concat, late, gated (got fusion='none')"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"fusion": "concat"}, [SINGLE_INPUT.format("image", "concat")]),
        ({"modality": "sequence", "fusion": "gated"}, [SINGLE_INPUT.format("sequence", "gated")]),
        ({"modality": "image+tabular", "fusion": "none"}, [SEVERAL_INPUTS.format("image+tabular")]),
        ({"task_type": "segmentation", "modality": "tabular"}, [SEGMENTATION_NEEDS_IMAGE.format("tabular")]),
        (
            {"task_type": "segmentation", "modality": "image+tabular", "fusion": "late"},
            [SEGMENTATION_NEEDS_IMAGE.format("image+tabular")],
        ),
        (
            {"task_type": "segmentation", "modality": "image+sequence", "fusion": "none"},
            [SEGMENTATION_NEEDS_IMAGE.format("image+sequence"), SEVERAL_INPUTS.format("image+sequence")],
        ),
    ],
)
def test_invalid_combinations(overrides: dict[str, str], expected: list[str]) -> None:
    assert sorted(pre.validate(answers(**overrides), check_timm=False)) == sorted(expected)


@pytest.mark.parametrize("backbone", ["ResNet18", "resnet-18", "resnet18.", ".a1", "a.b.c", "", "resnet 18"])
def test_malformed_backbone(backbone: str) -> None:
    errors = pre.validate(answers(backbone=backbone), check_timm=False)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"backbone={backbone!r} is not a timm model name; allowed: ")


def test_backbone_lookup_is_skipped_without_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    assert pre.validate(answers(backbone="resnet_does_not_exist")) == []


# A stand-in for timm's registry: the lookup logic is tested fast and independent of timm's model list.
# The real timm lookup runs once, end to end, in test_cli_refuses_unknown_backbone.
FAKE_TIMM = {
    False: ["convnext_tiny", "efficientnet_b0", "resnet18", "resnet50"],
    True: ["convnext_tiny.fb_in1k", "resnet18.a1_in1k", "resnet18.tv_in1k", "resnet50.a1_in1k"],
}


@pytest.fixture
def fake_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pre, "_timm_model_names", lambda tagged: FAKE_TIMM[tagged])


@pytest.mark.usefixtures("fake_timm")
@pytest.mark.parametrize("backbone", ["resnet18", "convnext_tiny", "resnet18.a1_in1k", "resnet50.a1_in1k"])
def test_known_backbone(backbone: str) -> None:
    assert pre.validate(answers(backbone=backbone)) == []


@pytest.mark.usefixtures("fake_timm")
@pytest.mark.parametrize(
    ("backbone", "expected"),
    [
        # a close spelling exists
        ("convnext_tyni", "is not a known timm model; close matches: convnext_tiny"),
        # none: names of the same family
        (
            "resnet_does_not_exist",
            "is not a known timm model; timm names starting with 'resnet': resnet18, resnet50",
        ),
        # a tagged name is looked up among pretrained names: an unknown tag lists the model's real tags
        (
            "resnet18.no_such_tag",
            "is not a known pretrained timm model/tag; timm names starting with 'resnet18.': resnet18.a1_in1k,",
        ),
        ("zzz_model", "is not a known timm model; see timm.list_models()"),
        ("zzz.tag", "is not a known pretrained timm model/tag; see timm.list_models(pretrained=True)"),
    ],
)
def test_unknown_backbone(backbone: str, expected: str) -> None:
    errors = pre.validate(answers(backbone=backbone))
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"backbone={backbone!r} {expected}")


def test_backbone_lookup_can_be_switched_off(fake_timm: None) -> None:
    assert pre.validate(answers(backbone="zzz_model"), check_timm=False) == []


def test_private_keys_are_ignored() -> None:
    assert pre.validate({**default_answers(), "_copy_without_render": 42, "_x": "?"}, check_timm=False) == []


# --- pre-gen hook: combination rules ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("combo", "expected"),
    [
        (("segmentation", "tabular", "none"), "task_type='segmentation' predicts a class per pixel of one image"),
        (("segmentation", "image+tabular", "concat"), "task_type='segmentation' predicts a class per pixel"),
        (("multiclass", "image", "concat"), "modality='image' is a single input, so fusion must be 'none'"),
        (("multiclass", "image+tabular", "none"), "modality='image+tabular' has several inputs"),
    ],
)
def test_each_combination_rule(combo: tuple[str, str, str], expected: str) -> None:
    [error] = pre.combination_errors(*combo)
    assert error.startswith(expected)


def test_valid_combinations_are_exactly_the_rule_valid_ones() -> None:
    combos = pre.valid_combinations()
    assert len(combos) == len({tuple(combo.values()) for combo in combos})  # no duplicates
    for task_type in pre.CHOICES["task_type"]:
        for modality in pre.CHOICES["modality"]:
            for fusion in pre.CHOICES["fusion"]:
                combo = {"task_type": task_type, "modality": modality, "fusion": fusion}
                assert (combo in combos) == (not pre.combination_errors(**combo)), combo
    assert {"task_type": "segmentation", "modality": "tabular", "fusion": "none"} not in combos
    assert {"task_type": "segmentation", "modality": "image+tabular", "fusion": "gated"} not in combos
    assert {"task_type": "segmentation", "modality": "image", "fusion": "none"} in combos
    assert {"task_type": "regression", "modality": "image+sequence", "fusion": "gated"} in combos


def test_valid_combination_count() -> None:
    # 4 task types x (3 single inputs with fusion none + 4 multi-input modalities x 3 fusions) + segmentation/image
    assert len(pre.valid_combinations()) == 4 * (3 + 4 * 3) + 1 == 61


def test_every_valid_combination_passes_and_every_other_is_refused() -> None:
    valid = pre.valid_combinations()
    for values in itertools.product(*(pre.CHOICES[key] for key in pre.COMBINATION_KEYS)):
        combo = dict(zip(pre.COMBINATION_KEYS, values, strict=True))
        errors = pre.validate(answers(**combo), check_timm=False)
        assert (errors == []) == (combo in valid), (combo, errors)


# --- pre-gen hook: names, text answers, the dependency table ---------------------------------------------------
def test_answer_keys_are_the_questions_of_cookiecutter_json() -> None:
    questions = [key for key in COOKIECUTTER_JSON if not key.startswith("_")]
    assert questions == list(pre.ANSWER_KEYS)


def test_answers_are_checked_inside_cookiecutter_after_every_question() -> None:
    keys = list(COOKIECUTTER_JSON)
    # Rendered in the order of cookiecutter.json: the check must come after every answer it reads.
    assert keys.index(pre.CHECKED_KEY) > max(keys.index(key) for key in pre.ANSWER_KEYS)
    assert COOKIECUTTER_JSON[pre.CHECKED_KEY] == "{{ cookiecutter | check_answers }}"
    assert "dl_template_answers.AnswerChecks" in COOKIECUTTER_JSON["_extensions"]


def _context_without_check(**overrides: str) -> dict[str, Any]:
    """The answers cookiecutter makes of cookiecutter.json and ``overrides`` (the slug and package name derived
    from the overrides), without its answer check."""
    context = generate_context(context_file=str(TEMPLATE_DIR / "cookiecutter.json"), extra_context=overrides)
    del context["cookiecutter"][pre.CHECKED_KEY]
    return dict(prompt_for_config(context, no_input=True))


@pytest.mark.parametrize(
    "name", ["My DL Project", "  Padded Name ", "snake_case name", "Détection d'objets", "", "A/B"]
)
def test_derived_names_follow_cookiecutter_json(name: str) -> None:
    rendered = _context_without_check(project_name=name)
    assert rendered["project_slug"] == pre.derive_slug(name)
    assert rendered["package_name"] == pre.derive_package(rendered["project_slug"])


def test_derived_name_problems_are_reported_once_at_their_source() -> None:
    assert pre.validate(
        answers(project_name="x" * 300, project_slug="x" * 300, package_name="x" * 300), check_timm=False
    )[0].startswith("project_slug='xxx")
    [error] = pre.validate(
        answers(project_name="", project_slug="", package_name=""), check_timm=False
    )  # one line: the name, not the slug and the package derived from it
    assert error.startswith("project_name='' is empty")
    [error] = pre.validate(answers(project_slug="rich", package_name="rich"), check_timm=False)
    assert error.endswith("; it comes from project_slug='rich': give package_name=... to choose it")


def test_keyword_package_name() -> None:
    errors = pre.validate(answers(package_name="class"), check_timm=False)
    assert errors == ["package_name='class' is a Python keyword and cannot be imported; allowed: any other name"]


def _rendered_pyproject(**overrides: Any) -> dict[str, Any]:
    """The rendered project's pyproject.toml for these answers (rendered alone, as cookiecutter renders it)."""
    context = {"cookiecutter": answers(**overrides)}
    source = (TEMPLATE_DIR / "{{cookiecutter.project_slug}}" / "pyproject.toml").read_text(encoding="utf-8")
    return tomllib.loads(create_env_with_context(context).from_string(source).render(**context))


def _requirement_names(pyproject: dict[str, Any]) -> set[str]:
    requirements = list(pyproject["build-system"]["requires"]) + list(pyproject["project"]["dependencies"])
    for extra in pyproject["project"].get("optional-dependencies", {}).values():
        requirements += extra
    names = {re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group() for requirement in requirements}
    return {re.sub(r"[-_.]+", "-", name).lower() for name in names}  # PEP 503 normalized


def test_dependency_table_covers_every_requirement_of_the_rendered_project() -> None:
    names = set()
    for logger in pre.CHOICES["logger"]:
        names |= _requirement_names(_rendered_pyproject(logger=logger))
    assert {"torch", "pytorch-lightning", "rich", "pillow", "onnx", "setuptools"} <= names  # the parse works
    missing = sorted(names - set(pre.DEPENDENCY_MODULES))
    assert not missing, f"add these requirements' import names to DEPENDENCY_MODULES: {missing}"


def test_dependency_table_lists_the_installed_import_names() -> None:
    # Where a requirement is installed here, the import names it really provides must all be in its row.
    provided: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            provided.setdefault(re.sub(r"[-_.]+", "-", dist).lower(), set()).add(module)
    checked = 0
    for dist, listed in pre.DEPENDENCY_MODULES.items():
        real = {name for name in provided.get(dist, ()) if name.isidentifier() and not name.startswith("_")}
        real -= {"distutils"}  # setuptools' stand-in for the old standard-library module
        assert real <= set(listed), (dist, sorted(real - set(listed)))
        checked += bool(real)
    assert checked >= 5  # torch, rich, pillow, ... are installed in the template's .venv


def test_every_listed_module_is_refused() -> None:
    tables = {**pre.DEPENDENCY_MODULES, **pre.INDIRECT_DEPENDENCY_MODULES}
    for name in {name for names in tables.values() for name in names} | pre.PROJECT_MODULES:
        [error] = pre.validate(answers(package_name=name), check_timm=False)
        assert error.startswith(f"package_name={name!r} "), error


def test_helpers_of_the_rendered_tests_are_reserved() -> None:
    tests = TEMPLATE_DIR / "{{cookiecutter.project_slug}}" / "tests"
    helpers = {path.stem for path in tests.glob("*.py") if not path.name.startswith("test_")}
    assert helpers <= pre.PROJECT_MODULES, sorted(helpers - pre.PROJECT_MODULES)


# Answers that look risky but are fine: each one renders (test_tricky_answers_render_valid_files).
TRICKY_TEXT = {
    "project_name": "Détection d'objets 😀 <b>&</b> {braces}",
    "project_slug": "detection",
    "author": 'Zoë O\'Brien "ZB" \\ Jr.',
    "email": "zoe.o-brien+dl@example.co.uk",
    "description": 'Reproduce "Attention Is All You Need" – über-fast 😀 <b>&</b> it\'s {braces}.',
}


@pytest.mark.parametrize(
    "overrides",
    [
        {"author": 'Bob "the builder"'},
        {"author": "C:\\Users\\ada\\"},  # a backslash is escaped in pyproject.toml, even at the end
        {"description": ""},
        {"description": '"Quoted" start and middle "part" end.'},
        {"email": "ada@xn--exmple-cua.com"},
        {"project_name": "Ünïcode 名前", "project_slug": "unicode"},  # the derived slug would not be ASCII
        TRICKY_TEXT,
    ],
)
def test_tricky_answers_are_accepted(overrides: dict[str, str]) -> None:
    assert pre.validate(answers(**overrides), check_timm=False) == []


@pytest.mark.parametrize(
    "text", ["plain", 'a "quoted" word', "back\\slash\\", "tab\tand\nnewline\r", "\x00\x1f\x7f", "é😀"]
)
def test_toml_escape_round_trips(text: str) -> None:
    assert tomllib.loads(f'value = "{answer_checks.toml_escape(text)}"')["value"] == text


def test_check_answers_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pre.SKIP_TIMM_CHECK_ENV, "1")
    assert answer_checks.rules is pre  # one copy of the rules: what tests patch, the extension uses
    good = default_answers()
    assert answer_checks.check_answers(good) == pre.answers_digest(good) == good[pre.CHECKED_KEY]
    # On --replay cookiecutter renders only the variables missing from the replay file: the hook checks then.
    assert answer_checks.check_answers({"logger": "csv"}) == ""
    with pytest.raises(answer_checks.AnswersRefused) as refused:
        answer_checks.check_answers({**good, "package_name": "rich", "email": "x"})
    assert isinstance(refused.value, FailedHookException)  # what cookiecutter's command line prints as it is
    assert str(refused.value).splitlines() == [
        f"error: {error}" for error in pre.validate({**good, "package_name": "rich", "email": "x"}, check_timm=False)
    ]


def test_extension_ignores_another_hooks_package(tmp_path: Path) -> None:
    # `python -m cookiecutter` run from a folder that has a hooks/ package of its own (another template): the
    # extension must still load this template's rules, without importing that package.
    other = tmp_path / "hooks"
    other.mkdir()
    (other / "__init__.py").write_text("raise RuntimeError('the wrong hooks package was imported')\n", encoding="utf-8")
    code = "import dl_template_answers as a, sys; print(a.rules.__name__, 'hooks' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TEMPLATE_DIR)])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["dl_template_answers_rules", "False"]


def test_answers_digest_follows_the_answers_only() -> None:
    good = default_answers()
    assert pre.answers_digest({**good, "_output_dir": "/elsewhere", pre.CHECKED_KEY: "x"}) == pre.answers_digest(good)
    assert pre.answers_digest({**good, "backbone": "resnet50"}) != pre.answers_digest(good)


def test_unsafe_to_delete(tmp_path: Path) -> None:
    assert not pre._unsafe_to_delete(tmp_path, "my-project")  # one plain folder: cookiecutter made it
    (tmp_path / "made").mkdir()
    assert not pre._unsafe_to_delete(tmp_path, "made/..")  # only empty folders (made by cookiecutter just now)
    assert not pre._unsafe_to_delete(tmp_path / "made", "a/b")
    (tmp_path / "user-file.txt").write_text("mine", encoding="utf-8")
    for slug in ["..", ".", "made/..", "", "a\\..", None]:
        assert pre._unsafe_to_delete(tmp_path, slug), slug


# --- the hook files are importable raw and render into valid Python ------------------------------------------
@pytest.mark.parametrize("hook", [pre, post])
def test_raw_hook_refuses_to_run_unrendered(hook: Any) -> None:
    with pytest.raises(RuntimeError, match="not rendered"):
        hook._rendered_answers()


@pytest.mark.parametrize("hook", [pre, post])
def test_hook_renders_answers_as_data(hook: Any, tmp_path: Path) -> None:
    tricky = "it's '''odd''' \"\"\" \\ <b>&</b> {braces} é 😀\nsecond line\\"
    context = answers(description=tricky, author='O\'Brien "Bob"')
    source = Path(hook.__file__).read_text(encoding="utf-8")
    full_context = {"cookiecutter": context}
    # The same environment and call cookiecutter's hooks.run_script_with_context uses.
    rendered = create_env_with_context(full_context).from_string(source).render(**full_context)
    # Only the answers line changes: any other Jinja in the file would be a bug.
    changed = [line for line in rendered.splitlines() if line not in source.splitlines()]
    assert len(changed) == 1 and changed[0].startswith("_ANSWERS_JSON = "), changed
    rendered_file = tmp_path / "rendered_hook.py"
    rendered_file.write_text(rendered, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("rendered_hook", rendered_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imported, not run as __main__: main() is not called
    assert module._rendered_answers() == context


# --- cookiecutter run like a user runs it ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def user_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cookiecutter config that keeps replay files and clones out of ~ and out of the output folder."""
    home = tmp_path_factory.mktemp("cookiecutter_home")
    config = home / "config.yaml"
    config.write_text(f"cookiecutters_dir: {home / 'cookiecutters'}\nreplay_dir: {home / 'replay'}\n", encoding="utf-8")
    return config


def run_cookiecutter(
    output_dir: Path, user_config: Path, *args: str, check_timm: bool = False
) -> subprocess.CompletedProcess[str]:
    """The real command line, from a folder of its own (not the template: nothing importable by accident)."""
    env = {**os.environ, **FAST, "PYTHONIOENCODING": "utf-8"}
    if check_timm:
        env.pop(pre.SKIP_TIMM_CHECK_ENV)
    command = [sys.executable, "-m", "cookiecutter", "--config-file", str(user_config), "-o", str(output_dir)]
    return subprocess.run(
        [*command, *args],
        check=False,  # callers assert on the exit code
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=output_dir.parent,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def bake_cli(
    output_dir: Path, user_config: Path, overrides: dict[str, str], check_timm: bool = False
) -> subprocess.CompletedProcess[str]:
    assert_known_keys(overrides)
    pairs = [f"{key}={value}" for key, value in overrides.items()]
    return run_cookiecutter(output_dir, user_config, "--no-input", str(TEMPLATE_DIR), *pairs, check_timm=check_timm)


def assert_refused(result: subprocess.CompletedProcess[str], output_dir: Path, expected_line: str = "") -> None:
    """Non-zero exit, nothing left in output_dir, and (if given) one output line starting with expected_line."""
    assert result.returncode != 0, result.stdout
    assert list(output_dir.iterdir()) == [], "cookiecutter left a half-made project"
    if expected_line:
        lines = (result.stdout + result.stderr).splitlines()
        assert any(line.startswith(expected_line) for line in lines), result.stdout + result.stderr


class BadAnswer(NamedTuple):
    """Answers the template must refuse: ``variable`` is the one its single line names, ``says`` a part of it."""

    overrides: dict[str, str]
    variable: str
    says: str


ONE_LINE = "allowed: one line of text"
SLUG_RULE = f"is not a valid folder/distribution name; allowed: {pre.SLUG_ALLOWED}"
PACKAGE_RULE = f"is not a valid Python package name; allowed: {pre.PACKAGE_ALLOWED}"
SHADOW_RULE = "allowed: a name that no standard-library module, dependency or project folder uses"
DESCRIPTION_RULE = "(it is the package docstring: no backslash, no '\"' at the end or three in a row)"

# Every kind of bad answer, refused inside cookiecutter before any folder exists. Kept in one table: the rules
# are checked on it (one error each) and the real command line is run on it (one line of output, no folder).
BAD_ANSWERS: dict[str, BadAnswer] = {
    # project_name (the slug and the package name are derived from it)
    "name-empty": BadAnswer({"project_name": ""}, "project_name", f"is empty; {ONE_LINE}, not empty"),
    "name-blank": BadAnswer({"project_name": "   "}, "project_name", f"is empty; {ONE_LINE}, not empty"),
    "name-newline": BadAnswer({"project_name": "My\nProject"}, "project_name", "control character '\\n'; allowed:"),
    "name-tab": BadAnswer({"project_name": "My\tProject"}, "project_name", "control character '\\t'; allowed:"),
    "name-line-separator": BadAnswer({"project_name": "My\u2028Project"}, "project_name", "'\\u2028'; allowed:"),
    "name-300-chars": BadAnswer(
        {"project_name": "x" * 300},
        "project_slug",
        f"(300 characters) {SLUG_RULE} (e.g. 'my-dl-project'); it "
        "comes from project_name='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (300 characters)",
    ),
    "name-gives-bad-slug": BadAnswer(
        {"project_name": "My Project!"}, "project_slug", "it comes from project_name='My Project!'"
    ),
    "name-gives-shadowing-package": BadAnswer(
        {"project_name": "Rich"}, "package_name", "would shadow the module 'rich' of the dependency rich"
    ),
    # project_slug: one plain folder name
    "slug-slash": BadAnswer({"project_slug": "a/b"}, "project_slug", SLUG_RULE),
    "slug-dotdot": BadAnswer({"project_slug": ".."}, "project_slug", SLUG_RULE),
    "slug-dot": BadAnswer({"project_slug": "."}, "project_slug", SLUG_RULE),
    "slug-climbs-back": BadAnswer({"project_slug": "x/.."}, "project_slug", SLUG_RULE),
    "slug-backslash": BadAnswer({"project_slug": "a\\b"}, "project_slug", SLUG_RULE),
    "slug-empty": BadAnswer({"project_slug": ""}, "project_slug", SLUG_RULE),
    "slug-space-capitals": BadAnswer({"project_slug": "My Project"}, "project_slug", SLUG_RULE),
    "slug-underscore": BadAnswer({"project_slug": "my_project"}, "project_slug", SLUG_RULE),
    "slug-leading-digit": BadAnswer({"project_slug": "1abc"}, "project_slug", SLUG_RULE),
    "slug-double-hyphen": BadAnswer({"project_slug": "my--project"}, "project_slug", SLUG_RULE),
    "slug-non-ascii": BadAnswer({"project_slug": "détection"}, "project_slug", SLUG_RULE),
    "slug-65-chars": BadAnswer({"project_slug": "a" * 65}, "project_slug", f"(65 characters) {SLUG_RULE}"),
    # package_name: an importable name of its own
    "package-shadows-dependency": BadAnswer(
        {"package_name": "rich"}, "package_name", f"shadow the module 'rich' of the dependency rich; {SHADOW_RULE}"
    ),
    "package-shadows-extra": BadAnswer(
        {"package_name": "onnx"}, "package_name", f"shadow the module 'onnx' of the dependency onnx; {SHADOW_RULE}"
    ),
    "package-shadows-indirect-dependency": BadAnswer(
        {"package_name": "huggingface_hub"}, "package_name", "of huggingface-hub, installed alongside the dependencies"
    ),
    "package-shadows-lightning": BadAnswer(
        {"package_name": "lightning_fabric"}, "package_name", "of the dependency pytorch-lightning"
    ),
    "package-shadows-stdlib": BadAnswer({"package_name": "json"}, "package_name", "of the standard library"),
    "package-shadows-project-folder": BadAnswer(
        {"package_name": "tests"}, "package_name", "(a folder or helper of the rendered project)"
    ),
    "package-keyword": BadAnswer({"package_name": "class"}, "package_name", "is a Python keyword"),
    "package-hyphen": BadAnswer({"package_name": "my-pkg"}, "package_name", PACKAGE_RULE),
    "package-empty": BadAnswer({"package_name": ""}, "package_name", PACKAGE_RULE),
    "package-capitals": BadAnswer({"package_name": "My_pkg"}, "package_name", PACKAGE_RULE),
    "package-leading-underscore": BadAnswer({"package_name": "_private"}, "package_name", PACKAGE_RULE),
    "package-300-chars": BadAnswer({"package_name": "x" * 300}, "package_name", f"(300 characters) {PACKAGE_RULE}"),
    # author, email, description: text that lands in pyproject.toml, a docstring, a YAML comment
    "author-empty": BadAnswer({"author": ""}, "author", f"is empty; {ONE_LINE}, not empty"),
    "author-newline": BadAnswer({"author": "Ada\nLovelace"}, "author", "control character '\\n'; allowed:"),
    "email-no-at": BadAnswer(
        {"email": "not-an-email"}, "email", f"is not an e-mail address; allowed: {pre.EMAIL_ALLOWED}"
    ),
    "email-no-dot": BadAnswer({"email": "me@localhost"}, "email", "is not an e-mail address; allowed:"),
    "email-with-name": BadAnswer({"email": "Ada <ada@example.com>"}, "email", "is not an e-mail address; allowed:"),
    "email-quote": BadAnswer({"email": 'a"b@example.com'}, "email", "is not an e-mail address; allowed:"),
    "description-newline": BadAnswer({"description": "one\ntwo"}, "description", "control character '\\n'"),
    "description-backslash": BadAnswer({"description": "C:\\data"}, "description", f"backslash; {ONE_LINE} "),
    "description-ends-with-quote": BadAnswer(
        {"description": 'Reproduce "Attention"'}, "description", f"ends with '\"'; {ONE_LINE} {DESCRIPTION_RULE}"
    ),
    "description-triple-quote": BadAnswer({"description": 'a """ b'}, "description", "three '\"' in a row"),
    # combinations and the backbone
    "segmentation-without-images": BadAnswer(
        {"task_type": "segmentation", "modality": "tabular"}, "task_type", "so modality must be 'image'"
    ),
    "several-inputs-without-fusion": BadAnswer(
        {"modality": "tabular+sequence", "fusion": "none"}, "modality", "so fusion must be one of concat, late, gated"
    ),
    "one-input-with-fusion": BadAnswer(
        {"modality": "image", "fusion": "concat"}, "modality", "is a single input, so fusion must be 'none'"
    ),
    "backbone-capitals": BadAnswer({"backbone": "ResNet-18"}, "backbone", "is not a timm model name; allowed:"),
    "backbone-empty": BadAnswer({"backbone": ""}, "backbone", "is not a timm model name; allowed:"),
}


def test_bad_answer_table_is_broad() -> None:
    assert len(BAD_ANSWERS) >= 25
    for case in BAD_ANSWERS.values():
        assert_known_keys(case.overrides)


@pytest.mark.parametrize("case", BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
def test_bad_answer_gives_one_error_naming_its_variable(case: BadAnswer) -> None:
    errors = pre.validate(_context_without_check(**case.overrides), check_timm=False)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{case.variable}="), errors
    assert case.says in errors[0], errors


@pytest.mark.parametrize("case", BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
def test_cli_refuses_bad_answer_in_one_line_and_leaves_no_folder(
    tmp_path: Path, user_config: Path, case: BadAnswer
) -> None:
    # A folder of its own around the output folder: '..' or 'x/..' must not touch it either.
    work = tmp_path / "work"
    output_dir = work / "out"
    output_dir.mkdir(parents=True)
    result = bake_cli(output_dir, user_config, case.overrides)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Traceback" not in out
    [line] = out.splitlines()  # cookiecutter prints the refusal as it is: exactly one line, on stdout
    [error] = pre.validate(_context_without_check(**case.overrides), check_timm=False)
    assert line == f"error: {error}"
    assert line.startswith(f"error: {case.variable}=") and case.says in line
    assert [path.name for path in work.iterdir()] == ["out"]
    assert list(output_dir.iterdir()) == [], "cookiecutter left a folder"


def test_refusal_through_the_python_api_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pre.SKIP_TIMM_CHECK_ENV, "1")
    output_dir = tmp_path / "new"  # does not exist: a slug 'x/..' used to make cookiecutter delete it
    with pytest.raises(FailedHookException, match=r"^error: project_slug='x/\.\.' is not a valid") as refused:
        cookiecutter(
            str(TEMPLATE_DIR), no_input=True, extra_context={"project_slug": "x/.."}, output_dir=str(output_dir)
        )
    assert isinstance(refused.value, answer_checks.AnswersRefused)
    assert not output_dir.exists()


def test_cli_reports_every_problem_one_line_each(tmp_path: Path, user_config: Path) -> None:
    result = bake_cli(tmp_path, user_config, {"package_name": "rich", "email": "nope", "fusion": "late"})
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert [line.split("=")[0] for line in result.stdout.splitlines()] == [
        "error: package_name",
        "error: email",
        "error: modality",
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not HAS_TIMM, reason="timm not installed where cookiecutter runs")
def test_cli_refuses_unknown_backbone(tmp_path: Path, user_config: Path) -> None:
    result = bake_cli(tmp_path, user_config, {"backbone": "resnet_does_not_exist"}, check_timm=True)
    assert_refused(result, tmp_path, "error: backbone='resnet_does_not_exist' is not a known timm model")


def test_cli_refuses_unknown_choice_before_hooks(tmp_path: Path, user_config: Path) -> None:
    # Cookiecutter itself rejects it (ValueError) before any hook runs: no message of ours to check.
    assert_refused(bake_cli(tmp_path, user_config, {"task_type": "bogus"}), tmp_path)


def test_replay_file_with_unknown_choice_is_refused_by_the_hook(
    tmp_path: Path, user_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Replay (or a hand-edited replay file) skips the prompts, so cookiecutter's own choice check and the check
    # inside cookiecutter (__answers_checked): the pre-gen hook must catch it.
    replay_file = tmp_path_factory.mktemp("replay") / "edited.json"
    replay_file.write_text(json.dumps({"cookiecutter": answers(task_type="bogus")}), encoding="utf-8")
    result = run_cookiecutter(tmp_path, user_config, "--replay-file", str(replay_file), str(TEMPLATE_DIR))
    assert_refused(result, tmp_path, "error: task_type='bogus' is not a valid choice; allowed: multiclass,")
    # What the README says cookiecutter prints after a failed hook, which no template can change: its own
    # ERROR line and traceback on stdout, then the exception's one line.
    assert result.stdout.startswith("ERROR: Stopping generation because pre_gen_project hook script didn't exit")
    assert "Traceback (most recent call last)" in result.stdout
    assert result.stdout.splitlines()[-1] == "Hook script failed (exit status: 1)"
    assert result.stderr.splitlines() == [
        f"error: task_type='bogus' is not a valid choice; allowed: {', '.join(pre.CHOICES['task_type'])}"
    ]


def test_replayed_slug_that_climbs_back_cannot_delete_the_users_folder(tmp_path: Path, user_config: Path) -> None:
    # Only the pre-gen hook sees a replayed 'x/..': cookiecutter has made x/ and runs the hook in x/.. (the output
    # folder itself), which its clean-up after a failed hook would delete, the user's files with it.
    output_dir = tmp_path / "mine"
    output_dir.mkdir()
    (output_dir / "thesis.tex").write_text("months of work", encoding="utf-8")
    replay_file = tmp_path / "edited.json"
    replay_file.write_text(json.dumps({"cookiecutter": answers(project_slug="x/..")}), encoding="utf-8")
    result = run_cookiecutter(output_dir, user_config, "--replay-file", str(replay_file), str(TEMPLATE_DIR))
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr  # stopped by the hook
    assert (output_dir / "thesis.tex").read_text(encoding="utf-8") == "months of work"
    assert result.stderr.splitlines() == [
        f"error: {pre.validate(answers(project_slug='x/..'), check_timm=False)[0]}",
        f"error: stopping cookiecutter now: its clean-up after this refusal would delete {output_dir.resolve()}",
    ]


@pytest.mark.parametrize(
    "overrides", [TRICKY_TEXT, {"author": "C:\\Users\\ada\\", "description": ""}], ids=["quotes-unicode", "backslash"]
)
def test_tricky_answers_render_valid_files(
    cookies: Any, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str]
) -> None:
    project = bake(cookies, monkeypatch, **overrides)
    given = _context_without_check(**overrides)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert pyproject["description"] == given["description"]
    assert pyproject["authors"] == [{"name": given["author"], "email": given["email"]}]
    init = (project / "src" / given["package_name"] / "__init__.py").read_text(encoding="utf-8")
    assert ast.get_docstring(ast.parse(init), clean=False) == given["description"]
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert f"# {given['project_name']}\n" in readme and given["description"] in readme
    config = (project / "configs" / "default.yaml").read_text(encoding="utf-8")
    assert f"# {given['project_name']}: " in config
    yaml.safe_load(config)
    recorded = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))
    assert {key: recorded[key] for key in overrides} == overrides


# --- post-gen hook ------------------------------------------------------------------------------------------------
def test_removal_table_names_known_variables() -> None:
    for removal in post.REMOVE_WHEN:
        assert_known_keys({removal.variable: None})
        assert removal.paths
        for path in removal.paths:  # relative to the project root, never outside it
            assert not Path(path).is_absolute() and ".." not in Path(path).parts, path


# The files each option brings, written out here rather than read back from the table under test.
IMAGE_FILES = {
    "src/pkg/data/image.py",
    "src/pkg/data/augment.py",
    "src/pkg/models/encoders/image.py",
    "src/pkg/practices/callbacks/finetuning.py",
    "src/pkg/practices/callbacks/mixing.py",
    "src/pkg/practices/tta.py",
    "tests/test_data.py",
    "tests/test_pretrained.py",
}
TABULAR_FILES = {
    "src/pkg/data/tabular.py",
    "src/pkg/data/columns.py",
    "src/pkg/models/encoders/tabular.py",
    "tests/test_tabular.py",
}
SEQUENCE_FILES = {"src/pkg/data/sequence.py", "src/pkg/models/encoders/sequence.py", "tests/test_sequence.py"}
SEGMENTATION_FILES = {"src/pkg/models/segmentation.py", "tests/test_segmentation.py"}
FUSION_FILES = {"tests/test_fusion_training.py"}  # removed when fusion is none
TASK_TYPES = ("multiclass", "binary", "multilabel", "regression", "segmentation")


def task_files_except(task_type: str) -> set[str]:
    return {f"src/pkg/tasks/{other}.py" for other in TASK_TYPES if other != task_type}


@pytest.mark.parametrize(
    ("combo", "expected"),
    [
        (("multiclass", "image", "none"), TABULAR_FILES | SEQUENCE_FILES | SEGMENTATION_FILES | FUSION_FILES),
        (("binary", "tabular", "none"), IMAGE_FILES | SEQUENCE_FILES | SEGMENTATION_FILES | FUSION_FILES),
        (("multilabel", "sequence", "none"), IMAGE_FILES | TABULAR_FILES | SEGMENTATION_FILES | FUSION_FILES),
        (("regression", "image+sequence", "late"), TABULAR_FILES | SEGMENTATION_FILES),
        (("regression", "tabular+sequence", "gated"), IMAGE_FILES | SEGMENTATION_FILES),
        (("binary", "image+tabular+sequence", "concat"), SEGMENTATION_FILES),
        (("segmentation", "image", "none"), TABULAR_FILES | SEQUENCE_FILES | FUSION_FILES),
    ],
)
def test_paths_to_remove(combo: tuple[str, str, str], expected: set[str]) -> None:
    task_type, modality, fusion = combo
    chosen = answers(task_type=task_type, modality=modality, fusion=fusion, package_name="pkg")
    removed = post.paths_to_remove(chosen)
    assert len(removed) == len(set(removed))  # each path once
    assert set(removed) == expected | task_files_except(task_type)


def test_removal_table_covers_every_task_type() -> None:
    assert set(TASK_TYPES) == set(pre.CHOICES["task_type"])


def test_shared_modules_are_never_removed() -> None:
    shared = {"src/pkg/models/fusion.py", "tests/test_fusion.py", "tests/test_tasks.py", "src/pkg/tasks/__init__.py"}
    for combo in pre.valid_combinations():
        assert not shared & set(post.paths_to_remove(answers(**combo, package_name="pkg"))), combo


def test_remove_paths_skips_missing_and_prunes_empty_folders(tmp_path: Path) -> None:
    for relative in ["src/pkg/data/image.py", "src/pkg/data/toy.py", "src/pkg/models/encoders/image.py"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("", encoding="utf-8")
    targets = ["src/pkg/data/image.py", "src/pkg/models/encoders/image.py", "src/pkg/does/not/exist.py"]
    removed = post.remove_paths(tmp_path, targets)
    root = tmp_path.resolve()
    assert removed == [root / "src/pkg/data/image.py", root / "src/pkg/models/encoders/image.py"]
    assert (tmp_path / "src/pkg/data/toy.py").exists()  # a folder that still has files stays
    assert not (tmp_path / "src/pkg/models").exists()  # folders left empty go, up to the root
    assert (tmp_path / "src/pkg").is_dir()


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_init_git_creates_a_repository(tmp_path: Path) -> None:
    assert post.init_git(tmp_path).startswith("initialized")
    assert (tmp_path / ".git").is_dir()


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_init_git_skips_inside_a_work_tree(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    project = tmp_path / "project"
    project.mkdir()
    assert post.init_git(project).startswith("already inside a git work tree")
    assert not (project / ".git").exists()


def test_init_git_without_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(post.shutil, "which", lambda name: None)
    assert post.init_git(tmp_path).startswith("git not found")
    assert not (tmp_path / ".git").exists()


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_init_git_commits_with_the_answers_identity_when_git_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)  # a fresh machine or CI runner: no user.name / user.email
    (tmp_path / "README.md").write_text("hello\n", encoding="utf-8")
    summary = post.init_git(tmp_path, "Initial commit from template 9.9", ("Ada Lovelace", "ada@example.com"))
    assert summary.startswith("initialized a git repository and committed"), summary
    git = ["git", "-C", str(tmp_path)]
    log = subprocess.run([*git, "log", "--format=%s|%an|%ae"], capture_output=True, text=True, check=True).stdout
    assert log == "Initial commit from template 9.9|Ada Lovelace|ada@example.com\n"
    assert subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout == ""
    # The identity was for that commit only: nothing written into the repository's config.
    config = subprocess.run([*git, "config", "--local", "--list"], capture_output=True, text=True).stdout
    assert "user." not in config


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_init_git_keeps_the_users_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Configured User")
    (tmp_path / "a.txt").write_text("a\n", encoding="utf-8")
    assert post.init_git(tmp_path, "first", ("Answer Author", "answer@example.com")).startswith("initialized")
    log = subprocess.run(["git", "-C", str(tmp_path), "log", "--format=%an"], capture_output=True, text=True)
    assert log.stdout == "Configured User\n"


def test_removal_summary_is_one_line_unless_verbose(tmp_path: Path) -> None:
    removed = [tmp_path / "src/a.py", tmp_path / "tests/test_a.py"]
    assert post.removal_summary(tmp_path, removed, verbose=False) == [
        "removed 2 files for options not chosen (TEMPLATE_VERBOSE=1 lists them)"
    ]
    assert post.removal_summary(tmp_path, removed, verbose=True) == [
        "removed src/a.py (not needed for these options)",
        "removed tests/test_a.py (not needed for these options)",
    ]
    assert post.removal_summary(tmp_path, [], verbose=False) == []


def test_say_survives_a_closed_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    # `cruft diff | head` or `cookiecutter ... | head`: the reader is gone, the render must still succeed.
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as stream:
        monkeypatch.setattr(sys, "stdout", stream)
        post.say(["x" * 100_000, "more"])  # more than a pipe holds


def test_cruft_throwaway_render_is_recognized(tmp_path: Path) -> None:
    temp = Path(tempfile.gettempdir()).resolve()
    cruft_answers = {**default_answers(), "_template": "/x/template", "_commit": "0" * 40}
    assert post.is_throwaway_render(cruft_answers, temp / "tmpab12cd_x" / "my-dl-project")
    assert not post.is_throwaway_render(default_answers(), temp / "tmpab12cd_x" / "my-dl-project")  # cookiecutter
    assert not post.is_throwaway_render(cruft_answers, tmp_path / "my-dl-project")  # `cruft create -o somewhere`


def test_locate_template_resolves_the_path_as_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    template = tmp_path / "work" / "template"
    template.mkdir(parents=True)
    (template / "cookiecutter.json").write_text("{}", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("PWD", str(tmp_path / "work"))
    # cookiecutter runs the hook from inside the template folder: its working folder is the answer
    assert post.locate_template({"_repo_dir": "."}, parent_cwd=template) == template
    assert post.locate_template({"_repo_dir": "../template"}, parent_cwd=template) == template
    # the working folder is not the template (the tail does not match): the shell's folder is the fallback
    assert post.locate_template({"_repo_dir": "template"}, parent_cwd=elsewhere) == template
    assert post.locate_template({"_repo_dir": str(template)}, parent_cwd=None) == template
    assert post.locate_template({"_repo_dir": "nowhere"}, parent_cwd=elsewhere) is None
    assert post.locate_template({}, parent_cwd=template) is None


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_template_source_and_cruft_state(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    template = repo / "templates" / "dl"  # a template in a folder of a bigger repository
    template.mkdir(parents=True)
    (template / "cookiecutter.json").write_text("{}", encoding="utf-8")
    identity = ["-c", "user.name=T", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    typed = {**default_answers(), "_template": "templates/dl", "_repo_dir": "templates/dl", "_checkout": None}
    assert post.template_source(typed, template).commit is None  # no commit yet: nothing for cruft to clone
    subprocess.run(["git", "add", "--all"], cwd=repo, check=True)
    subprocess.run(["git", *identity, "commit", "-q", "-m", "t"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()

    source = post.template_source(typed, template)
    assert source == post.TemplateSource(str(repo.resolve()), head, None, "templates/dl", dirty=False)
    (template / "new.txt").write_text("x", encoding="utf-8")
    assert post.template_source(typed, template).dirty
    state = post.cruft_state(typed, source)
    assert list(state) == ["template", "commit", "checkout", "context", "directory"]
    recorded = state["context"]["cookiecutter"]
    assert not {"_output_dir", "_repo_dir", "_checkout"} & set(recorded)
    assert list(recorded)[-2:] == ["_template", "_commit"]  # cruft's order: the answers, then these two
    assert (recorded["_template"], recorded["_commit"]) == (str(repo.resolve()), head)
    # cruft's own answers win: it resolved and cloned the template itself
    by_cruft = {**default_answers(), "_template": "https://example.com/t.git", "_commit": "c" * 40}
    assert post.template_source(by_cruft, None) == post.TemplateSource(
        "https://example.com/t.git", "c" * 40, None, None, False
    )


def test_bake_default_runs_post_gen_hook(
    cookies: Any, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pre.SKIP_TIMM_CHECK_ENV, "1")  # hooks run as subprocesses and inherit it
    overrides = {"project_name": "Hook Check", "logger": "csv"}
    assert_known_keys(overrides)
    result = cookies.bake(extra_context=overrides, template=str(TEMPLATE_DIR))
    assert result.exit_code == 0, result.exception
    assert result.exception is None
    project = result.project_path
    assert project.name == "hook-check"

    out = capfd.readouterr().out
    assert "Created hook-check. Next steps:" in out
    # Quiet by default: one summary line for the removed files, not one line each.
    [removed] = [line for line in out.splitlines() if line.startswith("removed ")]
    assert re.fullmatch(r"removed \d+ files for options not chosen \(TEMPLATE_VERBOSE=1 lists them\)", removed)
    for step in post.next_steps(result.context):
        assert f"  {step}\n" in out
    assert "  python -m hook_check fit --config configs/default.yaml --config configs/toy.yaml\n" in out
    assert (project / ".git").is_dir() == HAS_GIT
    if HAS_GIT:  # everything committed, .cruft.json too
        status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True)
        assert status.stdout == ""

    # The removal table agrees with the template: kept files exist, removed ones are gone.
    context = result.context
    for removal in post.REMOVE_WHEN:
        removed = removal.when(str(context[removal.variable]))
        for path in removal.paths:
            assert (project / path.format(package=context["package_name"])).exists() != removed, path
