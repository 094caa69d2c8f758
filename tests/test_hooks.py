"""Tests of the pre/post-gen hooks: their rules as pure functions, and cookiecutter run like a user runs it.

Looking a backbone up in timm imports torch (about 7 s): the unit tests use a stand-in list, the other
command-line bakes set the hook's skip variable, and one end-to-end test pays for the real lookup.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import COOKIECUTTER_JSON, TEMPLATE_DIR, assert_known_keys
from cookiecutter.generate import generate_context
from cookiecutter.prompt import prompt_for_config
from cookiecutter.utils import create_env_with_context

import hooks.post_gen_project as post
import hooks.pre_gen_project as pre

HAS_TIMM = importlib.util.find_spec("timm") is not None  # find_spec does not import it (no torch cost)
HAS_GIT = shutil.which("git") is not None
FAST = {pre.SKIP_TIMM_CHECK_ENV: "1"}  # environment that skips the timm lookup in the pre-gen hook


@functools.cache
def _default_context() -> dict[str, Any]:
    context = generate_context(context_file=str(TEMPLATE_DIR / "cookiecutter.json"))
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


def test_keyword_package_name() -> None:
    errors = pre.validate(answers(package_name="class"), check_timm=False)
    assert errors == ["package_name='class' is a Python keyword and cannot be imported; choose another name"]


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
    env = {**os.environ, **FAST}
    if check_timm:
        env.pop(pre.SKIP_TIMM_CHECK_ENV)
    command = [sys.executable, "-m", "cookiecutter", "--config-file", str(user_config), "-o", str(output_dir)]
    return subprocess.run(
        [*command, *args],
        check=False,  # callers assert on the exit code
        capture_output=True,
        text=True,
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
    """Non-zero exit, nothing left in output_dir, and (if given) one stderr line starting with expected_line."""
    assert result.returncode != 0, result.stdout
    assert list(output_dir.iterdir()) == [], "cookiecutter left a half-made project"
    if expected_line:
        lines = result.stderr.splitlines()
        assert any(line.startswith(expected_line) for line in lines), result.stderr


@pytest.mark.parametrize(
    ("overrides", "expected_line"),
    [
        (
            {"project_slug": "My Project!"},
            "error: project_slug='My Project!' is not a valid folder/distribution",
        ),
        (
            {"project_name": "My Project!"},
            "error: project_slug='my-project!' is not a valid folder/distribution",
        ),
        ({"package_name": "1abc"}, "error: package_name='1abc' is not a valid Python package name"),
        ({"package_name": "class"}, "error: package_name='class' is a Python keyword"),
        ({"package_name": "torch"}, "error: package_name='torch' would shadow the module 'torch'"),
        (
            {"task_type": "segmentation", "modality": "tabular"},
            "error: task_type='segmentation' predicts a class per pixel of one image, so modality must be 'image'",
        ),
        (
            {"task_type": "segmentation", "modality": "image+tabular", "fusion": "concat"},
            "error: task_type='segmentation' predicts a class per pixel of one image, so modality must be 'image' "
            "(got modality='image+tabular')",
        ),
        (
            {"modality": "tabular+sequence", "fusion": "none"},
            "error: modality='tabular+sequence' has several inputs, so fusion must be one of concat, late, gated",
        ),
        (
            {"modality": "image", "fusion": "concat"},
            "error: modality='image' is a single input, so fusion must be 'none' (got fusion='concat')",
        ),
        ({"backbone": "ResNet-18"}, "error: backbone='ResNet-18' is not a timm model name"),
    ],
)
def test_cli_refuses_bad_answers(
    tmp_path: Path, user_config: Path, overrides: dict[str, str], expected_line: str
) -> None:
    assert_refused(bake_cli(tmp_path, user_config, overrides), tmp_path, expected_line)


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
    # Replay (or a hand-edited replay file) skips cookiecutter's own choice check: the hook must catch it.
    replay_file = tmp_path_factory.mktemp("replay") / "edited.json"
    replay_file.write_text(json.dumps({"cookiecutter": answers(task_type="bogus")}), encoding="utf-8")
    result = run_cookiecutter(tmp_path, user_config, "--replay-file", str(replay_file), str(TEMPLATE_DIR))
    assert_refused(result, tmp_path, "error: task_type='bogus' is not a valid choice; allowed: multiclass,")


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
TABULAR_FILES = {"src/pkg/data/tabular.py", "src/pkg/models/encoders/tabular.py", "tests/test_tabular.py"}
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
