"""Manifest CSV data: splits, train-only statistics, and a clear error naming the file, line and column for each
kind of bad input. Runs on the project's own columns (configs/default.yaml) and toy data."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import CLASS_FOLDERS, project_datamodule
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.errors import DataError

pytestmark = pytest.mark.skipif(CLASS_FOLDERS, reason="the project's toy data uses class folders (test_data.py)")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def data(tiny_data: Path, tmp_path: Path) -> Path:
    """A copy of the tiny toy data that a test may break."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def set_cell(path: Path, index: int, column: str, value: str) -> int:
    """Write `value` into row `index` of a CSV; returns the CSV line number an error should name."""
    rows = read_rows(path)
    rows[index][column] = value
    write_rows(path, rows)
    return index + 2  # line 1 is the header


def test_every_row_becomes_one_sample_of_the_batch_contract(tiny_data: Path) -> None:
    datamodule = project_datamodule(tiny_data)
    assert {split: len(rows) for split, rows in datamodule.splits.items()} == {"train": 36, "val": 12, "test": 12}
    batch = next(iter(datamodule.val_dataloader()))
    assert set(MODALITIES) <= set(batch) and "target" in batch and len(batch["id"]) == 8
    assert batch["id"][0] == "val.csv:2"


def test_missing_val_and_test_csvs_are_carved_from_train_deterministically(data: Path) -> None:
    (data / "val.csv").unlink()
    (data / "test.csv").unlink()
    first, again = project_datamodule(data), project_datamodule(data)
    sizes = {split: len(rows) for split, rows in first.splits.items()}
    assert sum(sizes.values()) == 36 and sizes["val"] >= 5 and sizes["test"] >= 5
    assert [r.id for r in first.splits["val"]] == [r.id for r in again.splits["val"]]
    other = project_datamodule(data, splits={"seed": 1})
    assert [r.id for r in other.splits["val"]] != [r.id for r in first.splits["val"]]
    ids = [{row.id for row in first.splits[split]} for split in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_a_configured_column_missing_from_a_csv_is_named(data: Path) -> None:
    datamodule = project_datamodule(data)
    column = datamodule._required_columns()[0]
    rows = [{k: v for k, v in row.items() if k != column} for row in read_rows(data / "val.csv")]
    write_rows(data / "val.csv", rows)
    with pytest.raises(DataError, match=rf"val\.csv has no column '{column}'"):
        project_datamodule(data)


def test_an_empty_split_is_named(data: Path) -> None:
    header = (data / "test.csv").read_text().splitlines()[0]
    (data / "test.csv").write_text(header + "\n")
    with pytest.raises(DataError, match=r"test\.csv has a header but no rows"):
        project_datamodule(data)


@pytest.mark.skipif("tabular" not in MODALITIES, reason="no tabular input")
def test_a_non_numeric_value_in_a_numeric_column_is_named(data: Path) -> None:
    line = set_cell(data / "val.csv", 3, "x1", "abc")
    with pytest.raises(DataError, match=rf"val\.csv line {line}, column 'x1': 'abc' is not a number"):
        project_datamodule(data)


@pytest.mark.skipif("tabular" not in MODALITIES, reason="no tabular input")
def test_tabular_statistics_come_from_train_only(data: Path) -> None:
    datamodule = project_datamodule(data)
    reader = datamodule.inputs["tabular"]
    train = [float(row.values["x0"]) for row in datamodule.splits["train"] if row.values["x0"].strip()]
    assert float(reader._mean[0]) == pytest.approx(sum(train) / len(train))


@pytest.mark.skipif(TASK_TYPE not in ("multiclass", "binary"), reason="not a classification task")
def test_a_label_outside_the_classes_is_named(data: Path) -> None:
    line = set_cell(data / "test.csv", 2, "target", "zebra")
    with pytest.raises(DataError, match=rf"test\.csv line {line}, column 'target': label 'zebra' is not one of"):
        project_datamodule(data)
    classes = sorted({row["target"] for row in read_rows(data / "train.csv")})
    set_cell(data / "test.csv", 2, "target", classes[0])
    with pytest.raises(DataError, match="is not one of the classes"):  # configured classes are the only ones
        project_datamodule(data, target={"classes": classes[1:] if TASK_TYPE == "multiclass" else ["x", "y"]})


@pytest.mark.skipif(TASK_TYPE != "multilabel", reason="not a multilabel task")
def test_a_multilabel_target_of_the_wrong_width_is_named(data: Path) -> None:
    width = len(read_rows(data / "train.csv")[0]["target"].split())
    line = set_cell(data / "val.csv", 1, "target", " ".join(["1"] * (width + 1)))
    with pytest.raises(
        DataError, match=rf"val\.csv line {line}, column 'target': {width + 1} values, expected {width}"
    ):
        project_datamodule(data)


@pytest.mark.skipif(TASK_TYPE != "regression", reason="not a regression task")
def test_regression_targets_are_standardized_with_train_statistics(data: Path) -> None:
    datamodule = project_datamodule(data)
    targets = torch.stack([item["target"] for item in datamodule.dataset("train")])
    assert torch.allclose(targets.mean(0), torch.zeros(targets.shape[1]), atol=1e-5)
    line = set_cell(data / "train.csv", 4, "target", "n/a")
    with pytest.raises(DataError, match=rf"train\.csv line {line}, column 'target': 'n/a' is not a number"):
        project_datamodule(data)


@pytest.mark.skipif(TASK_TYPE != "segmentation", reason="not a segmentation task")
def test_a_mask_whose_size_differs_from_its_image_is_named(data: Path) -> None:
    mask = data / read_rows(data / "val.csv")[0]["mask"]
    Image.new("L", (20, 32)).save(mask)
    with pytest.raises(DataError, match=r"val\.csv line 2, column 'mask': mask .* is 20x32 but its image"):
        project_datamodule(data)
