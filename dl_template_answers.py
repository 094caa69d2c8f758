"""This template's Jinja extension: it checks the answers inside cookiecutter, before any folder is created.

cookiecutter.json lists it in ``_extensions`` (cookiecutter puts the template folder on ``sys.path`` while it
renders, cruft too) and ends with the variable ``"__answers_checked": "{{ cookiecutter | check_answers }}"``.
Cookiecutter renders that variable after every question is answered and before it creates the project folder, so
a refusal raised here leaves nothing behind. The pre-gen hook only runs after the folder exists, and its failure
makes cookiecutter print a traceback; a refusal raised here is a ``FailedHookException``, which cookiecutter's
command line prints as it is: one line per problem, then exit status 1.

The rules themselves live in hooks/pre_gen_project.py (loaded from its file: the ``hooks`` package name is too
common to import by name here), which checks again when the prompts are skipped (``--replay``).

Also a filter for the rendered files: ``toml_escape`` writes a value inside a TOML basic string.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from cookiecutter.exceptions import FailedHookException
from jinja2 import Environment
from jinja2.ext import Extension


def _load_rules() -> ModuleType:
    """hooks/pre_gen_project.py next to this file: as ``hooks.pre_gen_project`` when that name is this template's
    (always in its own tests, which import it), else loaded from its file under a name of its own."""
    path = Path(__file__).resolve().parent / "hooks" / "pre_gen_project.py"
    package = importlib.util.find_spec("hooks")  # found, not imported: another 'hooks' package stays untouched
    if package is not None and package.origin and Path(package.origin).resolve() == path.with_name("__init__.py"):
        return importlib.import_module("hooks.pre_gen_project")
    name = "dl_template_answers_rules"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


rules = _load_rules()


class AnswersRefused(FailedHookException):
    """The answers break the template's rules; the message holds one ``error: ...`` line per problem."""


def check_answers(answers: Mapping[str, Any]) -> str:
    """Refuse bad answers (``AnswersRefused``); return ``rules.answers_digest`` of good ones.

    On --replay cookiecutter renders only the variables missing from the replay file, so the answers are not
    all here: nothing to check then (the pre-gen hook checks them) and the result is empty.
    """
    answers = dict(answers)
    if not rules.has_every_answer(answers):
        return ""
    errors = rules.validate(answers, check_timm=rules.timm_check_enabled())
    if errors:
        raise AnswersRefused("\n".join(f"error: {error}" for error in errors))
    return rules.answers_digest(answers)


# TOML basic strings: these escapes by name, every other control character as \uXXXX.
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_escape(value: Any) -> str:
    """``value`` written for the inside of a TOML basic string ("..."), e.g. a '"' in an author's name."""
    out = []
    for char in str(value):
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


class AnswerChecks(Extension):
    """Adds the filters ``check_answers`` and ``toml_escape``."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["check_answers"] = check_answers
        environment.filters["toml_escape"] = toml_escape
