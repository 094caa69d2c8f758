"""Bad data, kind by kind: each is refused before the first training step with one line that names the file (and,
for a CSV, the line and column), never a traceback. The table covers the project's own inputs: a kind whose
input, layout or task this project lacks is skipped. `python -m PACKAGE fit` prints the same line after `error:`
(the last test checks that with the real command)."""

from __future__ import annotations

import csv
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from conftest import CLASS_FOLDERS, cli_args, default_config, project_datamodule
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.errors import DataError

CSV_LAYOUT = not CLASS_FOLDERS
CLASSIFICATION = TASK_TYPE in ("multiclass", "binary")
NUMERIC_COLUMN = "x1"


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def set_cell(root: Path, column: str, value: str, split: str = "val", index: int = 2) -> str:
    """Write `value` into one cell; returns where an error must point: 'val.csv line 4'."""
    rows = read_rows(root / f"{split}.csv")
    rows[index][column] = value
    write_rows(root / f"{split}.csv", rows)
    return f"{split}.csv line {index + 2}"


def target_column() -> str:
    return default_config("data")["target"].get("columns", ["target"])[0]


def an_image(root: Path, split: str = "test", column: str = "image") -> tuple[Path, str]:
    """An image file of the split, and what an error about it must name (the file; for a CSV also its line)."""
    if CLASS_FOLDERS:
        path = sorted((root / split).rglob("*.png"))[0]
        return path, path.name
    row = read_rows(root / f"{split}.csv")[0]
    return root / row[column], f"{split}.csv line 2"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    """A valid PNG header claiming 20000 x 20000 pixels (4e8, over PIL's decompression-bomb limit) and no pixels."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


# --- the kinds: each breaks a copy of the tiny data and returns what the one-line error must contain ----------
def short_row(root: Path) -> tuple[str, ...]:
    lines = (root / "val.csv").read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]  # one cell fewer than the header
    (root / "val.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "val.csv line 4", "cells"


def extra_cells(root: Path) -> tuple[str, ...]:
    lines = (root / "val.csv").read_text(encoding="utf-8").splitlines()
    lines[2] += ",surplus"
    (root / "val.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "val.csv line 3", "cells"


def not_utf8(root: Path) -> tuple[str, ...]:
    (root / "val.csv").write_bytes((root / "val.csv").read_bytes() + b"\xff\xfe\xfa,\xff\n")
    return "val.csv", "UTF-8"


def binary_csv(root: Path) -> tuple[str, ...]:
    (root / "test.csv").write_bytes(bytes(range(256)) * 4)
    return ("test.csv",)


def no_train_split(root: Path) -> tuple[str, ...]:
    (root / "train.csv").unlink()
    return ("train.csv",)


def header_only(root: Path) -> tuple[str, ...]:
    (root / "test.csv").write_text((root / "test.csv").read_text(encoding="utf-8").splitlines()[0] + "\n")
    return "test.csv", "no rows"


def label_missing(root: Path) -> tuple[str, ...]:
    return set_cell(root, target_column(), ""), repr(target_column())


def label_unknown(root: Path) -> tuple[str, ...]:
    return set_cell(root, target_column(), "zebra"), "'zebra'"


def multilabel_not_binary(root: Path) -> tuple[str, ...]:
    width = len(read_rows(root / "val.csv")[0][target_column()].split())
    return set_cell(root, target_column(), " ".join(["2"] * width)), "0/1"


def multilabel_wrong_width(root: Path) -> tuple[str, ...]:
    return set_cell(root, target_column(), "1"), repr(target_column())


def regression_target(value: str) -> Callable[[Path], tuple[str, ...]]:
    return lambda root: (set_cell(root, target_column(), value), repr(value))


def numeric_cell(value: str) -> Callable[[Path], tuple[str, ...]]:
    return lambda root: (set_cell(root, NUMERIC_COLUMN, value), f"'{NUMERIC_COLUMN}'", repr(value))


def numeric_column_empty_in_train(root: Path) -> tuple[str, ...]:
    rows = read_rows(root / "train.csv")
    write_rows(root / "train.csv", [{**row, NUMERIC_COLUMN: ""} for row in rows])
    return "train.csv", repr(NUMERIC_COLUMN)


def numeric_sequences(root: Path) -> None:
    """Every split's sequence column as numbers, for the numeric-sequence kinds (the toy data has words)."""
    for split in ("train", "val", "test"):
        rows = read_rows(root / f"{split}.csv")
        write_rows(root / f"{split}.csv", [{**row, "sequence": "0.5 1.5 -2 3"} for row in rows])


