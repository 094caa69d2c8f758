"""Learning-rate schedules, stepped after every optimizer step (Lightning interval "step").

    cosine    linear warmup to lr, then cosine decay to lr * min_lr_ratio at the last step (the default)
    onecycle  torch's OneCycleLR: cosine rise from lr / 25 to lr over the warmup, cosine fall to
              lr * min_lr_ratio; momentum (AdamW's beta1) cycles the opposite way
    sgdr      cosine with warm restarts: cycles of restart_epochs, each restart_mult times longer than the one
              before, each from lr down to lr * min_lr_ratio (snapshot ensembles save at the cycle ends)
    step      lr * step_gamma ** (epoch // step_epochs)
    constant  lr after the warmup

Warmup (all schedules; onecycle's rising phase): `warmup_steps` optimizer steps if set, else `warmup_epochs`
epochs if set, else `warmup_fraction` of all steps. Epochs count optimizer steps, so gradient accumulation is
taken into account: steps per epoch = ceil(train batches / accumulate_grad_batches).

All schedules except onecycle are one LambdaLR whose factor is a pure function of the step: every parameter
group is scaled by the same factor (discriminative LRs keep their ratios), warmup composes with every shape, and a
run resumed from a checkpoint recomputes the factor from the restored step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from ..errors import ProjectError

SCHEDULES = ("cosine", "onecycle", "sgdr", "step", "constant")
ONECYCLE_DIV = 25.0  # OneCycleLR's div_factor: the cycle starts at lr / 25


def restart_epochs_until(max_epochs: int, restart_epochs: int, restart_mult: int = 1) -> list[int]:
    """SGDR: the numbers of completed epochs at which a cycle ends (the LR is at its minimum), up to `max_epochs`.

    E.g. restart_epochs=2, restart_mult=2, max_epochs=14 -> [2, 6, 14]. A callback sees a cycle end at the end of
    the epoch where `trainer.current_epoch + 1` is in this list; a last, unfinished cycle is not included.
    """
    ends, length, end = [], restart_epochs, restart_epochs
    while end <= max_epochs:
        ends.append(end)
        length *= restart_mult
        end += length
    return ends


def stepping(trainer: Any) -> tuple[int, int | None]:
    """(optimizer steps of the whole fit, optimizer steps per epoch or None when the epoch length is unknown)."""
    total = trainer.estimated_stepping_batches  # loads the train data if needed; counts accumulation
    if math.isinf(total):
        raise ProjectError("the LR schedule needs a finite run: set trainer.max_epochs or trainer.max_steps")
    batches = getattr(trainer, "num_training_batches", math.inf)
    accumulate = getattr(trainer, "accumulate_grad_batches", 1)
    per_epoch = None if math.isinf(batches) else max(1, math.ceil(batches / accumulate))
    return max(1, int(total)), per_epoch


@dataclass(frozen=True)
class Schedule:
    """The LR schedule the Model steps every optimizer step (`model.init_args.lr_scheduler`); checked on creation.

    Args:
        name: cosine (linear warmup, then cosine decay), onecycle, sgdr (cosine with warm restarts), step or constant.
        warmup_fraction: warmup length as a fraction of all optimizer steps (used when the two below are null).
        warmup_steps: warmup length in optimizer steps.
        warmup_epochs: warmup length in epochs (not both warmup_steps and warmup_epochs).
        min_lr_ratio: cosine, onecycle and each sgdr cycle end at lr * min_lr_ratio.
        restart_epochs: sgdr: length of the first cycle in epochs.
        restart_mult: sgdr: each cycle is this many times longer than the one before.
        step_epochs: step: multiply the LR by step_gamma every step_epochs epochs.
        step_gamma: step: the decay factor.
    """

    name: str = "cosine"
    warmup_fraction: float = 0.05
    warmup_steps: int | None = None
    warmup_epochs: float | None = None
    min_lr_ratio: float = 0.01
    restart_epochs: int = 10
    restart_mult: int = 1
    step_epochs: int = 10
    step_gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ProjectError(f"model.lr_scheduler.name={self.name!r} is not one of {', '.join(SCHEDULES)}")
        if self.warmup_steps is not None and self.warmup_epochs is not None:
            raise ProjectError(
                "model.lr_scheduler.warmup_steps and model.lr_scheduler.warmup_epochs are both set: "
                "set one (or neither)"
            )
        if not 0 <= self.warmup_fraction < 1:
            raise ProjectError(f"model.lr_scheduler.warmup_fraction={self.warmup_fraction} must be in [0, 1)")
        if (self.warmup_steps or 0) < 0 or (self.warmup_epochs or 0) < 0:
            raise ProjectError("model.lr_scheduler.warmup_steps / model.lr_scheduler.warmup_epochs must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ProjectError(f"model.lr_scheduler.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.restart_epochs < 1 or self.restart_mult < 1:
            raise ProjectError(
                f"model.lr_scheduler.restart_epochs={self.restart_epochs} and "
                f"model.lr_scheduler.restart_mult={self.restart_mult} must be >= 1"
            )
        if self.step_epochs < 1 or not 0 < self.step_gamma <= 1:
            raise ProjectError(
                f"model.lr_scheduler.step_epochs={self.step_epochs} must be >= 1 and "
                f"model.lr_scheduler.step_gamma={self.step_gamma} in (0, 1]"
            )

    def cycle_ends(self, max_epochs: int) -> list[int]:
        """sgdr: the 0-based epochs whose end is a cycle's end (snapshot ensembles save there); [] otherwise."""
        if self.name != "sgdr" or not max_epochs or max_epochs < 0:
            return []
        return [end - 1 for end in restart_epochs_until(max_epochs, self.restart_epochs, self.restart_mult)]

    def needs_epochs(self) -> bool:
        return self.name in ("sgdr", "step") or self.warmup_epochs is not None

    def warmup(self, total: int, per_epoch: int | None) -> int:
        """Warmup length in optimizer steps."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        if self.warmup_epochs is not None:
            return round(self.warmup_epochs * self._per_epoch(per_epoch))
        return int(self.warmup_fraction * total)

    def factor(self, step: int, total: int, per_epoch: int | None) -> float:
        """LR multiplier at optimizer step `step` (0-based) of `total` (not for onecycle: see `build`)."""
        warmup, floor = self.warmup(total, per_epoch), self.min_lr_ratio
        ramp = (step + 1) / warmup if step < warmup else 1.0
        if self.name == "cosine":
            if step < warmup:
                return ramp
            # Reaches the floor at the last step (total - 1), and stays there.
            progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.name == "sgdr":
            per_epoch = self._per_epoch(per_epoch)
            start, length = 0, self.restart_epochs * per_epoch
            while step >= start + length:
                start, length = start + length, length * self.restart_mult
            progress = (step - start) / max(1, length - 1)  # the floor at each cycle's last step
            return ramp * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
        if self.name == "step":
            return ramp * self.step_gamma ** (step // (self.step_epochs * self._per_epoch(per_epoch)))
        return ramp  # constant

    def build(self, optimizer: torch.optim.Optimizer, total: int, per_epoch: int | None) -> LRScheduler:
        """The scheduler for `optimizer`, whose groups' `lr` are their peak LRs."""
        if self.needs_epochs():
            self._per_epoch(per_epoch)  # fail before training starts
        if self.name == "onecycle" and total >= 3:
            # OneCycleLR's phases need >= 2 steps each; the warmup is its rising phase.
            rise = min(max(2, self.warmup(total, per_epoch)), total - 1)
            return OneCycleLR(
                optimizer,
                max_lr=[group["lr"] for group in optimizer.param_groups],  # per group: the ratios are kept
                total_steps=total,
                pct_start=rise / total,
                div_factor=ONECYCLE_DIV,
                # Momentum cycles against the LR where the optimizer has one (SGD's momentum, Adam's beta1).
                cycle_momentum=any(key in optimizer.defaults for key in ("momentum", "betas"))
                and optimizer.defaults.get("momentum", 1) != 0,
                final_div_factor=1 / (ONECYCLE_DIV * self.min_lr_ratio) if self.min_lr_ratio > 0 else math.inf,
            )
        if self.name == "onecycle":  # too few steps for a cycle (fast_dev_run): constant
            return LambdaLR(optimizer, lambda step: 1.0)
        return LambdaLR(optimizer, lambda step: self.factor(step, total, per_epoch))

    def _per_epoch(self, per_epoch: int | None) -> int:
        if per_epoch is None:
            raise ProjectError(
                f"model.lr_scheduler.name={self.name!r} / model.lr_scheduler.warmup_epochs count epochs, but the train "
                "data has no length (an iterable dataset): use model.lr_scheduler.warmup_steps and the cosine, "
                "onecycle or constant schedule"
            )
        return per_epoch
