"""Writes `predict` outputs to a CSV: one row per input (its id), then the task's columns (classes, probabilities,
values)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter


class CSVPredictionWriter(BasePredictionWriter):
    """At the end of `predict`, write `<output_dir>/predictions.csv` (one file per rank under DDP)."""

    def __init__(self, output_dir: str | None = None):
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.path: Path | None = None

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        rows = []
        for batch in predictions:
            task_rows = pl_module.task.prediction_rows(batch["outputs"])
            rows.extend({"id": sample, **row} for sample, row in zip(batch["id"], task_rows, strict=True))
        folder = Path(self.output_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = "predictions.csv" if trainer.world_size == 1 else f"predictions-rank{trainer.global_rank}.csv"
        self.path = folder / name
        with self.path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["id"])
            writer.writeheader()
            writer.writerows(rows)
        if trainer.is_global_zero:
            print(f"Wrote {len(rows)} predictions to {self.path}")
