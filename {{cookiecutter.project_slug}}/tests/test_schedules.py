"""LR schedules (practices/schedules.py): the shape of every curve, step by step, with two parameter groups whose LR
ratio must hold throughout; and real fits, with gradient accumulation, whose optimizer steps follow the same curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import MODE, MONITOR, cli_args
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.errors import ProjectError
from {{ cookiecutter.package_name }}.practices.schedules import Schedule, restart_epochs_until

LR, RATIO = 1.0, 0.1  # two groups: a head at LR and a backbone stage at LR * RATIO


def curve(
    schedule: Schedule, total: int, per_epoch: int | None = None, optimizer_class: type = torch.optim.AdamW, **options
) -> tuple[list[float], list[float]]:
    """The LR each of `total` optimizer steps uses, for the head group, and the other group's ratio to it."""
    head, other = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    groups = [{"params": [head], "lr": LR}, {"params": [other], "lr": LR * RATIO}]
    optimizer = optimizer_class(groups, lr=LR, **options)
    scheduler = schedule.build(optimizer, total, per_epoch)
    lrs, ratios = [], []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        ratios.append(optimizer.param_groups[1]["lr"] / optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs, ratios


def assert_ratio_kept(ratios: list[float]) -> None:
    assert ratios == pytest.approx([RATIO] * len(ratios))


def test_cosine_warms_up_to_the_peak_then_decays_to_the_floor() -> None:
    lrs, ratios = curve(Schedule("cosine", warmup_steps=10, min_lr_ratio=0.01), total=100)
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])  # linear, the peak at the last warmup step
    assert lrs[10] == pytest.approx(LR)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # never rises after the warmup
    assert lrs[-1] == pytest.approx(0.01 * LR)  # the last step trains at the floor
    assert lrs[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 45 / 89)))
    assert_ratio_kept(ratios)


def test_the_default_warmup_is_a_fraction_of_all_steps() -> None:
    lrs, _ = curve(Schedule("cosine", warmup_fraction=0.2), total=50)
    assert lrs.index(max(lrs)) == 9 and lrs[9] == pytest.approx(LR)


def test_onecycle_rises_from_lr_over_25_to_lr_and_falls_to_the_floor() -> None:
    lrs, ratios = curve(Schedule("onecycle", warmup_fraction=0.3, min_lr_ratio=0.001), total=100)
    assert lrs[0] == pytest.approx(LR / 25)
    assert lrs.index(max(lrs)) == 29 and max(lrs) == pytest.approx(LR)
    assert all(a <= b for a, b in zip(lrs[:29], lrs[1:30], strict=False))
    assert all(a >= b for a, b in zip(lrs[29:], lrs[30:], strict=False))
    assert lrs[-1] == pytest.approx(0.001 * LR)
    assert_ratio_kept(ratios)


def test_onecycle_cycles_momentum_only_where_the_optimizer_has_one() -> None:
    # SGD without momentum has nothing to cycle (OneCycleLR would fail on it); SGD's momentum and Adam's beta1
    # cycle against the LR: lowest at the peak LR.
    for optimizer_class, options, momentum, cycles in [
        (torch.optim.SGD, {}, lambda group: group["momentum"], False),
        (torch.optim.SGD, {"momentum": 0.9}, lambda group: group["momentum"], True),
        (torch.optim.AdamW, {}, lambda group: group["betas"][0], True),
    ]:
        onecycle = Schedule("onecycle", warmup_fraction=0.3, min_lr_ratio=0.001)
        lrs, ratios = curve(onecycle, 100, None, optimizer_class, **options)
        assert lrs[0] == pytest.approx(LR / 25) and max(lrs) == pytest.approx(LR), optimizer_class
        assert lrs[-1] == pytest.approx(0.001 * LR)
        assert_ratio_kept(ratios)
        optimizer = optimizer_class([torch.nn.Parameter(torch.zeros(1))], lr=LR, **options)
        scheduler = onecycle.build(optimizer, 100, None)
        start = momentum(optimizer.param_groups[0])
        for _ in range(29):  # to the peak LR
            optimizer.step()
            scheduler.step()
        assert (momentum(optimizer.param_groups[0]) < start) == cycles, (optimizer_class, options)


@pytest.mark.parametrize("name", ["cosine", "onecycle", "sgdr", "step", "constant"])
def test_every_schedule_runs_with_sgd_without_momentum(name: str) -> None:
    lrs, ratios = curve(Schedule(name, restart_epochs=1, step_epochs=1), 20, 5, torch.optim.SGD)
    assert max(lrs) == pytest.approx(LR) and min(lrs) > 0
    assert_ratio_kept(ratios)


def test_sgdr_restarts_at_the_cycle_ends_it_reports() -> None:
    per_epoch, epochs = 5, 14
    sgdr = Schedule("sgdr", warmup_fraction=0.0, restart_epochs=2, restart_mult=2)
    lrs, ratios = curve(sgdr, epochs * per_epoch, per_epoch)
    ends = restart_epochs_until(epochs, restart_epochs=2, restart_mult=2)
    assert ends == [2, 6, 14]
    rises = [step for step in range(1, len(lrs)) if lrs[step] > lrs[step - 1]]
    assert rises == [end * per_epoch for end in ends[:-1]]  # the first step of the next cycle is back at the peak
    for end in ends:
        assert lrs[end * per_epoch - 1] == pytest.approx(0.01 * LR)  # each cycle's last step at the floor
    assert lrs[0] == lrs[10] == lrs[30] == pytest.approx(LR)
    assert_ratio_kept(ratios)
    assert restart_epochs_until(9, restart_epochs=3) == [3, 6, 9]
    assert restart_epochs_until(2, restart_epochs=3) == []


