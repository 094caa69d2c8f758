"""Baselines: the constant and linear models every task is compared with, and the `baseline` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import cli_args, project_datamodule
from {{ cookiecutter.package_name }}.answers import TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.practices.baselines import Features, frequency_logits, log_frequencies


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
    # mean, std, min, max, last, length / max_length over the real steps only
    assert series[0].tolist() == pytest.approx([2.0, 1.0, 1.0, 3.0, 3.0, 2 / 3])
    assert series[1].tolist() == pytest.approx([2.0, 0.0, 2.0, 2.0, 2.0, 1 / 3])

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
    majority, linear = result["baselines"]["majority"], result["baselines"]["linear"]
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
    assert "| majority | val |" in markdown and "| linear | train |" in markdown
    assert result["descriptions"]["majority"] in markdown
    if TASK_TYPE in ("multiclass", "binary", "segmentation"):  # a single class every sample (or pixel) gets
        assert result["majority_class"] in cli.model.task.class_names
    else:
        assert result["majority_class"] is None
