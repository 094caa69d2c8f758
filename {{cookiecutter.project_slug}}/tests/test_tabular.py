"""Tabular inputs: statistics from train only, missing and unseen values handled, bad cells named, encoder shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
