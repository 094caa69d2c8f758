"""Sanity checks before the first step: quiet on good data, one warning naming the problem on each bad case."""

from __future__ import annotations

import csv
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from conftest import cli_args, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.data.table import Row
from {{ cookiecutter.package_name }}.module import Model
from {{ cookiecutter.package_name }}.practices.callbacks.sanity import (
    GRID_FILE,
    chance_for_batch,
    check_init_loss,
    check_inputs,
    check_labels,
    find_leaks,
    grid_titles,
    index_limits,
    init_loss,
    mask_overlay,
)

ONE_STEP = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]
CLASSIFICATION = TASK_TYPE in ("multiclass", "binary")


def sanity_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("sanity check:")]


def test_good_data_passes_every_check(tiny_data: Path, tmp_path: Path, capsys) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *ONE_STEP))
    assert sanity_warnings(caught) == []
    out = capsys.readouterr().out
    summary = out[out.index("Sanity checks") :].split("\n\n")[0]  # the block, not what fit prints after it
    checks = ["init loss", "inputs", "labels", "leakage"] + (["sample grid"] if "image" in MODALITIES else [])
    for check in checks:
        assert f"\n  {check}" in summary and "WARNING" not in summary
    assert ("skipped" in summary.split("\n  labels")[1].splitlines()[0]) is not CLASSIFICATION

    with open(next(cli.run_dir.glob("csv/*/metrics.csv"))) as file:
        rows = [row for row in csv.DictReader(file) if row.get("sanity/init_loss_ratio")]
    assert 0.5 < float(rows[0]["sanity/init_loss_ratio"]) < 1.5  # a fresh network starts near the chance loss

    if "image" in MODALITIES:
        grid = Image.open(cli.run_dir / GRID_FILE)
        assert grid.width >= 3 * 96  # 8 samples of 32 px, scaled up to be visible
        low, high = grid.convert("L").getextrema()
        assert high - low > 100  # images drawn, not a blank canvas
    else:
        assert not (cli.run_dir / GRID_FILE).exists()


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def test_leaked_sample_and_class_missing_from_val_are_named(tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    missing_class = None
    if (data / "train.csv").is_file():  # a manifest: a train row copied into val.csv (same inputs, same files)
        header, train = _csv_rows(data / "train.csv")
        _, val = _csv_rows(data / "val.csv")
        if CLASSIFICATION:
            missing_class = sorted({row["target"] for row in train})[-1]
            val = [row for row in val if row["target"] != missing_class]
        _write_csv(data / "val.csv", header, [*val, train[0]])
        leaked, copy = "train.csv line 2", f"val.csv line {len(val) + 2}"
    else:  # class folders: a train image copied into a val class folder, and one class folder removed from val
        classes = sorted(folder.name for folder in (data / "val").iterdir())
        missing_class = classes[-1]
        shutil.rmtree(data / "val" / missing_class)
        source = sorted((data / "train" / classes[0]).iterdir())[0]
        target = data / "val" / classes[0] / "copy_of_a_train_image.png"
        shutil.copy(source, target)
        leaked, copy = str(source), str(target)

    with pytest.warns(UserWarning, match="sanity check") as record:
        main(cli_args("fit", data, tmp_path / "runs", *ONE_STEP))
    messages = sanity_warnings(record.list)
    if missing_class:
        assert any(f"missing from val: {missing_class}" in m for m in messages)
    leak = [m for m in messages if "leakage" in m]
    assert len(leak) == 1 and "1 samples appear in more than one split" in leak[0]
    assert leaked in leak[0] and copy in leak[0]


def test_leakage_compares_inputs_not_targets_and_ignores_duplicates_within_a_split(tmp_path: Path) -> None:
    def row(line: int, split: str, **values: str) -> Row:
        return Row(values, tmp_path / f"{split}.csv", line, tmp_path)

    splits = {
        "train": [row(2, "train", x="1.5", word="cat", target="a"), row(3, "train", x="1.5", word="cat", target="b")],
        "val": [row(2, "val", x="1.5", word="cat", target="c"), row(3, "val", x="2", word="cat", target="a")],
    }
    leaks = find_leaks(splits, columns=["x", "word"])
    # The val row equals both train rows in its inputs (its target differs: still the same sample shown twice).
    assert [(a, ra.line, b, rb.line) for a, ra, b, rb in leaks] == [("train", 2, "val", 2), ("train", 3, "val", 2)]
    assert find_leaks(splits, columns=["x", "word", "target"]) == []  # with the target, they would differ

    images = tmp_path / "images"
    images.mkdir()
    for name, colour in (("a.png", "red"), ("b.png", "red"), ("c.png", "blue")):
        Image.new("RGB", (8, 8), colour).save(images / name)
    splits = {
        "train": [row(2, "train", image="images/a.png", x="1"), row(3, "train", image="images/c.png", x="1")],
        "test": [row(2, "test", image="images/b.png", x="1"), row(3, "test", image="images/b.png", x="2")],
    }
    # a.png and b.png hold the same bytes: a leak with the same tabular value, none with another one.
    leaks = find_leaks(splits, image_column="image", columns=["x"])
    assert [(a, ra.line, b, rb.line) for a, ra, b, rb in leaks] == [("train", 2, "test", 2)]


def test_label_counts_warn_on_imbalance_and_missing_classes() -> None:
    labels = {"train": [0] * 30 + [1, 1], "val": [0, 1]}
    problems = check_labels(labels, ["cat", "dog"], max_imbalance=10).problems
    assert problems == [
        "train is imbalanced: cat has 30 samples, dog 2 (ratio 15.0 > 10); consider class weights or a weighted sampler"
    ]
    labels["val"] = [0]
    assert any("missing from val: dog" in p for p in check_labels(labels, ["cat", "dog"]).problems)


@pytest.mark.parametrize(
    ("make_images", "expected"),
    [
        (lambda shape: torch.randn(shape), None),
        (lambda shape: torch.rand(shape) * 255, "values in [0, 255]"),
        (lambda shape: torch.rand(shape), "values in [0, 1]"),
        (lambda shape: torch.randn(shape) * 0.01, "normalized twice"),
        (lambda shape: torch.randn(shape).index_fill_(0, torch.tensor([1]), float("nan")), "NaN"),
        (lambda shape: (torch.rand(shape) * 255).to(torch.uint8), "dtype torch.uint8"),
    ],
)
def test_image_statistics_name_what_is_wrong(make_images, expected: str | None) -> None:
    torch.manual_seed(0)
    batch = {"image": make_images((4, 3, 32, 48)), "target": torch.tensor([0, 1, 2, 0])}
    result = check_inputs(batch)
    if expected is None:
        assert result.problems == []
        assert "image torch.float32 [4, 3, 32, 48]" in result.summary
    else:
        assert len(result.problems) == 1 and expected in result.problems[0]


def nested_batch(steps: int = 6) -> dict:
    """A tabular + numeric-sequence batch of 8 as the readers make it, normalized: no problem to find."""
    torch.manual_seed(0)
    n = 8
    mask = torch.arange(steps).expand(n, steps) < torch.tensor([6, 2, 3, 4, 5, 6, 2, 3])[:, None]
    values = torch.randn(n, steps, 1).masked_fill(~mask[..., None], 0.0)  # padded steps are 0
    return {
        "tabular": {"numeric": torch.randn(n, 3), "categorical": torch.randint(0, 4, (n, 2))},
        "sequence": {"values": values, "mask": mask},
        "target": torch.zeros(n),
        "id": [f"train.csv:{i}" for i in range(2, n + 2)],
    }


def test_nested_inputs_are_checked_one_by_one() -> None:
    batch = nested_batch()
    result = check_inputs(batch, limits={"tabular.categorical": [4, 4]})
    assert result.problems == []
    for name in ("tabular.numeric", "tabular.categorical", "sequence.values", "sequence.mask"):
        assert name in result.summary
    assert "id" not in result.summary.split() and "target" not in result.summary

    batch["tabular"]["numeric"][2, 1] = float("inf")
    batch["tabular"]["numeric"][:, 2] += 100.0  # ... and an unnormalized feature would be named next
    (problem,) = check_inputs(batch).problems
    assert "input 'tabular.numeric' holds 0 NaN and 1 Inf values" in problem

    batch = nested_batch()
    batch["tabular"]["numeric"][:, 2] = batch["tabular"]["numeric"][:, 2] * 50 + 1000  # a raw, unscaled column
    (problem,) = check_inputs(batch).problems
    assert "'tabular.numeric' looks unnormalized" in problem and "off in channels 2" in problem


def test_index_inputs_must_fit_the_embeddings_and_sequences_need_a_real_step() -> None:
    batch = nested_batch()
    batch["tabular"]["categorical"][0, 1] = -1
    batch["tabular"]["categorical"][3, 0] = 7
    problems = check_inputs(batch, limits=index_limits({"tabular": {"numeric": 3, "categorical": [5, 4]}})).problems
    assert len(problems) == 2
    assert "'tabular.categorical' holds negative indices (min -1)" in problems[0]
    assert "column 0: index 7 >= 5 entries" in problems[1]

    tokens = {
        "sequence": {
            "values": torch.tensor([[5, 9, 0], [3, 0, 0]]),
            "mask": torch.tensor([[1, 1, 0], [0, 0, 0]]).bool(),
        }
    }
    problems = check_inputs(tokens, limits=index_limits({"sequence": {"kind": "tokens", "vocab_size": 8}})).problems
    assert len(problems) == 2
    assert "'sequence.values' holds index 9 but the model's embedding has 8 entries" in problems[0]
    assert "'sequence.mask': 1 samples have no real step" in problems[1]


def test_padding_does_not_count_in_sequence_statistics_and_empty_inputs_are_fine() -> None:
    batch = nested_batch(steps=200)  # most steps are padding: with them the std would look normalized twice
    batch["tabular"] = {"numeric": torch.zeros(8, 0), "categorical": torch.zeros(8, 0, dtype=torch.int64)}
    result = check_inputs(batch)
    assert result.problems == []
    assert "tabular.numeric torch.float32 [8, 0] (empty)" in result.summary


def test_grid_captions_and_mask_overlay_for_every_target_kind() -> None:
    names = ["cat", "dog", "fox"]
    assert grid_titles(torch.tensor([2, 0]), names) == ["fox", "cat"]  # multiclass
    assert grid_titles(torch.tensor([1.0, 0.0]), ["no", "yes"]) == ["yes", "no"]  # binary
    assert grid_titles(torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), names) == ["cat+fox", "none"]  # multilabel
    stats = {"mean": [10.0, 0.0], "std": [2.0, 1.0]}
    assert grid_titles(torch.tensor([[1.0, -0.5]]), ["a", "b"], stats) == ["12, -0.5"]  # regression, target units
    masks = torch.zeros(2, 4, 6, dtype=torch.int64)
    masks[0, :2, :3] = 2
    assert grid_titles(masks, names) == ["cat+fox", "cat"]  # segmentation: the classes present

    images = torch.full((2, 3, 4, 6), 0.5)
    panel = mask_overlay(images, masks, num_classes=3)
    assert panel.shape == (2, 3, 4, 12)  # the image, then the image with its mask blended in
    assert torch.equal(panel[..., :6], images)
    assert not torch.equal(panel[0, :, 0, 6], panel[0, :, 3, 6])  # class 2 and class 0 pixels differ in colour


