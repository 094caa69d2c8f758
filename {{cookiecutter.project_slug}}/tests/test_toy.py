"""The toy data writer: the project's task writes the documented layout for every input, deterministically, and
with several inputs the target needs all of them. (The toy targets are the task's: tasks/<type>.py.)"""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from {{ cookiecutter.package_name }}.answers import TASK_TYPE
from {{ cookiecutter.package_name }}.data.toy import (
    COLOURS,
    columns,
    default_classes,
    main,
    sequence_latent,
    tabular_latent,
    uses_class_folders,
    write_toy_dataset,
)

SIZES = {"train": 6, "val": 3, "test": 3}
INPUT_SETS = [
    ("image",),
    ("tabular",),
    ("sequence",),
    ("image", "tabular"),
    ("tabular", "sequence"),
    ("image", "tabular", "sequence"),
]
CASES = [modalities for modalities in INPUT_SETS if "image" in modalities or TASK_TYPE != "segmentation"]
CLASSIFICATION = pytest.mark.skipif(TASK_TYPE not in ("multiclass", "binary"), reason="a class per sample")


def read(root: Path, split: str = "train") -> list[dict[str, str]]:
    with (root / f"{split}.csv").open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert rows and reader.fieldnames
    return rows


@pytest.mark.parametrize("modalities", CASES, ids=["+".join(m) for m in CASES])
def test_layout_columns_and_determinism(modalities: tuple[str, ...], tmp_path: Path) -> None:
    task = TASK_TYPE
    root = write_toy_dataset(tmp_path / "a", task, modalities, sizes=SIZES, image_size=16)
    classes = default_classes(task, modalities)
    if uses_class_folders(task, modalities):
        for split, count in SIZES.items():
            for name in classes:  # class folders: `sizes` counts images per class
                files = sorted((root / split / name).glob("*.png"))
                assert len(files) == count and Image.open(files[0]).size == (16, 16)
        first = root / "train" / classes[0] / "0000.png"
    else:
        for split, count in SIZES.items():
            rows = read(root, split)
            assert list(rows[0]) == columns(task, modalities) and len(rows) == count
            for row in rows:
                check_row(row, task, classes, root)
        first = root / (read(root)[0]["image"] if "image" in modalities else "train.csv")
    again = write_toy_dataset(tmp_path / "b", task, modalities, sizes=SIZES, image_size=16)
    other = write_toy_dataset(tmp_path / "c", task, modalities, sizes=SIZES, image_size=16, seed=1)
    csvs = [Path("train.csv")] if (root / "train.csv").exists() else []
    for name in [first.relative_to(root), *csvs]:
        assert (again / name).read_bytes() == (root / name).read_bytes()  # same seed, same bytes
    assert (other / first.relative_to(root)).read_bytes() != first.read_bytes()


def check_row(row: dict[str, str], task: str, classes: tuple[str, ...], root: Path) -> None:
    if "image" in row:
        image = Image.open(root / row["image"])
        assert row["image"].startswith("images/") and image.size == (16, 16) and image.mode == "RGB"
    if task == "segmentation":
        mask = Image.open(root / row["mask"])
        assert mask.mode == "L" and mask.size == image.size
        low, high = mask.getextrema()
        assert low == 0 and 0 < high < len(classes)
    if "x0" in row:
        assert row["colour"] in COLOURS and row["x0"]  # only the noise columns x1..x3 have empty cells
        [float(row[name]) for name in ("x0", "x1", "x2", "x3") if row[name]]
    if "sequence" in row:
        assert 6 <= len(row["sequence"].split()) <= 12
    if task in ("multiclass", "binary"):
        assert row["target"] in classes
    elif task == "multilabel":
        labels = row["target"].split()
        assert len(labels) == len(classes) and set(labels) <= {"0", "1"} and "1" in labels
    elif task == "regression":
        float(row["target"]), float(row["target_2"])


def best_lookup_accuracy(keys: list[object], targets: list[str]) -> float:
    """Accuracy of the best rule that predicts the target from `keys` alone (the majority target per key)."""
    groups: dict[object, Counter] = {}
    for key, target in zip(keys, targets, strict=True):
        groups.setdefault(key, Counter())[target] += 1
    return sum(counter.most_common(1)[0][1] for counter in groups.values()) / len(targets)


@CLASSIFICATION
def test_one_input_decides_alone_several_inputs_only_together(tmp_path: Path) -> None:
    task = TASK_TYPE
    classes = default_classes(task, ("tabular", "sequence"))
    k = len(classes)
    alone = read(write_toy_dataset(tmp_path / "alone", task, ("tabular",), sizes={"train": 200}))
    assert all(row["target"] == classes[tabular_latent(float(row["x0"]), row["colour"], k)] for row in alone)

    rows = read(write_toy_dataset(tmp_path / "both", task, ("tabular", "sequence"), sizes={"train": 400}))
    tab = [tabular_latent(float(row["x0"]), row["colour"], k) for row in rows]
    seq = [sequence_latent(row["sequence"], k) for row in rows]
    targets = [row["target"] for row in rows]
    both = list(zip(tab, seq, strict=True))
    assert best_lookup_accuracy(both, targets) == 1.0  # both inputs: the target is determined
    for single in (tab, seq):
        # Any one input leaves a clear share of rows wrong, yet moves the target on its own (an encoder learns
        # from that signal; a target no single input predicts at all, like (sum mod k), left the fused model at chance).
        assert 1 / k + 0.1 < best_lookup_accuracy(single, targets) < 0.9
    assert best_lookup_accuracy([row["colour"] for row in rows], targets) < 1 / k + 0.1  # the colour alone: chance


@pytest.mark.skipif(TASK_TYPE != "regression", reason="numeric targets")
def test_regression_target_sums_the_inputs(tmp_path: Path) -> None:
    from {{ cookiecutter.package_name }}.tasks.regression import INTENSITIES

    rows = read(write_toy_dataset(tmp_path / "r", "regression", ("tabular", "sequence"), sizes={"train": 300}))
    x0 = [float(row["x0"]) for row in rows]
    rank = [next(INTENSITIES.index(w) for w in row["sequence"].split() if w in INTENSITIES) for row in rows]
    target = [float(row["target"]) for row in rows]
    fused = [x + 2 + 4 * r / (len(INTENSITIES) - 1) for x, r in zip(x0, rank, strict=True)]
    assert statistics.correlation(fused, target) > 0.99
    assert statistics.correlation(x0, target) < 0.8 and statistics.correlation(rank, target) < 0.8


def test_cli_writes_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    modalities = ("image", "tabular") if TASK_TYPE == "segmentation" else ("tabular", "sequence")
    args = ["--root", str(tmp_path / "toy"), "--task", TASK_TYPE, "--modality", "+".join(reversed(modalities))]
    main([*args, "--image-size", "16"])
    out = capsys.readouterr().out
    assert "train 800" in out and ", ".join(columns(TASK_TYPE, modalities)) in out
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    main([*args, "--overwrite", "--seed", "3", "--image-size", "16"])
    with pytest.raises(SystemExit):  # a task the project does not have
        main(["--root", str(tmp_path / "bad"), "--task", "no_such_task", "--modality", "tabular"])
    assert "no_such_task" in capsys.readouterr().err
