"""label-issues: cv's out-of-fold predictions, ranked by cleanlab (the data-centric extra); planted label errors
come out on top."""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest
import torch

from conftest import CLASS_FOLDERS, CLASSES, cli_args, project_datamodule, toy_sizes
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.data.toy import write_toy_dataset
from {{ cookiecutter.package_name }}.errors import ProjectError
from {{ cookiecutter.package_name }}.practices import label_issues
from {{ cookiecutter.package_name }}.tasks import Task, build_task, load_task_class

FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", "--trainer.max_epochs", "1"]
SUPPORTED = label_issues.has_label_issues(load_task_class(TASK_TYPE))
needs_support = pytest.mark.skipif(not SUPPORTED, reason=f"label-issues refuses {TASK_TYPE}")


@pytest.fixture
def cleanlab() -> object:
    return pytest.importorskip("cleanlab")  # pip install -e ".[data-centric]"


def read_csv(runs: Path) -> tuple[list[str], list[dict[str, str]]]:
    (path,) = runs.glob(f"*-label-issues-*/{label_issues.CSV_FILE}")
    with path.open(encoding="utf-8") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def test_without_cleanlab_one_line_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # as if the extra were not installed
    with pytest.raises(SystemExit) as exit_info:  # before any fit: the data root does not even exist
        main(["label-issues", "--folds", "3", "--data.root", str(tmp_path / "nowhere")])
    assert str(exit_info.value) == 'error: label-issues needs cleanlab: pip install -e ".[data-centric]"'


def test_a_task_without_label_issues_is_refused_in_one_line(cleanlab: object, tmp_path: Path) -> None:
    class OwnTask(Task):  # a task of one's own, without `label_issues`
        pass

    with pytest.raises(ProjectError, match=r"the task OwnTask has no label-issue scoring \(Task.label_issues\)"):
        label_issues.check_task(OwnTask)
    if not SUPPORTED:  # this project's own task: refused before any fit
        with pytest.raises(SystemExit, match=f"the task {load_task_class(TASK_TYPE).__name__} has no label-issue"):
            main(["label-issues", "--data.root", str(tmp_path / "nowhere")])


def synthetic_out_of_fold(n: int, wrong: list[int], rng: random.Random) -> tuple[object, torch.Tensor, torch.Tensor]:
    """(task, given targets, out-of-fold outputs) of a confident model that is right about every sample, whose
    given labels are wrong at `wrong`; targets as the dataset gives them, outputs after the task's activation."""
    noise = torch.Generator().manual_seed(rng.randrange(2**31))
    if TASK_TYPE == "multiclass":
        task = build_task(TASK_TYPE, ["a", "b", "c"])
        truth = torch.tensor([i % 3 for i in range(n)])
        outputs = torch.full((n, 3), 0.1).scatter(1, truth[:, None], 0.8) + 0.01 * torch.rand(n, 3, generator=noise)
        outputs = outputs / outputs.sum(1, keepdim=True)
        given = truth.clone()
        given[wrong] = (truth[wrong] + 1) % 3
        return task, given, outputs
    if TASK_TYPE == "binary":
        task = build_task(TASK_TYPE, ["no", "yes"])
        truth = torch.tensor([float(i % 2) for i in range(n)])
        outputs = (0.1 + 0.8 * truth + 0.05 * torch.rand(n, generator=noise))[:, None]
        given = truth.clone()
        given[wrong] = 1 - truth[wrong]
        return task, given, outputs
    if TASK_TYPE == "multilabel":
        task = build_task(TASK_TYPE, ["a", "b", "c", "d"])
        truth = torch.tensor([[float(rng.random() < 0.5) for _ in range(4)] for _ in range(n)])
        outputs = 0.1 + 0.8 * truth + 0.05 * torch.rand(n, 4, generator=noise)
        given = truth.clone()
        for i in wrong:  # one label of the sample is wrong
            k = rng.randrange(4)
            given[i, k] = 1 - truth[i, k]
        return task, given, outputs
    task = build_task(TASK_TYPE, ["target"], {"mean": [0.0], "std": [1.0]})  # regression
    truth = torch.randn(n, 1, generator=noise)
    outputs = truth + 0.1 * torch.randn(n, 1, generator=noise)
    given = truth.clone()
    given[wrong] += 5.0
    return task, given, outputs


@needs_support
def test_the_scorer_ranks_wrong_labels_first_and_flags_them(cleanlab: object) -> None:
    rng = random.Random(0)
    wrong = sorted(rng.sample(range(60), 5))
    task, given, outputs = synthetic_out_of_fold(60, wrong, rng)
    scores = task.label_issues(given, outputs)
    assert len(scores.given) == len(scores.suggested) == len(scores.quality) == len(scores.flagged) == 60
    assert sorted(scores.quality.argsort()[:5].tolist()) == wrong
    # Confident learning flags a wrong label when the model is surer of another class than it usually is of that
    # class: here not always (every sample is as sure), but it never flags a right one.
    flagged = set(scores.flagged.nonzero()[0].tolist())
    assert flagged and flagged <= set(wrong)
    assert ((scores.quality >= 0) & (scores.quality <= 1)).all()
    if TASK_TYPE in ("multiclass", "binary"):  # the suggestion is the model's class, which is the truth here
        assert all(scores.given[i] != scores.suggested[i] for i in wrong)


