"""Training-recipe commands: lr-find (range test), repeat (seeds) and cv (k-fold), on the tiny data."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import CONFIGS, cli_args, project_datamodule
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.errors import DataError
from {{ cookiecutter.package_name }}.practices import lr_finder

FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", "--trainer.max_epochs", "1"]


def fit_args(data: Path, runs: Path, *extra: str) -> list[str]:
    """What a user passes to `repeat` / `cv` after their own flags: the fit arguments without the command."""
    return cli_args("fit", data, runs, *FEW_BATCHES, *extra)[1:]


def report_of(runs: Path, command: str) -> dict:
    (path,) = runs.glob(f"*-{command}-*/{command}.json")
    assert path.with_suffix(".md").is_file()
    return json.loads(path.read_text())


def kept_values(report: dict) -> list[float]:
    """Each run's optimizing metric, read again from the run's own summary.json."""
    return [json.loads((Path(r["run_dir"]) / "summary.json").read_text())["optimize"]["value"] for r in report["runs"]]


def test_lr_find_plots_suggests_and_leaves_the_weights_unchanged(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as help_exit:  # the hyphenated name reaches the method's parser
        main(["lr-find", "--help"])
    assert help_exit.value.code == 0 and "--num_training" in capsys.readouterr().out

    before: dict[str, torch.Tensor] = {}

    class RecordingTuner(lr_finder.Tuner):
        def lr_find(self, model, **kwargs):  # noqa: ANN001, ANN003, ANN201
            before.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            return super().lr_find(model, **kwargs)

    monkeypatch.setattr(lr_finder, "Tuner", RecordingTuner)
    runs = tmp_path / "runs"
    # 12 steps at 4 batches per epoch: the sweep must outlast max_epochs=1, which would stop Lightning's at 4.
    sweep = ["--min_lr", "1e-5", "--max_lr", "1.0", "--num_training", "12", "--early_stop_threshold", "null"]
    cli = main(cli_args("lr-find", tiny_data, runs, "--trainer.max_epochs", "1", *sweep))

    result = json.loads((cli.run_dir / lr_finder.RESULT_FILE).read_text())
    assert len(result["lr"]) == 12 and result["lr"] == sorted(result["lr"])
    # Within the sweep, or a tenth of its start when the loss never fell (a tiny model on 12 noisy steps can).
    assert math.isfinite(result["suggestion"]) and 1e-6 <= result["suggestion"] <= 1.0
    assert (
        result["flag"] == f"--model.optimizer.lr {result['suggestion']:.3g}"
        and result["flag"] in capsys.readouterr().out
    )
    with Image.open(cli.run_dir / lr_finder.PLOT_FILE) as plot:
        assert plot.size == (640, 420)
    after = cli.model.state_dict()
    assert before and all(torch.equal(before[k], after[k].cpu()) for k in before)
    assert not list(runs.rglob("*.ckpt")) and not list(runs.rglob(".lr_find*"))


def test_suggestion_is_the_steepest_descent_on_a_log_axis_else_min_over_10() -> None:
    lrs = [10.0 ** (-6 + 0.25 * i) for i in range(25)]  # 1e-6 .. 1
    # Flat, a steep fall centred at 1e-3, a minimum at 1e-2, then divergence.
    losses = [2.0 - 1.5 / (1 + math.exp(-4 * (math.log10(lr) + 3))) for lr in lrs[:17]] + [5.0] * 8
    result = lr_finder.suggest(lrs, losses)
    assert result["steepest_lr"] == pytest.approx(1e-3) and result["suggestion"] == result["steepest_lr"]
    rising = lr_finder.suggest(lrs, [1.0 + i for i in range(25)])  # never falls: min / 10
    assert rising["steepest_lr"] is None and rising["suggestion"] == pytest.approx(lrs[0] / 10)
    assert "never fell" in rising["rule"] and "--min_lr" in rising["rule"]  # the user learns why, and what to do


def test_repeat_trains_one_run_per_seed_and_reports_mean_and_sample_std(tiny_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    main(["repeat", "--repeats", "2", *fit_args(tiny_data, runs)])
    report = report_of(runs, "repeat")
    base = yaml.safe_load((CONFIGS / "default.yaml").read_text())["seed_everything"]
    assert [r["seed"] for r in report["runs"]] == [base, base + 1]
    assert len({r["run_dir"] for r in report["runs"]}) == 2
    values = kept_values(report)
    assert [r["value"] for r in report["runs"]] == values
    assert report["mean"] == pytest.approx(statistics.fmean(values))
    assert report["std"] == pytest.approx(statistics.stdev(values))


def test_seed_null_or_true_gives_a_new_recorded_seed_each_run(tiny_data: Path, tmp_path: Path) -> None:
    fast = ["--config", str(CONFIGS / "debug" / "fast_dev_run.yaml")]
    seeds = [
        main(
            cli_args("fit", tiny_data, tmp_path / "runs", *fast, "--seed_everything", value)
        ).config.fit.seed_everything
        for value in ("null", "true")
    ]
    assert all(type(seed) is int for seed in seeds) and seeds[0] != seeds[1]


def test_cv_folds_are_disjoint_cover_the_non_test_data_and_repeat(tiny_data: Path) -> None:
    plain = project_datamodule(tiny_data)
    non_test = {row.id for split in ("train", "val") for row in plain.splits[split]}
    folds = [project_datamodule(tiny_data, splits={"num_folds": 3, "fold": k}) for k in range(3)]
    vals = [[row.id for row in data.splits["val"]] for data in folds]
    assert sum(map(len, vals)) == len(non_test) and set().union(*vals) == non_test  # disjoint, covering
    for data, val in zip(folds, vals, strict=True):
        assert {row.id for row in data.splits["train"]} == non_test - set(val)
        assert data.splits["test"] == plain.splits["test"]  # the test split is never part of a fold
    again = project_datamodule(tiny_data, splits={"num_folds": 3, "fold": 1})
    assert [row.id for row in again.splits["val"]] == vals[1]
    labels = plain.labels("train")
    if labels is not None:  # multiclass / binary: every fold keeps the class proportions (to one sample)
        overall = Counter(labels + plain.labels("val"))
        for data in folds:
            counts = Counter(data.labels("val"))
            assert all(abs(counts[c] - n / 3) <= 1 for c, n in overall.items())
    with pytest.raises(DataError, match="data.splits.fold"):
        project_datamodule(tiny_data, splits={"num_folds": 3, "fold": 3})


def test_cv_trains_one_model_per_fold_and_reports_their_mean(tiny_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    main(["cv", "--folds", "3", *fit_args(tiny_data, runs)])
    report = report_of(runs, "cv")
    assert [r["fold"] for r in report["runs"]] == [0, 1, 2]
    assert sum(r["val_samples"] for r in report["runs"]) == 36 + 12  # the tiny data's train + val
    values = kept_values(report)
    assert report["mean"] == pytest.approx(statistics.fmean(values))
    assert report["std"] == pytest.approx(statistics.stdev(values))
