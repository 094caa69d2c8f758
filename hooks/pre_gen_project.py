"""Validate the answers before cookiecutter writes any file.

Cookiecutter renders this file with Jinja and runs it with the Python that runs cookiecutter (which
usually has no torch or timm: standard library only). A non-zero exit aborts the render and cookiecutter
deletes the half-made project folder.

The rules are plain tables and pure functions so tests can import them (``from hooks.pre_gen_project import
validate, valid_combinations``) and enumerate the valid option combinations from the same source. The only
Jinja expression in this file is the string literal ``_ANSWERS_JSON``, read by ``main()`` alone, so
importing the unrendered file works. Keep every other double brace out of this file: Jinja would
interpret it too.
"""

from __future__ import annotations

import difflib
import itertools
import json
import keyword
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

# --- Choices ------------------------------------------------------------------------------------------
# Mirrors the choice lists of cookiecutter.json (tests check they agree). Cookiecutter refuses an unknown
# choice given on the command line or through the API, but a replay file or a hand-edited context is
# passed through unchecked, so the hook checks again.
CHOICES: dict[str, tuple[str, ...]] = {
    "python_version": ("3.11", "3.12", "3.13", "3.10"),
    "task_type": ("multiclass", "binary", "multilabel", "regression", "segmentation"),
    "modality": (
        "image",
        "tabular",
        "sequence",
        "image+tabular",
        "image+sequence",
        "tabular+sequence",
        "image+tabular+sequence",
    ),
    "fusion": ("none", "concat", "late", "gated"),
    "logger": ("wandb", "tensorboard", "csv"),
}

# The three variables whose combinations the template enumerates (and tests parametrize over).
COMBINATION_KEYS: tuple[str, ...] = ("task_type", "modality", "fusion")

# --- Names -----------------------------------------------------------------------------------------------
# A distribution / folder name: lowercase words of letters and digits joined by single '-', starting
# with a letter (so it is also a valid, already-normalized PEP 503 project name).
SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
SLUG_ALLOWED = "lowercase letters, digits and single '-' between them, starting with a letter"

PACKAGE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
PACKAGE_ALLOWED = "lowercase letters, digits and '_', starting with a letter"

# Top-level names a package must not take: with a src layout the standard library (earlier on sys.path)
# wins and the project becomes unimportable; a clash with a dependency breaks that dependency.
# sys.stdlib_module_names exists on Python >= 3.10, which cookiecutter 2.7 requires; it leaves out the
# stdlib 'test' package. 'tests', 'data', 'models', ... are folders imported by their bare name.
RESERVED_PACKAGE_NAMES: frozenset[str] = frozenset(sys.stdlib_module_names) | {
    "test",
    "tests",
    "src",
    "data",
    "models",
    "configs",
    "scripts",
    "torch",
    "torchvision",
    "torchmetrics",
    "timm",
    "lightning",
    "lightning_fabric",
    "lightning_utilities",
    "pytorch_lightning",
    "wandb",
    "tensorboard",
    "jsonargparse",
    "numpy",
    "pandas",
    "yaml",
    "pytest",
    "setuptools",
    "pip",
}

# A timm model name with an optional pretrained tag, e.g. 'resnet18' or 'resnet18.a1_in1k'.
BACKBONE_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)?$")

# Looking a backbone up in timm imports torch (about 7 s). Set this environment variable to "1" to keep
# only the format check, e.g. in a test suite that bakes many projects with the default backbone.
SKIP_TIMM_CHECK_ENV = "TEMPLATE_SKIP_TIMM_CHECK"


# --- Combination rules ---------------------------------------------------------------------------------
def modality_parts(modality: str) -> list[str]:
    """Split a modality answer such as 'image+tabular' into its inputs."""
    return modality.split("+")


class CombinationRule(NamedTuple):
    """``allows(task_type, modality, fusion)`` is False for a forbidden combination; ``message`` is
    formatted with the same three names."""

    allows: Callable[[str, str, str], bool]
    message: str


COMBINATION_RULES: tuple[CombinationRule, ...] = (
    CombinationRule(
        lambda task, modality, fusion: task != "segmentation" or modality == "image",
        "task_type={task_type!r} predicts a class per pixel of one image, so modality must be 'image' "
        "(got modality={modality!r})",
    ),
    CombinationRule(
        lambda task, modality, fusion: len(modality_parts(modality)) > 1 or fusion == "none",
        "modality={modality!r} is a single input, so fusion must be 'none' (got fusion={fusion!r})",
    ),
    CombinationRule(
        lambda task, modality, fusion: len(modality_parts(modality)) == 1 or fusion != "none",
        "modality={modality!r} has several inputs, so fusion must be one of concat, late, gated "
        "(got fusion={fusion!r})",
    ),
)


def combination_errors(task_type: str, modality: str, fusion: str) -> list[str]:
    """One message per combination rule that (task_type, modality, fusion) breaks."""
    return [
        rule.message.format(task_type=task_type, modality=modality, fusion=fusion)
        for rule in COMBINATION_RULES
        if not rule.allows(task_type, modality, fusion)
    ]


def valid_combinations() -> list[dict[str, str]]:
    """Every (task_type, modality, fusion) the combination rules allow: each one must bake and train."""
    return [
        dict(zip(COMBINATION_KEYS, values, strict=True))
        for values in itertools.product(*(CHOICES[key] for key in COMBINATION_KEYS))
        if not combination_errors(*values)
    ]


