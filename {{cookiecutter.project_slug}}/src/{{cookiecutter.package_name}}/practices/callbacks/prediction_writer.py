"""Writes `predict` outputs to a CSV: one row per input (its id), then the task's columns (classes, probabilities,
values). Segmentation also writes each predicted mask as a PNG (pixel value = class index, like the input masks)
under `predicted_masks/`, named in the CSV's `mask_file` column."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter

MASK_FOLDER = "predicted_masks"


def mask_file_name(sample_id: str, taken: set[str]) -> str:
    """A file name for a sample's mask from its id (`test.csv:7` -> `test.csv_7.png`), unique within `taken`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(sample_id)).strip("._") or "sample"
    name, n = f"{stem}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return name


def decode_outputs(task: Any, outputs: torch.Tensor) -> tuple[list[dict[str, object]], np.ndarray | None]:
    """A batch of activated outputs as predictions.csv's task columns (one dict per sample), and the predicted
    masks (uint8 [B, H, W]) of a task that predicts masks, else None. The server (practices/serve.py) answers
    with the same, so a served prediction is the predicted one."""
    masks = task.prediction_mask(outputs) if hasattr(task, "prediction_mask") else None
    return task.prediction_rows(outputs), masks


def mask_image(mask: np.ndarray) -> Image.Image:
    """A uint8 [H, W] class-index mask as a one-channel image (pixel value = class index), saved as PNG."""
    return Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))


def write_masks(masks: np.ndarray, ids: Sequence[str], folder: Path, taken: set[str]) -> list[str]:
    """Save uint8 [B, H, W] class-index masks as PNGs in `folder`; their paths relative to its parent."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for mask, sample_id in zip(masks, ids, strict=True):
        name = mask_file_name(sample_id, taken)
        mask_image(mask).save(folder / name)
        paths.append(f"{folder.name}/{name}")
    return paths


class CSVPredictionWriter(BasePredictionWriter):
    """At the end of `predict`, write `<output_dir>/predictions.csv` (one file per rank under DDP).

    For a task with predicted masks (segmentation: `task.prediction_mask`), each mask is saved as
    `<output_dir>/predicted_masks/<id>.png` at the model's input resolution (the resized, centre-cropped image
    the network saw), and the CSV gets a `mask_file` column with its path relative to the CSV.
    """

    def __init__(self, output_dir: str | None = None):
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.path: Path | None = None

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        task = pl_module.task
        folder = Path(self.output_dir or trainer.default_root_dir)
        masks = folder / MASK_FOLDER if hasattr(task, "prediction_mask") else None
        taken: set[str] = set()
        rows = []
        for batch in predictions:
            task_rows, predicted_masks = decode_outputs(task, batch["outputs"])
            if masks is not None:
                files = write_masks(predicted_masks, batch["id"], masks, taken)
                task_rows = [{**row, "mask_file": file} for row, file in zip(task_rows, files, strict=True)]
            rows.extend({"id": sample, **row} for sample, row in zip(batch["id"], task_rows, strict=True))
        folder.mkdir(parents=True, exist_ok=True)
        name = "predictions.csv" if trainer.world_size == 1 else f"predictions-rank{trainer.global_rank}.csv"
        self.path = folder / name
        with self.path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["id"])
            writer.writeheader()
            writer.writerows(rows)
        if trainer.is_global_zero:
            where = f" and {len(taken)} masks to {masks}" if masks is not None and taken else ""
            print(f"Wrote {len(rows)} predictions to {self.path}{where}")
