"""Bias / variance / data-mismatch diagnosis, the train-dev split and the error analysis of every task."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from conftest import cli_args, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.practices.bias_variance import GAP_LABELS, SplitErrors, diagnose, next_steps, to_markdown
from {{ cookiecutter.package_name }}.practices.callbacks.diagnosis import next_steps as diagnosis_next_steps
from {{ cookiecutter.package_name }}.practices.error_analysis import confusion_matrix, most_confused
from {{ cookiecutter.package_name }}.practices.evaluation import evaluate_split
from {{ cookiecutter.package_name }}.tasks import Task, build_task

FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
CLASSIFICATION = ("multiclass", "binary")
TASK = build_task(TASK_TYPE, ["a", "b"])  # the project's task: what its error means, its own knobs and analyses


class StandardizedError(Task):
    """An error that is not a rate (like regression's RMSE in train standard deviations)."""

    name = "standardized"
    error_meaning = "RMSE in units of each target's train standard deviation"
    error_is_rate = False


def task_tables(name: str) -> object:
    """The module tasks/<name>.py (skipped when the project has none), for its error-analysis tables."""
    return pytest.importorskip(f"{{ cookiecutter.package_name }}.tasks.{name}", reason=f"no tasks/{name}.py")


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
    report = diagnose(errors, task=TASK, inputs=MODALITIES)
    assert report.dominant == dominant and report.task == TASK_TYPE
    assert report.next_steps == next_steps(dominant, MODALITIES, TASK)
    assert first_step in report.next_steps[0].lower()
    assert report.gaps[dominant] == max(report.gaps.values())
    markdown = to_markdown(report, TASK)
    assert "**<- dominant**" in next(line for line in markdown.splitlines() if GAP_LABELS[dominant] in line)
    assert markdown.startswith(f"error: {TASK.error_meaning}.")


def test_next_steps_name_the_knobs_the_inputs_have() -> None:
    def text(problem: str, inputs: tuple[str, ...], task: Task | None = None) -> str:
        return " ".join(next_steps(problem, inputs, task))

    assert "image `backbone`" in text("avoidable_bias", ("image",))
    assert "data.image.augment" in text("variance", ("image",))
    for inputs in (("tabular",), ("sequence",), ("tabular", "sequence")):
        for problem in ("avoidable_bias", "variance", "data_mismatch"):
            assert "backbone" not in text(problem, inputs) and "data.image.augment" not in text(problem, inputs)
        assert "`hidden_dim`" in text("avoidable_bias", inputs) and "`hidden_dim`" in text("variance", inputs)
    assert "`fusion_dim`" in text("avoidable_bias", ("image", "tabular"))
    assert "data.tabular.numeric_columns" in text("variance", ("tabular",))
    assert "worst_examples.png" in text("data_mismatch", ("image",))
    assert "worst_examples.png" not in text("data_mismatch", ("tabular",))
    # The task's own: its regularizers, what of its error analysis to look at, mixing for tasks with soft targets.
    assert ("label_smoothing" in text("variance", ("image",), TASK)) == (TASK_TYPE == "multiclass")
    assert "label_smoothing" not in text("variance", ("image",))
    mixable = TASK_TYPE in ("multiclass", "binary", "multilabel")
    assert ("mixup_alpha" in text("variance", ("image",), TASK)) == mixable
    assert "mixup_alpha" not in text("variance", ("tabular",), TASK)
    assert TASK.look_at in text("data_mismatch", ("image",), TASK)


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
    assert "data.splits.train_dev_fraction" in mixed.next_steps[0]
    assert any("not separable" in note for note in mixed.notes)

    quiet = diagnose(SplitErrors(reference=0.02, train=0.025, val=0.03), tolerance=0.01)
    assert quiet.dominant is None and quiet.to_address == []
    noisy = diagnose(SplitErrors(reference=0.0, train=0.0, val=0.1), sizes={"val": 20})
    assert any("20 samples" in note for note in noisy.notes)  # +/-6.7%: a small val set is said to be noisy


def test_errors_that_are_not_rates_are_written_as_numbers() -> None:
    task = StandardizedError()  # e.g. regression's standardized RMSE
    report = diagnose(SplitErrors(reference=0.0, train=0.5, val=1.25), sizes={"val": 50}, task=task)
    markdown = to_markdown(report, task)
    assert "| val | 1.2500 | 50 |" in markdown and "%" not in markdown.split("Next steps")[0]
    assert "standard deviation" in markdown and report.task == "standardized"
    assert any("+/-0.1250" in note for note in report.notes)  # RMSE / sqrt(2n)
    rates = to_markdown(diagnose(SplitErrors(reference=0.0, train=0.5, val=1.25)))
    assert "| val | 125.00% |" in rates


def test_confusion_matrix_and_most_confused_pairs() -> None:
    names = ["a", "b", "c"]
    # Classes (and pixels): rows true, columns predicted.
    matrix = confusion_matrix(torch.tensor([0, 1, 1, 2, 2, 2]), torch.tensor([0, 0, 1, 2, 2, 1]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert most_confused(matrix, names) == [
        {"true": "a", "predicted": "b", "count": 1},
        {"true": "b", "predicted": "c", "count": 1},
    ]


def test_segmentation_iou_per_class() -> None:
    segmentation = task_tables("segmentation")
    maps = torch.tensor([[[0, 1], [1, 1]]], dtype=torch.uint8), torch.tensor([[[0, 0], [1, 1]]], dtype=torch.uint8)
    table = segmentation.iou_table(confusion_matrix(*maps, 3), ["a", "b", "c"])
    assert [row["iou"] for row in table] == [0.5, 0.6667, None]  # c: absent and never predicted
    assert [row["true_share"] for row in table] == [0.5, 0.5, 0.0]


def test_multilabel_table_per_label() -> None:
    multilabel = task_tables("multilabel")
    logits, labels = torch.tensor([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]]), torch.tensor([[1, 0], [0, 1], [1, 0.0]])
    per_label = multilabel.per_label_table(logits, labels, ["x", "y"])
    assert per_label[0] == {"label": "x", "support": 2, "predicted": 2, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert per_label[1]["recall"] == 1.0 and per_label[1]["precision"] == 1.0


def test_regression_residuals_per_target() -> None:
    regression = task_tables("regression")
    predictions, targets = torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[2.0, 0.0], [2.0, 4.0]])
    residuals = regression.residual_table(predictions, targets, "uv")
    assert residuals[0] == {"target": "u", "mae": 1.0, "rmse": 1.0, "bias": 0.0, "max_abs": 1.0}
    assert residuals[1]["bias"] == -2.0 and residuals[1]["max_abs"] == 4.0


def test_train_dev_split_is_seeded_stratified_and_never_trained_on(tiny_data: Path) -> None:
    def ids(datamodule: object, split: str) -> set[str]:
        return {row.id for row in datamodule.splits[split]}

    full_train = ids(project_datamodule(tiny_data), "train")
    split = project_datamodule(tiny_data, splits={"train_dev_fraction": 0.25})
    train, train_dev = ids(split, "train"), ids(split, "train_dev")
    assert not train & train_dev and train | train_dev == full_train
    assert len(train_dev) == pytest.approx(0.25 * len(full_train), abs=len(split.class_names))
    again = project_datamodule(tiny_data, splits={"train_dev_fraction": 0.25})
    assert again.splits["train_dev"] == split.splits["train_dev"]
    assert ids(project_datamodule(tiny_data, splits={"train_dev_fraction": 0.25, "seed": 1}), "train_dev") != train_dev
    assert "train_dev" not in project_datamodule(tiny_data).splits
    assert len(split.train_dataloader().dataset) == len(train)
    if TASK_TYPE in CLASSIFICATION:  # every class keeps its share
        before = torch.bincount(torch.tensor(project_datamodule(tiny_data).labels("train")), minlength=2)
        held = torch.bincount(torch.tensor(split.labels("train_dev")), minlength=len(before))
        assert ((held - 0.25 * before).abs() <= 1).all()


def test_errors_are_measured_without_augmentation(tiny_data: Path) -> None:
    augmented = {"image": {"augment": True}} if "image" in MODALITIES else {}  # the training transform is random
    datamodule = project_datamodule(tiny_data, **augmented)
    model = project_model(datamodule)
    first = evaluate_split(model, datamodule, "train")
    second = evaluate_split(model, datamodule, "train")
    assert torch.equal(first.outputs, second.outputs)  # the training transform would crop and flip at random
    assert first.losses.shape == (36,) and first.ids == [row.id for row in datamodule.splits["train"]]
    if first.dense:  # segmentation keeps the predicted class maps: the error is the share of wrong pixels
        assert first.outputs.shape == first.targets.shape == (36, 32, 32)
        assert first.error == pytest.approx((first.outputs != first.targets).float().mean().item(), abs=1e-6)
    else:
        assert first.error == pytest.approx(model.task.error(first.outputs, first.targets))
        expected = model.task.loss(first.outputs, first.targets).item()
        assert first.losses.mean().item() == pytest.approx(expected, rel=1e-5)
    assert model.training  # the mode is restored


def test_fit_and_diagnose_write_the_report_and_error_analysis(tiny_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # An earlier `baseline` run: with no reference_error configured, its best val error is the reference.
    (runs / "earlier-baseline").mkdir(parents=True)
    (runs / "earlier-baseline" / "baseline.json").write_text(json.dumps({"best": {"name": "linear", "val_error": 0.4}}))
    split = ["--data.splits.train_dev_fraction", "0.25"]
    fit = main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, *split, "--trainer.max_epochs", "1"))
    after_fit = json.loads((fit.run_dir / "diagnosis.json").read_text())
    assert after_fit["weights"] == fit.trainer.checkpoint_callback.best_model_path
    assert after_fit["task"] == TASK_TYPE and set(after_fit["inputs"]) == set(MODALITIES)
    if TASK_TYPE in CLASSIFICATION:  # measured like validation measured the (only) epoch: error = 1 - accuracy
        accuracy = float(fit.trainer.callback_metrics["val/acc"])
        assert after_fit["errors"]["val"] == pytest.approx(1 - accuracy, abs=1e-6)
    assert after_fit["errors"]["reference"] == 0.4 and "earlier-baseline" in after_fit["reference_source"]
    sizes = after_fit["sizes"]
    assert sizes["train"] + sizes["train_dev"] == 36 and sizes["val"] == sizes["test"] == 12
    # The kept checkpoint against the baselines on val, in summary.json: that earlier result names no data, so
    # they were fitted after the fit, on this data.
    summary = json.loads((fit.run_dir / "summary.json").read_text())
    comparison = summary["baseline_comparison"]
    assert comparison == after_fit["baseline_comparison"] and comparison["metric"] == f"val/{TASK.monitor}"
    assert set(comparison["baselines"]) == {TASK.constant_baseline, "linear"} and "fitted now" in comparison["source"]
    best = comparison["baselines"][comparison["best_baseline"]]
    better = comparison["model"] > best if TASK.mode == "max" else comparison["model"] < best
    expected = "better" if better else "tied" if comparison["model"] == best else "worse"
    assert comparison["verdict"] == expected and (comparison["warning"] is not None) == (expected == "worse")
    assert "## Against the baselines" in (fit.run_dir / "diagnosis.md").read_text()

    diagnosed = main(cli_args("diagnose", tiny_data, runs, *split, "--ckpt_path", "best"))
    report = json.loads((diagnosed.run_dir / "diagnosis.json").read_text())
    assert report["errors"] == pytest.approx(after_fit["errors"])
    assert report["baseline_comparison"]["model"] == pytest.approx(comparison["model"])
    # The dominant problem is the largest gap above the tolerance; none when a (lucky) run leaves no such gap.
    above = {name: gap for name, gap in report["gaps"].items() if gap > report["tolerance"]}
    assert report["dominant"] == (max(above, key=above.get) if above else None) and report["next_steps"]
    analysis = report["error_analysis"]
    examples = analysis["worst_examples"]
    losses = [example["loss"] for example in examples]
    assert len(losses) == 12 and losses == sorted(losses, reverse=True)  # worst_k=16 > 12 val samples
    assert all(example["true"] and example["predicted"] for example in examples)
    markdown = (diagnosed.run_dir / "diagnosis.md").read_text()
    assert "| train-dev |" in markdown and "Worst 12 val examples" in markdown
    if set(MODALITIES) - {"image"}:  # tabular / sequence: the table shows each sample's first input cells
        assert all("=" in example["inputs"] for example in examples)
    if TASK_TYPE in (*CLASSIFICATION, "segmentation"):
        matrix = torch.tensor(analysis["confusion_matrix"])
        assert all(pair["true"] != pair["predicted"] for pair in analysis["most_confused"])
        if TASK_TYPE in CLASSIFICATION:
            assert matrix.sum() == 12 and matrix.trace() == round(12 * (1 - report["errors"]["val"]))
            assert "Most-confused pairs" in markdown
        else:
            assert matrix.sum() == 12 * 32 * 32 and len(analysis["per_class"]) == len(matrix)
            assert "IoU per class" in markdown
    elif TASK_TYPE == "multilabel":
        val = project_datamodule(tiny_data).dataset("val")
        support = torch.stack([val[i]["target"] for i in range(len(val))]).sum(0)
        assert [row["support"] for row in analysis["per_label"]] == support.long().tolist()
        assert "Per label" in markdown
    elif TASK_TYPE == "regression":
        assert len(analysis["residuals"]) >= 1 and all(row["rmse"] >= row["mae"] >= 0 for row in analysis["residuals"])
        assert "Residuals" in markdown
    if "image" in MODALITIES:
        with Image.open(diagnosed.run_dir / "worst_examples.png") as image:
            assert image.width > 100 and image.height > 100
    if TASK_TYPE in (*CLASSIFICATION, "segmentation"):
        with Image.open(diagnosed.run_dir / "confusion_matrix.png") as image:
            assert image.width > 50 and image.height > 50


