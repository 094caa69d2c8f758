"""`export`: a torch.export program and an ONNX file that compute what the checkpoint computes at any batch size,
and a folder a deployer can use without this project: preprocess.py + preprocess.json turn raw files and rows into
the model's inputs, checked in a process that has onnxruntime, numpy and PIL but neither torch nor the project."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import default_collate

from conftest import CLASS_FOLDERS, SEGMENTATION, cli_args, default_config, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.errors import ProjectError
from {{ cookiecutter.package_name }}.module import Model
from {{ cookiecutter.package_name }}.practices import deploy_preprocess
from {{ cookiecutter.package_name }}.practices.export import ExportFallbackWarning, export_network

PACKAGE = Model.__module__.split(".")[0]
FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
# The exported inputs of each modality, named by their place in the batch dict.
EXPECTED_INPUTS = {
    "image": ["image"],
    "tabular": ["tabular.numeric", "tabular.categorical"],
    "sequence": ["sequence.values", "sequence.mask"],
}
# predictions.csv rounds probabilities to 6 decimals (regression: 7 significant digits); ONNX Runtime and torch
# differ by float32 rounding on top.
PREDICT_ATOL = 1e-5
DYNAMO = "torch.onnx.export(dynamo=True)"


def needs_onnx() -> Any:
    for module in ("onnx", "onnxscript"):
        pytest.importorskip(module, reason='ONNX export needs the export extra: pip install -e ".[export]"')
    return pytest.importorskip("onnxruntime", reason='ONNX export needs the export extra: pip install -e ".[export]"')


def at(batch: dict[str, Any], name: str) -> torch.Tensor:
    """The tensor at a dotted input name, e.g. "sequence.mask" -> batch["sequence"]["mask"]."""
    for part in name.split("."):
        batch = batch[part]
    return batch


def has_gru(model: nn.Module) -> bool:
    """torch.export cannot capture the GRU encoder's pack_padded_sequence (practices/export.py)."""
    return any(isinstance(module, nn.GRU) for module in model.modules())


