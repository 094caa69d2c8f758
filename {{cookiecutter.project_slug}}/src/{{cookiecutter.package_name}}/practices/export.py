"""Export a trained network for deployment: a torch.export program and an ONNX file with a dynamic batch dimension,
plus everything needed to go from a raw image file, table row or text to the model's inputs without this project.

The exported model takes flat tensors in a fixed order, named by their place in the batch dict (`image`,
`tabular.numeric`, `tabular.categorical`, `sequence.values`, `sequence.mask`), exactly as the project's data
readers produce them (normalized images, standardized numbers, token ids), and returns the task's activation:
class probabilities for classification and segmentation, values in the targets' own units for regression.

Next to the model files: `preprocess.json`, the readers' own description of their evaluation preprocessing
(resize rule, interpolation, crop, mean / std; the train statistics, missing-value rule and vocabularies of the
columns; the tokenizer, vocabulary and max_length of a sequence) and of the output (class names in output order,
how `predict` decodes it); `preprocess.py`, a copy of practices/deploy_preprocess.py (numpy and PIL only) that
applies it; and `export.json`, what was exported and checked. The ONNX file carries both JSON texts in its
metadata_props ("metadata", "preprocessing"), the torch files as extra files (metadata.json, preprocess.json).

Every file is loaded back (`torch.export.load`, `torch.jit.load`, an onnxruntime session) and run on val batches of
sizes other than the one it was exported with; its outputs must match the checkpoint's own within a tolerance, or
the export fails with one line naming the format and, when it can be found, the layer or operator at fault.
preprocess.py is run on the raw rows of val samples and must give the readers' tensors (max abs diff recorded).

Formats and exporters (torch 2.14; measured on this project's encoders):
- "pt2": `torch.export.export` (batch dimension dynamic), saved with `torch.export.save`; load it with
  `torch.export.load("model.pt2").module()`. It captures timm ResNets, the segmentation network, the tabular
  encoder and the Transformer sequence encoder. It cannot capture the GRU sequence encoder:
  `pack_padded_sequence` makes batch sizes from the data ("zeros(): argument 'size' ... got FakeTensor"). For a
  model torch.export cannot capture, "pt2" falls back to "torchscript" (model.torchscript.pt) with a warning
  that names the layer and torch.export's reason; torch's own deprecation warnings stay visible.
- "torchscript": `torch.jit.trace` (deprecated by torch in favour of torch.export; a FutureWarning, shown). Still
  the one file LibTorch (C++) loads without Python; ask for it explicitly with --formats. Tracing records the
  operations one batch runs, so Python control flow on tensor values is frozen into the file: the check on
  other batch sizes is what catches that.
- "onnx": the torch.export-based exporter, `torch.onnx.export(dynamo=True)` (needs onnxscript), translating
  the same torch.export program, at opset 18 (its translations' own; onnxruntime >= 1.14). Where torch.export cannot
  capture the model (the GRU) or an operator has no translation, it falls back to the TorchScript-based
  exporter, `torch.onnx.export(dynamo=False)`, which torch deprecates (its DeprecationWarning is shown); that
  one turns the packing into an ONNX GRU with sequence lengths (it prints "The shape inference of
  prim::PackPadded type is missing" from C++: harmless, as the check shows). onnx, onnxruntime and onnxscript
  come with the `export` extra (pip install -e ".[export]"). It takes seconds where the TorchScript-based one
  took under one (on a CPU: 3 s for a tiny ResNet, 11 s for the segmentation network).
export.json records, per file, the exporter that wrote it and, for a fallback, why the first choice failed.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from ..errors import ProjectError
from . import deploy_preprocess

if TYPE_CHECKING:
    from ..module import Model
    from ..tasks import Task

FILES = {"pt2": "model.pt2", "torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
DEFAULT_FORMATS = "pt2,onnx"
RESULT_FILE = "export.json"
SPEC_FILE = deploy_preprocess.SPEC_FILE  # preprocess.json
PREPROCESS_FILE = "preprocess.py"
# The opset torch's torch.export-based exporter translates to (a lower one would go through onnx's version
# converter); the TorchScript-based fallback writes it too.
ONNX_OPSET = 18
# Raw rows of val samples that preprocess.py must turn into the readers' own tensors.
PREPROCESS_CHECK_SAMPLES = 16


class ExportFallbackWarning(UserWarning):
    """torch's current exporter could not export the model, so its deprecated predecessor wrote the file."""


