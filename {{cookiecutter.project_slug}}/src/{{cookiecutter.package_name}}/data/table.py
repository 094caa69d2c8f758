"""Samples as rows: every split is a list of `Row`s, read from a manifest CSV or from class folders.

A row keeps where it came from (file and the line it starts on), so every reader can name the exact cell it cannot
parse, and its id: the cell of `data.source.id_column` when one is configured, else that place (`test.csv:7`).
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

from pytorch_lightning.utilities import rank_zero_warn

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
    line: int  # 1-based line of the CSV file the row starts on (the header is line 1); 0 for class folders
    root: Path = field(default=Path("."))  # dataset root, to resolve relative paths
    key: str | None = None  # the user's own id (the data.source.id_column cell); None: the row is named by its place
    # Streamed rows (data/streaming.py) carry the bytes of the files their cells name: column -> file content.
    blobs: dict[str, bytes] | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def location(self) -> str:
        """Where the row is: `train.csv:7`, or the image file of a class folder."""
        return f"{self.file.name}:{self.line}" if self.line else str(self.file)

    @property
    def id(self) -> str:
        """How a sample is named in predictions and reports: its data.source.id_column cell, else its location."""
        return self.location if self.key is None else self.key

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

    def source(self, column: str) -> Path | io.BytesIO:
        """What to open for a file cell: the stored bytes of a streamed row, else the file `path` names."""
        if self.blobs and column in self.blobs:
            data = io.BytesIO(self.blobs[column])
            data.name = str(self.path(column))  # named like the file, for messages
            return data
        return self.path(column)


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


def read_csv(path: Path, required: list[str], root: Path, id_column: str | None = None) -> list[Row]:
    """The rows of one manifest CSV, each named by its `id_column` cell when one is given; DataError when a
    configured column is missing, a row's cells do not match the header, an id is missing, or the file is empty.
    Ids that repeat are allowed (predictions then repeat them too), with one warning per file."""
    required = [*required, *([id_column] if id_column and id_column not in required else [])]
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
        end = reader.line_num  # line_num is the file line a record ends on: a quoted cell may hold line breaks
        for cells in reader:
            line, end = end + 1, reader.line_num  # the line the row starts on, as an editor shows it
            if not cells:  # a blank line
                continue
            if len(cells) != len(header):
                raise DataError(f"{path} line {line}: {len(cells)} cells, but the header has {len(header)} columns")
            values = dict(zip(header, cells, strict=True))
            rows.append(Row(values, path, line, root, _row_key(values, id_column, path, line)))
    except (OSError, csv.Error) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    if not rows:
        raise DataError(f"{path} has a header but no rows: the split is empty")
    if id_column:
        warn_repeated_ids(rows, path, id_column)
    return rows


def _row_key(values: dict[str, str], id_column: str | None, path: Path, line: int) -> str | None:
    if id_column is None:
        return None
    key = values[id_column].strip()
    if is_missing(key):
        raise DataError(f"{path} line {line}, column {id_column!r}: the id is missing (data.source.id_column)")
    return key


def warn_repeated_ids(rows: list[Row], path: Path, id_column: str) -> None:
    """One warning when ids of data.source.id_column repeat within a file: allowed, but predictions cannot tell those
    rows apart by id."""
    first_line: dict[str, int] = {}
    repeats: list[tuple[str, int, int]] = []  # id, first line, repeating line
    for row in rows:
        if row.id in first_line:
            repeats.append((row.id, first_line[row.id], row.line))
        else:
            first_line[row.id] = row.line
    if repeats:
        key, first, again = repeats[0]
        rank_zero_warn(
            f"{path}: {len(repeats)} rows repeat an id of data.source.id_column {id_column!r} (e.g. {key!r} on lines "
            f"{first} and {again}); predictions.csv repeats them too"
        )
