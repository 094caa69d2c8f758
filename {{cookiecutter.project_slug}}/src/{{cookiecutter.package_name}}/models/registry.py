"""One registry for the network's parts, timm style: `@register("head", "mlp")` on a class, `build(...)` by name.

Three kinds of part, each with its own constructor contract (the first arguments, filled in by the network):

    encoder  Encoder(**options), or Encoder.from_spec(input_spec, **options) when it is sized by the data
             (a vocabulary, feature counts); has `out_features`. An image encoder may add a classmethod
             `data_config(**options)` (input size, normalization) that the CLI links into the data.
    fusion   Fusion(feature_dims: {input: D}, make_head: in_features -> head, **options): features dict -> outputs
    head     Head(in_features, out_features, **options): [B, D] -> [B, out_features]

A config names a part by its registered name, or by an import path ("my_pkg.models.my_head.MLPHead") for a class
that is not registered, and passes the rest of the entry as keyword options: `head: {name: mlp, hidden_dim: 256}`.
A name that is not registered yet makes the registry import every module under models/ once, so a new file with
`@register(...)` in it is found without editing any other file.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

from torch import nn

KINDS = ("encoder", "fusion", "head")
_REGISTRY: dict[str, dict[str, Callable[..., nn.Module]]] = {kind: {} for kind in KINDS}
_discovered = False

Spec = str | dict[str, Any]


def register(kind: str, name: str) -> Callable[[type], type]:
    """Class decorator: make the class buildable as `name` for parts of `kind` (encoder, fusion or head)."""
    if kind not in KINDS:
        raise ValueError(f"unknown part kind {kind!r}; choose one of {', '.join(KINDS)}")

    def decorator(cls: type) -> type:
        known = _REGISTRY[kind].get(name)
        if known is not None and f"{known.__module__}.{known.__qualname__}" != f"{cls.__module__}.{cls.__qualname__}":
            raise ValueError(f"{kind} {name!r} is registered twice: {known.__module__} and {cls.__module__}")
        _REGISTRY[kind][name] = cls
        return cls

    return decorator


def registered(kind: str) -> list[str]:
    """The names registered for `kind` so far (after discovering every module under models/)."""
    _discover()
    return sorted(_REGISTRY[kind])


def _discover() -> None:
    """Import every module under models/ once, so their `@register` decorators run."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = importlib.import_module(__package__)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{__package__}."):
        importlib.import_module(info.name)


def resolve(kind: str, name: str) -> Callable[..., nn.Module]:
    """The class registered as `name` for `kind`, or the class at the import path `name`."""
    if "." in name:
        module_name, _, attribute = name.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"{kind} {name!r} cannot be imported: {error}") from None
    if name not in _REGISTRY[kind]:
        _discover()
    if name not in _REGISTRY[kind]:
        raise ValueError(
            f"{kind} {name!r} is not registered; registered: {', '.join(registered(kind))} "
            f"(or give an import path, e.g. my_package.models.my_{kind}.My{kind.title()})"
        )
    return _REGISTRY[kind][name]


def split_spec(kind: str, spec: Spec) -> tuple[str, dict[str, Any]]:
    """`"linear"` or `{"name": "linear", **options}` -> (name, options)."""
    if isinstance(spec, str):
        return spec, {}
    options = dict(spec)
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise ValueError(f"a {kind} entry needs a 'name' (one of {', '.join(registered(kind))}), got {spec!r}")
    # A dict given by a nested flag (--model.network.init_args.head '{"dropout": null}') reaches us re-read by
    # jsonargparse from its Python repr, so its nulls arrive as the string "None": read them back as null.
    return name, {key: None if value == "None" else value for key, value in options.items()}


def build(kind: str, spec: Spec, *args: Any, where: str = "") -> nn.Module:
    """Build the part `spec` names, with `args` (the kind's leading constructor arguments) and its options.

    Options the class does not take fail in one line naming the config entry (`where`) and the options it has.
    """
    name, options = split_spec(kind, spec)
    factory = resolve(kind, name)
    constructor: Callable[..., nn.Module] = factory
    if kind == "encoder":  # sized by the data (from_spec), or not: then the input spec is not passed
        constructor, args = (factory.from_spec, args) if hasattr(factory, "from_spec") else (factory, ())
    # A from_spec that passes **options on to the class is checked against the class's own keywords too.
    forwards_to = factory if constructor is not factory else None
    check_options(constructor, options, skip=len(args), where=where or f"{kind} {name!r}", forwards_to=forwards_to)
    return constructor(*args, **options)


def check_options(
    constructor: Callable[..., Any],
    options: dict[str, Any],
    skip: int,
    where: str,
    forwards_to: Callable[..., Any] | None = None,
) -> None:
    """Fail with one line when `options` holds a keyword `constructor` does not accept (nor `forwards_to`, the
    class a `**options` of `constructor` goes to)."""
    parameters = list(inspect.signature(constructor).parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        if forwards_to is None:
            return
        own = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
        known = {p.name for p in own}
        parameters = own + [p for p in inspect.signature(forwards_to).parameters.values() if p.name not in known]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return
    accepted = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(accepted) or 'none'}")