@needs_support
def test_every_non_test_sample_is_ranked_by_its_own_folds_model(
    cleanlab: object, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    fit_args = cli_args("fit", tiny_data, runs, *FEW_BATCHES)[1:]
    main(["label-issues", "--folds", "3", "--show", "4", *fit_args])
    out = capsys.readouterr().out
    assert "Next: review the top rows" in out and "# cv: val/" in out  # cv's own report, then the summary
    header, rows = read_csv(runs)
    assert header == list(label_issues.COLUMNS)
    assert [int(row["rank"]) for row in rows] == list(range(1, 49))  # the tiny data's 36 train + 12 val samples
    qualities = [float(row["label_quality"]) for row in rows]
    assert qualities == sorted(qualities) and all(0 <= q <= 1 for q in qualities)
    # Each sample was predicted in the fold that held it out (the fold's model never trained on it).
    fold_of = {
        row.id: fold
        for fold in range(3)
        for row in project_datamodule(tiny_data, splits={"num_folds": 3, "fold": fold}).splits["val"]
    }
    assert {row["id"]: int(row["fold"]) for row in rows} == fold_of
    plain = project_datamodule(tiny_data)
    if TASK_TYPE in ("multiclass", "binary"):
        splits = ("train", "val")
        labels = [(row.id, label) for s in splits for row, label in zip(plain.splits[s], plain.labels(s), strict=True)]
        given = {sample: plain.class_names[label] for sample, label in labels}
        assert {row["id"]: row["given_label"] for row in rows} == given

    (result_path,) = runs.glob(f"*-label-issues-*/{label_issues.RESULT_FILE}")
    result = json.loads(result_path.read_text())
    assert result["samples"] == 48 and result["flagged"] == sum(row["flagged"] == "True" for row in rows)
    assert [entry["id"] for entry in result["top"]] == [row["id"] for row in rows[:4]]
    assert (result_path.parent / label_issues.IMAGE_FILE).is_file() == ("image" in MODALITIES)
    # The diagnosis of a model on the same data mentions them (changed labels would change the identity): here the
    # newest fit, the last fold's, on its own split of the data (its vocabularies are learned from its train part).
    assert result["data"] == label_issues.data_identity(plain)
    last_fold = ["--data.splits.num_folds", "3", "--data.splits.fold", "2"]
    diagnosed = main(cli_args("diagnose", tiny_data, runs, "--ckpt_path", "best", *last_fold))
    notes = json.loads((diagnosed.run_dir / "diagnosis.json").read_text())["notes"]
    assert any(str(result_path.parent / label_issues.CSV_FILE) in note for note in notes)


def plant_label_errors(root: Path, n: int, seed: int = 0) -> set[str]:
    """Make `n` train labels wrong (a class folder image moved to the next class; a CSV row's class changed, one
    label of a multilabel row toggled, a regression target moved 4 train standard deviations); their ids as
    label_issues.csv names them (class folders: the image file's name)."""
    rng = random.Random(seed)
    if CLASS_FOLDERS:
        classes = sorted(folder.name for folder in (root / "train").iterdir())
        planted = set()
        for image in rng.sample(sorted((root / "train").glob("*/*.png")), n):
            other = classes[(classes.index(image.parent.name) + 1) % len(classes)]
            moved = image.rename(root / "train" / other / f"planted-{image.parent.name}-{image.name}")
            planted.add(moved.name)
        return planted
    path = root / "train.csv"
    with path.open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    values = sorted({row["target"] for row in rows})
    targets = [float(row["target"]) for row in rows] if TASK_TYPE == "regression" else []
    spread = torch.tensor(targets).std().item() if targets else 0.0
    wrong = rng.sample(range(len(rows)), n)
    for i in wrong:
        target = rows[i]["target"]
        if TASK_TYPE == "multilabel":
            bits = target.split()
            k = rng.randrange(len(bits))
            bits[k] = "1" if bits[k] == "0" else "0"
            rows[i]["target"] = " ".join(bits)
        elif TASK_TYPE == "regression":
            rows[i]["target"] = f"{float(target) + 4 * spread:.4f}"
        else:
            rows[i]["target"] = values[(values.index(target) + 1) % len(values)]
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return {f"train.csv:{i + 2}" for i in wrong}  # line 1 is the header


# Planted errors among the top 2N of the ranking: most of them. Measured with the settings below (README: "Finding
# label errors"): 0.62 for multiclass images, 1.0 for binary tables, multilabel sequences and fused regression; chance
# is 2N / samples, 0.05 to 0.11.
RECALL_FLOOR = 0.5
# Images cost far more per sample on a CPU; the tiny image model still ranks most planted errors on top with fewer.
TRAIN_SAMPLES = 120 if "image" in MODALITIES else 240


@needs_support
@pytest.mark.slow
def test_planted_label_errors_rank_on_top(cleanlab: object, tmp_path: Path) -> None:
    n = 8
    root = write_toy_dataset(
        tmp_path / "toy",
        sizes=toy_sizes(train=TRAIN_SAMPLES, val=TRAIN_SAMPLES // 4, test=12),
        image_size=32,
        classes=CLASSES,
    )
    planted = plant_label_errors(root, n)
    runs = tmp_path / "runs"
    fit_args = cli_args("fit", root, runs, "--trainer.max_epochs", "8")[1:]
    main(["label-issues", "--folds", "3", *fit_args])
    _, rows = read_csv(runs)
    names = [Path(row["id"]).name if CLASS_FOLDERS else row["id"] for row in rows[: 2 * n]]
    recall = len(planted & set(names)) / n
    print(f"recall of {n} planted label errors in the top {2 * n} of {len(rows)}: {recall:.2f}")
    assert recall >= RECALL_FLOOR