def test_step_decay_multiplies_by_gamma_every_step_epochs() -> None:
    lrs, ratios = curve(Schedule("step", warmup_fraction=0.0, step_epochs=2, step_gamma=0.5), total=30, per_epoch=5)
    assert lrs == pytest.approx([LR * 0.5 ** (step // 10) for step in range(30)])
    assert_ratio_kept(ratios)


def test_constant_with_warmup_in_epochs() -> None:
    lrs, ratios = curve(Schedule("constant", warmup_epochs=1), total=20, per_epoch=4)
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0] + [LR] * 16)
    assert_ratio_kept(ratios)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "linear"}, "model.lr_scheduler.name='linear' is not one of cosine, onecycle"),
        (
            {"warmup_steps": 5, "warmup_epochs": 1.0},
            "model.lr_scheduler.warmup_steps and model.lr_scheduler.warmup_epochs",
        ),
        ({"warmup_fraction": 1.5}, "model.lr_scheduler.warmup_fraction"),
        ({"name": "sgdr", "restart_epochs": 0}, "model.lr_scheduler.restart_epochs"),
        ({"name": "step", "step_gamma": 2.0}, "model.lr_scheduler.step_gamma"),
    ],
)
def test_bad_schedule_values_fail_with_one_line_naming_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ProjectError, match=message.replace("(", r"\(")):
        Schedule(**kwargs)


def test_epoch_based_schedules_need_a_known_epoch_length() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ProjectError, match="iterable dataset"):
        Schedule("sgdr").build(optimizer, total=100, per_epoch=None)


class StepLRs(pl.Callback):
    """Records every optimizer step's LR per parameter group, and the number of steps per epoch."""

    def __init__(self) -> None:
        self.lrs: list[dict[str, float]] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:  # noqa: ANN001
        self.lrs.append({group["name"]: group["lr"] for group in optimizer.param_groups})


# Only what these tests look at: no sanity checks, satisficing measurements or diagnosis.
QUIET = ["--trainer.logger", "false", "--trainer.callbacks", "[]"]
QUIET += ["--checkpoint.monitor", f"val/{MONITOR}", "--checkpoint.mode", MODE]
ACCUMULATE_2 = ["--trainer.accumulate_grad_batches", "2"]
RECORD = "--trainer.callbacks+=" + json.dumps({"class_path": f"{__name__}.StepLRs"})
PEAK = 0.01  # the configured optimizer's lr: the head's peak LR


def fit_lrs(data: Path, runs: Path, *extra: str) -> tuple[list[dict[str, float]], pl.LightningModule]:
    peak = ["--model.optimizer.lr", str(PEAK)]
    cli = main(
        cli_args("fit", data, runs, "--trainer.limit_val_batches", "1", *QUIET, RECORD, *peak, *extra, logger=None)
    )
    (recorder,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "StepLRs"]
    return recorder.lrs, cli.model


def test_sgdr_fit_with_gradient_accumulation_restarts_at_epoch_boundaries(tiny_data: Path, tmp_path: Path) -> None:
    # 4 batches / accumulate 2 = 2 optimizer steps per epoch; cycles of 1 then 2 epochs end after epochs 1 and 3.
    extra = ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4", *ACCUMULATE_2]
    schedule = ["--model.lr_scheduler.name", "sgdr", "--model.lr_scheduler.restart_epochs", "1"]
    schedule += ["--model.lr_scheduler.restart_mult", "2", "--model.lr_scheduler.warmup_fraction", "0"]
    lrs, model = fit_lrs(tiny_data, tmp_path / "runs", *extra, *schedule)
    head = [step["head"] for step in lrs]
    assert model.lr_schedule.name == "sgdr"
    peak, floor = PEAK, PEAK * model.lr_schedule.min_lr_ratio
    assert head == pytest.approx([model.lr_schedule.factor(step, 6, 2) * peak for step in range(6)])
    assert head[0] == head[2] == pytest.approx(peak)  # a restart at the first step of epoch 1
    assert head[1] == head[5] == pytest.approx(floor)  # the cycles' last steps
    assert head[2] > head[3] > head[4] > head[5]
    assert restart_epochs_until(3, 1, 2) == [1, 3]
    for step in lrs:  # every group follows the same curve
        assert {name: lr / step["head"] for name, lr in step.items()} == pytest.approx(
            {name: lr / lrs[0]["head"] for name, lr in lrs[0].items()}
        )


def test_onecycle_fit_counts_the_steps_of_a_last_partial_accumulation(tiny_data: Path, tmp_path: Path) -> None:
    # 3 batches / accumulate 2: the optimizer also steps on the epoch's last, partial accumulation -> 2 steps per
    # epoch. OneCycleLR raises if it is stepped more often than the total it was built for.
    extra = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", *ACCUMULATE_2]
    lrs, model = fit_lrs(tiny_data, tmp_path / "runs", *extra, "--model.lr_scheduler.name", "onecycle")
    head = [step["head"] for step in lrs]
    assert len(head) == 4
    assert head[0] == pytest.approx(PEAK / 25)
    assert max(head) == pytest.approx(PEAK)
    assert head[-1] == pytest.approx(PEAK * model.lr_schedule.min_lr_ratio)
