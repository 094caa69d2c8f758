"""Baselines: the floor a model has to beat, on the same splits, with the same metrics, loss and error.

- the constant baseline (named by the task, `task.constant_baseline`: "majority", or "mean" for numbers): one
  constant prediction for every sample, the best constant for the task (`task.constant_outputs`): e.g. the most
  frequent training class, each label's training frequency, the training mean;
- linear: a linear model fitted full-batch with the task's own loss on simple features of every input:
  images averaged down to `feature_size` x `feature_size` pixels; the tabular columns as the model gets them
  (standardized numbers, missing-value flags) with one-hot categories; token counts over the most frequent
  tokens; for a numeric series summary statistics and its last MAX_LAGS values (a linear model on the lags,
  an autoregression). A task can see and fit them otherwise (`task.baseline_features`, `task.fit_baselines`:
  a segmentation task fits a per-pixel model on each pixel's colour);
- persistence, for a numeric series and a task that predicts numbers (`task.persistence_outputs`): every target
  is the series' last observed value, in the series' own units ("tomorrow = today", the forecaster's floor).

A network that does not clearly beat the best of them has a bug or is badly under-fit: after every fit (and in
`diagnose`) the diagnosis compares the kept checkpoint with them on val (`compare`) and says so loudly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from .bias_variance import format_error
from .evaluation import Accumulator, SplitEvaluation, eval_dataset, eval_loader

if TYPE_CHECKING:
    from ..tasks import Task

RESULT_FILE = "baseline.json"
COMPARISON_FILE = "baseline_comparison.json"  # the model against the baselines, written after fit and diagnose
SPLITS = ("train", "val", "test")
MAX_TOKENS = 1000  # bag-of-tokens width: the most frequent training tokens (ids are assigned by frequency)
MAX_LAGS = 32  # a numeric series' most recent values the linear baseline sees (the lags of an autoregression)
SERIES_STATISTICS = 5  # a numeric series' features: mean, std, min, max, length, then the lags (the last value first)


class Features(torch.nn.Module):
    """A batch -> [B, D] features for a linear model: every input the model has, flattened simply.

    `inputs`: the data's input specs (`datamodule.input_specs`: name -> spec), which give the one-hot widths; a
    numeric series' spec may carry the train `series_mean` and `series_std` its values were standardized with
    (`baseline_inputs`), which the persistence baseline needs to forecast in the series' units.
    """

    def __init__(
        self,
        inputs: dict[str, dict[str, Any]],
        feature_size: int = 16,
        max_tokens: int = MAX_TOKENS,
        max_lags: int = MAX_LAGS,
    ):
        super().__init__()
        self.inputs = dict(inputs)
        self.feature_size = feature_size
        self.max_tokens = max_tokens
        self.max_lags = max_lags
        self.widths: dict[str, int] = {}  # each input's feature columns, in order (known after the first batch)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        parts = [getattr(self, f"_{name}")(batch[name], self.inputs[name]) for name in sorted(self.inputs)]
        self.widths = {name: part.shape[1] for name, part in zip(sorted(self.inputs), parts, strict=True)}
        return torch.cat([part.float() for part in parts], dim=1)

    def series_last(self) -> tuple[int, float, float] | None:
        """(the feature column holding a numeric series' last value, the series' train mean and std): what the
        persistence baseline reads; None without a numeric series of known scale (or before the first batch)."""
        offset = 0
        for name, width in self.widths.items():
            spec = self.inputs[name]
            if name == "sequence" and spec.get("kind") == "numeric" and "series_std" in spec:
                return offset + SERIES_STATISTICS, float(spec["series_mean"]), float(spec["series_std"])
            offset += width
        return None

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
        statistics = torch.stack([mean, std, low, high, length / mask.shape[1]], dim=1)
        # The lags, most recent first: lag k = the k-th last real step (standardized), 0 before the series starts.
        lag = torch.arange(1, min(self.max_lags, series.shape[1]) + 1, device=series.device)
        steps = real.sum(1).long()[:, None] - lag[None]
        lags = series.gather(1, steps.clamp(min=0)) * (steps >= 0)
        return torch.cat([statistics, lags], dim=1)

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
                lags = min(self.max_lags, int(spec.get("max_length") or self.max_lags))
                parts.append(f"the mean, std, min, max and length of the series and its last {lags} values (lags)")
        return "; ".join(parts)


class Persistence(torch.nn.Module):
    """The persistence forecast: features [B, D] -> the task's outputs [B, K] for every target = the series' last
    value (read from feature `column`, un-standardized with the series' train `mean` and `std`)."""

    def __init__(self, column: int, mean: float, std: float, outputs: Callable[[torch.Tensor], torch.Tensor | None]):
        super().__init__()
        self.column, self.mean, self.std, self.outputs = column, mean, std, outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x[:, self.column].double() * self.std + self.mean)

    @classmethod
    def of(cls, task: Task, featurize: torch.nn.Module) -> Persistence | None:
        """The task's persistence baseline on `featurize`'s features; None without a numeric series of known scale
        or for a task that predicts no numbers (`task.persistence_outputs` gives None)."""
        found = featurize.series_last() if hasattr(featurize, "series_last") else None
        if found is None or task.persistence_outputs(torch.zeros(1)) is None:
            return None
        return cls(*found, task.persistence_outputs)


