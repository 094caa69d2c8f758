"""Baselines: the floor a model has to beat, on the same splits and with the same metrics.

- majority: always predicts the most frequent training class (its logits are the log class frequencies);
- linear: logistic regression on the images shrunk to `feature_size` x `feature_size` pixels and flattened.

A network that does not clearly beat the linear baseline has a bug or is badly under-fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from .evaluation import eval_dataset, eval_loader, split_error

RESULT_FILE = "baseline.json"
SPLITS = ("train", "val", "test")


def pixel_features(
    datamodule: pl.LightningDataModule, split: str, size: int, max_samples: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (evaluation transform) averaged down to size x size, flattened: [N, 3 * size * size], targets [N]."""
    features, targets = [], []
    for batch in eval_loader(datamodule, eval_dataset(datamodule, split, max_samples)):
        features.append(F.adaptive_avg_pool2d(batch["image"], size).flatten(1))
        targets.append(batch["target"])
    return torch.cat(features), torch.cat(targets)


def majority_logits(train_targets: torch.Tensor, num_classes: int, n: int) -> torch.Tensor:
    """The same prediction for every sample: log class frequencies, so the argmax is the majority class."""
    counts = torch.bincount(train_targets, minlength=num_classes).float()
    return (counts / counts.sum()).clamp(min=1e-8).log().expand(n, num_classes)


def fit_linear(
    features: torch.Tensor, targets: torch.Tensor, num_classes: int, steps: int = 100, weight_decay: float = 1e-3
) -> torch.nn.Module:
    """Logistic regression (standardized inputs, L2 penalty) fitted full-batch with L-BFGS."""
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    linear = torch.nn.Linear(features.shape[1], num_classes)
    torch.nn.init.zeros_(linear.weight)  # the problem is convex: start at zero, same answer every run
    torch.nn.init.zeros_(linear.bias)
    x = (features - mean) / std
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), targets) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.nn.Sequential(_Standardize(mean, std), linear).eval()


class _Standardize(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def scores(task: object, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The task's metrics (the ones training logs), its loss, and the error the diagnosis uses."""
    metrics = {"error": split_error(task, logits, targets)}
    metrics.update({name: float(value) for name, value in task.metrics()(logits, targets).items()})
    metrics["loss"] = float(task.loss(logits, targets))
    return metrics


@torch.no_grad()
def _evaluate(model: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model(features)


def run_baselines(
    task: object,
    datamodule: pl.LightningDataModule,
    feature_size: int = 16,
    steps: int = 100,
    max_train_samples: int | None = 20000,
) -> dict:
    """Both baselines on train/val/test: {"baselines": {name: {split: metrics}}, "best": ...}."""
    num_classes = task.num_classes
    data = {
        split: pixel_features(datamodule, split, feature_size, max_train_samples if split == "train" else None)
        for split in SPLITS
        if split in datamodule.splits
    }
    train_x, train_y = data["train"]
    with torch.enable_grad():  # L-BFGS needs gradients even when called from an inference context
        linear = fit_linear(train_x, train_y, num_classes, steps)
    results: dict[str, dict[str, dict[str, float]]] = {"majority": {}, "linear": {}}
    for split, (x, y) in data.items():
        results["majority"][split] = scores(task, majority_logits(train_y, num_classes, len(y)), y)
        results["linear"][split] = scores(task, _evaluate(linear, x), y)
    best = min(results, key=lambda name: results[name]["val"]["error"])
    return {
        "baselines": results,
        "best": {"name": best, "val_error": results[best]["val"]["error"]},
        "majority_class": task.class_names[int(torch.bincount(train_y, minlength=num_classes).argmax())],
        "feature_size": feature_size,
        "train_samples": len(train_y),
    }


def to_markdown(result: dict) -> str:
    metrics = list(result["baselines"]["majority"]["val"])  # error first, then the task's metrics and loss
    lines = ["| baseline | split | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
    for name, by_split in result["baselines"].items():
        for split, values in by_split.items():
            lines.append(f"| {name} | {split} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
    best = result["best"]
    lines += [
        "",
        f"majority = always `{result['majority_class']}`; linear = logistic regression on "
        f"{result['feature_size']}x{result['feature_size']} pixels ({result['train_samples']} training samples).",
        f"Best baseline on val: {best['name']} (error {best['val_error']:.2%}). The model has to beat it; the "
        "diagnosis uses it as the reference error when no human-level error is configured.",
    ]
    return "\n".join(lines) + "\n"


def latest_result(runs_dir: str | Path) -> tuple[float, str] | None:
    """(best val error, where it comes from) of the newest `baseline` run under runs_dir, if any."""
    found = sorted(Path(runs_dir).glob(f"*/{RESULT_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        return None
    best = json.loads(found[-1].read_text(encoding="utf-8"))["best"]
    return float(best["val_error"]), f"{best['name']} baseline, {found[-1]}"