def numeric_sequence_cell(value: str) -> Callable[[Path], tuple[str, ...]]:
    def breaks(root: Path) -> tuple[str, ...]:
        numeric_sequences(root)
        return set_cell(root, "sequence", value), "'sequence'"

    return breaks


def image_bytes(data: bytes) -> Callable[[Path], tuple[str, ...]]:
    def breaks(root: Path) -> tuple[str, ...]:
        path, where = an_image(root)
        path.write_bytes(data)
        return where, path.name

    return breaks


def truncated_image(root: Path) -> tuple[str, ...]:
    path, where = an_image(root)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    return where, path.name


def image_is_a_folder(root: Path) -> tuple[str, ...]:
    path, where = an_image(root)
    path.unlink()
    path.mkdir()
    return where, path.name


def image_missing(root: Path) -> tuple[str, ...]:
    path, where = an_image(root)
    path.unlink()
    return where, path.name


def image_cell_empty(root: Path) -> tuple[str, ...]:
    return set_cell(root, "image", "", split="test", index=0), "'image'"


def mask_of_other_size(root: Path) -> tuple[str, ...]:
    row = read_rows(root / "test.csv")[0]
    Image.new("L", (7, 5)).save(root / row["mask"])
    return "test.csv line 2", "'mask'"


def mask_in_colour(root: Path) -> tuple[str, ...]:
    row = read_rows(root / "test.csv")[0]
    size = Image.open(root / row["image"]).size
    Image.new("RGB", size).save(root / row["mask"])
    return "test.csv line 2", "'mask'"


class Kind(NamedTuple):
    breaks: Callable[[Path], tuple[str, ...]]
    applies: bool


TABULAR, SEQUENCE, IMAGE = ("tabular" in MODALITIES), ("sequence" in MODALITIES), ("image" in MODALITIES)
KINDS: dict[str, Kind] = {
    # The manifest CSVs
    "short row": Kind(short_row, CSV_LAYOUT),
    "extra cells": Kind(extra_cells, CSV_LAYOUT),
    "not UTF-8": Kind(not_utf8, CSV_LAYOUT),
    "binary file as CSV": Kind(binary_csv, CSV_LAYOUT),
    "no train split": Kind(no_train_split, CSV_LAYOUT),
    "header only": Kind(header_only, CSV_LAYOUT),
    # Targets
    "label missing": Kind(label_missing, CSV_LAYOUT and CLASSIFICATION),
    "label not a class": Kind(label_unknown, CSV_LAYOUT and CLASSIFICATION and TASK_TYPE != "binary"),
    "multilabel value not 0/1": Kind(multilabel_not_binary, TASK_TYPE == "multilabel"),
    "multilabel wrong width": Kind(multilabel_wrong_width, TASK_TYPE == "multilabel"),
    "regression target text": Kind(regression_target("abc"), TASK_TYPE == "regression"),
    "regression target inf": Kind(regression_target("inf"), TASK_TYPE == "regression"),
    "regression target 1e400": Kind(regression_target("1e400"), TASK_TYPE == "regression"),
    "regression target 1e200": Kind(regression_target("1e200"), TASK_TYPE == "regression"),
    # Tabular
    "numeric cell text": Kind(numeric_cell("abc"), TABULAR),
    "numeric cell inf": Kind(numeric_cell("inf"), TABULAR),
    "numeric cell 1e200": Kind(numeric_cell("1e200"), TABULAR),
    "numeric cell -1e400": Kind(numeric_cell("-1e400"), TABULAR),
    "numeric cell 1,5": Kind(numeric_cell("1,5"), TABULAR),
    "numeric column empty in train": Kind(numeric_column_empty_in_train, TABULAR),
    # Sequences
    "numeric sequence with a word": Kind(numeric_sequence_cell("1 2 x"), SEQUENCE),
    "numeric sequence with inf": Kind(numeric_sequence_cell("1 inf 2"), SEQUENCE),
    "numeric sequence with 1e400": Kind(numeric_sequence_cell("1 1e400"), SEQUENCE),
    "numeric sequence with 1e200": Kind(numeric_sequence_cell("1 1e200"), SEQUENCE),
    "numeric sequence empty": Kind(numeric_sequence_cell(""), SEQUENCE),
    # Images
    "image missing": Kind(image_missing, IMAGE and CSV_LAYOUT),  # class folders: a file less is a sample less
    "image zero bytes": Kind(image_bytes(b""), IMAGE),
    "image random bytes": Kind(image_bytes(np.random.default_rng(0).bytes(4096)), IMAGE),
    "image text file": Kind(image_bytes(b"not an image\n"), IMAGE),
    "image truncated": Kind(truncated_image, IMAGE),
    "image decompression bomb": Kind(image_bytes(bomb_png()), IMAGE),
    "image is a folder": Kind(image_is_a_folder, IMAGE and CSV_LAYOUT),
    "image cell empty": Kind(image_cell_empty, IMAGE and CSV_LAYOUT),
    "mask of another size": Kind(mask_of_other_size, TASK_TYPE == "segmentation"),
    "mask in colour": Kind(mask_in_colour, TASK_TYPE == "segmentation"),
}


