"""Tabular inputs: statistics from train only, missing and unseen values handled, bad cells named, encoder shapes;
columns the config does not list inferred from train.csv, printed and saved in the run's config.yaml."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import cli_args, project_datamodule
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.data.table import Row
from {{ cookiecutter.package_name }}.data.tabular import TabularReader
from {{ cookiecutter.package_name }}.errors import DataError
from {{ cookiecutter.package_name }}.models.encoders.tabular import TabularEncoder


def rows(values: list[dict[str, str]], file: str, root: Path) -> list[Row]:
    """Rows as read_csv makes them: the header is line 1, so the first data row is line 2."""
    return [Row(row, file=root / file, line=i + 2, root=root) for i, row in enumerate(values)]


@pytest.fixture
def reader(tmp_path: Path) -> TabularReader:
    train = [
        {"age": "10", "income": "1", "city": "paris"},
        {"age": "20", "income": "NA", "city": "berlin"},
        {"age": "30", "income": "3", "city": "paris"},
    ]
    reader = TabularReader(["age", "income"], ["city"])
    reader.fit(rows(train, "train.csv", tmp_path))
    return reader


def test_val_rows_are_standardized_with_train_statistics(reader: TabularReader, tmp_path: Path) -> None:
    # Train age: mean 20, population std sqrt(200/3); train income: mean 2. Val statistics would give 0s.
    val = rows([{"age": "40", "income": "2", "city": "paris"}], "val.csv", tmp_path)
    reader.check(val)
    numeric = reader.read(val[0], train=False)["tabular"]["numeric"]
    assert numeric.dtype == torch.float32 and numeric.shape == (4,)
    std = (200 / 3) ** 0.5
    torch.testing.assert_close(numeric, torch.tensor([20 / std, 0.0, 0.0, 0.0]))
    assert reader.spec == {"numeric": 4, "categorical": [3]}


def test_missing_value_takes_train_mean_and_sets_indicator(reader: TabularReader, tmp_path: Path) -> None:
    (row,) = rows([{"age": "", "income": "null", "city": "berlin"}], "test.csv", tmp_path)
    numeric = reader.read(row, train=False)["tabular"]["numeric"]
    torch.testing.assert_close(numeric, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    # Income was missing once in train: its mean/std come from the present values 1 and 3 only.
    (present,) = rows([{"age": "20", "income": "3", "city": "berlin"}], "test.csv", tmp_path)
    torch.testing.assert_close(reader.read(present, train=False)["tabular"]["numeric"], torch.tensor([0.0, 1, 0, 0]))


def test_unseen_and_missing_categories_map_to_unknown_bucket(reader: TabularReader, tmp_path: Path) -> None:
    val = rows(
        [{"age": "1", "income": "1", "city": c} for c in ("berlin", "paris", "tokyo", "NaN")], "val.csv", tmp_path
    )
    indices = [reader.read(row, train=False)["tabular"]["categorical"].item() for row in val]
    assert indices == [1, 2, 0, 0]
    assert reader.read(val[0], train=False)["tabular"]["categorical"].dtype == torch.int64


def test_vocabulary_does_not_depend_on_row_order(tmp_path: Path) -> None:
    cities = ["rome", "oslo", "lima", "oslo"]
    specs = []
    for order in (cities, cities[::-1]):
        reader = TabularReader([], ["city"])
        reader.fit(rows([{"city": c} for c in order], "train.csv", tmp_path))
        (row,) = rows([{"city": "oslo"}], "val.csv", tmp_path)
        specs.append((reader.spec, reader.read(row, train=False)["tabular"]["categorical"].tolist()))
    assert specs[0] == specs[1] == ({"numeric": 0, "categorical": [4]}, [2])


def test_column_all_missing_in_train_is_refused(tmp_path: Path) -> None:
    # Nothing to learn from, and nothing to standardize val/test values with: a raw 5 would reach the model.
    reader = TabularReader(["x"], [])
    with pytest.raises(DataError, match=r"train\.csv: column 'x' has no value in any train row"):
        reader.fit(rows([{"x": "NA"}, {"x": ""}], "train.csv", tmp_path))


def test_non_numeric_cell_is_named_by_file_line_and_column(reader: TabularReader, tmp_path: Path) -> None:
    val = rows(
        [{"age": "1", "income": "1", "city": "paris"}] * 5 + [{"age": "abc", "income": "1", "city": "a"}],
        "val.csv",
        tmp_path,
    )
    with pytest.raises(DataError, match=r"val\.csv line 7, column 'age': 'abc' is not a number \(missing values"):
        reader.check(val)


def test_bad_column_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one column"):
        TabularReader([], [])
    with pytest.raises(ValueError, match="'city'"):
        TabularReader(["age", "city"], ["city"])


@pytest.mark.parametrize(("num_numeric", "cardinalities"), [(4, [3, 20]), (0, [3]), (2, [])])
def test_encoder_shape_and_gradients(num_numeric: int, cardinalities: list[int]) -> None:
    torch.manual_seed(0)
    encoder = TabularEncoder.from_spec({"numeric": num_numeric, "categorical": cardinalities}, hidden_dim=8)
    batch = {
        "numeric": torch.randn(3, num_numeric, requires_grad=True),
        "categorical": torch.stack([torch.randint(0, c, (3,)) for c in cardinalities], 1)
        if cardinalities
        else torch.zeros(3, 0, dtype=torch.int64),
    }
    features = encoder(batch)
    assert features.shape == (3, encoder.out_features) == (3, 8)
    features.square().sum().backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None and g.isfinite().all() for g in grads)
    assert all(emb.weight.grad.abs().sum() > 0 for emb in encoder.embeddings)
    if num_numeric:
        assert batch["numeric"].grad.abs().sum() > 0


def test_reader_spec_builds_an_encoder_that_reads_its_batches(reader: TabularReader, tmp_path: Path) -> None:
    val = rows(
        [{"age": "5", "income": "", "city": "oslo"}, {"age": "7", "income": "2", "city": "paris"}], "val.csv", tmp_path
    )
    batch = torch.utils.data.default_collate([reader.read(row, train=False)["tabular"] for row in val])
    encoder = TabularEncoder.from_spec(reader.spec, hidden_dim=8)
    assert encoder(batch).shape == (2, 8)
    assert reader.describe() == (
        "tabular: 2 numeric (+ as many is-missing indicators), 1 categorical (vocabulary sizes incl. unknown: city=3)"
    )
    with pytest.raises(ValueError, match="at least one"):
        TabularEncoder(0, [])


# --- columns inferred from train.csv when data.tabular does not list them -------------------------------------------
TOY_NUMERIC, TOY_CATEGORICAL = ["x0", "x1", "x2", "x3"], ["colour"]


def add_columns(root: Path) -> None:
    """Four more columns in every split of the toy data: numbers with gaps, a text, an empty column, an id-like code."""
    for split in ("train", "val", "test"):
        path = root / f"{split}.csv"
        with path.open(newline="", encoding="utf-8") as file:
            table = list(csv.DictReader(file))
        for i, row in enumerate(table):
            row.update(flag="" if i % 5 == 0 else str(i % 3), note=("short", "long")[i % 2], empty="NA", code=f"c{i}")
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)


@pytest.fixture
def wide_data(tiny_data: Path, tmp_path: Path) -> Path:
    root = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    add_columns(root)
    return root


def test_unlisted_columns_are_inferred_from_train(wide_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        data = project_datamodule(wide_data, tabular={"numeric_columns": None, "categorical_columns": None})
    # In the CSV's order; the target(s) and the other inputs' columns have their own roles.
    assert data.tabular.numeric_columns == [*TOY_NUMERIC, "flag"]
    assert data.tabular.categorical_columns == [*TOY_CATEGORICAL, "note"]
    assert data.inferred_settings == {
        "tabular": {"numeric_columns": [*TOY_NUMERIC, "flag"], "categorical_columns": [*TOY_CATEGORICAL, "note"]}
    }
    assert data.input_specs["tabular"] == {"numeric": 10, "categorical": [5, 3]}  # 4 colours, 2 notes (+ unknown)
    (line,) = [record.getMessage() for record in caplog.records if "inferred from" in record.getMessage()]
    assert "train.csv" in line and "'empty' (no value in any train row)" in line and "'code' (a different" in line


def test_listed_columns_win_and_a_null_list_takes_the_rest(wide_data: Path) -> None:
    listed = project_datamodule(wide_data, tabular={"numeric_columns": ["x0"], "categorical_columns": []})
    assert (listed.tabular.numeric_columns, listed.tabular.categorical_columns) == (["x0"], [])
    assert listed.inferred_settings == {} and listed.input_specs["tabular"] == {"numeric": 2, "categorical": []}
    # Numbers listed, the text columns inferred: the numbers nobody listed stay out.
    half = project_datamodule(wide_data, tabular={"numeric_columns": ["x1"], "categorical_columns": None})
    assert half.tabular.numeric_columns == ["x1"] and half.tabular.categorical_columns == [*TOY_CATEGORICAL, "note"]
    assert half.inferred_settings == {"tabular": {"categorical_columns": [*TOY_CATEGORICAL, "note"]}}


def test_a_table_with_no_column_left_is_refused_in_one_line(wide_data: Path) -> None:
    # Every column left has another role (target, image, sequence) or nothing to learn from ('empty').
    dropped = {*TOY_NUMERIC, *TOY_CATEGORICAL, "flag", "note", "code"}
    for split in ("train", "val", "test"):
        path = wide_data / f"{split}.csv"
        with path.open(newline="", encoding="utf-8") as file:
            table = list(csv.DictReader(file))
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=[c for c in table[0] if c not in dropped], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(table)
    with pytest.raises(DataError, match=r"inferred from .*train\.csv.*'empty' \(no value.*no tabular input is left"):
        project_datamodule(wide_data, tabular={"numeric_columns": None, "categorical_columns": None})


def test_the_run_config_lists_the_inferred_columns(wide_data: Path, tmp_path: Path) -> None:
    # configs/toy.yaml lists the toy columns: null here, as in default.yaml, so they are inferred.
    unlisted = ["--data.tabular.numeric_columns", "null", "--data.tabular.categorical_columns", "null"]
    cli = main(cli_args("validate", wide_data, tmp_path / "runs", "--trainer.limit_val_batches", "1", *unlisted))
    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text(encoding="utf-8"))["data"]
    assert saved["tabular"] == {"numeric_columns": [*TOY_NUMERIC, "flag"], "categorical_columns": ["colour", "note"]}
