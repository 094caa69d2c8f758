"""Export a trained network for deployment: TorchScript and ONNX files with a dynamic batch dimension.

The exported model takes flat tensors in a fixed order, named by their place in the batch dict (`image`,
`tabular.numeric`, `tabular.categorical`, `sequence.values`, `sequence.mask`), exactly as the project's data
readers produce them (normalized images, standardized numbers, token ids), and returns the task's activation:
class probabilities for classification and segmentation, values in the targets' own units for regression.

Each file is loaded back (`torch.jit.load`, an onnxruntime session) and run on val batches of sizes other than
the one it was exported with; its outputs must match the checkpoint's own within a tolerance, or the export
fails with one line naming the format and, when it can be found, the layer or operator at fault.

Exporter choices (torch 2.14):
- TorchScript by `torch.jit.trace`. Tracing is deprecated ("switch to torch.compile or torch.export": a
  FutureWarning, hidden here) but it still makes the one self-contained file that Python and LibTorch (C++) load
  without this project's code. Tracing records the operations one batch runs, so Python control flow on tensor
  values is frozen into the file: the check on other batches is what catches that.
- ONNX by the TorchScript-based exporter, `torch.onnx.export(dynamo=False)`, although torch >= 2.9 defaults to the
  torch.export-based one (dynamo=True) and calls this one deprecated (a DeprecationWarning, hidden here). The
  dynamo exporter cannot export the GRU encoder: `pack_padded_sequence` makes batch sizes from the data, which
  torch.export refuses ("zeros(): argument 'size' ... got FakeTensor"), while the TorchScript-based exporter turns
  packing into an ONNX GRU with sequence lengths. It exports the Transformer encoder, timm ResNets, the
  segmentation network and tabular embeddings too, in a fraction of a second where dynamo takes several. For the
  GRU it prints "The shape inference of prim::PackPadded type is missing" from C++: harmless, as the check shows.
  onnx and onnxruntime come with the `export` extra (pip install -e ".[export]"); onnxscript, which only the
  dynamo exporter uses, is not needed.
"""

from __future__ import annotations

import contextlib
import json
import re
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

if TYPE_CHECKING:
    from ..module import Model

FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
RESULT_FILE = "export.json"
# Opset 17 has LayerNormalization as one op and runs on onnxruntime >= 1.14 and TensorRT >= 8.6.
ONNX_OPSET = 17


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
        """The layer that calls `operator` (e.g. "aten::cummax"), from the scopes of a traced graph."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.jit.trace(model, example, check_trace=False).inlined_graph
        modules = {name: module for module, name in self.names.items()}
        for node in graph.nodes():
            if node.kind() == operator:  # scope "__module.network/__module.network.fusion": the innermost last
                path = node.scopeName().split("/")[-1].removeprefix("__module").removeprefix(".")
                module = modules.get(path or "the model")
                return self.describe(module) if module is not None else None
        return None


def _hide_deprecations() -> None:
    """Inside `warnings.catch_warnings()`: torch's notices that its TorchScript exporters are deprecated."""
    warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
    warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)


@contextlib.contextmanager
def tracing(tracker: LayerTracker) -> Iterator[list[TracerNote]]:
    """Run an exporter: collect the tracer's warnings with the layer that caused them, hide torch's deprecation
    notices about its own exporters, and let every other warning through."""
    notes: list[TracerNote] = []
    with warnings.catch_warnings(), tracker.watching():
        show = warnings.showwarning
        _hide_deprecations()
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


def _save_torchscript(model: DeployedModel, example: tuple[torch.Tensor, ...], path: Path, meta: str) -> list[str]:
    """Write the file; returns the names of the inputs it takes (all of them, in order)."""
    # check_trace=False: the tracer's own check reruns the same batch; the check below runs other batch sizes.
    traced = torch.jit.trace(model, example, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={"metadata.json": meta})
    return list(model.names)


def _load_torchscript(path: Path, names: Sequence[str]) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    module = torch.jit.load(str(path), map_location="cpu")
    return lambda inputs: module(*inputs)


def _save_onnx(model: DeployedModel, example: tuple[torch.Tensor, ...], path: Path, meta: str) -> list[str]:
    """Write the file; returns the names of the inputs it takes (the exporter drops an input no layer reads, e.g.
    tabular.categorical without categorical columns)."""
    import onnx

    output = json.loads(meta)["output"]["name"]
    torch.onnx.export(
        model,
        example,
        str(path),
        input_names=list(model.names),
        output_names=[output],
        dynamic_axes={name: {0: "batch"} for name in [*model.names, output]},
        opset_version=ONNX_OPSET,
        dynamo=False,  # see the module docstring
    )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"metadata": meta})  # onnxruntime: session.get_modelmeta().custom_metadata_map
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


EXPORTERS = {"torchscript": (_save_torchscript, _load_torchscript), "onnx": (_save_onnx, _load_onnx)}


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """The formats asked for ("torchscript", "onnx", "torchscript,onnx" or a list), checked."""
    chosen = [part.strip() for part in formats.split(",")] if isinstance(formats, str) else list(formats)
    unknown = [name for name in chosen if name not in FILES]
    if unknown or not chosen:
        raise ProjectError(f"formats={formats!r}: choose torchscript, onnx or both (torchscript,onnx)")
    return list(dict.fromkeys(chosen))


