"""Baselines: the constant and linear models every task is compared with, and the `baseline` command."""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import cli_args, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.practices.baselines import (
    Features,
    compare,
    frequency_logits,
    log_frequencies,
    run_baselines,
)


def test_features_of_every_input() -> None:
    batch = {
        "image": torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8),
        "tabular": {"numeric": torch.tensor([[0.5, 0.0], [-1.0, 1.0]]), "categorical": torch.tensor([[2], [0]])},
        "tokens": {
            "values": torch.tensor([[2, 2, 5, 0], [9, 1, 0, 0]]),
            "mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).bool(),
        },
        "series": {
            "values": torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])[..., None],
            "mask": torch.tensor([[1, 1, 0], [1, 0, 0]]).bool(),
        },
    }

    image = Features({"image": {}}, feature_size=2)(batch)
    assert image.shape == (2, 3 * 2 * 2)
    assert image[0, 0] == batch["image"][0, 0, :4, :4].mean()  # the top-left 4x4 block of the first channel

    tabular = Features({"tabular": {"numeric": 2, "categorical": [3]}})(batch)
    assert tabular.tolist() == [[0.5, 0.0, 0.0, 0.0, 1.0], [-1.0, 1.0, 1.0, 0.0, 0.0]]  # numbers, one-hot category

    batch["sequence"] = batch["tokens"]
    # Vocabulary of 10 capped at 6 ids: id 9 counts as unknown (1); padding (0) is dropped.
    tokens = Features({"sequence": {"kind": "tokens", "vocab_size": 10}}, max_tokens=6)(batch)
    assert tokens.tolist() == [[0, 2, 0, 0, 1], [2, 0, 0, 0, 0]]

    batch["sequence"] = batch["series"]
    series = Features({"sequence": {"kind": "numeric", "channels": 1}})(batch)
    # mean, std, min, max, length / max_length over the real steps only, then the lags: the last value first,
    # 0 before the series starts
    assert series[0].tolist() == pytest.approx([2.0, 1.0, 1.0, 3.0, 2 / 3, 3.0, 1.0, 0.0])
    assert series[1].tolist() == pytest.approx([2.0, 0.0, 2.0, 2.0, 1 / 3, 2.0, 0.0, 0.0])
    assert Features({"sequence": {"kind": "numeric"}}, max_lags=2)(batch).shape == (2, 5 + 2)

    both = Features({"image": {}, "tabular": {"numeric": 2, "categorical": [3]}}, feature_size=2)(batch)
    assert both.shape == (2, 12 + 5)


def test_the_best_constants_of_classes_and_of_0_1_targets() -> None:
    # One class out of K (tasks/ use them from class counts): log frequencies.
    classes = log_frequencies(torch.tensor([1, 0, 3]))
    assert classes.argmax() == 2 and classes.exp().tolist() == pytest.approx([0.25, 1e-8, 0.75], abs=1e-6)
    # Independent 0/1 targets, one ([N]) or several per sample ([N, K]): the logit of each one's frequency.
    assert frequency_logits(torch.tensor([1.0, 1.0, 0.0, 1.0])).tolist() == pytest.approx([math.log(3)])
    labels = frequency_logits(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]))
    assert labels.sigmoid().tolist() == pytest.approx([0.75, 0.25])


def _majority_val_error(tiny_data: Path) -> float:
    """The error of the best constant, computed here from the targets alone."""
    data = project_datamodule(tiny_data)

    def targets(split: str) -> torch.Tensor:
        dataset = data.dataset(split, train=False)
        return torch.stack([dataset[i]["target"] for i in range(len(dataset))])

    train, val = targets("train"), targets("val")
    if TASK_TYPE in ("multiclass", "binary", "segmentation"):
        majority = torch.bincount(train.long().flatten()).argmax()
        return (val.long() != majority).float().mean().item()
    if TASK_TYPE == "multilabel":
        return ((train.mean(0) > 0.5) != (val > 0.5)).float().mean().item()
    # regression: predict the train mean (0 after standardizing); error = standardized RMSE per target, averaged
    return (val - train.mean(0)).pow(2).mean(0).sqrt().mean().item()