@pytest.fixture(scope="module")
def exported(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A one-epoch fit of the tiny model, exported with the default formats (both once for this module)."""
    needs_onnx()
    runs = tmp_path_factory.mktemp("export") / "runs"
    fit = main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, "--trainer.max_epochs", "1"))
    best = fit.trainer.checkpoint_callback.best_model_path
    export = main(cli_args("export", tiny_data, runs, "--ckpt_path", "best", "--batch_size", "3"))
    folder = export.run_dir / "export"
    info = json.loads((folder / "export.json").read_text())
    return SimpleNamespace(runs=runs, checkpoint=best, folder=folder, info=info)


def test_export_files_reproduce_the_checkpoint_on_a_new_batch(exported: SimpleNamespace, tiny_data: Path) -> None:
    onnxruntime = needs_onnx()
    folder, info, best = exported.folder, exported.info, exported.checkpoint
    model = Model.load_from_checkpoint(best, map_location="cpu").eval()
    assert info["checkpoint"] == best and info["task"] == TASK_TYPE
    # torch.export and the torch.export-based ONNX exporter, except for the GRU: TorchScript-based fallbacks.
    gru = has_gru(model)
    torch_file = {"torchscript": "model.torchscript.pt"} if gru else {"pt2": "model.pt2"}
    assert info["files"] == {**torch_file, "onnx": "model.onnx", "preprocessing": ["preprocess.json", "preprocess.py"]}
    exporters = ["torch.jit.trace", "torch.onnx.export(dynamo=False)"] if gru else ["torch.export", DYNAMO]
    assert [check["exporter"] for check in info["checks"]] == exporters
    assert [check["requested"] for check in info["checks"]] == ["pt2", "onnx"]
    for check in info["checks"]:
        assert (check["fallback_from"] is not None) == gru
        if gru:
            assert check["fallback_from"][0]["reason"].startswith("in network.encoders.sequence.rnn (GRU): ")
    files = [*torch_file.values(), "model.onnx", "preprocess.json", "preprocess.py"]
    assert all((folder / file).is_file() for file in files)
    names = [entry["name"] for entry in info["inputs"]]
    assert names == [name for modality in sorted(MODALITIES) for name in EXPECTED_INPUTS[modality]]
    assert all(entry["shape"][0] == "batch" for entry in [*info["inputs"], info["output"]])
    assert info["check_batch_sizes"] == [1, 7]
    assert all(check["passed"] and 0 <= check["max_abs_diff"] <= check["tolerance"] for check in info["checks"])
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["onnxscript"]
    assert info["preprocess_check"]["samples"] == 12 and info["preprocess_check"]["max_abs_diff"] == 0

    # The checkpoint's own outputs on test samples the export never saw, in a batch of a size it was not traced at.
    test = project_datamodule(tiny_data).dataset("test")
    batch = default_collate([test[i] for i in range(5)])
    with torch.no_grad():
        expected = model.task.activation(model(batch))
    assert info["class_names"] == model.task.class_names
    assert list(expected.shape[1:]) == info["output"]["shape"][1:]
    assert float((expected - expected[0]).abs().max()) > 1e-3  # samples differ: matching them is not trivial
    inputs = [at(batch, name) for name in names]

    if gru:
        program = torch.jit.load(folder / "model.torchscript.pt")
    else:
        program = torch.export.load(folder / "model.pt2").module()
    torch.testing.assert_close(program(*inputs), expected, atol=1e-5, rtol=1e-5)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [node.shape[0] for node in session.get_inputs()] == ["batch"] * len(session.get_inputs())
    onnx_check = next(check for check in info["checks"] if check["format"] == "onnx")
    assert [node.name for node in session.get_inputs()] == onnx_check["inputs"]
    feed = {node.name: at(batch, node.name).numpy() for node in session.get_inputs()}
    (outputs,) = session.run([info["output"]["name"]], feed)
    torch.testing.assert_close(torch.from_numpy(outputs), expected, atol=1e-5, rtol=1e-5)
    # The ONNX file carries its own description and preprocessing.
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["preprocessing"]) == json.loads((folder / "preprocess.json").read_text())
    assert json.loads(metadata["metadata"])["class_names"] == info["class_names"]


def raw_rows(data: Path, folder: Path) -> Path:
    """predict.csv in `folder`: the test split's raw cells, each image saved again at an odd, non-square size (some
    in greyscale), so preprocessing has to resize, crop and convert as the project does."""
    if CLASS_FOLDERS:
        rows = [{"image": str(path)} for path in sorted((data / "test").rglob("*.png"))]
    else:
        with (data / "test.csv").open(newline="") as file:
            rows = list(csv.DictReader(file))
        if SEGMENTATION:  # rows to predict have no masks
            mask_column = default_config("data")["image"]["mask_column"]
            rows = [{column: cell for column, cell in row.items() if column != mask_column} for row in rows]
    if "image" in MODALITIES:
        for i, row in enumerate(rows):
            with Image.open(data / row["image"]) as image:
                image = image.convert("RGB").resize((45 + i % 4, 37 + i % 3))
            path = folder / "images" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            (image.convert("L") if i % 3 == 0 else image).save(path)
            row["image"] = str(path)
    path = folder / "predict.csv"
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_export_folder_alone_reproduces_predict_on_raw_inputs(
    exported: SimpleNamespace, tiny_data: Path, tmp_path: Path, record_property: Any
) -> None:
    """A deployer's script: raw CSV rows and image files -> preprocess.py -> model.onnx in onnxruntime ->
    preprocess.py's decoding, in a process without torch or the project; it must give what `predict` writes."""
    needs_onnx()
    rows_csv = raw_rows(tiny_data, tmp_path)
    args = ["--ckpt_path", exported.checkpoint, "--data.predict_path", str(rows_csv)]
    predict = main(cli_args("predict", tiny_data, exported.runs, *args))
    with (predict.run_dir / "predictions.csv").open(newline="") as file:
        expected = {row.pop("id"): row for row in csv.DictReader(file)}

    script = tmp_path / "deployer" / "standalone_predict.py"
    script.parent.mkdir()
    shutil.copyfile(Path(__file__).with_name("standalone_predict.py"), script)
    out = tmp_path / "deployed"
    env = {**os.environ, "PYTHONPATH": str(exported.folder)}
    command = [sys.executable, str(script), str(exported.folder), str(rows_csv), str(tiny_data), str(out), PACKAGE]
    result = subprocess.run(command, env=env, cwd=script.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    deployed = json.loads((out / "predictions.json").read_text())
    arrays = np.load(out / "arrays.npz")

    # Its input arrays are the project's readers' tensors for the same rows, exactly.
    data = project_datamodule(tiny_data, predict_path=str(rows_csv))
    batch = default_collate(list(data.predict_dataloader().dataset))
    names = [entry["name"] for entry in exported.info["inputs"]]
    input_diff = {name: float(np.abs(arrays[name] - at(batch, name).numpy().astype(float)).max()) for name in names}
    assert all(arrays[name].dtype == at(batch, name).numpy().dtype for name in names)
    assert max(input_diff.values()) == 0, input_diff

    # Its predictions are predict's: the same labels, the same numbers within the CSV's rounding.
    assert list(deployed) == list(expected)
    output_diff, label_mismatches = 0.0, []
    for sample, row in expected.items():
        mine = deployed[sample]
        for column, value in row.items():
            if column == "mask_file":
                continue
            try:
                number = float(value)
            except ValueError:  # a class name, or the "|"-joined labels
                if mine[column] != value:
                    label_mismatches.append((sample, column, value, mine[column]))
                continue
            output_diff = max(output_diff, abs(mine[column] - number) / max(1.0, abs(number)))
    if "masks" in arrays.files:  # segmentation: the masks `predict` saved, pixel by pixel
        saved = np.stack([np.asarray(Image.open(predict.run_dir / row["mask_file"])) for row in expected.values()])
        if (saved != arrays["masks"]).any():
            label_mismatches.append(("masks: fraction of pixels", float((saved != arrays["masks"]).mean())))
    record_property("inputs_max_abs_diff", max(input_diff.values()))
    record_property("outputs_max_abs_diff", output_diff)
    print(f"standalone vs predict: inputs max abs diff {max(input_diff.values()):.3g}, outputs {output_diff:.3g}")
    assert not label_mismatches, label_mismatches
    assert output_diff <= PREDICT_ATOL


@pytest.mark.skipif("image" not in MODALITIES, reason="image preprocessing")
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_preprocess_py_reads_image_files_as_the_image_reader_does(interpolation: str, tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.data.image import ImageDataConfig, ImageReader

    reader = ImageReader(ImageDataConfig(24, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), interpolation))
    spec = json.loads(json.dumps(reader.preprocessing))  # as preprocess.json stores it
    rng = np.random.default_rng(0)
    files = []  # sizes to resize, crop or leave; 8-bit colour, grey, RGBA, 16-bit grey
    for i, (width, height, mode) in enumerate([(45, 37, "RGB"), (37, 45, "L"), (24, 24, "RGBA"), (100, 25, "RGB")]):
        pixels = rng.integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(files[-1])
    files.append(tmp_path / "16-bit.png")
    Image.fromarray(rng.integers(0, 65536, (31, 29), dtype=np.uint16)).save(files[-1])
    for row in rows_of([{"image": str(path)} for path in files]):
        expected = reader.read(row, train=False)["image"].numpy()
        np.testing.assert_array_equal(deploy_preprocess.read_image(spec, row.values["image"]), expected)


def rows_of(cells: list[dict[str, str]]) -> list:
    from {{ cookiecutter.package_name }}.data.table import Row

    return [Row(values, Path("cells.csv"), line, Path(".")) for line, values in enumerate(cells, start=2)]


def assert_same_arrays(arrays: dict[str, np.ndarray], tensors: dict[str, Any], prefix: str) -> None:
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(arrays[f"{prefix}.{name}"], tensor.numpy(), err_msg=name)
        assert arrays[f"{prefix}.{name}"].dtype == tensor.numpy().dtype


@pytest.mark.skipif("tabular" not in MODALITIES, reason="tabular preprocessing")
def test_preprocess_py_reads_table_cells_as_the_tabular_reader_does() -> None:
    from {{ cookiecutter.package_name }}.data.tabular import TabularReader

    train = [{"age": "31", "income": "52000.5", "colour": "red"}, {"age": "47", "income": "", "colour": "blue "}]
    train += [{"age": "NA", "income": "1e5", "colour": "green"}, {"age": "29.5", "income": "61000", "colour": ""}]
    reader = TabularReader(["age", "income"], ["colour"])
    reader.fit(rows_of(train))
    spec = json.loads(json.dumps(reader.preprocessing))  # as preprocess.json stores it
    # missing spellings, an unseen category, padding spaces, a category only in another split
    cells = [*train, {"age": " 40 ", "income": "null", "colour": "purple"}]
    cells += [{"age": "None", "income": "7", "colour": "NaN"}]
    for row in rows_of(cells):
        arrays = deploy_preprocess.read_tabular(spec, row.values)
        assert_same_arrays(arrays, reader.read(row, False)["tabular"], "tabular")


@pytest.mark.skipif("sequence" not in MODALITIES, reason="sequence preprocessing")
@pytest.mark.parametrize("kind", ["tokens", "numeric"])
def test_preprocess_py_reads_sequences_as_the_sequence_reader_does(kind: str) -> None:
    from {{ cookiecutter.package_name }}.data.sequence import SequenceReader

    if kind == "tokens":
        train = ["The cat sat.", "A dog, a cat!", "Don't stop"]
        other = ["the zebra sat", "", "cat " * 10, "CAT, Dog?"]  # unknown words, empty, truncated, case
    else:
        train = ["1 2 3", "0.5 -1 4 8", "10"]
        other = ["1e3 2", "3 " * 10, " 7 "]
    reader = SequenceReader("text", kind, max_length=6)
    reader.fit(rows_of([{"text": text} for text in train]))
    spec = json.loads(json.dumps(reader.preprocessing))
    for row in rows_of([{"text": text} for text in train + other]):
        arrays = deploy_preprocess.read_sequence(spec, row.values["text"])
        assert_same_arrays(arrays, reader.read(row, False)["sequence"], "sequence")


class NumpySort(nn.Module):
    """Sorts with numpy: torch.export refuses it, the tracer records the result as a constant of the example batch."""

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.sort(outputs.detach().numpy(), axis=1))


