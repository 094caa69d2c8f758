"""Averaging predictions: several models (snapshot ensembles) or several views of one input (test-time augmentation).

Predictions are averaged in activation space, i.e. what `task.activation` gives: class probabilities,
per-pixel probabilities, or values in target units. The metrics, loss and error of a task take raw network
outputs, so an average goes back through `outputs_from_activations` (the activation's inverse) and is then
scored exactly like a single model's outputs.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import Precision
from pytorch_lightning.utilities import move_data_to_device

from .evaluation import Accumulator, eval_dataset, eval_loader


def outputs_from_activations(task: Any, activated: torch.Tensor) -> torch.Tensor:
    """Raw outputs whose `task.activation` is `activated` (e.g. averaged probabilities), for the task's metrics:
    the argmax, thresholds and rankings the metrics use are those of `activated` (each task's inverse_activation)."""
    return task.inverse_activation(activated.float())


@torch.no_grad()
def evaluate_ensemble(
    members: dict[str, pl.LightningModule],
    datamodule: pl.LightningDataModule,
    split: str,
    device: torch.device,
    precision: Precision | None = None,
) -> dict[str, dict[str, float]]:
    """Each member's and their average's metrics (and `error`) on one split, in one pass over the data.

    Members are models of one architecture and task (e.g. snapshots of one run); the ensemble's prediction is the
    mean of their activations. Returns {member name or "ensemble": {metric name: value, "error": task.error}}.
    """
    precision = precision or Precision()
    task = next(iter(members.values())).task
    names = [*members, "ensemble"]
    accumulators = {name: Accumulator(task, split, task.metrics().to(device)) for name in names}
    loader = eval_loader(datamodule, eval_dataset(datamodule, split))
    modes = {name: member.training for name, member in members.items()}
    for member in members.values():
        member.eval()
    try:
        for batch in loader:
            inputs = precision.convert_input(move_data_to_device(batch, device))
            target, ids = move_data_to_device(batch["target"], device), list(batch["id"])
            activations = []
            for name, member in members.items():
                with precision.forward_context():
                    outputs = member(inputs).float()
                accumulators[name].update(outputs, target, ids)
                activations.append(task.activation(outputs))
            mean = torch.stack(activations).mean(dim=0)
            accumulators["ensemble"].update(outputs_from_activations(task, mean), target, ids)
    finally:
        for name, member in members.items():
            member.train(modes[name])
    results = {}
    for name, accumulator in accumulators.items():
        result = accumulator.result()
        results[name] = {**result.metrics, "error": result.error}
    return results


def to_markdown(results: dict[str, dict[str, dict[str, float]]], monitor: str) -> str:
    """One row per member and the ensemble; one column per split's optimizing metric and error."""
    splits = list(results)
    header = ["model"] + [f"{split}/{name}" for split in splits for name in (monitor, "error")]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for model in results[splits[0]]:
        cells = [f"{results[split][model][name]:.4f}" for split in splits for name in (monitor, "error")]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