@pytest.fixture
def data(tiny_data: Path, tmp_path: Path) -> Path:
    """A copy of the tiny toy data that a test may break."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def datamodule_for(kind: str, root: Path):  # noqa: ANN201
    if kind.startswith("numeric sequence"):
        return project_datamodule(root, sequence={"kind": "numeric"})
    if kind == "numeric column empty in train":  # listed: an inferred list would leave the column out, and say so
        from {{ cookiecutter.package_name }}.data.toy import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS

        return project_datamodule(
            root, tabular={"numeric_columns": list(NUMERIC_COLUMNS), "categorical_columns": list(CATEGORICAL_COLUMNS)}
        )
    return project_datamodule(root)


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_data_is_refused_in_one_line_naming_where(kind: str, data: Path) -> None:
    if not KINDS[kind].applies:
        pytest.skip(f"not an input, layout or task of this project ({MODALITIES}, {TASK_TYPE})")
    expected = KINDS[kind].breaks(data)
    with pytest.raises(DataError) as raised:
        datamodule = datamodule_for(kind, data)
        for stage in ("fit", "test"):  # every split is checked before the first step
            datamodule.setup(stage)
    message = str(raised.value)
    assert "\n" not in message.strip(), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_sixteen_bit_images_keep_their_range(data: Path) -> None:
    if not IMAGE:
        pytest.skip("no image input")
    path, _ = an_image(data, split="train")
    # A 16-bit grayscale gradient whose values are all above 255: clipped to 8 bits it would be one flat white.
    gradient = np.linspace(1000, 65000, 32 * 32).astype(np.uint16).reshape(32, 32)
    Image.fromarray(gradient).save(path)
    from {{ cookiecutter.package_name }}.data.image import load_rgb

    pixels = np.asarray(load_rgb(path))
    assert pixels.std() > 20 and pixels.min() < 20 and pixels.max() > 235, (pixels.min(), pixels.max())


@pytest.mark.skipif(not IMAGE, reason="no image input")
def test_the_command_prints_every_bad_image_at_once_in_one_line_each(data: Path, tmp_path: Path) -> None:
    broken = [an_image(data, split)[0] for split in ("train", "val", "test")]
    for path in broken:
        path.write_bytes(b"")
    with pytest.raises(SystemExit) as error:
        main(cli_args("fit", data, tmp_path / "runs", "--trainer.max_epochs", "1"))
    message = str(error.value.code)
    assert message.startswith("error:") and "\n" not in message, message
    assert all(path.name in message for path in broken), message
    assert not list((tmp_path / "runs").glob("*/checkpoints/*.ckpt"))  # refused before training


@pytest.mark.skipif(TASK_TYPE != "multilabel", reason="multilabel targets")
def test_a_label_never_positive_in_train_is_named(data: Path) -> None:
    rows = read_rows(data / "train.csv")
    width = len(rows[0][target_column()].split())
    names = default_config("data")["target"].get("classes") or [f"label_{i}" for i in range(width)]
    for row in rows:  # the last label: never positive
        values = row[target_column()].split()
        row[target_column()] = " ".join([*values[:-1], "0"])
    write_rows(data / "train.csv", rows)
    with pytest.warns(UserWarning, match=rf"label '{names[-1]}' is never positive in train"):
        project_datamodule(data).setup("fit")