class RunningMax(nn.Module):
    """torch.cummax: torch.export and TorchScript record it, neither ONNX exporter has a translation for it."""

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.cummax(outputs, dim=1).values


class CheckedSign(nn.Module):
    """A Python branch on a tensor's value: torch.export refuses it; the tracer follows the branch the example
    takes, which is the one every batch takes."""

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        if outputs.abs().sum().item() >= 0:
            return outputs
        raise ValueError("a sum of absolute values is never negative")


@pytest.mark.parametrize("fmt", ["pt2", "torchscript", "onnx"])
def test_a_layer_the_trace_cannot_follow_is_refused(fmt: str, tiny_data: Path, tmp_path: Path) -> None:
    if fmt == "onnx":
        needs_onnx()
    data = project_datamodule(tiny_data)
    model = project_model(data)
    model.network = nn.Sequential(model.network, NumpySort())
    # pt2 and onnx: torch.export refuses the model (naming the layer), and the tracing fallback does not reproduce it.
    fallback = {"pt2": "torch.jit.trace", "onnx": r"torch.onnx.export\(dynamo=False\)"}.get(fmt)
    failed = rf"{fmt} export failed in network\.\S+ \(\w+\): .*; its fallback, {fallback}, " if fallback else ""
    failed = failed or f"{fmt} export "
    with pytest.raises(ProjectError, match=rf"^{failed}does not reproduce the checkpoint.*NumpySort") as error:
        export_network(model, data.dataset("val"), tmp_path, formats=fmt)
    assert "\n" not in str(error.value) and "--formats" in str(error.value)
    assert not list(tmp_path.iterdir())  # no file that computes something else is left behind