# --- Single-variable checks ----------------------------------------------------------------------------
def _choice_errors(answers: dict[str, Any]) -> list[str]:
    errors = []
    for key, allowed in CHOICES.items():
        value = answers.get(key)
        if value not in allowed:
            errors.append(f"{key}={value!r} is not a valid choice; allowed: {', '.join(allowed)}")
    return errors


def _slug_errors(slug: Any) -> list[str]:
    if isinstance(slug, str) and SLUG_RE.match(slug):
        return []
    message = (
        f"project_slug={slug!r} is not a valid folder/distribution name; allowed: {SLUG_ALLOWED} (e.g. 'my-dl-project')"
    )
    return [message]


def _package_errors(name: Any) -> list[str]:
    if not (isinstance(name, str) and PACKAGE_RE.match(name) and name.isidentifier()):
        message = (
            f"package_name={name!r} is not a valid Python package name; "
            f"allowed: {PACKAGE_ALLOWED} (e.g. 'my_dl_project')"
        )
        return [message]
    if keyword.iskeyword(name):
        return [f"package_name={name!r} is a Python keyword and cannot be imported; choose another name"]
    if name in RESERVED_PACKAGE_NAMES:
        message = (
            f"package_name={name!r} would shadow the module {name!r} "
            "(standard library, a dependency or a project folder); choose another name"
        )
        return [message]
    return []


def _timm_model_names(tagged: bool) -> list[str] | None:
    """timm's model names (with pretrained tags if ``tagged``), or None when timm is not installed."""
    try:
        # Lazy on purpose: timm imports torch (slow) and is usually absent where cookiecutter runs.
        import timm
    except ImportError:
        return None
    return timm.list_models(pretrained=True) if tagged else timm.list_models()


def _backbone_errors(backbone: Any, check_timm: bool) -> list[str]:
    if not (isinstance(backbone, str) and BACKBONE_RE.match(backbone)):
        message = (
            f"backbone={backbone!r} is not a timm model name; allowed: lowercase letters, digits and '_', "
            "optionally followed by '.' and a pretrained tag (e.g. 'resnet18', 'resnet18.a1_in1k')"
        )
        return [message]
    if not check_timm:
        return []
    tagged = "." in backbone
    names = _timm_model_names(tagged)
    if names is None or backbone in names:
        return []
    kind = "pretrained timm model/tag" if tagged else "timm model"
    return [f"backbone={backbone!r} is not a known {kind}; {_backbone_hint(backbone, names)}"]


def _backbone_hint(backbone: str, names: list[str]) -> str:
    """Suggest close spellings, else names sharing a prefix: the model's other tags ('resnet18.'), or
    its family ('resnet' for 'resnet_does_not_exist')."""
    close = difflib.get_close_matches(backbone, names, n=3)
    if close:
        return f"close matches: {', '.join(close)}"
    model = backbone.split(".")[0]
    for prefix in (f"{model}.", re.match(r"[a-z]*", model).group()):
        same = [name for name in names if prefix and name.startswith(prefix)]
        if same:
            more = ", ..." if len(same) > 5 else ""
            return f"timm names starting with {prefix!r}: {', '.join(same[:5])}{more}"
    return "see timm.list_models(pretrained=True)" if "." in backbone else "see timm.list_models()"


# --- Entry points -----------------------------------------------------------------------------------------
def validate(answers: dict[str, Any], *, check_timm: bool = True) -> list[str]:
    """Return one human-readable line per problem in ``answers`` (empty when they are fine).

    ``answers`` is the cookiecutter context (private '_' keys are ignored). Each line names the variable
    and the value given. With ``check_timm`` (the default) and timm importable, the backbone must be a
    model timm knows; without timm only its format is checked.
    """
    errors = _slug_errors(answers.get("project_slug"))
    errors += _package_errors(answers.get("package_name"))
    errors += _choice_errors(answers)
    combo = {key: answers.get(key) for key in COMBINATION_KEYS}
    # Combination rules only make sense between known values; unknown ones were reported above.
    if all(value in CHOICES[key] for key, value in combo.items()):
        errors += combination_errors(**combo)
    errors += _backbone_errors(answers.get("backbone"), check_timm)
    return errors


# Rendered by cookiecutter into a one-line JSON object holding every answer (tojson also turns ' < > &
# into \u escapes, which json.loads decodes). No value can end this raw string early: a '"' inside a JSON
# string arrives as a backslash-quote, which never closes a raw string, and JSON never writes three
# quotes in a row. Unlike pasting "{...}" per variable into code, booleans stay booleans (not "True").
_ANSWERS_JSON = r"""{{ cookiecutter | tojson }}"""


def _rendered_answers() -> dict[str, Any]:
    """The answers cookiecutter rendered into this file; fails clearly on the raw template file."""
    try:
        return json.loads(_ANSWERS_JSON)
    except json.JSONDecodeError as err:
        raise RuntimeError("run this hook through cookiecutter: its answers were not rendered") from err


def main() -> int:
    check_timm = os.environ.get(SKIP_TIMM_CHECK_ENV, "").lower() not in ("1", "true", "yes")
    errors = validate(_rendered_answers(), check_timm=check_timm)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