def baseline_inputs(datamodule: pl.LightningDataModule) -> dict[str, dict[str, Any]]:
    """The data's input specs; a numeric series' with the train mean and std its reader standardized it with
    (`series_mean`, `series_std`), when the reader tells them."""
    specs = {name: dict(spec) for name, spec in datamodule.input_specs.items()}
    readers = getattr(datamodule, "inputs", None)
    for name, spec in specs.items():
        reader = readers.get(name) if isinstance(readers, dict) else None
        if spec.get("kind") == "numeric" and hasattr(reader, "mean") and hasattr(reader, "std"):
            spec.update(series_mean=float(reader.mean), series_std=float(reader.std))
    return specs


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


def log_frequencies(counts: torch.Tensor) -> torch.Tensor:
    """The best constant outputs of one class out of K, from the training class counts [K]: the log frequencies
    (the most frequent class wins; its softmax is the class distribution)."""
    counts = counts.double()
    return (counts / counts.sum()).clamp(min=1e-8).log().float()


def frequency_logits(targets: torch.Tensor) -> torch.Tensor:
    """The best constant outputs of independent 0/1 targets [N] or [N, K]: the logit of each one's training
    frequency."""
    mean = targets.double().reshape(len(targets), -1).mean(0)
    return torch.logit(mean.clamp(1e-6, 1 - 1e-6)).float()


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


class FeatureBatches:
    """(features, targets, ids) of a split, batch by batch, read once: flat features [B, D] are small and kept for
    the next pass; per-pixel features [B, D, H, W] (whole images) are read again instead."""

    def __init__(
        self,
        datamodule: pl.LightningDataModule,
        featurize: torch.nn.Module,
        max_train_samples: int | None,
        splits: tuple[str, ...] = SPLITS,
    ):
        self.datamodule, self.featurize = datamodule, featurize
        self.splits = [split for split in splits if split in datamodule.splits]
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
            if item[0].dim() == 2:
                kept.append(item)
            yield item
        if kept:
            self.kept[split] = kept


def run_baselines(
    task: Task,
    datamodule: pl.LightningDataModule,
    feature_size: int = 16,
    steps: int = 100,
    max_train_samples: int | None = 20000,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, Any]:
    """The baselines on `splits` (train and val at least): {"baselines": {name: {split: scores}}, "best": ...,
    "descriptions": ...}.

    The bound task decides what they see and how they are fitted (`task.baseline_features`, `task.fit_baselines`);
    the persistence baseline joins them for a numeric series when the task predicts numbers.
    """
    featurize = task.baseline_features(baseline_inputs(datamodule), feature_size)
    batches = FeatureBatches(datamodule, featurize, max_train_samples, splits)
    models = task.fit_baselines(batches("train"), steps)
    descriptions = {
        task.constant_baseline: task.describe_constant(models[task.constant_baseline].outputs),
        "linear": f"{task.linear_baseline} on {featurize.describe()}, fitted with the task's loss",
    }
    persistence = Persistence.of(task, featurize)
    if persistence is not None:
        models["persistence"] = persistence
        descriptions["persistence"] = "every target = the series' last observed value (in its own units)"
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
    return {
        "task": task.name,
        "error": task.error_meaning,
        "baselines": results,
        "best": {"name": best, "val_error": results[best]["val"]["error"]},
        "majority_class": task.majority_class(models[task.constant_baseline].outputs),
        "descriptions": descriptions,
        "feature_size": feature_size,
        "train_samples": len(batches.datasets["train"]),
        "data_fingerprint": getattr(datamodule, "fingerprint", None),
        "setup": setup_key(task, datamodule),
    }


