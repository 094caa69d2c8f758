"""One served request -> the project's sample, through the same readers `predict` uses.

A request is a JSON object keyed by the columns of a predict CSV: the image column (the file's bytes, base64),
the table columns (numbers, strings, null for a missing value) and the sequence column (a text; a numeric series
as a list of numbers or whitespace-separated text). It becomes a `Row` of strings, as a CSV line would, which the
DataModule's readers check and read: the served sample is the one `predict` builds from the same inputs. The
image goes to a temporary file for the reader to open, like a predicted image file. Extra fields are ignored, as
extra CSV columns are. Anything wrong raises `RequestError`: one line naming the field, answered with a 4xx.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from pathlib import Path
from typing import Any

from ..data.datamodule import RowDataset
from ..data.table import Reader, Row
from ..errors import DataError, ProjectError

# How a served row is named in the readers' messages: "request, column 'age': 'x' is not a number".
REQUEST = Path("request")


class RequestError(ProjectError):
    """A request the server refuses: `status` (4xx) and one line naming the field."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class RequestReader:
    """Reads requests into samples with the readers of a DataModule (`datamodule.inputs`: input name -> reader)."""

    def __init__(self, readers: dict[str, Reader]):
        self.readers = readers
        self.fields = request_fields(readers)

    def describe(self) -> str:
        """The fields a request carries, in one line (the server prints it, errors repeat it)."""
        return ", ".join(f"{name} ({kind})" for name, kind in self.fields.items())

    def sample(self, request: Any, folder: Path) -> dict[str, Any]:
        """The batch-contract sample of one request (its image written to a file in `folder` while it is read)."""
        if not isinstance(request, dict):
            raise RequestError(f"the body must be a JSON object of fields ({self.describe()})")
        missing = [name for name in self.fields if name not in request]
        if missing:
            raise RequestError(f"field {missing[0]!r} is missing; a request carries {self.describe()}", status=422)
        values = {name: cell(name, kind, request[name]) for name, kind in self.fields.items() if kind != "image"}
        image = next((name for name, kind in self.fields.items() if kind == "image"), None)
        if image is None:
            return self._read(Row(values, REQUEST, 0))
        data = image_bytes(image, request[image])
        handle, path = tempfile.mkstemp(dir=folder)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            return self._read(Row({**values, image: path}, REQUEST, 0), image, path)
        finally:
            os.unlink(path)

    def _read(self, row: Row, image: str | None = None, path: str = "") -> dict[str, Any]:
        try:
            for name, reader in self.readers.items():
                if name == "image":
                    # The check ImageReader.check runs on a predicted file, without its cache of checked files.
                    from ..data.image_check import problem

                    reason = problem(Path(path))
                    if reason:
                        reason = reason.replace(path, "the upload")
                        raise RequestError(f"field {image!r}: the uploaded file {reason}", status=422)
                else:
                    reader.check([row])
            return RowDataset([row], list(self.readers.values()))[0]
        except DataError as error:  # a cell the reader cannot parse: its message names the column
            message = str(error).replace(path, "the uploaded file") if path else str(error)
            raise RequestError(message, status=422) from None


def request_fields(readers: dict[str, Reader]) -> dict[str, str]:
    """Field name -> what it holds, from the readers' columns (the columns of a predict CSV)."""
    fields: dict[str, str] = {}
    if "image" in readers:
        fields[readers["image"].column] = "image"
    if "tabular" in readers:
        fields.update(dict.fromkeys(readers["tabular"].numeric_columns, "number"))
        fields.update(dict.fromkeys(readers["tabular"].categorical_columns, "category"))
    if "sequence" in readers:
        fields[readers["sequence"].column] = "text" if readers["sequence"].kind == "tokens" else "series"
    return fields


def cell(name: str, kind: str, value: Any) -> str:
    """A field's value as the CSV cell the reader parses (null: a missing value, as an empty cell)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and kind in ("number", "category"):
        return str(value)  # repr of a float: parses back to the same float
    if kind == "series" and isinstance(value, list):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise RequestError(f"field {name!r}: a series is a list of numbers", status=422)
        return " ".join(str(v) for v in value)
    expected = {
        "number": "a number, a string or null",
        "category": "a string, a number or null",
        "text": "a string",
        "series": "a list of numbers or a string of whitespace-separated numbers",
    }[kind]
    raise RequestError(f"field {name!r}: expected {expected}, got {type(value).__name__}", status=422)


def image_bytes(name: str, value: Any) -> bytes:
    """The bytes of a base64 image field (a `data:image/...;base64,` URL prefix is allowed)."""
    if not isinstance(value, str) or not value:
        raise RequestError(f"field {name!r}: expected the image file's bytes as base64 text (or a file upload)", 422)
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(f"field {name!r}: not base64 ({error})", status=422) from None
    if not data:
        raise RequestError(f"field {name!r}: the image is empty", status=422)
    return data
