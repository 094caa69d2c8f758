"""Baselines: the floor a model has to beat, on the same splits, with the same metrics, loss and error.

- majority: one constant prediction for every sample, the best constant for the task: the most frequent
  training class (multiclass, binary; segmentation: the most frequent pixel class), each label's training
  frequency (multilabel), the training mean (regression);
- linear: a linear model fitted full-batch with the task's own loss on simple features of every input:
  images averaged down to `feature_size` x `feature_size` pixels; the tabular columns as the model gets them
  (standardized numbers, missing-value flags) with one-hot categories; token counts over the most frequent
  tokens, or summary statistics of a numeric series. Segmentation: a per-pixel linear model on the colour of
  each pixel (a 1x1 convolution).

A network that does not clearly beat the linear baseline has a bug or is badly under-fit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from .bias_variance import ERROR_MEANINGS, format_error
from .evaluation import Accumulator, SplitEvaluation, eval_dataset, eval_loader

RESULT_FILE = "baseline.json"
SPLITS = ("train", "val", "test")
MAX_TOKENS = 1000  # bag-of-tokens width: the most frequent training tokens (ids are assigned by frequency)
PIXELS_PER_IMAGE = 256  # segmentation: training pixels sampled per image to fit the per-pixel model
CLASS_TASKS = ("multiclass", "segmentation")  # one class per sample / pixel: constant = log class frequencies
PROBABILITY_TASKS = ("binary", "multilabel")  # independent 0/1 targets: constant = logit of their frequency


class Features(torch.nn.Module):
    """A batch -> [B, D] features for a linear model: every input the model has, flattened simply.

    `inputs`: the data's input specs (`datamodule.input_specs`: name -> spec), which give the one-hot widths.
    """

    def __init__(self, inputs: dict[str, dict[str, Any]], feature_size: int = 16, max_tokens: int = MAX_TOKENS):
        super().__init__()
        self.inputs = dict(inputs)
        self.feature_size = feature_size
        self.max_tokens = max_tokens

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        parts = [getattr(self, f"_{name}")(batch[name], self.inputs[name]) for name in sorted(self.inputs)]
        return torch.cat([part.float() for part in parts], dim=1)

    def _image(self, image: torch.Tensor, spec: dict[str, Any]) -> torch.Tensor:
        return F.adaptive_avg_pool2d(image.float(), self.feature_size).flatten(1)

    def _tabular(self, tabular: dict[str, torch.Tensor], spec: dict[str, Any]) -> torch.Tensor:
        # numeric: already standardized with train statistics, followed by the is-missing flags.
        parts = [tabular["numeric"]]
        for k, cardinality in enumerate(spec.get("categorical", [])):
            parts.append(F.one_hot(tabular["categorical"][:, k], cardinality))  # index 0: missing or unseen
        return torch.cat([part.float() for part in parts], dim=1)

    def _sequence(self, sequence: dict[str, torch.Tensor], spec: dict[str, Any]) -> torch.Tensor:
        values, mask = sequence["values"], sequence["mask"]
        if spec.get("kind") == "tokens":
            # Token counts: ids past the cap (rarer tokens: ids follow frequency) count as unknown (1); padding drops.
            width = min(int(spec["vocab_size"]), self.max_tokens)
            ids = torch.where(values < width, values, torch.ones_like(values))
            counts = torch.zeros(len(ids), width, device=ids.device)
            counts.scatter_add_(1, ids, mask.float())
            return counts[:, 1:]
        series, real = values[..., 0].float(), mask.float()
        length = real.sum(1).clamp(min=1)
        mean = (series * real).sum(1) / length
        std = (((series - mean[:, None]) ** 2 * real).sum(1) / length).sqrt()
        low = series.masked_fill(~mask, math.inf).amin(1)
        high = series.masked_fill(~mask, -math.inf).amax(1)
        last = series.gather(1, (real.sum(1).long() - 1).clamp(min=0)[:, None])[:, 0]
        return torch.stack([mean, std, low, high, last, length / mask.shape[1]], dim=1)

    def describe(self) -> str:
        parts = []
        for name in sorted(self.inputs):
            spec = self.inputs[name]
            if name == "image":
                parts.append(f"images averaged down to {self.feature_size}x{self.feature_size} pixels")
            elif name == "tabular":
                parts.append("the tabular columns (standardized numbers, missing-value flags, one-hot categories)")
            elif spec.get("kind") == "tokens":
                width = min(int(spec["vocab_size"]), self.max_tokens) - 2
                parts.append(f"counts of the {width} most frequent training tokens (+ unknown)")
            else:
                parts.append("the mean, std, min, max, last value and length of the series")
        return "; ".join(parts)


class PixelFeatures(torch.nn.Module):
    """A batch -> its normalized images [B, 3, H, W]: each pixel's colour is its feature vector."""

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["image"].float()

    def describe(self) -> str:
        return "the colour of each pixel (a 1x1 convolution on the normalized image)"


