"""Validate the answers before cookiecutter writes any file.

The rules here run twice. First inside cookiecutter, before it creates any folder: cookiecutter.json loads the
Jinja extension ``dl_template_answers`` (``_extensions``) and its last variable, ``__answers_checked``, applies
the extension's ``check_answers`` filter to every answer. A refusal there is one line per problem, printed by
cookiecutter's command line as it prints a failed hook, with nothing written. Then here, as the pre-gen hook: a
replay file (``--replay``) or a direct ``generate_files`` call skips the prompts and reaches only this check.

Cookiecutter renders this file with Jinja and runs it with the Python that runs cookiecutter (which usually has
no torch or timm: standard library only). A non-zero exit aborts the render and cookiecutter deletes the project
folder it created.

The rules are plain tables and pure functions so tests (and the extension) can import them (``from
hooks.pre_gen_project import validate, valid_combinations``) and enumerate the valid option combinations from the
same source. The only Jinja expression in this file is the string literal ``_ANSWERS_JSON``, read by ``main()``
alone, so importing the unrendered file works. Keep every other double brace out of this file: Jinja would
interpret it too.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import keyword
import os
import re
import signal
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
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
# Every variable a render needs (cookiecutter.json's questions; tests check they agree).
ANSWER_KEYS: tuple[str, ...] = (
    "project_name",
    "project_slug",
    "package_name",
    "author",
    "email",
    "description",
    "python_version",
    "task_type",
    "modality",
    "fusion",
    "backbone",
    "logger",
)

# A distribution / folder name: lowercase words of letters and digits joined by single '-', starting
# with a letter (so it is also a valid, already-normalized PEP 503 project name, and one plain folder: no '/',
# '.' or '..', which would make cookiecutter create or delete a folder other than the project's).
SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
# Long enough for any real name; short enough for paths and wheel file names (a 255-byte file name is the
# usual limit: a 300-character name fails with OSError 36 when cookiecutter creates the folder).
MAX_NAME_LENGTH = 64
SLUG_ALLOWED = (
    f"lowercase letters, digits and single '-' between them, starting with a letter, at most {MAX_NAME_LENGTH} "
    "characters"
)

PACKAGE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
PACKAGE_ALLOWED = f"lowercase letters, digits and '_', starting with a letter, at most {MAX_NAME_LENGTH} characters"


def derive_slug(project_name: str) -> str:
    """The default project_slug for ``project_name``: cookiecutter.json's expression (tests check they agree)."""
    return project_name.lower().strip().replace(" ", "-").replace("_", "-")


def derive_package(project_slug: str) -> str:
    """The default package_name for ``project_slug``: cookiecutter.json's expression (tests check they agree)."""
    return project_slug.replace("-", "_")


