"""How samples are named: by the user's own id column (`data.source.id_column`) in predictions.csv and reports, else by
file and line, where the line is the one the file shows even when quoted cells hold line breaks."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from conftest import CLASS_FOLDERS, cli_args, project_datamodule
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.data.table import read_csv
from {{ cookiecutter.package_name }}.errors import DataError

ID = "sample_id"
manifest_only = pytest.mark.skipif(CLASS_FOLDERS, reason="the project's toy data uses class folders")


def test_lines_are_the_file_lines_when_quoted_cells_hold_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text('x,note\n1,"two\nlines"\n2,plain\n\n3,"three\nmore\nlines"\n4\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv line 9: 1 cells, but the header has 2 columns"):
        read_csv(path, ["x"], tmp_path)
    path.write_text('x,note\n1,"two\nlines"\n2,plain\n\n3,"three\nmore\nlines"\n', encoding="utf-8")
    rows = read_csv(path, ["x"], tmp_path)
    assert [row.line for row in rows] == [2, 4, 6]  # where each row starts; line 5 is blank
    assert [row.id for row in rows] == ["train.csv:2", "train.csv:4", "train.csv:6"]
    assert rows[1].where("x") == f"{path} line 4, column 'x'"


def test_an_id_column_names_the_rows_and_repeats_are_allowed_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text("x,key\n1, a7 \n2,b\n3,a7\n", encoding="utf-8")
    repeated = r"test\.csv: 1 rows repeat an id of data.source.id_column 'key' \(e\.g\. 'a7' on lines 2 and 4\)"
    with pytest.warns(UserWarning, match=repeated):
        rows = read_csv(path, ["x"], tmp_path, id_column="key")
    assert [row.id for row in rows] == ["a7", "b", "a7"]  # stripped, as every cell a reader reads
    assert [row.location for row in rows] == ["test.csv:2", "test.csv:3", "test.csv:4"]
    path.write_text("x,key\n1,a\n2, NA\n", encoding="utf-8")
    missing = r"test\.csv line 3, column 'key': the id is missing \(data\.source\.id_column\)"
    with pytest.raises(DataError, match=missing):
        read_csv(path, ["x"], tmp_path, id_column="key")


def with_ids(root: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> None:
    """An id column in the CSVs of `splits`: `<split>-<n>`."""
    for split in splits:
        path = root / f"{split}.csv"
        with path.open(newline="", encoding="utf-8") as file:
            table = list(csv.DictReader(file))
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=[ID, *table[0]])
            writer.writeheader()
            writer.writerows({ID: f"{split}-{i}", **row} for i, row in enumerate(table))


@pytest.fixture
def data(tiny_data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


@manifest_only
def test_predictions_are_named_by_the_id_column(data: Path, tmp_path: Path) -> None:
    with_ids(data)
    datamodule = project_datamodule(data, source={"id_column": ID})
    assert next(iter(datamodule.val_dataloader()))["id"][:2] == ["val-0", "val-1"]
    assert ID not in datamodule.input_columns()  # a name, not an input
    cli = main(cli_args("predict", data, tmp_path / "runs", "--data.source.id_column", ID))
    with (Path(cli.trainer.default_root_dir) / "predictions.csv").open(newline="", encoding="utf-8") as file:
        ids = [row["id"] for row in csv.DictReader(file)]
    assert sorted(ids) == sorted(f"test-{i}" for i in range(12))


@manifest_only
def test_every_csv_read_must_have_the_id_column(data: Path) -> None:
    with_ids(data, splits=("train", "val"))
    with pytest.raises(DataError, match=r"test\.csv has no column 'sample_id'"):
        project_datamodule(data, source={"id_column": ID})
    shutil.copy(data / "test.csv", data / "new.csv")  # rows to predict, without ids
    with_ids(data, splits=("test",))
    datamodule = project_datamodule(data, source={"id_column": ID}, predict_path=str(data / "new.csv"))
    with pytest.raises(DataError, match=r"new\.csv has no column 'sample_id'"):
        datamodule.predict_dataloader()


@pytest.mark.skipif(not CLASS_FOLDERS, reason="class folders: this project's toy data is a manifest CSV")
def test_class_folders_have_no_id_column(tiny_data: Path) -> None:
    with pytest.raises(DataError, match=r"data.source.id_column='sample_id' names a CSV column"):
        project_datamodule(tiny_data, source={"id_column": ID})