class Linear(torch.nn.Module):
    """Standardize the features (train mean and std), then one linear layer; `pixelwise`: per pixel of [B, D, H, W]."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, linear: torch.nn.Linear, pixelwise: bool = False):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = linear
        self.pixelwise = pixelwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pixelwise:
            return self.linear((x.movedim(1, -1) - self.mean) / self.std).movedim(-1, 1)
        return self.linear((x - self.mean) / self.std)


class Constant(torch.nn.Module):
    """The same outputs for every sample (and pixel): [K] -> [B, K] (or [B, K, H, W] for [B, D, H, W] inputs)."""

    def __init__(self, outputs: torch.Tensor):
        super().__init__()
        self.register_buffer("outputs", outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2:
            return self.outputs.view(1, -1, 1, 1).expand(len(x), -1, *x.shape[2:])
        return self.outputs.expand(len(x), -1)


def constant_outputs(
    task_type: str, targets: torch.Tensor, num_outputs: int, from_counts: bool = False
) -> torch.Tensor:
    """The best constant outputs [K] for the train targets: log class frequencies (multiclass, segmentation: the
    argmax is the most frequent class), logits of the label frequencies (binary, multilabel), the mean (regression).

    `from_counts`: `targets` are already the class counts [K] (segmentation counts its pixels batch by batch).
    """
    if task_type in CLASS_TASKS:
        counts = targets if from_counts else torch.bincount(targets.flatten().long(), minlength=num_outputs)
        counts = counts.double()
        return (counts / counts.sum()).clamp(min=1e-8).log().float()
    mean = targets.double().reshape(len(targets), -1).mean(0)
    if task_type in PROBABILITY_TASKS:
        return torch.logit(mean.clamp(1e-6, 1 - 1e-6)).float()
    return mean.float()


def fit_linear(
    features: torch.Tensor,
    targets: torch.Tensor,
    num_outputs: int,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    steps: int = 100,
    weight_decay: float = 1e-3,
    pixelwise: bool = False,
) -> Linear:
    """A linear model on standardized features, fitted full-batch with L-BFGS on `loss` + an L2 penalty."""
    mean = features.mean(0)
    std = features.std(0) if len(features) > 1 else torch.ones_like(mean)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant feature is only centred
    linear = torch.nn.Linear(features.shape[1], num_outputs)
    torch.nn.init.zeros_(linear.weight)  # convex for every task's loss here: start at zero, same answer every run
    torch.nn.init.zeros_(linear.bias)
    x = (features - mean) / std
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss(linear(x), targets) + weight_decay * linear.weight.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():  # L-BFGS needs gradients even when called from an inference context
        optimizer.step(closure)
    return Linear(mean, std, linear, pixelwise).eval()


def _pixel_sample(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple:
    """Up to PIXELS_PER_IMAGE random pixels of every image: colours [P, 3] and their classes [P]."""
    pixels = images.movedim(1, -1).flatten(1, 2)  # [B, H*W, 3]
    classes = masks.flatten(1)  # [B, H*W]
    n = min(PIXELS_PER_IMAGE, classes.shape[1])
    index = torch.stack([torch.randperm(classes.shape[1], generator=generator)[:n] for _ in range(len(images))])
    colours = pixels.gather(1, index[..., None].expand(-1, -1, pixels.shape[-1]))
    return colours.flatten(0, 1), classes.gather(1, index).flatten()


class FeatureBatches:
    """(features, targets, ids) of a split, batch by batch, read once: flat features are small and kept for the
    next pass; pixel features (whole images) are read again instead."""

    def __init__(self, datamodule: pl.LightningDataModule, featurize: torch.nn.Module, max_train_samples: int | None):
        self.datamodule, self.featurize = datamodule, featurize
        self.keep = not isinstance(featurize, PixelFeatures)
        self.splits = [split for split in SPLITS if split in datamodule.splits]
        self.datasets = {
            split: eval_dataset(datamodule, split, max_train_samples if split == "train" else None)
            for split in self.splits
        }
        self.kept: dict[str, list[tuple[torch.Tensor, torch.Tensor, list[str]]]] = {}

    @torch.no_grad()
    def __call__(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        if split in self.kept:
            yield from self.kept[split]
            return
        kept = []
        for batch in eval_loader(self.datamodule, self.datasets[split]):
            item = (self.featurize(batch), batch["target"], list(batch["id"]))
            if self.keep:
                kept.append(item)
            yield item
        if self.keep:
            self.kept[split] = kept


def fit_baselines(task: Any, task_type: str, train: Iterable[tuple], steps: int = 100) -> dict[str, torch.nn.Module]:
    """The constant and the linear model, from the train batches of FeatureBatches."""
    if task_type != "segmentation":
        features, targets = zip(*((x, y) for x, y, _ in train), strict=True)
        x, y = torch.cat(features), torch.cat(targets)
        linear = fit_linear(x, y, task.num_outputs, task.loss, steps)
        return {"majority": Constant(constant_outputs(task_type, y, task.num_outputs)), "linear": linear}
    # Segmentation: every pixel counts for the class frequencies; a sample of them fits the per-pixel model,
    # scored with the task's loss on 1x1 "images".
    generator = torch.Generator().manual_seed(0)
    colours, classes, counts = [], [], torch.zeros(task.num_outputs, dtype=torch.long)
    for images, masks, _ in train:
        pixels, labels = _pixel_sample(images, masks, generator)
        colours.append(pixels)
        classes.append(labels)
        counts += torch.bincount(masks.flatten(), minlength=task.num_outputs)

    def loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return task.loss(outputs[:, :, None, None], target[:, None, None])

    linear = fit_linear(torch.cat(colours), torch.cat(classes), task.num_outputs, loss, steps, pixelwise=True)
    return {
        "majority": Constant(constant_outputs(task_type, counts, task.num_outputs, from_counts=True)),
        "linear": linear,
    }


def run_baselines(
    task: Any,
    datamodule: pl.LightningDataModule,
    feature_size: int = 16,
    steps: int = 100,
    max_train_samples: int | None = 20000,
) -> dict[str, Any]:
    """Both baselines on train/val/test: {"baselines": {name: {split: scores}}, "best": ..., "descriptions": ...}."""
    task_type = datamodule.hparams.task
    featurize = PixelFeatures() if task_type == "segmentation" else Features(datamodule.input_specs, feature_size)
    batches = FeatureBatches(datamodule, featurize, max_train_samples)
    models = fit_baselines(task, task_type, batches("train"), steps)
    results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in models}
    for split in batches.splits:
        accumulators = {name: Accumulator(task, split, task.metrics()) for name in models}
        with torch.no_grad():
            for features, target, ids in batches(split):
                for name, model in models.items():
                    accumulators[name].update(model(features), target, ids)
        for name, accumulator in accumulators.items():
            results[name][split] = scores(accumulator.result())
    best = min(results, key=lambda name: results[name]["val"]["error"])
    constant = models["majority"].outputs
    majority_class = None
    if task_type in CLASS_TASKS:
        majority_class = task.class_names[int(constant.argmax())]
    elif task_type == "binary":
        majority_class = task.class_names[int(constant.item() > 0)]
    return {
        "task": task_type,
        "error": ERROR_MEANINGS.get(task_type, "the task's error"),
        "baselines": results,
        "best": {"name": best, "val_error": results[best]["val"]["error"]},
        "majority_class": majority_class,
        "descriptions": {
            "majority": describe_constant(task_type, task, constant),
            "linear": f"{linear_kind(task_type)} on {featurize.describe()}, fitted with the task's loss",
        },
        "feature_size": feature_size,
        "train_samples": len(batches.datasets["train"]),
    }


def scores(evaluation: SplitEvaluation) -> dict[str, float]:
    """The error the diagnosis uses, the task's metrics (the ones training logs) and the mean per-sample loss."""
    return {"error": evaluation.error, **evaluation.metrics, "loss": float(evaluation.losses.mean())}


