"""Target readers: the CSV's target column(s) -> the "target" entry of the batch, one reader per task type.

Class names come from `data.target.classes` or, when that is null, from the values seen in train (sorted). Every row
of every split is checked before training, so a label outside the classes or a malformed value is reported
with its file, line and column instead of failing somewhere in epoch 3. (Segmentation targets are masks: the
image reader reads them together with their image.)
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn

from ..errors import DataError
from .table import Row, is_missing, parse_number


class ClassTarget:
    """multiclass: int64 class index; binary: float32 0/1 (the positive class is the second class name)."""

    def __init__(self, column: str, classes: list[str] | None = None, binary: bool = False):
        self.column = column
        self.configured = classes is not None
        self.class_names = [str(c) for c in classes] if classes is not None else []
        self.binary = binary

    def fit(self, rows: list[Row]) -> None:
        if not self.configured:
            self.class_names = sorted({self._value(row) for row in rows})
        expected = "exactly 2" if self.binary else "at least 2"
        if (len(self.class_names) != 2) if self.binary else (len(self.class_names) < 2):
            source = "data.target.classes" if self.configured else f"column {self.column!r} of the train split"
            raise DataError(f"{source} has {len(self.class_names)} classes ({self.class_names}); need {expected}")
        self._index = {name: i for i, name in enumerate(self.class_names)}

    def _value(self, row: Row) -> str:
        value = row.get(self.column).strip()
        if is_missing(value):
            raise DataError(f"{row.where(self.column)}: the label is missing")
        return value

    def check(self, rows: list[Row]) -> None:
        for row in rows:
            value = self._value(row)
            if value not in self._index:
                classes = ", ".join(self.class_names)
                raise DataError(f"{row.where(self.column)}: label {value!r} is not one of the classes ({classes})")

    def label(self, row: Row) -> int:
        """The class index (used for stratified splits and label statistics)."""
        return self._index[self._value(row)]

    def read(self, row: Row, train: bool) -> dict[str, Any]:
        index = self.label(row)
        target = torch.tensor(float(index)) if self.binary else torch.tensor(index, dtype=torch.long)
        return {"target": target}

    @property
    def spec(self) -> dict[str, Any]:
        return {"class_names": self.class_names}


class MultilabelTarget:
    """One column of L space-separated 0/1 values ("0 1 1") -> float32 [L]."""

    def __init__(self, column: str, classes: list[str] | None = None):
        self.column = column
        self.class_names = [str(c) for c in classes] if classes is not None else []

    def _values(self, row: Row) -> list[float]:
        raw = row.get(self.column).split()
        if not all(value in ("0", "1") for value in raw):
            raise DataError(f"{row.where(self.column)}: {' '.join(raw)!r} is not space-separated 0/1 values")
        return [float(value) for value in raw]

    def fit(self, rows: list[Row]) -> None:
        if not self.class_names:
            self.class_names = [f"label_{i}" for i in range(len(self._values(rows[0])))]
        if not self.class_names:
            raise DataError(f"{rows[0].where(self.column)}: no labels in the first row")
        positives = [0.0] * len(self.class_names)
        for row in rows:
            values = self._values(row)
            if len(values) == len(positives):  # a row of the wrong width is named by check()
                positives = [count + value for count, value in zip(positives, values, strict=True)]
        never = [name for name, count in zip(self.class_names, positives, strict=True) if count == 0]
        if never:
            rank_zero_warn(
                f"{rows[0].file}: label {', '.join(map(repr, never))} is never positive in train: the model cannot "
                "learn it, and its val/test AP is undefined (torchmetrics then warns without naming it)"
            )

    def check(self, rows: list[Row]) -> None:
        width = len(self.class_names)
        for row in rows:
            values = self._values(row)
            if len(values) != width:
                raise DataError(
                    f"{row.where(self.column)}: {len(values)} values, expected {width} "
                    f"(one 0/1 per label: {', '.join(self.class_names)})"
                )

    def read(self, row: Row, train: bool) -> dict[str, Any]:
        return {"target": torch.tensor(self._values(row))}

    @property
    def spec(self) -> dict[str, Any]:
        return {"class_names": self.class_names}


class RegressionTarget:
    """One numeric column per output -> float32 [N], standardized with the train mean and std.

    Standardized targets put every output on the same scale for the loss and make the initial near-zero
    outputs predict the train mean; the task undoes the scaling for metrics and predictions.
    """

    def __init__(self, columns: list[str]):
        if not columns:
            raise DataError("data.target.columns is empty: name the column(s) to predict")
        self.columns = list(columns)
        self.mean = [0.0] * len(columns)
        self.std = [1.0] * len(columns)

    def _values(self, row: Row) -> list[float]:
        values = []
        for column in self.columns:
            raw = row.get(column).strip()
            if is_missing(raw):
                raise DataError(f"{row.where(column)}: the target is missing")
            values.append(parse_number(raw, row.where(column), "a regression target"))
        return values

    def fit(self, rows: list[Row]) -> None:
        data = torch.tensor([self._values(row) for row in rows], dtype=torch.float64)
        self.mean = data.mean(0).tolist()
        self.std = data.std(0, correction=0).clamp(min=1e-8).tolist() if len(rows) > 1 else [1.0] * len(self.columns)

    def check(self, rows: list[Row]) -> None:
        for row in rows:
            self._values(row)

    def read(self, row: Row, train: bool) -> dict[str, Any]:
        values = torch.tensor(self._values(row), dtype=torch.float64)
        standardized = (values - torch.tensor(self.mean, dtype=torch.float64)) / torch.tensor(
            self.std, dtype=torch.float64
        )
        return {"target": standardized.float()}

    @property
    def spec(self) -> dict[str, Any]:
        return {"class_names": self.columns, "target_stats": {"mean": self.mean, "std": self.std}}