def require_onnx() -> dict[str, str]:
    """The versions of onnx and onnxruntime, or a ProjectError saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ProjectError(
            f'ONNX export needs onnx and onnxruntime ({error}): pip install -e ".[export]", '
            "or export TorchScript only with --formats torchscript"
        ) from None
    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "onnx_opset": str(ONNX_OPSET)}


def sample_batch(dataset: Dataset, size: int, start: int = 0) -> dict[str, Any]:
    """`size` samples from `start` on, collated like the DataLoader does (cycling through a small split)."""
    count = len(dataset)  # type: ignore[arg-type]
    if count == 0:
        raise ProjectError("export needs example inputs, but the val split is empty")
    return default_collate([dataset[(start + i) % count] for i in range(size)])


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _advice(fmt: str) -> str:
    others = [name for name in FILES if name != fmt]
    skip = f"export {others[0]} only with --formats {others[0]}, or " if others else ""
    return f"{skip}rewrite that layer with torch operations (no numpy, .item() or Python branches on tensor values)"


def _failure(fmt: str, error: BaseException, tracker: LayerTracker, model: nn.Module, example: tuple) -> str:
    """One line: the format, the layer running when it failed (or the layer calling the operator it cannot
    translate), the exporter's own first line, and what to do."""
    where = f" in {tracker.current()}" if tracker.current() else ""
    operator = re.search(r"operator '?(\w+::\w+)", str(error))
    if operator and not where:
        try:
            layer = tracker.running(operator.group(1), model, example)
        except Exception:  # naming the layer is a courtesy; the operator is named anyway
            layer = None
        where = f" at operator {operator.group(1)}" + (f" in {layer}" if layer else "")
    return f"{fmt} export failed{where}: {_first_line(error)}; {_advice(fmt)}"


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


def export_network(
    model: Model,
    dataset: Dataset,
    output_dir: Path,
    formats: str | Sequence[str] = ("torchscript", "onnx"),
    batch_size: int = 2,
    atol: float = 1e-4,
    source: str | None = None,
) -> dict[str, Any]:
    """Export `model` (the project's Model with its weights loaded) and check every file against it.

    Args:
        model: gives `network`, `task` (its activation, class names, name and what its output holds) and
            `inputs` (the batch keys it reads; contract.py); moved to the CPU in float32 and eval mode.
        dataset: samples for the example and check batches (the val split).
        output_dir: where the files and export.json go.
        formats: "torchscript", "onnx" or both.
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
    meta = json.dumps(description)
    output_dir.mkdir(parents=True, exist_ok=True)
    tracker = LayerTracker(deployed)
    rows: list[dict[str, Any]] = []
    for fmt in chosen:
        save, load = EXPORTERS[fmt]
        path = output_dir / FILES[fmt]
        started = time.perf_counter()
        # Gradients on while tracing: without them nn.TransformerEncoderLayer takes its fused fast path
        # (aten::_transformer_encoder_layer_fwd), which ONNX has no translation for.
        with tracing(tracker) as notes, torch.enable_grad():
            try:
                takes = save(deployed, example, path, meta)
            except Exception as error:  # the tracer's or the exporter's: name the format and the layer
                path.unlink(missing_ok=True)
                raise ProjectError(_failure(fmt, error, tracker, deployed, example)) from error
        seconds = time.perf_counter() - started
        try:
            with warnings.catch_warnings():
                _hide_deprecations()
                difference, tolerance, failed_on = compare(load(path, names), checks, expected, atol)
        except Exception as error:  # the file does not load, or does not run on another batch size
            path.unlink(missing_ok=True)
            raise ProjectError(
                f"{fmt} export does not reproduce the checkpoint on a new batch: {_first_line(error)}{_hint(notes)}; "
                f"{_advice(fmt)}"
            ) from error
        rows.append(
            {"format": fmt, "file": path.name, "max_abs_diff": difference, "tolerance": tolerance,
             "passed": failed_on is None, "seconds": round(seconds, 2), "inputs": takes}
        )  # fmt: skip
        if failed_on is not None:
            print_table(rows)
            path.unlink(missing_ok=True)  # a file that does not compute what the checkpoint does is not kept
            raise ProjectError(
                f"{fmt} export does not reproduce the checkpoint: max abs difference {difference:.3g} > tolerance "
                f"{tolerance:.3g} on a batch of {failed_on}{_hint(notes)}; {_advice(fmt)}"
            )
    sizes = [len(inputs[0]) for inputs in checks]
    print(f"\nExported {source or 'the model'}, checked on val batches of {' and '.join(map(str, sizes))} samples:")
    print_table(rows)
    result = {
        "checkpoint": source,
        **description,
        "files": {row["format"]: row["file"] for row in rows},
        "checks": rows,
        "example_batch_size": batch_size,
        "check_batch_sizes": sizes,
        "versions": versions,
    }
    (output_dir / RESULT_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"Files and {RESULT_FILE} in {output_dir}")
    return result


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
    print(f"  {'format':<12} {'file':<22} {'max abs diff':>12} {'tolerance':>10} {'seconds':>8}  result")
    for row in rows:
        print(
            f"  {row['format']:<12} {row['file']:<22} {row['max_abs_diff']:>12.3g} {row['tolerance']:>10.3g} "
            f"{row['seconds']:>8.2f}  {'pass' if row['passed'] else 'FAIL'}"
        )