# Top-level names a package must not take: with a src layout the standard library (earlier on sys.path) wins
# and the project becomes unimportable; with a dependency's name one of the two is hidden (`python -m rich
# toy-data` would run Rich's demo). The rendered project cannot be imported here (standard library only), so the
# dependencies' import names are a static table. DEPENDENCY_MODULES maps every requirement of the rendered
# pyproject.toml (dependencies, every extra, build-system) to its top-level import names; tests check that it
# covers them and, where a dependency is installed, that its real import names are listed.
DEPENDENCY_MODULES: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "torchgen", "functorch"),
    "torchvision": ("torchvision",),
    "pytorch-lightning": ("pytorch_lightning", "lightning_fabric"),
    "torchmetrics": ("torchmetrics",),
    "timm": ("timm",),
    "wandb": ("wandb",),
    "jsonargparse": ("jsonargparse",),
    "rich": ("rich",),
    "pillow": ("PIL",),
    "tensorboard": ("tensorboard",),
    "pytest": ("pytest", "py"),
    "pytest-xdist": ("xdist",),
    "ruff": ("ruff",),
    "pre-commit": ("pre_commit",),
    "deepspeed": ("deepspeed",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime",),
    "onnxscript": ("onnxscript",),
    "setuptools": ("setuptools", "pkg_resources"),
    "litserve": ("litserve",),
    "python-multipart": ("multipart", "python_multipart"),
    "cleanlab": ("cleanlab",),
    "litdata": ("litdata",),
}
# What those dependencies install in turn (pip on Linux; the list changes with their versions, so it is kept
# by hand), plus what is often installed next to them (the unified `lightning` package, pandas, pip).
INDIRECT_DEPENDENCY_MODULES: dict[str, tuple[str, ...]] = {
    "lightning": ("lightning",),
    "lightning-utilities": ("lightning_utilities",),
    "numpy": ("numpy",),
    "pyyaml": ("yaml",),
    "huggingface-hub": ("huggingface_hub",),
    "safetensors": ("safetensors",),
    "matplotlib": ("matplotlib",),
    "pandas": ("pandas",),
    "tqdm": ("tqdm",),
    "fsspec": ("fsspec",),
    "packaging": ("packaging",),
    "typing-extensions": ("typing_extensions",),
    "filelock": ("filelock",),
    "jinja2": ("jinja2",),
    "markupsafe": ("markupsafe",),
    "networkx": ("networkx",),
    "sympy": ("sympy", "isympy"),
    "mpmath": ("mpmath",),
    "triton": ("triton",),
    "nvidia-cuda-runtime": ("nvidia",),
    "requests": ("requests",),
    "urllib3": ("urllib3",),
    "certifi": ("certifi",),
    "idna": ("idna",),
    "charset-normalizer": ("charset_normalizer",),
    "click": ("click",),
    "pydantic": ("pydantic",),
    "protobuf": ("google",),
    "platformdirs": ("platformdirs",),
    "psutil": ("psutil",),
    "sentry-sdk": ("sentry_sdk",),
    "gitpython": ("git",),
    "pygments": ("pygments",),
    "markdown-it-py": ("markdown_it",),
    "docstring-parser": ("docstring_parser",),
    "typeshed-client": ("typeshed_client",),
    "aiohttp": ("aiohttp",),
    "attrs": ("attr", "attrs"),
    "absl-py": ("absl",),
    "grpcio": ("grpc",),
    "markdown": ("markdown",),
    "werkzeug": ("werkzeug",),
    "pip": ("pip",),
}
# Folders and helper modules of the rendered project that are imported by their bare name (tests check that
# every helper module of its tests/ is here).
PROJECT_MODULES: frozenset[str] = frozenset(
    {"src", "tests", "data", "models", "configs", "scripts", "conftest", "standalone_predict"}
)
# sys.stdlib_module_names exists on Python >= 3.10, which cookiecutter 2.7 requires; it leaves out the stdlib
# 'test' package.
STDLIB_MODULES: frozenset[str] = frozenset(sys.stdlib_module_names) | {"test"}


def _module_owners() -> dict[str, str]:
    owners = {name: f"of the dependency {dist}" for dist, names in DEPENDENCY_MODULES.items() for name in names}
    for dist, names in INDIRECT_DEPENDENCY_MODULES.items():
        for name in names:
            owners.setdefault(name, f"of {dist}, installed alongside the dependencies")
    owners.update({name: "of the standard library" for name in STDLIB_MODULES})
    owners.update({name: "(a folder or helper of the rendered project)" for name in PROJECT_MODULES})
    return owners


# Module name -> what owns it, for the refusal message.
MODULE_OWNERS: dict[str, str] = _module_owners()
RESERVED_PACKAGE_NAMES: frozenset[str] = frozenset(MODULE_OWNERS)