def test_baseline_command_scores_a_constant_and_a_linear_model(tiny_data: Path, tmp_path: Path) -> None:
    cli = main(cli_args("baseline", tiny_data, tmp_path / "runs", "--steps", "30"))
    result = json.loads((cli.run_dir / "baseline.json").read_text())
    assert result["task"] == TASK_TYPE and result["error"] == cli.model.task.error_meaning
    # The constant baseline is named by the task: the most frequent class, or the mean of numbers.
    constant = cli.model.task.constant_baseline
    assert constant == ("mean" if TASK_TYPE == "regression" else "majority")
    assert list(result["baselines"]) == [constant, "linear"]  # no numeric series in the toy data: no persistence
    majority, linear = result["baselines"][constant], result["baselines"]["linear"]
    assert set(majority) == set(linear) == {"train", "val", "test"}
    monitor = cli.model.task.monitor
    for scores in (*majority.values(), *linear.values()):
        assert {"error", monitor, "loss"} <= set(scores) and all(math.isfinite(v) for v in scores.values())
    assert majority["val"]["error"] == pytest.approx(_majority_val_error(tiny_data), abs=1e-5)
    # The linear model holds every constant (its bias), and is fitted with the task's loss on train.
    if TASK_TYPE != "segmentation":  # (segmentation: fitted on sampled pixels; scored per image with Dice)
        assert linear["train"]["loss"] <= majority["train"]["loss"] + 1e-4
    assert result["best"]["val_error"] == min(majority["val"]["error"], linear["val"]["error"])
    markdown = (cli.run_dir / "baseline.md").read_text()
    assert f"| {constant} | val |" in markdown and "| linear | train |" in markdown
    assert result["descriptions"][constant] in markdown
    assert result["data_fingerprint"] == cli.datamodule.fingerprint
    if TASK_TYPE in ("multiclass", "binary", "segmentation"):  # a single class every sample (or pixel) gets
        assert result["majority_class"] in cli.model.task.class_names
    else:
        assert result["majority_class"] is None


@pytest.mark.skipif(
    TASK_TYPE != "regression" or "sequence" not in MODALITIES, reason="numeric series and a task predicting numbers"
)
def test_the_persistence_baseline_repeats_the_series_last_value(tiny_data: Path, tmp_path: Path) -> None:
    # The toy data with a numeric series of 2 to 5 values per row (the other columns as written).
    root = tmp_path / "series"
    shutil.copytree(tiny_data, root)
    rng = random.Random(0)
    for split in ("train", "val", "test"):
        with (root / f"{split}.csv").open(encoding="utf-8", newline="") as file:
            rows = list(csv.DictReader(file))
        for row in rows:
            row["sequence"] = " ".join(f"{rng.uniform(-5, 20):.2f}" for _ in range(rng.randint(2, 5)))
        with (root / f"{split}.csv").open("w", encoding="utf-8", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    data = project_datamodule(root, sequence={"kind": "numeric", "max_length": 8})
    result = run_baselines(project_model(data).task, data, steps=5, splits=("train", "val"))
    assert list(result["baselines"]) == ["mean", "linear", "persistence"]
    assert "last" in result["descriptions"]["persistence"]

    # By hand: every target predicted as the row's last number, in the targets' units; RMSE and MAE over all of them.
    with (root / "val.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    residuals = [float(row["sequence"].split()[-1]) - float(row[column]) for row in rows for column in data.class_names]
    rmse = math.sqrt(sum(r * r for r in residuals) / len(residuals))
    mae = sum(abs(r) for r in residuals) / len(residuals)
    assert result["baselines"]["persistence"]["val"]["rmse"] == pytest.approx(rmse, rel=1e-4)
    assert result["baselines"]["persistence"]["val"]["mae"] == pytest.approx(mae, rel=1e-4)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_comparison_names_the_best_baseline_and_warns_only_when_the_model_is_worse(mode: str) -> None:
    task = SimpleNamespace(monitor="score", mode=mode)
    sign = 1 if mode == "max" else -1
    result = {"baselines": {"constant": {"val": {"score": 0.5 * sign}}, "linear": {"val": {"score": 0.8 * sign}}}}
    worse = compare({"score": 0.7 * sign}, result, task, "try more epochs")
    assert (worse["best_baseline"], worse["verdict"]) == ("linear", "worse")
    assert worse["baselines"] == {"constant": 0.5 * sign, "linear": 0.8 * sign} and worse["metric"] == "val/score"
    assert worse["warning"] == (
        f"WARNING: the model (val score {0.7 * sign:.4g}) is worse than the linear baseline ({0.8 * sign:.4g}): "
        "try more epochs"
    )
    assert compare({"score": 0.9 * sign}, result, task)["verdict"] == "better"
    tied = compare({"score": 0.8 * sign}, result, task)
    assert tied["verdict"] == "tied" and tied["warning"] is None
    assert compare({"score": math.nan}, result, task)["verdict"] == "worse"  # a diverged model
