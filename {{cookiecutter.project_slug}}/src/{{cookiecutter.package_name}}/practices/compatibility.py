"""Does a checkpoint belong to this project's model and data? Checked before any command loads its weights.

Every checkpoint of a fit records what it was trained on (`TrainedOn`; older checkpoints: the model's
hyperparameters): the task, the class names (labels, target names), the inputs, and how raw values become
numbers (tabular columns and category vocabularies, the sequence vocabulary). `check` compares them, and the
weights' names and shapes, with the configured model and data, and refuses a mismatch in one line naming both
sides: a checkpoint trained on other classes would otherwise test and predict with the wrong labels, silently.
An image size or sequence length that differs is allowed (evaluating at another resolution is legitimate).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning import Callback
from torch.nn.parameter import is_lazy

from ..errors import ProjectError

TRAINED_ON = "trained_on"
SHAPES = "weight_shapes"  # in `metadata`: the state_dict's tensor shapes, instead of its tensors
HEAVY = ("state_dict", "optimizer_states", "lr_schedulers", "callbacks")  # what `metadata` leaves out
FREE_SPEC_KEYS = {"image_size", "max_length"}  # may differ between training and use


class TrainedOn(Callback):
    """Writes what the model was trained on into every checkpoint of a fit (`checkpoint["trained_on"]`)."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[TRAINED_ON] = trained_on(pl_module, getattr(trainer, "datamodule", None))


def trained_on(module: pl.LightningModule, datamodule: Any = None) -> dict[str, Any]:
    """The task (class path), class names, input specs and input encodings of a model and its data."""
    task = getattr(module, "task", None)
    record: dict[str, Any] = {
        "task": None if task is None else f"{type(task).__module__}.{type(task).__qualname__}",
        "class_names": list(getattr(task, "class_names", None) or []) or None,
        "inputs": getattr(module, "inputs", None),
    }
    readers = getattr(datamodule, "inputs", None)
    if isinstance(readers, dict):
        record["encodings"] = {name: encoding(reader) for name, reader in readers.items()}
    return record


def encoding(reader: Any) -> dict[str, Any]:
    """What gives an input's raw values their meaning: column names and the vocabularies that number categories
    and tokens (not statistics such as means, which a changed train split shifts a little)."""
    try:
        spec = reader.preprocessing
    except (AttributeError, RuntimeError):  # a reader without it, or not fitted
        return {}
    if spec.get("kind") == "tabular":
        return {
            "numeric_columns": [column["column"] for column in spec.get("numeric_columns", [])],
            "categorical_columns": {
                column["column"]: column.get("vocabulary") for column in spec.get("categorical_columns", [])
            },
        }
    if spec.get("kind") == "sequence":
        keys = ("column", "sequence_kind", "vocabulary")
        return {key: spec[key] for key in keys if key in spec}
    return {}


