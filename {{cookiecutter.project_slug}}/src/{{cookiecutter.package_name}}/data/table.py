"""Samples as rows: every split is a list of `Row`s, read from a manifest CSV or from class folders.

A row keeps where it came from (file and line), so every reader can name the exact cell it cannot parse.
Readers (one per input, plus the target) learn what they need from the train rows (`fit`), check every row
of every split before training starts (`check`), and turn one row into batch-contract entries (`read`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import DataError

FLOAT32_MAX = 3.4028234663852886e38
MISSING_VALUES = frozenset({"", "na", "nan", "null", "none"})


def is_missing(value: str) -> bool:
    """True for an empty cell or a usual spelling of 'no value' (NA, NaN, null, None; any case)."""
    return value.strip().lower() in MISSING_VALUES


@dataclass(frozen=True)
class Row:
    values: dict[str, str]  # column -> raw string
    file: Path  # the CSV it came from, or the image file for the class-folder layout
    line: int  # 1-based line in the CSV (the header is line 1); 0 for the class-folder layout
    root: Path = field(default=Path("."))  # dataset root, to resolve relative paths

    @property
    def id(self) -> str:
        """How a sample is named in predictions and reports: `train.csv:7`, or the image file of a class folder."""
        return f"{self.file.name}:{self.line}" if self.line else str(self.file)

    def where(self, column: str | None = None) -> str:
        place = f"{self.file} line {self.line}" if self.line else str(self.file)
        return f"{place}, column {column!r}" if column else place

    def get(self, column: str) -> str:
        try:
            return self.values[column]
        except KeyError:
            raise DataError(f"{self.where()}: no column {column!r}") from None

    def path(self, column: str) -> Path:
        """The file a cell names, relative to the dataset root (absolute paths are kept)."""
        return self.root / self.get(column).strip()


class Reader(Protocol):
    """Turns rows into one batch-contract entry ("image", "tabular", "sequence" or "target")."""

    def fit(self, rows: list[Row]) -> None:
        """Learn statistics or vocabularies from the train split only."""

    def check(self, rows: list[Row]) -> None:
        """Parse every row of a split once; raise DataError naming the file, line and column."""

    def read(self, row: Row, train: bool) -> dict[str, Any]:
        """The batch entries of one sample (`train`: the training split, which may be augmented)."""

    @property
    def spec(self) -> dict[str, Any]:
        """What the model needs to build its encoder or head (JSON-able)."""


def parse_number(value: str, where: str, hint: str) -> float:
    """A cell's number: finite and within float32's range, which the model computes in (a larger magnitude is a
    unit or parsing error, and its square would overflow the statistics). DataError naming the cell otherwise."""
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{where}: {value!r} is not a number ({hint})") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: {value!r} is not a finite number ({hint})")
    if abs(number) > FLOAT32_MAX:
        raise DataError(f"{where}: {value!r} is beyond float32's range (±3.4e38), which the model computes in")
    return number


def _decoded(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is named by its line (spreadsheets often save Latin-1 / cp1252)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line} is not UTF-8 text (byte {data[error.start]:#x}): save the CSV as UTF-8"
        ) from None


def read_csv(path: Path, required: list[str], root: Path) -> list[Row]:
    """The rows of one manifest CSV; DataError when a configured column is missing, a row's cells do not match the
    header, or the file is empty."""
    try:
        reader = csv.reader(io.StringIO(_decoded(path), newline=""))
        header = next(reader, [])
        missing = [column for column in required if column not in header]
        if missing:
            raise DataError(
                f"{path} has no column {', '.join(map(repr, missing))} (columns: {', '.join(header) or 'none'}); "
                "set the data.*_column(s) config keys to the names your CSV uses"
            )
        rows = []
        for cells in reader:
            line = reader.line_num  # the file line the row ends on (a quoted cell may span lines)
            if not cells:  # a blank line
                continue
            if len(cells) != len(header):
                raise DataError(f"{path} line {line}: {len(cells)} cells, but the header has {len(header)} columns")
            rows.append(Row(dict(zip(header, cells, strict=True)), path, line, root))
    except (OSError, csv.Error) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    if not rows:
        raise DataError(f"{path} has a header but no rows: the split is empty")
    return rows