def test_an_operator_onnx_cannot_translate_is_named(tiny_data: Path, tmp_path: Path) -> None:
    needs_onnx()
    data = project_datamodule(tiny_data)
    model = project_model(data)
    model.network = nn.Sequential(model.network, RunningMax())
    expected = r"^onnx export failed .*at operator aten::cummax in network\.1 \(RunningMax\): .*--formats pt2"
    with pytest.raises(ProjectError, match=expected):
        export_network(model, data.dataset("val"), tmp_path, formats="pt2,onnx")
    torch_file = "model.torchscript.pt" if has_gru(model) else "model.pt2"
    assert [path.name for path in tmp_path.iterdir()] == [torch_file]  # torch.export (or TorchScript) exported it
    info = export_network(model, data.dataset("val"), tmp_path, formats="pt2")
    assert info["checks"][0]["passed"] and (tmp_path / "export.json").is_file()


def test_a_model_torch_export_cannot_capture_falls_back_with_visible_warnings(tiny_data: Path, tmp_path: Path) -> None:
    needs_onnx()
    data = project_datamodule(tiny_data)
    model = project_model(data)
    model.network = nn.Sequential(model.network, CheckedSign())
    fallback = r"^pt2: torch\.export cannot export this model in network\."
    with pytest.warns(ExportFallbackWarning, match=fallback) as caught:
        info = export_network(model, data.dataset("val"), tmp_path)
    assert [check["exporter"] for check in info["checks"]] == ["torch.jit.trace", "torch.onnx.export(dynamo=False)"]
    assert [check["fallback_from"][0]["exporter"] for check in info["checks"]] == ["torch.export", DYNAMO]
    culprit = "(GRU)" if has_gru(model) else "(CheckedSign)"  # the first layer torch.export refuses
    assert all(check["passed"] and culprit in check["fallback_from"][0]["reason"] for check in info["checks"])
    assert set(info["files"]) == {"torchscript", "onnx", "preprocessing"}
    # torch's own notices that these exporters are deprecated reach the user.
    messages = [str(warning.message) for warning in caught]
    assert any("torch.jit.trace` is deprecated" in message for message in messages), messages
    assert any("legacy TorchScript-based ONNX export" in message for message in messages), messages
