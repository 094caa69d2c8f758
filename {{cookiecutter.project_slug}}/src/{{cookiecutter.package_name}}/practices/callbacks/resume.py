"""A resumed fit trains with the optimizer settings of its config, not with those its checkpoint saved.

Lightning restores the optimizer (learning rates, weight decay, moments) and the LR schedule from the checkpoint,
so a lower `--model.optimizer.lr` given on resume (the advice after a NaN loss) would be ignored while the run's
config.yaml records it. This callback notes the configured values when the optimizer is built (before the
restore) and applies them after it: every parameter group's learning rates and the schedule's base LRs scaled by
new / old peak (each group keeps its lr_scale, the schedule continues where it was, at the new peak), and the
configured weight decay. Each change is printed in one line.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning import Callback

LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # the LRs a group carries (OneCycleLR adds max_lr / min_lr)


class ConfiguredOptimizerOnResume(Callback):
    def __init__(self) -> None:
        self.configured: list[list[dict[str, Any]]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The optimizers as the config builds them; the checkpoint's state is loaded after this hook.
        self.configured = [[_settings(group) for group in opt.param_groups] for opt in trainer.optimizers]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.ckpt_path:
            return
        for index, (optimizer, configured) in enumerate(zip(trainer.optimizers, self.configured, strict=False)):
            if len(configured) != len(optimizer.param_groups):  # groups added later (staged fine-tuning): kept
                continue
            schedulers = [c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer]
            name = f"optimizer {index}: " if len(trainer.optimizers) > 1 else ""
            for change in apply(optimizer, schedulers, configured):
                if trainer.is_global_zero:
                    print(f"{name}{change}")


def apply(optimizer: Any, schedulers: list[Any], configured: list[dict[str, Any]]) -> list[str]:
    """Give a restored optimizer (and its schedulers) the configured peak LRs and weight decay; what changed."""
    restored = [_settings(group) for group in optimizer.param_groups]
    changes = []
    ratios = [new["peak"] / old["peak"] if old["peak"] else 1.0 for new, old in zip(configured, restored, strict=True)]
    if any(abs(ratio - 1.0) > 1e-9 for ratio in ratios):
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            for key in LR_KEYS:
                if key in group:
                    group[key] *= ratio
        for scheduler in schedulers:
            _scale_scheduler(scheduler, ratios)
        old, new = max(g["peak"] for g in restored), max(g["peak"] for g in configured)
        changes.append(f"lr changed on resume: {old:.4g} -> {new:.4g} (the schedule continues from there)")
    decays = [(old["weight_decay"], new["weight_decay"]) for new, old in zip(configured, restored, strict=True)]
    if any(old != new for old, new in decays):
        for group, (_, new) in zip(optimizer.param_groups, decays, strict=True):
            group["weight_decay"] = new
        old, new = max(old for old, _ in decays), max(new for _, new in decays)
        changes.append(f"weight_decay changed on resume: {old:.4g} -> {new:.4g}")
    return changes


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    """A group's peak LR (the schedule's base: max_lr for one-cycle, else initial_lr, else lr) and weight decay."""
    peak = group.get("max_lr", group.get("initial_lr", group["lr"]))
    return {"peak": float(peak), "weight_decay": float(group.get("weight_decay", 0.0))}


def _scale_scheduler(scheduler: Any, ratios: list[float]) -> None:
    for attribute in ("base_lrs", "_last_lr"):
        values = getattr(scheduler, attribute, None)
        if isinstance(values, list) and len(values) == len(ratios):
            setattr(scheduler, attribute, [value * ratio for value, ratio in zip(values, ratios, strict=True)])
    for child in getattr(scheduler, "_schedulers", []):  # SequentialLR, ChainedScheduler
        _scale_scheduler(child, ratios)