def tiny_model_and_batch(tiny_data: Path) -> tuple[Model, dict]:
    datamodule = project_datamodule(tiny_data)
    model = project_model(datamodule)  # the configured task and network, with the tiny backbone
    dataset = datamodule.dataset("train", train=False)
    return model, default_collate([dataset[i] for i in range(8)])


def test_init_loss_far_from_chance_warns_and_leaves_the_model_training(tiny_data: Path) -> None:
    torch.manual_seed(0)
    model, batch = tiny_model_and_batch(tiny_data)
    chance, _ = chance_for_batch(model.task, batch["target"])
    loss = init_loss(model, batch)
    assert check_init_loss(loss, chance).problems == []  # the head starts near zero: the loss is near chance
    assert model.training and all(m.training for m in model.modules())  # eval mode only for the measurement

    # A head that is confidently wrong from the start: large logits / values.
    generator = torch.Generator().manual_seed(0)
    model.network.register_forward_hook(
        lambda module, args, output: output + 8 * torch.randn(output.shape, generator=generator)
    )
    problems = check_init_loss(init_loss(model, batch), chance).problems
    assert len(problems) == 1 and "x the chance loss" in problems[0]


def test_binary_pos_weight_changes_the_chance_loss() -> None:
    task = type("Task", (), {"chance_loss": math.log(2), "pos_weight": 3.0})()
    target = torch.tensor([1.0, 0.0, 0.0, 0.0])  # mean sample weight (3 + 1 + 1 + 1) / 4 = 1.5
    chance, note = chance_for_batch(task, target)
    assert chance == pytest.approx(1.5 * math.log(2)) and "pos_weight 3" in note and "chance differs" in note
    assert chance_for_batch(type("Task", (), {"chance_loss": 1.0})(), target) == (1.0, "")
    result = check_init_loss(1.5 * math.log(2), chance, note=note)
    assert result.problems == [] and "pos_weight 3" in result.summary