def setup_key(task: Task, datamodule: pl.LightningDataModule) -> str:
    """What makes two baseline results comparable beyond the rows (the data fingerprint): the task, its targets
    and what the inputs hold (columns, lengths, vocabulary sizes)."""
    specs = getattr(datamodule, "input_specs", {})
    text = json.dumps([task.name, task.class_names, specs], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def scores(evaluation: SplitEvaluation) -> dict[str, float]:
    """The error the diagnosis uses, the task's metrics (the ones training logs) and the mean per-sample loss."""
    return {"error": evaluation.error, **evaluation.metrics, "loss": float(evaluation.losses.mean())}


def to_markdown(result: dict[str, Any], task: Task) -> str:
    """The report of `run_baselines`' result for `task` (which writes its error)."""
    metrics = list(next(iter(result["baselines"].values()))["val"])  # error first, the task's metrics, loss
    lines = ["| baseline | split | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
    for name, by_split in result["baselines"].items():
        for split, values in by_split.items():
            lines.append(f"| {name} | {split} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
    best, descriptions = result["best"], result["descriptions"]
    error = format_error(best["val_error"], task.error_is_rate)
    lines += [
        "",
        f"error: {result.get('error', 'the task error')}.",
        "",
        *(f"- {name}: {text}." for name, text in descriptions.items()),
        "",
        f"Fitted on {result['train_samples']} training samples.",
        "",
        f"Best baseline on val: {best['name']} (error {error}). The model has to beat it; the diagnosis uses it as "
        "the reference error when no human-level error is configured.",
    ]
    return "\n".join(lines) + "\n"


def latest_result(runs_dir: str | Path) -> tuple[float, str] | None:
    """(best val error, where it comes from) of the newest `baseline` run under runs_dir, if any."""
    found = sorted(Path(runs_dir).glob(f"*/{RESULT_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        return None
    best = json.loads(found[-1].read_text(encoding="utf-8"))["best"]
    return float(best["val_error"]), f"{best['name']} baseline, {found[-1]}"


def find_result(runs_dir: str | Path, task: Task, datamodule: pl.LightningDataModule) -> tuple[dict, Path] | None:
    """The newest `baseline` run's result (and its file) on the same data and setup, if any."""
    fingerprint, setup = getattr(datamodule, "fingerprint", None), setup_key(task, datamodule)
    if not fingerprint:
        return None
    for path in sorted(Path(runs_dir).glob(f"*/{RESULT_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if result.get("data_fingerprint") == fingerprint and result.get("setup") == setup:
            return result, path
    return None


def compare(model: dict[str, float], result: dict[str, Any], task: Task, hints: str = "") -> dict[str, Any]:
    """The model's val metrics against every baseline's, on the task's optimizing metric (`task.monitor`, `mode`).

    Returns what baseline_comparison.json holds: the metric, the model's and each baseline's val value, the best
    baseline, the verdict ("better", "tied" or "worse") and, when worse, the one-line `warning` with `hints` (what
    to try) appended.
    """
    metric, mode = task.monitor, task.mode
    scores = {name: float(by_split["val"][metric]) for name, by_split in result["baselines"].items()}
    finite = {name: value for name, value in scores.items() if math.isfinite(value)} or scores
    best = (max if mode == "max" else min)(finite, key=finite.get)
    value, reference = float(model[metric]), scores[best]
    sign = 1.0 if mode == "max" else -1.0
    if not math.isfinite(value) or sign * (value - reference) < 0:
        verdict = "worse"
    else:
        verdict = "better" if sign * (value - reference) > 0 else "tied"
    warning = None
    if verdict == "worse":
        warning = f"WARNING: the model (val {metric} {value:.4g}) is worse than the {best} baseline ({reference:.4g})"
        warning += f": {hints}" if hints else ""
    return {
        "metric": f"val/{metric}",
        "mode": mode,
        "model": value,
        "baselines": scores,
        "best_baseline": best,
        "verdict": verdict,
        "warning": warning,
    }