# One-line text answers: project_name and author must say something, description may be empty. None may hold a
# line break or a control character (they go into one-line places: a TOML string, a YAML comment, a heading).
TEXT_KEYS: dict[str, bool] = {"project_name": False, "author": False, "description": True}  # key -> may be empty
TEXT_EXAMPLES = {"project_name": "My DL Project", "author": "Ada Lovelace", "description": "Find cats in photos."}
# What setuptools accepts (its pattern is [^@]+@[^@]+\.[^@]+), without what breaks an address header.
EMAIL_RE = re.compile(r"^[^@\s\"\\<>,;()\[\]]+@[^@\s\"\\<>,;()\[\]]+\.[^@\s\"\\<>,;()\[\]]+$")
EMAIL_ALLOWED = "an address like 'you@example.com' (one '@', a '.' after it, no spaces, quotes, brackets or commas)"
# Unicode categories that end a line or cannot be written to a file: controls (\n, \t, ...), line and
# paragraph separators, surrogates.
BAD_TEXT_CATEGORIES = ("Cc", "Zl", "Zp", "Cs")

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


def _show(value: Any) -> str:
    """``repr(value)``, shortened for a long value so that a refusal stays one readable line."""
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:30]!r}... ({len(value)} characters)"
    return repr(value)


def _derived_note(key: str, source_key: str, source: Any) -> str:
    return f"; it comes from {source_key}={_show(source)}: give {key}=... to choose it"


def _slug_valid(slug: Any) -> bool:
    return isinstance(slug, str) and bool(SLUG_RE.match(slug)) and len(slug) <= MAX_NAME_LENGTH


def _slug_errors(slug: Any, name: Any) -> list[str]:
    if _slug_valid(slug):
        return []
    derived = isinstance(name, str) and slug == derive_slug(name)
    if derived and _text_problem(name, "project_name"):
        return []  # the project_name line says it
    message = (
        f"project_slug={_show(slug)} is not a valid folder/distribution name; allowed: {SLUG_ALLOWED} "
        "(e.g. 'my-dl-project')"
    )
    return [message + (_derived_note("project_slug", "project_name", name) if derived else "")]


def _package_errors(name: Any, slug: Any, slug_ok: bool) -> list[str]:
    derived = isinstance(slug, str) and name == derive_package(slug)
    if derived and not slug_ok:
        return []  # the project_slug (or project_name) line says it
    note = _derived_note("package_name", "project_slug", slug) if derived else ""
    if not (isinstance(name, str) and PACKAGE_RE.match(name) and name.isidentifier()) or len(name) > MAX_NAME_LENGTH:
        message = (
            f"package_name={_show(name)} is not a valid Python package name; "
            f"allowed: {PACKAGE_ALLOWED} (e.g. 'my_dl_project')"
        )
        return [message + note]
    if keyword.iskeyword(name):
        return [f"package_name={name!r} is a Python keyword and cannot be imported; allowed: any other name{note}"]
    if name in RESERVED_PACKAGE_NAMES:
        message = (
            f"package_name={name!r} would shadow the module {name!r} {MODULE_OWNERS[name]}; allowed: a name that "
            "no standard-library module, dependency or project folder uses (e.g. 'my_dl_project')"
        )
        return [message + note]
    return []


def _text_problem(value: Any, key: str) -> str | None:
    """What makes ``value`` unfit for the one-line text answer ``key``, or None."""
    if not isinstance(value, str):
        return "is not text"
    if not value.strip() and not TEXT_KEYS.get(key, True):
        return "is empty"
    for char in value:
        if unicodedata.category(char) in BAD_TEXT_CATEGORIES:
            return f"holds the line break or control character {char!r}"
    if key == "description":  # it is the package's docstring: """<description>"""
        if "\\" in value:
            return "holds a backslash"
        if '"""' in value:
            return "holds three '\"' in a row"
        if value.endswith('"'):
            return "ends with '\"'"
    return None


