"""`export`: TorchScript and ONNX files that compute what the checkpoint computes, at any batch size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from conftest import cli_args, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.errors import ProjectError
from {{ cookiecutter.package_name }}.module import Model
from {{ cookiecutter.package_name }}.practices.export import export_network

FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
# The exported inputs of each modality, named by their place in the batch dict.
EXPECTED_INPUTS = {
    "image": ["image"],
    "tabular": ["tabular.numeric", "tabular.categorical"],
    "sequence": ["sequence.values", "sequence.mask"],
}


def needs_onnx() -> Any:
    pytest.importorskip("onnx", reason='ONNX export needs the export extra: pip install -e ".[export]"')
    return pytest.importorskip("onnxruntime", reason='ONNX export needs the export extra: pip install -e ".[export]"')


def at(batch: dict[str, Any], name: str) -> torch.Tensor:
    """The tensor at a dotted input name, e.g. "sequence.mask" -> batch["sequence"]["mask"]."""
    for part in name.split("."):
        batch = batch[part]
    return batch


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_export_files_reproduce_the_checkpoint_on_a_new_batch(tiny_data: Path, tmp_path: Path) -> None:
    onnxruntime = needs_onnx()
    runs = tmp_path / "runs"
    fit = main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, "--trainer.max_epochs", "1"))
    best = fit.trainer.checkpoint_callback.best_model_path
    exported = main(cli_args("export", tiny_data, runs, "--ckpt_path", "best", "--batch_size", "3"))

    folder = exported.run_dir / "export"
    info = json.loads((folder / "export.json").read_text())
    assert info["checkpoint"] == best and info["task"] == TASK_TYPE
    assert info["files"] == {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
    assert all((folder / file).is_file() for file in info["files"].values())
    names = [entry["name"] for entry in info["inputs"]]
    assert names == [name for modality in sorted(MODALITIES) for name in EXPECTED_INPUTS[modality]]
    assert all(entry["shape"][0] == "batch" for entry in [*info["inputs"], info["output"]])
    assert info["check_batch_sizes"] == [1, 7] and [check["format"] for check in info["checks"]] == list(info["files"])
    assert all(check["passed"] and 0 <= check["max_abs_diff"] <= check["tolerance"] for check in info["checks"])
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["onnxruntime"]

    # The checkpoint's own outputs on test samples the export never saw, in a batch of a size it was not traced at.
    model = Model.load_from_checkpoint(best, map_location="cpu").eval()
    test = project_datamodule(tiny_data).dataset("test")
    batch = default_collate([test[i] for i in range(5)])
    with torch.no_grad():
        expected = model.task.activation(model(batch))
    assert info["class_names"] == model.task.class_names
    assert list(expected.shape[1:]) == info["output"]["shape"][1:]
    assert float((expected - expected[0]).abs().max()) > 1e-3  # samples differ: matching them is not trivial
    inputs = [at(batch, name) for name in names]

    scripted = torch.jit.load(folder / "model.torchscript.pt")
    torch.testing.assert_close(scripted(*inputs), expected, atol=1e-5, rtol=1e-5)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [node.shape[0] for node in session.get_inputs()] == ["batch"] * len(session.get_inputs())
    onnx_check = next(check for check in info["checks"] if check["format"] == "onnx")
    assert [node.name for node in session.get_inputs()] == onnx_check["inputs"]
    feed = {node.name: at(batch, node.name).numpy() for node in session.get_inputs()}
    (outputs,) = session.run([info["output"]["name"]], feed)
    torch.testing.assert_close(torch.from_numpy(outputs), expected, atol=1e-5, rtol=1e-5)


class NumpySort(nn.Module):
    """Sorts with numpy: the tracer can only record the result as a constant of the example batch's shape."""

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.sort(outputs.detach().numpy(), axis=1))


class RunningMax(nn.Module):
    """torch.cummax: TorchScript records it, ONNX has no translation for it."""

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.cummax(outputs, dim=1).values


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_layer_the_trace_cannot_follow_is_refused(fmt: str, tiny_data: Path, tmp_path: Path) -> None:
    if fmt == "onnx":
        needs_onnx()
    data = project_datamodule(tiny_data)
    model = project_model(data)
    model.network = nn.Sequential(model.network, NumpySort())
    with pytest.raises(ProjectError, match=rf"^{fmt} export does not reproduce the checkpoint.*NumpySort") as error:
        export_network(model, data.dataset("val"), tmp_path, formats=fmt)
    assert "\n" not in str(error.value) and "--formats" in str(error.value)
    assert not list(tmp_path.iterdir())  # no file that computes something else is left behind


def test_an_operator_onnx_cannot_translate_is_named(tiny_data: Path, tmp_path: Path) -> None:
    needs_onnx()
    data = project_datamodule(tiny_data)
    model = project_model(data)
    model.network = nn.Sequential(model.network, RunningMax())
    expected = r"^onnx export failed at operator aten::cummax in network\.1 \(RunningMax\): .*--formats torchscript"
    with pytest.raises(ProjectError, match=expected):
        export_network(model, data.dataset("val"), tmp_path, formats="torchscript,onnx")
    assert [path.name for path in tmp_path.iterdir()] == ["model.torchscript.pt"]  # TorchScript exported it
    info = export_network(model, data.dataset("val"), tmp_path, formats="torchscript")
    assert info["checks"][0]["passed"] and (tmp_path / "export.json").is_file()
