"""Which table columns are tabular inputs when the config does not list them: inferred from the train split.

Every column of train.csv is a candidate except those with another role (the target(s), the id column, the
image / mask path, the sequence column) and those the config already lists. A candidate whose non-missing cells
all read as numbers (Python's float, as the tabular reader reads them) is numeric; any other is categorical. Two
kinds are left out, with the reason printed: a column with no value in train (nothing to learn from), and a
text column with a different value in every train row (an id, a name, a free text: as categories they would only
be memorised). The result is printed once and written into the run's config.yaml, so a run repeats as it ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .table import Row, is_missing

# A text column with a different value in every train row is left out only from this many rows on: in a handful
# of rows, distinct values are what a real category looks like too.
MIN_ROWS_FOR_ID_LIKE = 20


@dataclass
class InferredColumns:
    """The tabular columns of a table: the configured lists, and the inferred ones filled in."""

    numeric: list[str]
    categorical: list[str]
    inferred: tuple[str, ...]  # which lists were inferred: "numeric_columns", "categorical_columns"
    left_out: dict[str, str] = field(default_factory=dict)  # candidate column -> why it is not an input

    def describe(self, source: str) -> str:
        """One line for the run log: the inferred lists, and what was left out and why."""
        lists = {"numeric_columns": self.numeric, "categorical_columns": self.categorical}
        parts = [f"{key} {lists[key]}" for key in self.inferred]
        line = f"data.tabular inferred from {source}: {'; '.join(parts)}"
        if self.left_out:
            line += "; left out: " + "; ".join(f"{column!r} ({why})" for column, why in self.left_out.items())
        return line + " (list the columns in data.tabular to choose them yourself)"


def reads_as_number(value: str) -> bool:
    """Whether the reader would take the cell for a number (an inf or 1e400 is one, refused later by name)."""
    try:
        float(value)
    except ValueError:
        return False
    return True


def infer_columns(
    rows: list[Row], other_roles: set[str], numeric: list[str] | None, categorical: list[str] | None
) -> InferredColumns:
    """Fill in `numeric` / `categorical` where None, from the train rows' columns (in the CSV's order) that play no
    other role and are not listed already."""
    listed = set(numeric or []) | set(categorical or [])
    found_numeric: list[str] = []
    found_categorical: list[str] = []
    left_out: dict[str, str] = {}
    for column in rows[0].values:  # the CSV header's order
        if column in other_roles or column in listed:
            continue
        cells = [value.strip() for row in rows if not is_missing(value := row.values[column])]
        if not cells:
            left_out[column] = "no value in any train row"
        elif all(reads_as_number(cell) for cell in cells):
            if numeric is None:
                found_numeric.append(column)
            else:
                left_out[column] = "numbers, and numeric_columns is listed"
        elif len(rows) >= MIN_ROWS_FOR_ID_LIKE and len(set(cells)) == len(rows):
            left_out[column] = "a different text in every train row: an id or a free text"
        elif categorical is None:
            found_categorical.append(column)
        else:
            left_out[column] = "text, and categorical_columns is listed"
    return InferredColumns(
        numeric=found_numeric if numeric is None else list(numeric),
        categorical=found_categorical if categorical is None else list(categorical),
        inferred=tuple(
            key for key, value in (("numeric_columns", numeric), ("categorical_columns", categorical)) if value is None
        ),
        left_out=left_out,
    )