def metadata(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without its tensors (weights as shapes, no optimizer or callback state): what the CLI keeps to
    check a command's checkpoint, without holding the file open (memory-mapped) while the run overwrites it."""
    kept = {key: value for key, value in checkpoint.items() if key not in HEAVY}
    if "state_dict" in checkpoint:
        kept[SHAPES] = _shapes(checkpoint["state_dict"])
    return kept


def data_difference(checkpoint: dict[str, Any], datamodule: Any) -> str | None:
    """A one-line note when the data a command reads are not the ones the checkpoint was trained on (other files,
    or other data.* settings): "The data differ from the checkpoint's (fingerprint a, now b)"; None when they are
    the same, or when the checkpoint does not say."""
    trained_on = (checkpoint.get("provenance") or {}).get("data_fingerprint")
    now = getattr(datamodule, "fingerprint", None)
    if not trained_on or trained_on == now:
        return None
    return f"The data differ from the checkpoint's (fingerprint {trained_on}, now {now})"


def _shapes(state_dict: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(getattr(value, "shape", ())) for name, value in state_dict.items()}


def recorded(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint says it was trained on: its `trained_on` record, else the model's hyperparameters."""
    hparams = checkpoint.get("hyper_parameters") or {}
    task = hparams.get("task")
    record = {
        "task": task.get("class_path") if isinstance(task, dict) else None,
        "class_names": hparams.get("class_names"),
        "inputs": hparams.get("inputs"),
    }
    record.update({key: value for key, value in (checkpoint.get(TRAINED_ON) or {}).items() if value is not None})
    return record


def check(path: str | Path, checkpoint: dict[str, Any], module: pl.LightningModule, datamodule: Any) -> None:
    """Raise ProjectError (one line) when the checkpoint was trained for another task, classes, inputs or encodings
    than the configured data gives, or its weights do not fit the configured model."""
    then, now = recorded(checkpoint), trained_on(module, datamodule)
    if then["task"] and now["task"] and not _same_task(then["task"], type(module.task)):
        raise _other_task(path, then["task"], now["task"])
    if then["class_names"] and now["class_names"] and list(then["class_names"]) != now["class_names"]:
        root = getattr(datamodule, "root", None)
        raise ProjectError(
            f"{path} was trained on other classes than the data{f' ({root})' if root else ''} has: "
            f"{_difference(list(then['class_names']), now['class_names'])}; train on this data, or point data.* "
            "at the data the checkpoint was trained on"
        )
    if then["inputs"] and now["inputs"]:
        _check_inputs(path, then["inputs"], now["inputs"])
    for name, old in (then.get("encodings") or {}).items():
        new = (now.get("encodings") or {}).get(name) or {}
        for key in old.keys() & new.keys():
            if old[key] is not None and new[key] is not None and old[key] != new[key]:
                difference = _difference(old[key], new[key])
                raise ProjectError(
                    f"{path} encodes input {name} differently from the data ({key}: {difference}); its weights "
                    "would read the wrong columns or tokens: train on this data, or point data.* at the data the "
                    "checkpoint was trained on"
                )
    shapes = _shapes(checkpoint["state_dict"]) if "state_dict" in checkpoint else checkpoint.get(SHAPES)
    check_weights(path, shapes, module)


def check_weights(path: str | Path, shapes: dict[str, tuple[int, ...]] | None, module: pl.LightningModule) -> None:
    """Raise ProjectError (one line) when the weights' names or shapes (name -> shape) differ from the model's."""
    if not shapes:
        raise ProjectError(f"{path} holds no model weights (no state_dict): it is not a Lightning checkpoint")
    expected = {
        name: tuple(tensor.shape)
        for name, tensor in module.state_dict().items()
        if hasattr(tensor, "shape") and not is_lazy(tensor)
    }
    problem = next(
        (
            f"{name}: checkpoint {list(shapes[name])}, model {list(shape)}"
            for name, shape in expected.items()
            if name in shapes and tuple(shapes[name]) != shape
        ),
        None,
    )
    if problem is None and getattr(module, "strict_loading", True):
        missing = [name for name in expected if name not in shapes]
        unexpected = [name for name in shapes if name not in module.state_dict()]
        if missing or unexpected:
            problem = f"missing {_names(missing)}" if missing else f"unexpected {_names(unexpected)}"
    if problem:
        raise ProjectError(f"{path} does not fit the configured model (use the fit's model.* settings): {problem}")


def _check_inputs(path: str | Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    if set(old) != set(new):
        raise ProjectError(
            f"{path} was trained on inputs {', '.join(sorted(old))}, the data gives {', '.join(sorted(new))}; "
            "pass a checkpoint of this project's inputs"
        )
    for name in sorted(old):
        then = {key: value for key, value in (old[name] or {}).items() if key not in FREE_SPEC_KEYS}
        now = {key: value for key, value in (new[name] or {}).items() if key not in FREE_SPEC_KEYS}
        differing = sorted(key for key in then.keys() & now.keys() if then[key] != now[key])
        if differing:
            key = differing[0]
            raise ProjectError(
                f"{path} was trained on other {name} inputs than the data gives ({key}: checkpoint {then[key]}, "
                f"data {now[key]}); point data.* at the data the checkpoint was trained on"
            )


def check_configured_task(path: str | Path, checkpoint: dict[str, Any], model: Any) -> None:
    """`check`'s task comparison on the parsed config (`model`: its class_path / init_args namespace), before
    anything is built: Lightning would read the checkpoint's task into the config and fail to build it."""
    then = recorded(checkpoint)["task"]
    task = getattr(getattr(model, "init_args", None), "task", None)
    class_path = getattr(task, "class_path", None)
    if not then or not isinstance(class_path, str):
        return
    module_name, _, name = class_path.rpartition(".")
    task_class = getattr(importlib.import_module(module_name), name)  # the configured class: imported anyway
    if not _same_task(then, task_class):
        raise _other_task(path, then, class_path)


def _same_task(class_path: str, task_class: type) -> bool:
    """The configured task is the checkpoint's task class or a subclass of it (compared by name: nothing that a
    checkpoint names is imported)."""
    return class_path in {f"{cls.__module__}.{cls.__qualname__}" for cls in task_class.__mro__}


def _other_task(path: str | Path, then: str, now: str) -> ProjectError:
    return ProjectError(
        f"{path}: the checkpoint is for task {_task_name(then)}, the project is {_task_name(now)} "
        "(model.init_args.task); pass a checkpoint of this project's task"
    )


def _task_name(class_path: str) -> str:
    """The task's short name: pkg.tasks.regression.RegressionTask -> regression (other class names: unchanged)."""
    name = class_path.rpartition(".")[2]
    return name[: -len("Task")].lower() if name.endswith("Task") and name != "Task" else name


def _difference(old: Any, new: Any) -> str:
    """Both sides, short: whole lists when small, else their lengths and the first position that differs."""
    if not isinstance(old, list | dict) or not isinstance(new, list | dict) or len(str(old)) + len(str(new)) < 160:
        return f"checkpoint {_plain(old)}; data {_plain(new)}"
    if isinstance(old, dict) or isinstance(new, dict):
        keys = sorted(set(old) ^ set(new)) or sorted(key for key in old if old[key] != new[key])
        return f"{len(old)} entries in the checkpoint, {len(new)} in the data, first difference at {keys[0]!r}"
    i = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
    first = [repr(items[i]) if i < len(items) else "nothing" for items in (old, new)]
    return f"{len(old)} in the checkpoint, {len(new)} in the data; position {i}: {first[0]} vs {first[1]}"


def _plain(value: Any) -> str:
    return ", ".join(str(item) for item in value) if isinstance(value, list) else str(value)


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
