"""Sanity checks before the first step: quiet on good data, one warning naming the problem on each bad case."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY_BACKBONE, cli_args
from {{ cookiecutter.package_name }}.callbacks.sanity import GRID_FILE, check_init_loss, check_inputs, check_labels, init_loss
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.module import Model

ONE_STEP = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]


def sanity_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("sanity check:")]


def test_good_data_passes_every_check_and_saves_the_sample_grid(tiny_data: Path, tmp_path: Path, capsys) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *ONE_STEP))
    assert sanity_warnings(caught) == []
    out = capsys.readouterr().out
    summary = out[out.index("Sanity checks") :]
    for check in ("init loss", "inputs", "labels", "leakage", "sample grid"):
        assert f"  {check}" in summary and "WARNING" not in summary

    grid = Image.open(cli.run_dir / GRID_FILE)
    assert grid.width >= 3 * 96  # 8 samples of 32 px, scaled up to be visible
    low, high = grid.convert("L").getextrema()
    assert high - low > 100  # images drawn, not a blank canvas

    with open(next(cli.run_dir.glob("csv/*/metrics.csv"))) as file:
        rows = [row for row in csv.DictReader(file) if row.get("sanity/init_loss_ratio")]
    assert 0.5 < float(rows[0]["sanity/init_loss_ratio"]) < 1.5  # a fresh network starts near chance (ln 3)


def test_leaked_file_and_class_missing_from_val_are_named(tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    shutil.rmtree(data / "val" / "triangle")
    leaked = sorted((data / "train" / "circle").iterdir())[0]
    copy = data / "val" / "circle" / "copy_of_a_train_image.png"
    shutil.copy(leaked, copy)

    with pytest.warns(UserWarning, match="sanity check") as record:
        main(cli_args("fit", data, tmp_path / "runs", *ONE_STEP))
    messages = sanity_warnings(record.list)
    assert any("missing from val: triangle" in m for m in messages)
    leak = [m for m in messages if "leakage" in m]
    assert len(leak) == 1 and str(leaked) in leak[0] and str(copy) in leak[0]


def test_label_counts_warn_on_imbalance_and_missing_classes() -> None:
    splits = {
        "train": [(Path(f"a{i}.png"), 0) for i in range(30)] + [(Path("b0.png"), 1), (Path("b1.png"), 1)],
        "val": [(Path("a_val.png"), 0), (Path("b_val.png"), 1)],
    }
    problems = check_labels(splits, ["cat", "dog"], max_imbalance=10).problems
    assert problems == [
        "train is imbalanced: cat has 30 samples, dog 2 (ratio 15.0 > 10); consider class weights or a weighted sampler"
    ]
    splits["val"] = [(Path("a_val.png"), 0)]
    assert any("missing from val: dog" in p for p in check_labels(splits, ["cat", "dog"]).problems)


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
def test_input_statistics_name_what_is_wrong(make_images, expected: str | None) -> None:
    torch.manual_seed(0)
    batch = {"image": make_images((4, 3, 32, 48)), "target": torch.tensor([0, 1, 2, 0])}
    result = check_inputs(batch)
    if expected is None:
        assert result.problems == []
        assert "image torch.float32 [4, 3, 32, 48]" in result.summary
    else:
        assert len(result.problems) == 1 and expected in result.problems[0]


def test_init_loss_far_from_chance_warns_and_leaves_the_model_training() -> None:
    torch.manual_seed(0)
    model = Model(backbone=TINY_BACKBONE, pretrained=False, num_classes=3)
    batch = {"image": torch.randn(4, 3, 32, 48), "target": torch.tensor([0, 1, 2, 1])}
    loss = init_loss(model, batch)
    assert check_init_loss(loss, model.task.chance_loss).problems == []  # the head starts near uniform: ln 3
    assert model.training and all(m.training for m in model.modules())  # eval mode only for the measurement

    with torch.no_grad():  # a head that is confidently "class 0" from the start
        model.network.head.linear.bias.copy_(torch.tensor([8.0, 0.0, 0.0]))
    problems = check_init_loss(init_loss(model, batch), model.task.chance_loss).problems
    assert len(problems) == 1 and "x the chance loss" in problems[0]