def linear_kind(task_type: str) -> str:
    if task_type == "regression":
        return "linear regression"
    return "per-pixel logistic regression" if task_type == "segmentation" else "logistic regression"


def describe_constant(task_type: str, task: Any, constant: torch.Tensor) -> str:
    names = task.class_names
    if task_type == "multiclass":
        return f"always `{names[int(constant.argmax())]}`, the most frequent training class"
    if task_type == "segmentation":
        return f"every pixel `{names[int(constant.argmax())]}`, the most frequent training pixel class"
    if task_type == "binary":
        p = float(constant.sigmoid())
        return f"always `{names[int(p > 0.5)]}` (P({names[1]}) = {p:.3f}, its training frequency)"
    if task_type == "multilabel":
        frequencies = ", ".join(f"{n} {p:.2f}" for n, p in zip(names, constant.sigmoid().tolist(), strict=True))
        return f"each label's training frequency as its probability ({frequencies})"
    values = task.activation(constant[None])[0].tolist()  # back to the target's units
    means = ", ".join(f"{n} {v:.4g}" for n, v in zip(names, values, strict=True))
    return f"the training mean of every target ({means})"


def to_markdown(result: dict[str, Any]) -> str:
    task_type = result.get("task", "multiclass")
    metrics = list(result["baselines"]["majority"]["val"])  # error first, then the task's metrics and loss
    lines = ["| baseline | split | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
    for name, by_split in result["baselines"].items():
        for split, values in by_split.items():
            lines.append(f"| {name} | {split} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
    best, descriptions = result["best"], result["descriptions"]
    lines += [
        "",
        f"error: {result.get('error', 'the task error')}.",
        "",
        f"- majority: {descriptions['majority']}.",
        f"- linear: {descriptions['linear']} ({result['train_samples']} training samples).",
        "",
        f"Best baseline on val: {best['name']} (error {format_error(best['val_error'], task_type)}). The model has "
        "to beat it; the diagnosis uses it as the reference error when no human-level error is configured.",
    ]
    return "\n".join(lines) + "\n"


def latest_result(runs_dir: str | Path) -> tuple[float, str] | None:
    """(best val error, where it comes from) of the newest `baseline` run under runs_dir, if any."""
    found = sorted(Path(runs_dir).glob(f"*/{RESULT_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        return None
    best = json.loads(found[-1].read_text(encoding="utf-8"))["best"]
    return float(best["val_error"]), f"{best['name']} baseline, {found[-1]}"