def _text_errors(answers: dict[str, Any]) -> list[str]:
    errors = []
    for key, may_be_empty in TEXT_KEYS.items():
        value = answers.get(key)
        problem = _text_problem(value, key)
        if problem:
            rule = "one line of text" + ("" if may_be_empty else ", not empty")
            if key == "description":
                rule += " (it is the package docstring: no backslash, no '\"' at the end or three in a row)"
            errors.append(f"{key}={_show(value)} {problem}; allowed: {rule}, e.g. {TEXT_EXAMPLES[key]!r}")
    return errors


def _email_errors(email: Any) -> list[str]:
    if isinstance(email, str) and EMAIL_RE.match(email):
        return []
    return [f"email={_show(email)} is not an e-mail address; allowed: {EMAIL_ALLOWED}"]


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
    name, slug = answers.get("project_name"), answers.get("project_slug")
    errors = _text_errors(answers)
    errors += _slug_errors(slug, name)
    errors += _package_errors(answers.get("package_name"), slug, _slug_valid(slug))
    errors += _email_errors(answers.get("email"))
    errors += _choice_errors(answers)
    combo = {key: answers.get(key) for key in COMBINATION_KEYS}
    # Combination rules only make sense between known values; unknown ones were reported above.
    if all(value in CHOICES[key] for key, value in combo.items()):
        errors += combination_errors(**combo)
    errors += _backbone_errors(answers.get("backbone"), check_timm)
    return errors


# cookiecutter.json's last variable: the extension's check_answers filter renders it, inside cookiecutter and
# before any folder exists, to answers_digest() of the answers it accepted (or refuses them). The hook compares.
CHECKED_KEY = "__answers_checked"


def has_every_answer(answers: dict[str, Any]) -> bool:
    """False for the partial context cookiecutter renders on --replay (only variables missing from the replay
    file): the pre-gen hook checks those answers instead."""
    return all(key in answers for key in ANSWER_KEYS)


def answers_digest(answers: dict[str, Any]) -> str:
    """A short fingerprint of the answers (private '_' keys left out): what check_answers accepted."""
    public = {key: value for key, value in answers.items() if not key.startswith("_")}
    text = json.dumps(public, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


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


def timm_check_enabled() -> bool:
    """False when the environment asks to skip the timm lookup (SKIP_TIMM_CHECK_ENV)."""
    return os.environ.get(SKIP_TIMM_CHECK_ENV, "").lower() not in ("1", "true", "yes")


# --- Refusing safely from the hook -------------------------------------------------------------------------
def _unsafe_to_delete(project_dir: Path, slug: Any) -> bool:
    """True when cookiecutter's clean-up after a failed hook (``rmtree`` of the project folder) would delete
    more than it created: the slug is not one plain folder name ('x/..', '..' under a new -o folder) and the
    folder it points at holds something other than empty folders (the user's own files)."""
    plain = isinstance(slug, str) and slug not in ("", ".", "..") and "/" not in slug and "\\" not in slug
    if plain:
        return False
    try:
        entries = list(project_dir.iterdir())
    except OSError:
        return False
    return any(not entry.is_dir() or entry.is_symlink() or any(entry.iterdir()) for entry in entries)


def _stop_cookiecutter() -> None:
    """End the cookiecutter process that runs this hook before it can clean up (it is this process' parent)."""
    os.kill(os.getppid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def main() -> int:
    answers = _rendered_answers()
    # Checked inside cookiecutter already (the usual case): skip the slow timm lookup, keep the rest.
    checked = answers.get(CHECKED_KEY) == answers_digest(answers)
    errors = validate(answers, check_timm=timm_check_enabled() and not checked)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if not errors:
        return 0
    project_dir = Path.cwd()  # cookiecutter runs the pre-gen hook inside the folder it just made
    if _unsafe_to_delete(project_dir, answers.get("project_slug")):
        print(
            f"error: stopping cookiecutter now: its clean-up after this refusal would delete {project_dir}",
            file=sys.stderr,
            flush=True,
        )
        _stop_cookiecutter()
    return 1


if __name__ == "__main__":
    sys.exit(main())
