"""Bias / variance / data-mismatch diagnosis, the train-dev split, baselines and the error analysis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY_BACKBONE, cli_args
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.data.datamodule import DataModule
from {{ cookiecutter.package_name }}.diagnosis import GAP_LABELS, NEXT_STEPS, SplitErrors, diagnose, to_markdown
from {{ cookiecutter.package_name }}.evaluation import evaluate_split
from {{ cookiecutter.package_name }}.module import Model

FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]


@pytest.mark.parametrize(
    ("errors", "dominant", "first_step"),
    [
        (SplitErrors(reference=0.05, train=0.30, val=0.32), "avoidable_bias", "bigger"),
        (SplitErrors(reference=0.0, train=0.02, train_dev=0.15, val=0.16), "variance", "more training data"),
        (SplitErrors(reference=0.0, train=0.02, train_dev=0.03, val=0.20), "data_mismatch", "error analysis"),
        (SplitErrors(reference=0.0, train=0.02, train_dev=0.03, val=0.04, test=0.12), "val_overfitting", "bigger val"),
    ],
)
def test_the_largest_gap_names_the_problem_and_its_next_steps(
    errors: SplitErrors, dominant: str, first_step: str
) -> None:
    report = diagnose(errors)
    assert report.dominant == dominant
    assert report.next_steps == NEXT_STEPS[dominant]
    assert first_step in report.next_steps[0].lower()
    assert report.gaps[dominant] == max(report.gaps.values())
    assert "**<- dominant**" in next(line for line in to_markdown(report).splitlines() if GAP_LABELS[dominant] in line)


def test_gaps_and_what_cannot_be_told_apart() -> None:
    report = diagnose(SplitErrors(reference=0.05, train=0.10, train_dev=0.12, val=0.20, test=0.21))
    assert report.gaps == pytest.approx(
        {"avoidable_bias": 0.05, "variance": 0.02, "data_mismatch": 0.08, "val_overfitting": 0.01}
    )
    # Every gap above the tolerance, in the order to address them: under-fitting before over-fitting before shift.
    assert report.to_address == ["avoidable_bias", "variance", "data_mismatch"]

    # Without a train-dev split val - train holds variance and mismatch together, and the report says so.
    mixed = diagnose(SplitErrors(reference=0.0, train=0.02, val=0.20))
    assert mixed.gaps == pytest.approx({"avoidable_bias": 0.02, "variance": 0.18})
    assert "data.train_dev_fraction" in mixed.next_steps[0]
    assert any("not separable" in note for note in mixed.notes)

    quiet = diagnose(SplitErrors(reference=0.02, train=0.025, val=0.03), tolerance=0.01)
    assert quiet.dominant is None and quiet.to_address == []
    noisy = diagnose(SplitErrors(reference=0.0, train=0.0, val=0.1), sizes={"val": 20})
    assert any("20 samples" in note for note in noisy.notes)  # +/-6.7%: a small val set is said to be noisy


def test_train_dev_split_is_stratified_seeded_and_never_trained_on(tiny_data: Path) -> None:
    def data(**kwargs: object) -> DataModule:
        return DataModule(str(tiny_data), TINY_BACKBONE, image_size=32, num_workers=0, **kwargs)

    full_train = set(data().splits["train"])
    split = data(train_dev_fraction=0.25)
    train, train_dev = set(split.splits["train"]), set(split.splits["train_dev"])
    assert not train & train_dev and train | train_dev == full_train
    per_class = torch.bincount(torch.tensor([label for _, label in train_dev]))
    assert per_class.tolist() == [3, 3, 3]  # 25% of each class's 12
    assert data(train_dev_fraction=0.25).splits["train_dev"] == split.splits["train_dev"]
    assert set(data(train_dev_fraction=0.25, split_seed=1).splits["train_dev"]) != train_dev
    assert "train_dev" not in data().splits
    assert len(split.train_dataloader().dataset) == len(train)


def test_errors_are_measured_without_augmentation(tiny_data: Path) -> None:
    datamodule = DataModule(str(tiny_data), TINY_BACKBONE, image_size=32, num_workers=0, augment=True)
    model = Model(TINY_BACKBONE, pretrained=False, num_classes=3, class_names=datamodule.class_names)
    first = evaluate_split(model, datamodule, "train")
    second = evaluate_split(model, datamodule, "train")
    assert torch.equal(first.logits, second.logits)  # the training transform would crop and flip at random
    assert first.error == pytest.approx((first.predictions != first.targets).float().mean().item())
    assert first.losses.shape == (36,)
    assert first.losses.mean().item() == pytest.approx(model.task.loss(first.logits, first.targets).item(), rel=1e-5)
    assert model.training  # the mode is restored


def test_baseline_command_scores_majority_and_linear_models(tiny_data: Path, tmp_path: Path) -> None:
    # Unbalanced copy: train 12/6/6, val 4/2/1, so the majority class and its val share are known.
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for split, keep in (("train", {"square": 6, "triangle": 6}), ("val", {"square": 2, "triangle": 1})):
        for name, n in keep.items():
            for path in sorted((data / split / name).iterdir())[n:]:
                path.unlink()
    cli = main(cli_args("baseline", data, tmp_path / "runs", "--steps", "20"))
    result = json.loads((cli.run_dir / "baseline.json").read_text())
    assert result["majority_class"] == "circle"
    majority, linear = result["baselines"]["majority"], result["baselines"]["linear"]
    assert majority["val"]["acc"] == pytest.approx(4 / 7)  # the largest class's share of val
    assert majority["val"]["error"] == pytest.approx(3 / 7)
    assert majority["train"]["acc"] == pytest.approx(0.5)
    assert linear["train"]["acc"] > majority["train"]["acc"]  # a linear model fits 24 images of 768 pixels
    assert result["best"]["val_error"] == min(majority["val"]["error"], linear["val"]["error"])
    assert "| majority | val |" in (cli.run_dir / "baseline.md").read_text()


def test_fit_and_diagnose_write_the_report_and_error_analysis(tiny_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # An earlier `baseline` run: with no reference_error configured, its best val error is the reference.
    (runs / "earlier-baseline").mkdir(parents=True)
    (runs / "earlier-baseline" / "baseline.json").write_text(json.dumps({"best": {"name": "linear", "val_error": 0.4}}))
    split = ["--data.train_dev_fraction", "0.25"]
    fit = main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, *split, "--trainer.max_epochs", "1"))
    after_fit = json.loads((fit.run_dir / "diagnosis.json").read_text())
    assert after_fit["weights"] == fit.trainer.checkpoint_callback.best_model_path
    # Measured like validation measured the (only) epoch: no augmentation, error = 1 - accuracy.
    assert after_fit["errors"]["val"] == pytest.approx(1 - float(fit.trainer.callback_metrics["val/acc"]), abs=1e-6)
    assert after_fit["errors"]["reference"] == 0.4 and "earlier-baseline" in after_fit["reference_source"]
    assert after_fit["sizes"] == {"train": 27, "train_dev": 9, "val": 12, "test": 12}

    diagnosed = main(cli_args("diagnose", tiny_data, runs, *split, "--ckpt_path", "best"))
    report = json.loads((diagnosed.run_dir / "diagnosis.json").read_text())
    assert report["errors"] == pytest.approx(after_fit["errors"])
    assert report["dominant"] in report["gaps"] and report["next_steps"]
    analysis = report["error_analysis"]
    matrix = torch.tensor(analysis["confusion_matrix"])
    assert matrix.sum() == 12 and matrix.trace() == round(12 * (1 - report["errors"]["val"]))
    assert all(pair["true"] != pair["predicted"] for pair in analysis["most_confused"])
    losses = [example["loss"] for example in analysis["worst_examples"]]
    assert len(losses) == 12 and losses == sorted(losses, reverse=True)  # worst_k=16 > 12 val images
    markdown = (diagnosed.run_dir / "diagnosis.md").read_text()
    assert "| train-dev |" in markdown and "Most-confused pairs" in markdown
    for name in ("confusion_matrix.png", "worst_examples.png"):
        with Image.open(diagnosed.run_dir / name) as image:
            assert image.width > 100 and image.height > 100