def test_a_fit_worse_than_a_baseline_says_so_in_one_line_and_in_the_summary(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    # A `baseline` run on the same data, whose linear model is made perfect on val (nothing untrained beats it) and
    # its constant one worse than any model (so the advice is the under-trained model's, not a bug hunt).
    baseline = main(cli_args("baseline", tiny_data, runs, "--steps", "5"))
    result = json.loads((baseline.run_dir / "baseline.json").read_text())
    result["baselines"]["linear"]["val"][TASK.monitor] = 1.0 if TASK.mode == "max" else 0.0
    result["baselines"][TASK.constant_baseline]["val"][TASK.monitor] = -1.0 if TASK.mode == "max" else 1e9
    (baseline.run_dir / "baseline.json").write_text(json.dumps(result))
    capsys.readouterr()

    bad = ["--trainer.max_epochs", "1", "--model.optimizer.lr", "1e-9"]
    fit = main(cli_args("fit", tiny_data, runs, *FEW_BATCHES, *bad))
    out = capsys.readouterr().out
    comparison = json.loads((fit.run_dir / "summary.json").read_text())["baseline_comparison"]
    assert comparison["verdict"] == "worse" and comparison["best_baseline"] == "linear"
    assert str(baseline.run_dir) in comparison["source"] and comparison["seconds"] < 5
    warning = comparison["warning"]
    assert warning.startswith(f"WARNING: the model (val {TASK.monitor} ")
    assert "is worse than the linear baseline (" in warning
    assert "--model.optimizer.lr (now 1e-09)" in warning and "more epochs (ran 1 of --trainer.max_epochs 1)" in warning
    assert "\n" not in warning and out.rstrip().splitlines()[-1] == warning  # one line, the last one printed
    metrics = (next(fit.run_dir.glob("csv/version_*/metrics.csv"))).read_text()
    assert f"baseline/linear_val_{TASK.monitor}" in metrics and "baseline/model_worse" in metrics


def test_a_model_that_does_not_beat_the_constant_baseline_is_told_to_look_for_a_bug() -> None:
    scores = {TASK.constant_baseline: 0.5, "linear": 0.6}
    result = {"baselines": {name: {"val": {TASK.monitor: value}} for name, value in scores.items()}}
    trainer = SimpleNamespace(optimizers=[], current_epoch=0, max_epochs=5)
    assert "check the labels, the loss" in diagnosis_next_steps(trainer, TASK, {TASK.monitor: 0.5}, result)
    better = 0.55 if TASK.mode == "max" else 0.45
    advice = diagnosis_next_steps(trainer, TASK, {TASK.monitor: better}, result)
    assert advice.startswith("try a higher --model.optimizer.lr") and "epochs" not in advice  # `diagnose`: no fit


def test_an_unknown_reference_is_not_taken_for_zero() -> None:
    # No human-level error and no baseline run: a 30% train error is not "under-fitting against 0%".
    report = diagnose(SplitErrors(reference=None, train=0.30, val=0.31))
    assert "avoidable_bias" not in report.gaps and report.dominant != "avoidable_bias"
    assert any("avoidable bias (under-fitting) is unknown" in note for note in report.notes)
    assert "| reference | unknown |" in to_markdown(report)