def input_names(batch: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """The tensors of `batch[key]` for every input key, named by their path: image, sequence.values, ..."""
    names = []
    for key in keys:
        value = batch[key]
        if isinstance(value, dict):
            names += [f"{key}.{name}" for name in input_names(value, list(value))]
        elif isinstance(value, torch.Tensor):
            names.append(key)
        else:
            raise ProjectError(f"batch[{key!r}] is a {type(value).__name__}: only tensors and dicts of tensors export")
    return names


def flat_inputs(batch: dict[str, Any], names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """The tensors of `batch` at the dotted paths `names`, in that order."""
    tensors = []
    for name in names:
        value: Any = batch
        for part in name.split("."):
            value = value[part]
        tensors.append(value)
    return tuple(tensors)


def nested_inputs(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> dict[str, Any]:
    """Flat tensors back into the batch dict the network reads (the inverse of `flat_inputs`)."""
    batch: dict[str, Any] = {}
    for name, tensor in zip(names, tensors, strict=True):
        *parents, leaf = name.split(".")
        node = batch
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = tensor
    return batch


class DeployedModel(nn.Module):
    """Flat input tensors, in `names` order -> the task's activation of the network's outputs."""

    def __init__(self, network: nn.Module, activation: Callable[[torch.Tensor], torch.Tensor], names: Sequence[str]):
        super().__init__()
        self.network = network
        self.activation = activation
        self.names = tuple(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.activation(self.network(nested_inputs(self.names, inputs)))


@dataclass
class TracerNote:
    """A warning the tracer gave: where, in which layer."""

    message: str
    location: str
    module: str | None

    def __str__(self) -> str:
        where = f"in {self.module} " if self.module else ""
        path, _, line = self.location.rpartition(":")
        with contextlib.suppress(ValueError):  # a path under the working directory, shorter
            path = str(Path(path).relative_to(Path.cwd()))
        return f"{where}at {path}:{line}: {self.message.split('. ')[0].strip()}"


class LayerTracker:
    """Which of the model's layers is running, to name the one an exporter fails in or the tracer warns about."""

    def __init__(self, model: nn.Module):
        self.names = {module: name or "the model" for name, module in model.named_modules()}
        self.stack: list[nn.Module] = []

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        self.stack.clear()
        before = nn.modules.module.register_module_forward_pre_hook(self._enter)
        after = nn.modules.module.register_module_forward_hook(self._leave)
        try:
            yield
        finally:
            before.remove()
            after.remove()

    def _enter(self, module: nn.Module, args: Any) -> None:
        if module in self.names:
            self.stack.append(module)

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.stack and self.stack[-1] is module:
            self.stack.pop()

    def current(self) -> str | None:
        """The innermost running layer, e.g. "network.encoders.sequence (SequenceEncoder)"."""
        return self.describe(self.stack[-1]) if self.stack else None

    def describe(self, module: nn.Module) -> str:
        return f"{self.names[module]} ({type(module).__name__})"

    def running(self, operator: str, model: nn.Module, example: tuple[torch.Tensor, ...]) -> str | None:
        """The layer that calls `operator` (e.g. "aten::cummax"), from the scopes of a traced graph: for the
        TorchScript-based exporters, which fail after tracing (torch.jit.trace's FutureWarning shows)."""
        graph = torch.jit.trace(model, example, check_trace=False).inlined_graph
        modules = {name: module for module, name in self.names.items()}
        for node in graph.nodes():
            if node.kind() == operator:  # scope "__module.network/__module.network.fusion": the innermost last
                path = node.scopeName().split("/")[-1].removeprefix("__module").removeprefix(".")
                module = modules.get(path or "the model")
                return self.describe(module) if module is not None else None
        return None


@contextlib.contextmanager
def tracing(tracker: LayerTracker) -> Iterator[list[TracerNote]]:
    """Run an exporter: collect the tracer's warnings with the layer that caused them and show every other warning,
    torch's deprecation notices included (Python hides DeprecationWarnings outside __main__ by default)."""
    notes: list[TracerNote] = []
    with warnings.catch_warnings(), tracker.watching():
        show = warnings.showwarning
        warnings.simplefilter("default", DeprecationWarning)
        # The check below runs the file on other batch sizes, which is what this warning asks for.
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        warnings.simplefilter("always", torch.jit.TracerWarning)

        def record(message: Warning | str, category: type[Warning], filename: str, lineno: int, *rest: Any) -> None:
            if issubclass(category, torch.jit.TracerWarning):
                notes.append(TracerNote(str(message), f"{filename}:{lineno}", tracker.current()))
            else:
                show(message, category, filename, lineno, *rest)

        warnings.showwarning = record
        yield notes


@dataclass
class Capture:
    """The model to export, its example inputs, and torch.export's program of it (captured once, when asked)."""

    model: DeployedModel
    example: tuple[torch.Tensor, ...]
    output_name: str
    tracker: LayerTracker
    _program: torch.export.ExportedProgram | None = None
    _error: Exception | None = None

    def program(self) -> torch.export.ExportedProgram:
        """The torch.export program (batch dimension dynamic); raises what torch.export raised, every time."""
        if self._program is None and self._error is None:
            batch = torch.export.Dim("batch", min=1)
            # Inside the exporter's `tracing`, so the tracker names the layer it fails in. Gradients on: without
            # them nn.TransformerEncoderLayer may take its fused fast path, which ONNX has no translation for.
            try:
                with torch.enable_grad():
                    self._program = torch.export.export(
                        self.model, self.example, dynamic_shapes=(tuple({0: batch} for _ in self.example),)
                    )
            except Exception as error:  # reported by the format that needed the program
                self._error = CaptureError(describe_failure(error, self.tracker))
                self._error.__cause__ = error
        if self._error is not None:
            raise self._error
        return self._program


class CaptureError(RuntimeError):
    """torch.export could not capture the model; the message names the layer when it could be found."""


# --- the exporters: each writes one file and returns the names of the inputs it takes ------------------------------
def _save_pt2(capture: Capture, path: Path, meta: dict[str, str]) -> list[str]:
    torch.export.save(capture.program(), path, extra_files={f"{key}.json": text for key, text in meta.items()})
    return list(capture.model.names)


def _load_pt2(path: Path, names: Sequence[str]) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    module = torch.export.load(path).module()
    return lambda inputs: module(*inputs)


def _save_torchscript(capture: Capture, path: Path, meta: dict[str, str]) -> list[str]:
    # check_trace=False: the tracer's own check reruns the same batch; the check below runs other batch sizes.
    traced = torch.jit.trace(capture.model, capture.example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={f"{key}.json": text for key, text in meta.items()})
    return list(capture.model.names)


def _load_torchscript(path: Path, names: Sequence[str]) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    module = torch.jit.load(str(path), map_location="cpu")
    return lambda inputs: module(*inputs)


def _save_onnx(capture: Capture, path: Path, meta: dict[str, str]) -> list[str]:
    """The torch.export-based exporter, translating the captured program."""
    program = capture.program()
    names = list(capture.model.names)
    # One named batch axis: every input's batch dimension is the same symbol, so naming the first names them all.
    axes = tuple({0: "batch"} if i == 0 else None for i in range(len(names)))
    onnx_program = torch.onnx.export(
        program,
        input_names=names,
        output_names=[capture.output_name],
        dynamic_shapes=(axes,),
        opset_version=ONNX_OPSET,
        dynamo=True,
        verbose=False,
    )
    onnx_program.model.metadata_props.update(meta)  # onnxruntime: session.get_modelmeta().custom_metadata_map
    # Weights inside the .onnx file, up to protobuf's 2 GB; beyond, in model.onnx.data next to it.
    large = sum(p.numel() * p.element_size() for p in capture.model.parameters()) > 1.8e9
    onnx_program.save(str(path), external_data=large)
    return [value.name for value in onnx_program.model.graph.inputs]


def _save_onnx_torchscript(capture: Capture, path: Path, meta: dict[str, str]) -> list[str]:
    """The TorchScript-based exporter; it drops an input no layer reads (e.g. tabular.categorical without
    categorical columns)."""
    import onnx

    names = list(capture.model.names)
    # Gradients on while tracing: without them nn.TransformerEncoderLayer takes its fused fast path
    # (aten::_transformer_encoder_layer_fwd), which ONNX has no translation for.
    with torch.enable_grad():
        torch.onnx.export(
            capture.model,
            capture.example,
            str(path),
            input_names=names,
            output_names=[capture.output_name],
            dynamic_axes={name: {0: "batch"} for name in [*names, capture.output_name]},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(path))
    return [node.name for node in proto.graph.input]


def _load_onnx(path: Path, names: Sequence[str]) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    declared = {node.name for node in session.get_inputs()}

    def run(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        feed = {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True) if name in declared}
        return torch.from_numpy(session.run(None, feed)[0])

    return run


@dataclass(frozen=True)
class Exporter:
    name: str  # as export.json records it
    format: str  # the file it writes: a key of FILES
    save: Callable[[Capture, Path, dict[str, str]], list[str]]
    load: Callable[[Path, Sequence[str]], Callable[[tuple[torch.Tensor, ...]], torch.Tensor]]
    deprecated: bool = False


TORCH_EXPORT = Exporter("torch.export", "pt2", _save_pt2, _load_pt2)
JIT_TRACE = Exporter("torch.jit.trace", "torchscript", _save_torchscript, _load_torchscript, deprecated=True)
ONNX_DYNAMO = Exporter("torch.onnx.export(dynamo=True)", "onnx", _save_onnx, _load_onnx)
ONNX_TORCHSCRIPT = Exporter(
    "torch.onnx.export(dynamo=False)", "onnx", _save_onnx_torchscript, _load_onnx, deprecated=True
)
# Per format: torch's current exporter first, then the deprecated one it falls back to.
EXPORTERS = {"pt2": [TORCH_EXPORT, JIT_TRACE], "torchscript": [JIT_TRACE], "onnx": [ONNX_DYNAMO, ONNX_TORCHSCRIPT]}
# What to export instead when a format fails, in the one-line error.
ALTERNATIVE = {"pt2": "onnx", "torchscript": "pt2", "onnx": "pt2"}


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """The formats asked for ("pt2", "onnx", "torchscript", comma-separated or a list), checked."""
    chosen = [part.strip() for part in formats.split(",")] if isinstance(formats, str) else list(formats)
    unknown = [name for name in chosen if name not in FILES]
    if unknown or not chosen:
        raise ProjectError(f"formats={formats!r}: choose from pt2, onnx, torchscript, comma-separated (pt2,onnx)")
    return list(dict.fromkeys(chosen))


def require_onnx() -> dict[str, str]:
    """The versions of onnx, onnxruntime and onnxscript, or a ProjectError saying how to install them."""
    try:
        import onnx
        import onnxruntime
        import onnxscript
    except ImportError as error:
        raise ProjectError(
            f'ONNX export needs onnx, onnxruntime and onnxscript ({error}): pip install -e ".[export]", '
            "or export without ONNX: --formats pt2"
        ) from None
    return {
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__,
        "onnx_opset": str(ONNX_OPSET),
    }


def sample_batch(dataset: Dataset, size: int, start: int = 0) -> dict[str, Any]:
    """`size` samples from `start` on, collated like the DataLoader does (cycling through a small split)."""
    count = len(dataset)  # type: ignore[arg-type]
    if count == 0:
        raise ProjectError("export needs example inputs, but the val split is empty")
    return default_collate([dataset[(start + i) % count] for i in range(size)])


# --- naming what failed -----------------------------------------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in ANSI.sub("", str(error)).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception: torch.onnx's own first lines only say which of its steps failed."""
    while error.__cause__ is not None and error.__cause__ is not error:
        error = error.__cause__
    return error


def _operator(error: BaseException) -> str | None:
    """The operator an exporter has no translation for, as "aten::cummax"."""
    text = "\n".join(str(e) for e in (error, _root_cause(error)))
    found = re.search(r"operator '?(\w+::\w+)", text) or re.search(r"op='(\w+)\.(\w+)'", text)
    if not found:
        return None
    return found.group(1) if len(found.groups()) == 1 else "::".join(found.groups())


def _layer_calling(program: torch.export.ExportedProgram, operator: str) -> str | None:
    """The layer whose code calls `operator`, from the program's module stack: "network.1 (RunningMax)"."""
    for node in program.graph.nodes:
        name = getattr(node.target, "name", None)
        if callable(name) and name() == operator and node.meta.get("nn_module_stack"):
            path, kind = list(node.meta["nn_module_stack"].values())[-1]
            return f"{path or 'the model'} ({str(getattr(kind, '__name__', kind)).rsplit('.', 1)[-1]})"
    return None


def describe_failure(error: BaseException, tracker: LayerTracker, capture: Capture | None = None) -> str:
    """For a one-line error: ' in <layer>: <what the exporter said>', or ' at operator <op> in <layer>: ...'."""
    if isinstance(error, CaptureError):
        return str(error)
    where = f" in {tracker.current()}" if tracker.current() else ""
    operator = _operator(error)
    if operator and not where:
        layer = None
        try:  # naming the layer is a courtesy; the operator is named anyway
            if capture is not None and capture._program is not None:
                layer = _layer_calling(capture._program, operator)
            elif capture is not None:
                layer = tracker.running(operator, capture.model, capture.example)
        except Exception:  # a layer the tracer cannot follow either
            layer = None
        where = f" at operator {operator}" + (f" in {layer}" if layer else "")
    return f"{where}: {_first_line(_root_cause(error))}"


def _advice(fmt: str) -> str:
    other = ALTERNATIVE[fmt]
    return (
        f"export {other} only with --formats {other}, or rewrite that layer with torch operations (no numpy, "
        ".item() or Python branches on tensor values)"
    )


# Tracer warnings that point at the culprit first: values computed outside torch become constants of the trace.
SUSPECTS = ("NumPy", "from_numpy", "Python list", "Python float", "Python integer", "Python index", "Python boolean")
# torch.tensor(python numbers) is a constant by design (e.g. the regression task's target statistics).
HARMLESS = "torch.tensor results are registered as constants"
TORCH_DIR = str(Path(torch.__file__).parent)


def _hint(notes: list[TracerNote]) -> str:
    """The tracer's warnings most likely at fault: from code outside torch and the installed libraries, values
    computed with numpy first, then Python values read from tensors; at most two places."""

    def library(location: str) -> bool:
        parts = Path(location).parts
        return "site-packages" in parts or "dist-packages" in parts or location.startswith(TORCH_DIR)

    own = [note for note in notes if not library(note.location) and HARMLESS not in note.message]

    def rank(note: TracerNote) -> int:
        return next((i for i, word in enumerate(SUSPECTS) if word in note.message), len(SUSPECTS))

    places: dict[str, str] = {}  # location -> its most suspicious warning
    for note in sorted(own, key=rank):
        places.setdefault(note.location, str(note))
    chosen = list(places.values())[:2]
    return f" (the tracer warned {'; and '.join(chosen)})" if chosen else ""


# --- the deployment spec: preprocess.json and preprocess.py --------------------------------------------------------
def preprocessing_spec(dataset: Dataset, names: Sequence[str], task: Task, meaning: str) -> dict[str, Any] | None:
    """What preprocess.py needs: each input reader's `preprocessing` (keyed by its batch key) and the output's
    decoding; None, with a warning, when a reader of the model's inputs does not describe its preprocessing."""
    readers = [reader for reader in getattr(dataset, "readers", []) if hasattr(reader, "preprocessing")]
    inputs = {}
    for reader in readers:
        spec = reader.preprocessing
        inputs[next(iter(spec["inputs"])).split(".")[0]] = spec
    described = [name for key in sorted(inputs) for name in inputs[key]["inputs"]]
    if described != list(names):
        warnings.warn(
            f"export writes no {SPEC_FILE} / {PREPROCESS_FILE}: the data readers describe the inputs "
            f"{described or 'none'}, the model takes {list(names)} (give a reader a `preprocessing` property)",
            stacklevel=3,
        )
        return None
    output: dict[str, Any] = {"name": task.output_name, "meaning": meaning, "task": task.name}
    output["class_names"] = list(task.class_names)
    output.update(task.output_decoding)  # how preprocess.py turns it into predictions.csv's columns
    return {"format_version": 1, "input_order": list(names), "inputs": inputs, "output": output}


def check_preprocessing(spec: dict[str, Any], dataset: Dataset, names: Sequence[str]) -> dict[str, Any]:
    """Run deploy_preprocess on the raw rows of val samples; its arrays must equal the readers' tensors."""
    rows = getattr(dataset, "rows", [])[:PREPROCESS_CHECK_SAMPLES]
    if not rows:
        return {"samples": 0, "max_abs_diff": None}
    arrays = deploy_preprocess.Preprocessor(spec, root=rows[0].root)([row.values for row in rows])
    expected = flat_inputs(default_collate([dataset[i] for i in range(len(rows))]), names)
    differences = {}
    for name, tensor in zip(names, expected, strict=True):
        array = torch.from_numpy(arrays[name])
        if array.shape != tensor.shape or array.dtype != tensor.dtype:
            raise ProjectError(
                f"{PREPROCESS_FILE} gives {name} as {array.dtype} {tuple(array.shape)} but the data readers give "
                f"{tensor.dtype} {tuple(tensor.shape)}: change a reader's `preprocessing` and "
                "practices/deploy_preprocess.py together"
            )
        differences[name] = float((array.double() - tensor.double()).abs().max()) if tensor.numel() else 0.0
    worst = max(differences, key=differences.get)
    if differences[worst] > 1e-6:
        raise ProjectError(
            f"{PREPROCESS_FILE} does not reproduce the data readers on val samples: {worst} differs by "
            f"{differences[worst]:.3g}; change a reader's `preprocessing` and practices/deploy_preprocess.py together"
        )
    return {"samples": len(rows), "max_abs_diff": max(differences.values()), "per_input": differences}


# --- export and check ------------------------------------------------------------------------------------------------
def export_network(
    model: Model,
    dataset: Dataset,
    output_dir: Path,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    batch_size: int = 2,
    atol: float = 1e-4,
    source: str | None = None,
) -> dict[str, Any]:
    """Export `model` (the project's Model with its weights loaded) and check every file against it.

    Args:
        model: gives `network`, `task` (its activation, class names, name and what its output holds) and
            `inputs` (the batch keys it reads; contract.py); moved to the CPU in float32 and eval mode.
        dataset: samples for the example and check batches (the val split); its readers' `preprocessing`
            (data/image.py, tabular.py, sequence.py) go to preprocess.json, checked on its raw rows.
        output_dir: where the files, preprocess.json / preprocess.py and export.json go.
        formats: "pt2", "onnx", "torchscript", comma-separated.
        batch_size: the example batch's size; the files are checked on batches of 1 and 2 * batch_size + 1.
        atol: the largest allowed difference to the checkpoint's outputs, times the largest output when that is
            above 1 (regression values in target units).
        source: the checkpoint's path, recorded in export.json.

    Returns the content of export.json; raises ProjectError when an export fails or does not match.
    """
    chosen = parse_formats(formats)
    if batch_size < 2:
        raise ProjectError(f"batch_size={batch_size}: export with at least 2 samples (a batch of 1 is checked after)")
    versions = {"torch": torch.__version__, **(require_onnx() if "onnx" in chosen else {})}
    model = model.cpu().float().eval()
    task = model.task
    keys = sorted(model.inputs)
    example_batch = sample_batch(dataset, batch_size)
    names = input_names(example_batch, keys)
    deployed = DeployedModel(model.network, task.activation, names).eval()
    example = flat_inputs(example_batch, names)
    checks = [flat_inputs(sample_batch(dataset, size, start=batch_size), names) for size in (1, 2 * batch_size + 1)]
    with torch.no_grad():
        expected = [deployed(*inputs) for inputs in checks]
        output_shape = ["batch", *deployed(*example).shape[1:]]
    # What the output holds, as the task names it (a task without a description: the generic one).
    meaning = task.output_meaning or f"{type(task).__name__}.activation of the outputs"
    description = {
        "task": task.name,
        "class_names": list(task.class_names),
        "inputs": [
            {"name": name, "shape": ["batch", *tensor.shape[1:]], "dtype": str(tensor.dtype).removeprefix("torch.")}
            for name, tensor in zip(names, example, strict=True)
        ],
        "output": {"name": task.output_name, "shape": output_shape, "meaning": meaning},
    }
    spec = preprocessing_spec(dataset, names, task, meaning)
    preprocess_check = check_preprocessing(spec, dataset, names) if spec is not None else None
    meta = {"metadata": json.dumps(description), **({"preprocessing": json.dumps(spec)} if spec else {})}
    output_dir.mkdir(parents=True, exist_ok=True)
    tracker = LayerTracker(deployed)
    capture = Capture(deployed, example, task.output_name, tracker)
    rows: list[dict[str, Any]] = []
    for fmt in chosen:
        # A fallback to a format also asked for is left to that format's own turn.
        chain = [exporter for exporter in EXPORTERS[fmt] if exporter.format == fmt or exporter.format not in chosen]
        row = _export_format(fmt, chain, capture, output_dir, meta, checks, expected, atol)
        if row is None:
            continue
        rows.append(row)
        if not row["passed"]:
            print_table(rows)
            raise ProjectError(row.pop("error"))
    sizes = [len(inputs[0]) for inputs in checks]
    print(f"\nExported {source or 'the model'}, checked on val batches of {' and '.join(map(str, sizes))} samples:")
    print_table(rows)
    files = {row["format"]: row["file"] for row in rows}
    if spec is not None:
        (output_dir / SPEC_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
        shutil.copyfile(deploy_preprocess.__file__, output_dir / PREPROCESS_FILE)
        files["preprocessing"] = [SPEC_FILE, PREPROCESS_FILE]
        print(
            f"  {PREPROCESS_FILE} + {SPEC_FILE}: raw rows of {preprocess_check['samples']} val samples -> the "
            f"readers' tensors, max abs diff {preprocess_check['max_abs_diff']:.3g}"
        )
    result = {
        "checkpoint": source,
        **description,
        "files": files,
        "checks": rows,
        "preprocess_check": preprocess_check,
        "example_batch_size": batch_size,
        "check_batch_sizes": sizes,
        "versions": versions,
    }
    (output_dir / RESULT_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"Files and {RESULT_FILE} in {output_dir}")
    return result


def _export_format(
    fmt: str,
    chain: list[Exporter],
    capture: Capture,
    output_dir: Path,
    meta: dict[str, str],
    checks: list[tuple[torch.Tensor, ...]],
    expected: list[torch.Tensor],
    atol: float,
) -> dict[str, Any] | None:
    """Export `fmt` with the first exporter of `chain` that can, and check the file: its export.json row
    (row["passed"] False, with the one-line "error", when the file does not reproduce the checkpoint). Raises
    ProjectError when every exporter raised; None when the chain was cut short (its fallback format has a turn
    of its own)."""
    failures: list[tuple[Exporter, str]] = []  # (exporter, " in <layer>: <what it said>")
    for exporter in chain:
        path = output_dir / FILES[exporter.format]
        started = time.perf_counter()
        with tracing(capture.tracker) as notes:
            try:
                takes = exporter.save(capture, path, meta)
            except Exception as error:  # the tracer's or the exporter's: name the format and the layer
                path.unlink(missing_ok=True)
                failures.append((exporter, describe_failure(error, capture.tracker, capture)))
                last_error = error
                continue
        seconds = time.perf_counter() - started
        try:
            difference, tolerance, failed_on = compare(exporter.load(path, capture.model.names), checks, expected, atol)
        except Exception as error:  # the file does not load, or does not run on another batch size
            path.unlink(missing_ok=True)
            problem = f"does not reproduce the checkpoint on a new batch: {_first_line(error)}{_hint(notes)}"
            raise ProjectError(_failed(fmt, failures[0] if failures else None, exporter, problem)) from error
        row = {
            "format": exporter.format, "requested": fmt, "exporter": exporter.name, "file": path.name,
            "max_abs_diff": difference, "tolerance": tolerance, "passed": failed_on is None,
            "seconds": round(seconds, 2), "inputs": takes,
            "fallback_from": [{"exporter": e.name, "reason": why.strip(" :")} for e, why in failures] or None,
        }  # fmt: skip
        if failed_on is not None:
            path.unlink(missing_ok=True)  # a file that does not compute what the checkpoint does is not kept
            problem = (
                f"does not reproduce the checkpoint: max abs difference {difference:.3g} > tolerance {tolerance:.3g} "
                f"on a batch of {failed_on}{_hint(notes)}"
            )
            row["error"] = _failed(fmt, failures[0] if failures else None, exporter, problem)
        elif failures:
            first, why = failures[0]
            warnings.warn(
                f"{fmt}: {first.name} cannot export this model{why}; {exporter.name} wrote {path.name} instead, "
                "an exporter torch deprecates (practices/export.py says why)",
                ExportFallbackWarning,
                stacklevel=3,
            )
        return row
    if chain[-1] is not EXPORTERS[fmt][-1]:  # its fallback is a format of its own here
        first, why = failures[0]
        message = f"{fmt}: {first.name} cannot export this model{why}; no {FILES[fmt]}, see the {chain[-1].format} file"
        warnings.warn(message, ExportFallbackWarning, stacklevel=3)
        return None
    last, why = failures[-1]
    first = failures[0] if len(failures) > 1 else None
    raise ProjectError(_failed(fmt, first, last, f"failed{' too' if first else ''}{why}")) from last_error


def _failed(fmt: str, first: tuple[Exporter, str] | None, exporter: Exporter, problem: str) -> str:
    """One line: the first exporter's failure when there was one (it names the culprit best), then what `exporter`,
    its fallback, did; and what to do."""
    if first is None:
        return f"{fmt} export {problem}; {_advice(fmt)}"
    return f"{fmt} export failed{first[1]}; its fallback, {exporter.name}, {problem}; {_advice(fmt)}"


def compare(
    run: Callable[[tuple[torch.Tensor, ...]], torch.Tensor],
    checks: list[tuple[torch.Tensor, ...]],
    expected: list[torch.Tensor],
    atol: float,
) -> tuple[float, float, int | None]:
    """Max abs difference to the expected outputs and its tolerance over the check batches, and the size of the
    first batch over tolerance (None: all within)."""
    worst, bound = 0.0, 0.0
    for inputs, reference in zip(checks, expected, strict=True):
        with torch.no_grad():
            outputs = run(inputs)
        if outputs.shape != reference.shape:
            raise ValueError(
                f"outputs of shape {tuple(outputs.shape)} where the checkpoint gives {tuple(reference.shape)}"
            )
        tolerance = atol * max(1.0, float(reference.abs().max()))
        difference = float((outputs.float() - reference).abs().max())
        if not difference <= tolerance:  # NaN fails too
            return difference, tolerance, len(reference)
        worst, bound = max(worst, difference), max(bound, tolerance)
    return worst, bound, None


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'format':<12} {'file':<22} {'exporter':<32} {'max abs diff':>12} {'tolerance':>10} {'seconds':>8}"
    print(f"  {header}  result")
    for row in rows:
        print(
            f"  {row['format']:<12} {row['file']:<22} {row['exporter']:<32} {row['max_abs_diff']:>12.3g} "
            f"{row['tolerance']:>10.3g} {row['seconds']:>8.2f}  {'pass' if row['passed'] else 'FAIL'}"
        )
