"""Clocks the benchmarks put into measured processes (run by the rendered project's venv python).

They only read clocks, so what they observe is the run a user would start. Each process reports once, one
line `BENCHMARK {json}` on stdout, which `common.read_report` parses.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytorch_lightning as pl
import torch

MARKER = "BENCHMARK "


def report(**values: Any) -> None:
    print(MARKER + json.dumps(values), flush=True)


class StepWindow:
    """Wall time from training batch start number `first` to batch start number `last` (counted from 0).

    A batch start is the moment a step has its batch (on the device) and is about to run forward, so the window
    holds `last - first` whole steps, each including the fetch of the next batch. The report also gives each
    step's time and whether the step ran into a new epoch (the epoch's end and the next one's first batch).
    With `synchronize`, queued CUDA work is waited for at both ends of the window only (per-step times are
    then meaningless, the total is right). `info` is added to the report as it is.
    """

    def __init__(self, first: int, last: int, synchronize: bool = False, **info: Any):
        self.first, self.last, self.synchronize, self.info = first, last, synchronize, info
        self.count = 0
        self.stamps: list[float] = []
        self.new_epoch: list[bool] = []

    def tick(self, batch_idx: int) -> None:
        if self.first <= self.count <= self.last:
            if self.synchronize and self.count in (self.first, self.last):
                torch.cuda.synchronize()
            self.stamps.append(time.perf_counter())
            self.new_epoch.append(batch_idx == 0)
        if self.count == self.last:
            steps = [b - a for a, b in itertools.pairwise(self.stamps)]
            report(
                steps=len(steps),
                seconds=self.stamps[-1] - self.stamps[0],
                step_seconds=steps,
                into_new_epoch=self.new_epoch[1:],
                **memory_stats(),
                **self.info,
            )
        self.count += 1


def memory_stats() -> dict[str, float]:
    if not torch.cuda.is_available():
        return {}
    return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


class StepWindowClock(pl.Callback):
    """`StepWindow` on the Lightning side: ticks at `on_train_batch_start` (after the batch transfer hooks)."""

    def __init__(self, first: int, last: int, synchronize: bool = False):
        self.window = StepWindow(first, last, synchronize)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.window.tick(batch_idx)


class FirstStepClock(pl.Callback):
    """Reports the wall-clock time (`time.time()`, comparable across processes) of the first training batch start,
    and of the fit's stages before it: `setup` (the first hook after the logger has started), the sanity
    validation's start and end."""

    def __init__(self) -> None:
        self.reported = False
        self.stamps: dict[str, float] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.stamps.setdefault("setup", time.time())

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stamps.setdefault("sanity_start", time.time())

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stamps.setdefault("sanity_end", time.time())

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.reported:
            report(first_batch_start=time.time(), stages=self.stamps)
            self.reported = True
