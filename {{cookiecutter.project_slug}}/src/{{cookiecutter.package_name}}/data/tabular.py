"""Tabular columns -> model inputs, with every statistic learned from the train split only.

Numeric columns are standardized with the train mean and std; a missing cell takes the train mean (0 after
standardizing) and sets an is-missing indicator, so the model can tell "average" from "unknown". Categorical
columns become indices into a train vocabulary, where index 0 is the bucket for missing and unseen values:
a category that appears only in val/test must not crash or silently alias a real one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import DataError
from .table import MISSING_VALUES, Row, is_missing, parse_number

MISSING_HINT = "missing values: empty, NA, NaN, null, None"


class TabularReader:
    """Reads `numeric_columns` and `categorical_columns` of a row into the "tabular" batch entry.

    `read` gives {"numeric": float32 [2F] (F standardized values, then F is-missing indicators),
    "categorical": int64 [K] (0 = missing or unseen in train)}.
    """

    def __init__(self, numeric_columns: list[str], categorical_columns: list[str]):
        if not numeric_columns and not categorical_columns:
            raise ValueError(
                "tabular input needs at least one column: set data.tabular.numeric_columns or "
                "data.tabular.categorical_columns"
            )
        seen: set[str] = set()
        for column in [*numeric_columns, *categorical_columns]:
            if column in seen:
                raise ValueError(
                    f"column {column!r} is listed twice in data.tabular.numeric_columns / "
                    "data.tabular.categorical_columns; "
                    "give each column one role"
                )
            seen.add(column)
        self.numeric_columns = list(numeric_columns)
        self.categorical_columns = list(categorical_columns)
        self._mean: torch.Tensor | None = None  # [F], set by fit
        self._std: torch.Tensor | None = None  # [F]
        self._vocabularies: list[dict[str, int]] = []  # per categorical column: value -> index (from 1)

    def fit(self, rows: list[Row]) -> None:
        """Mean/std per numeric column and the vocabulary of each categorical column, from the train rows."""
        parsed = [self._parse_numeric(row) for row in rows]
        means, stds = [], []
        for index in range(len(self.numeric_columns)):
            values = [numbers[index] for numbers in parsed if numbers[index] is not None]
            if not values:  # nothing to learn from: a wrong column name or a broken export, not a feature
                raise DataError(
                    f"{rows[0].file}: column {self.numeric_columns[index]!r} has no value in any train row; fill it "
                    "or remove it from data.tabular.numeric_columns"
                )
            mean = math.fsum(values) / len(values)
            std = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / len(values))
            means.append(mean)
            # A (nearly) constant column is only centred: dividing by a tiny std would turn any other value at
            # val/test time into a huge input.
            stds.append(std if std >= 1e-6 else 1.0)
        # float64: large raw values (incomes, timestamps) would lose their differences in float32 before centring.
        self._mean = torch.tensor(means, dtype=torch.float64)
        self._std = torch.tensor(stds, dtype=torch.float64)
        self._vocabularies = []
        for column in self.categorical_columns:
            categories = sorted({value.strip() for row in rows if not is_missing(value := row.get(column))})
            self._vocabularies.append({category: index for index, category in enumerate(categories, start=1)})

    def check(self, rows: list[Row]) -> None:
        """Parse every cell of a split once, so a bad value fails before training instead of mid-epoch."""
        for row in rows:
            self._parse_numeric(row)
            for column in self.categorical_columns:
                row.get(column)

    def read(self, row: Row, train: bool) -> dict[str, Any]:
        """The "tabular" entry of one sample (`train` is unused: tables get no augmentation)."""
        mean, std = self._fitted()
        numbers = torch.tensor([math.nan if n is None else n for n in self._parse_numeric(row)], dtype=torch.float64)
        missing = numbers.isnan()
        # Imputing the train mean is the same as writing 0 after standardizing.
        standardized = torch.where(missing, 0.0, (numbers - mean) / std)
        categorical = [
            vocabulary.get(row.get(column).strip(), 0)
            for column, vocabulary in zip(self.categorical_columns, self._vocabularies, strict=True)
        ]
        return {
            "tabular": {
                "numeric": torch.cat([standardized, missing.double()]).float(),
                "categorical": torch.tensor(categorical, dtype=torch.int64),
            }
        }

    @property
    def spec(self) -> dict[str, Any]:
        self._fitted()
        return {
            "numeric": 2 * len(self.numeric_columns),
            "categorical": [len(vocabulary) + 1 for vocabulary in self._vocabularies],
        }

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What turns a row's raw cells into the "tabular" inputs (export writes it to preprocess.json)."""
        mean, std = self._fitted()
        numeric, categorical = len(self.numeric_columns), len(self.categorical_columns)
        return {
            "kind": "tabular",
            "inputs": {
                "tabular.numeric": {"dtype": "float32", "shape": [2 * numeric]},
                "tabular.categorical": {"dtype": "int64", "shape": [categorical]},
            },
            "numeric_columns": [
                {"column": column, "mean": m, "std": s}
                for column, m, s in zip(self.numeric_columns, mean.tolist(), std.tolist(), strict=True)
            ],
            "missing_values": sorted(MISSING_VALUES),
            "categorical_columns": [
                {"column": column, "vocabulary": vocabulary, "unknown_index": 0}
                for column, vocabulary in zip(self.categorical_columns, self._vocabularies, strict=True)
            ],
            "steps": [
                "a cell is missing when cell.strip().lower() is one of missing_values",
                "numeric: float(cell) (finite), then (value - mean) / std in float64; a missing cell gives 0",
                f"tabular.numeric = the {numeric} standardized values, then {numeric} is-missing flags (1.0 / 0.0), "
                "as float32",
                "categorical: vocabulary[cell.strip()], or unknown_index (0) for a missing or unseen value; int64",
            ],
        }

    def describe(self) -> str:
        """One line for the logs: how many inputs of each kind, and the size of each vocabulary."""
        line = (
            f"tabular: {len(self.numeric_columns)} numeric (+ as many is-missing indicators), "
            f"{len(self.categorical_columns)} categorical"
        )
        if self.categorical_columns:
            columns = zip(self.categorical_columns, self.spec["categorical"], strict=True)
            line += f" (vocabulary sizes incl. unknown: {', '.join(f'{name}={size}' for name, size in columns)})"
        return line

    def _fitted(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._mean is None or self._std is None:
            raise RuntimeError("TabularReader.fit(train rows) must run before read/spec")
        return self._mean, self._std

    def _parse_numeric(self, row: Row) -> list[float | None]:
        """The numeric cells of a row as floats, None where missing; DataError naming the cell otherwise."""
        numbers: list[float | None] = []
        for column in self.numeric_columns:
            value = row.get(column)
            if is_missing(value):
                numbers.append(None)
                continue
            numbers.append(parse_number(value, row.where(column), MISSING_HINT))
        return numbers
