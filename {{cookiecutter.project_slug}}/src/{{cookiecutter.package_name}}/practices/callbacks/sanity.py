"""Checks that run once, before the first training step, and catch the bugs that waste a whole run.

- loss at initialization: an untrained network should predict about uniformly, so its loss on the first batch
  should be near the task's chance loss (ln C for C classes, ln 2 per label, 1.0 for standardized regression);
  far above means it starts confidently wrong, far below means the answer leaks into the input;
- the input batch, every tensor of every input (nested ones too: `tabular.numeric`, `sequence.values`): NaN/Inf,
  value range and per-channel mean/std of float inputs (raw pixels, normalization missing or applied twice);
  index inputs (categories, token ids) must be >= 0 and fit the model's embeddings;
- the labels (classification): class counts per split, classes missing from a split, class imbalance;
- leakage: identical samples in more than one split (image files by content hash, other inputs by their values);
- a grid of denormalized training images with their targets (segmentation: the mask over the image),
  `sample_batch.png` in the run folder, when the input has images.

Each problem is one warning (`rank_zero_warn`) naming what was found; a summary block is printed either way.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw, ImageFont
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_warn

from ...data.table import Row

GRID_FILE = "sample_batch.png"
TARGET_KEY = "target"
ID_KEY = "id"


@dataclass
class CheckResult:
    """One line of the summary, and the problems (each also a warning)."""

    name: str
    summary: str
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- loss at init
def init_loss(module: pl.LightningModule, batch: dict[str, Any]) -> float:
    """The task loss of `module` on `batch` in eval mode (no dropout, no BatchNorm statistics updated)."""
    modes = {m: m.training for m in module.modules()}  # restored exactly: some parts may be frozen in eval mode
    module.eval()
    try:
        with torch.no_grad():
            return float(module.task.loss(module(batch), batch[TARGET_KEY]))
    finally:
        for m, training in modes.items():
            m.train(training)


def chance_for_batch(task: Any, target: torch.Tensor) -> tuple[float, str]:
    """The task's chance loss for this batch, and a note when it differs from `task.chance_loss`.

    A binary task with `pos_weight` weighs each positive sample's loss by it, so a 50/50 prediction costs
    ln 2 x the batch's mean sample weight, not ln 2.
    """
    chance = float(task.chance_loss)
    pos_weight = getattr(task, "pos_weight", None)
    if pos_weight is None or pos_weight == 1 or not torch.is_tensor(target) or target.numel() == 0:
        return chance, ""
    weight = float(torch.where(target.float() > 0.5, float(pos_weight), 1.0).mean())
    note = (
        f"pos_weight {pos_weight:g}: chance differs from ln 2, it is ln 2 x the batch's mean sample weight "
        f"{weight:.3g} = {chance * weight:.4f}"
    )
    return chance * weight, note


def check_init_loss(loss: float, chance: float, low: float = 0.5, high: float = 1.5, note: str = "") -> CheckResult:
    ratio = loss / chance if chance > 0 else math.inf
    summary = f"{loss:.4f} vs chance {chance:.4f}: ratio {ratio:.2f}" + (f" ({note})" if note else "")
    result = CheckResult("init loss", summary)
    if ratio > high:
        result.problems.append(
            f"loss at initialization {loss:.4f} is {ratio:.1f}x the chance loss {chance:.4f}: the network starts "
            "confidently wrong. Check the last layer's initialization (small weights, zero bias), that the loss gets "
            "logits (not probabilities) and that targets match the outputs"
        )
    elif ratio < low:
        result.problems.append(
            f"loss at initialization {loss:.4f} is only {ratio:.2f}x the chance loss {chance:.4f}: an untrained "
            "network should not beat chance. Check that the target does not leak into the inputs and what the loss "
            "compares"
        )
    return result


# ----------------------------------------------------------------------------------------------------- inputs
def _fmt(values: torch.Tensor) -> str:
    values = values.tolist()
    if len(values) <= 4:
        return ", ".join(f"{v:.3g}" for v in values)
    return f"{min(values):.3g}..{max(values):.3g}"


def input_tensors(batch: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, torch.Tensor, Mapping]]:
    """(dotted name, tensor, the dict holding it) of every input tensor, nested dicts included; no target, no ids."""
    for key, value in batch.items():
        if not prefix and key in (TARGET_KEY, ID_KEY):
            continue
        if isinstance(value, Mapping):
            yield from input_tensors(value, f"{prefix}{key}.")
        elif torch.is_tensor(value):
            yield f"{prefix}{key}", value, batch


def index_limits(specs: Mapping[str, Mapping[str, Any]] | None) -> dict[str, int | list[int]]:
    """Embedding sizes the model was built with, per index input: `tabular.categorical` (one per column) and
    `sequence.values` (the vocabulary), from the input specs (the module's `inputs`, contract.py)."""
    limits: dict[str, int | list[int]] = {}
    specs = specs or {}
    if isinstance(specs.get("tabular"), Mapping) and specs["tabular"].get("categorical") is not None:
        limits["tabular.categorical"] = [int(size) for size in specs["tabular"]["categorical"]]
    if isinstance(specs.get("sequence"), Mapping) and specs["sequence"].get("vocab_size") is not None:
        limits["sequence.values"] = int(specs["sequence"]["vocab_size"])
    return limits


def _check_indices(name: str, x: torch.Tensor, limit: int | Sequence[int] | None) -> tuple[str, list[str]]:
    low, high = int(x.min()), int(x.max())
    problems = []
    if low < 0:
        problems.append(f"input '{name}' holds negative indices (min {low}): embedding indices start at 0")
    if isinstance(limit, int) and high >= limit:
        problems.append(
            f"input '{name}' holds index {high} but the model's embedding has {limit} entries (0..{limit - 1}): "
            "the model was built for other data (e.g. a different vocabulary)"
        )
    elif isinstance(limit, Sequence) and x.ndim >= 1 and len(limit) == x.shape[-1]:
        highs = x.reshape(-1, x.shape[-1]).amax(dim=0).tolist()
        over = [(k, h, size) for k, (h, size) in enumerate(zip(highs, limit, strict=True)) if h >= size]
        if over:
            shown = ", ".join(f"column {k}: index {h} >= {size} entries" for k, h, size in over)
            problems.append(f"input '{name}' does not fit the model's embeddings ({shown}): built for other data?")
    return f"{name} {x.dtype} {list(x.shape)} range [{low}, {high}]", problems


def check_inputs(
    batch: Mapping[str, Any],
    max_abs_mean: float = 3.0,
    max_std: float = 5.0,
    min_std: float = 0.2,
    limits: Mapping[str, int | Sequence[int]] | None = None,
) -> CheckResult:
    """Statistics of every input tensor of the batch (nested dicts too); problems when they look wrong.

    Float inputs, per channel (images: dim 1; tables [B, F]: each feature; series [B, T, C]: each channel over
    the real steps of the sibling `mask`): after mean/std normalization channel means are near 0 and standard
    deviations near 1. Raw pixels give means of about 100; images only scaled to [0, 1] have no negative
    values; scaling twice (e.g. dividing by 255 twice) leaves every channel with a tiny spread.
    Integer inputs are indices (categories, token ids): they must be >= 0 and below the embedding sizes in
    `limits` (dotted name -> size, or one size per last-dim column). Boolean masks need a real step per sample.
    """
    lines, problems = [], []
    limits = limits or {}
    for name, x, parent in input_tensors(batch):
        shape = list(x.shape)
        if x.dtype == torch.bool:
            lines.append(f"{name} bool {shape}")
            if x.ndim == 2 and x.numel() and not bool(x.any(dim=1).all()):
                empty = int((~x.any(dim=1)).sum())
                problems.append(f"input '{name}': {empty} samples have no real step (all padding)")
            continue
        if x.numel() == 0:
            lines.append(f"{name} {x.dtype} {shape} (empty)")
            continue
        if not x.is_floating_point():
            if x.ndim == 4:  # images; integer indices (categories, token ids) are fine
                problems.append(f"input '{name}' has dtype {x.dtype}: convert images to float and normalize them")
                lines.append(f"{name} {x.dtype} {shape}")
                continue
            line, found = _check_indices(name, x, limits.get(name))
            lines.append(line)
            problems += found
            continue
        x = x.detach().float()
        finite = torch.isfinite(x)
        if not finite.all():
            nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
            problems.append(f"input '{name}' holds {nan} NaN and {inf} Inf values in the first training batch")
            lines.append(f"{name} {x.dtype} {shape}: {nan} NaN, {inf} Inf")
            continue
        values, image = x, x.ndim == 4
        mask = parent.get("mask") if isinstance(parent, Mapping) else None
        if torch.is_tensor(mask) and mask.dtype == torch.bool and mask is not x and x.shape[: mask.ndim] == mask.shape:
            values = x[mask]  # real steps only: padding would pull the mean to 0 and the std down
        if values.numel() == 0:
            lines.append(f"{name} {x.dtype} {shape} (no real steps)")
            continue
        values = values.unsqueeze(1) if values.ndim == 1 else values  # [B] -> one channel
        channel = 1 if values.ndim in (2, 4) else values.ndim - 1  # [B, C, H, W], [B, F]; [B, T, C] unmasked
        dims = [d for d in range(values.ndim) if d != channel]
        mean, std = values.mean(dim=dims), values.std(dim=dims, correction=0)
        low, high = float(values.min()), float(values.max())
        lines.append(f"{name} {x.dtype} {shape} range [{low:.3g}, {high:.3g}] mean {_fmt(mean)} std {_fmt(std)}")
        found = []
        if image and low >= 0 and 1.0 < high <= 255:
            found.append(f"values in [0, 255] (max {high:.3g}): raw pixel values")
        elif image and low >= 0 and high <= 1.0:
            found.append("values in [0, 1] and none negative: scaled but not mean/std normalized")
        off = ((mean.abs() > max_abs_mean) | (std > max_std)).nonzero().flatten().tolist()
        if off:
            channels = ", ".join(map(str, off[:8])) + (" ..." if len(off) > 8 else "")
            found.append(f"channel means {_fmt(mean)} / stds {_fmt(std)}, off in channels {channels} (expected 0 / 1)")
        if found:
            problems.append(f"input '{name}' looks unnormalized: " + "; ".join(found))
        elif (std < min_std).all() and len(values) > 1:
            problems.append(
                f"input '{name}' looks normalized twice: every channel's std is below {min_std} ({_fmt(std)}); "
                "is the input scaled or normalized a second time?"
            )
    return CheckResult("inputs", "; ".join(lines) or "no tensors besides the target", problems)


# ----------------------------------------------------------------------------------------------------- labels
def _name(class_names: Sequence[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else str(label)


def check_labels(
    labels: Mapping[str, Sequence[int]], class_names: Sequence[str], max_imbalance: float = 10.0
) -> CheckResult:
    """Class counts per split, classes missing from a split, imbalance (largest / smallest class count).

    `labels`: split -> the class index of every sample (`DataModule.labels(split)`).
    """
    parts, problems = [], []
    for split in sorted(labels, key=_split_order):
        counts = Counter(labels[split])
        if not counts:
            parts.append(f"{split} 0")
            continue
        missing = [name for i, name in enumerate(class_names) if counts[i] == 0]
        present = [n for n in counts.values() if n > 0]
        ratio = max(present) / min(present)
        parts.append(f"{split} {len(labels[split])} ({len(present)} classes, imbalance {ratio:.1f})")
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            problems.append(f"classes missing from {split}: {shown} ({len(missing)} of {len(class_names)})")
        if ratio > max_imbalance:
            most, least = max(counts, key=counts.__getitem__), min(counts, key=counts.__getitem__)
            problems.append(
                f"{split} is imbalanced: {_name(class_names, most)} has {counts[most]} samples, "
                f"{_name(class_names, least)} {counts[least]} "
                f"(ratio {ratio:.1f} > {max_imbalance:g}); consider class weights or a weighted sampler"
            )
    return CheckResult("labels", ", ".join(parts), problems)


# ---------------------------------------------------------------------------------------------------- leakage
Splits = Mapping[str, Sequence[Row]]


def _digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _values_digest(row: Row, columns: Sequence[str]) -> str:
    values = [row.values.get(column, "").strip() for column in columns]
    return hashlib.blake2b(json.dumps(values).encode(), digest_size=16).hexdigest()


def find_leaks(
    splits: Splits, image_column: str | None = None, columns: Sequence[str] = ()
) -> list[tuple[str, Row, str, Row]]:
    """Pairs of identical samples in two different splits: (split, row, other split, other row).

    A sample is its image file's bytes (when there is an `image_column`) and the values of the other input
    `columns` (never the target). Image files are read and hashed only when their size and the other values
    match a sample of another split: identical content needs identical size, so few files are read.
    """
    candidates: dict[tuple[int | None, str], list[tuple[str, Row]]] = defaultdict(list)
    for split, rows in splits.items():
        for row in rows:
            size = row.path(image_column).stat().st_size if image_column else None
            candidates[(size, _values_digest(row, columns))].append((split, row))
    file_digests: dict[Path, str] = {}
    groups: dict[tuple[str, str], list[tuple[str, Row]]] = defaultdict(list)
    for (_, values), samples in candidates.items():
        if len({split for split, _ in samples}) < 2:
            continue
        for split, row in samples:
            content = ""
            if image_column:
                path = row.path(image_column)
                content = file_digests.get(path) or file_digests.setdefault(path, _digest(path))
            groups[(content, values)].append((split, row))
    leaks = []
    for samples in groups.values():
        samples.sort(key=lambda sample: (_split_order(sample[0]), sample[1].where()))  # train first
        for i, (split_a, row_a) in enumerate(samples):
            for split_b, row_b in samples[i + 1 :]:
                if split_a != split_b:
                    leaks.append((split_a, row_a, split_b, row_b))
    return sorted(
        leaks, key=lambda leak: (_split_order(leak[0]), leak[1].where(), _split_order(leak[2]), leak[3].where())
    )


def _split_order(split: str) -> tuple[int, str]:
    return (("train", "train_dev", "val", "test") + (split,)).index(split), split


def _describe(row: Row, image_column: str | None) -> str:
    """Where a sample is: its CSV line (and image file), or its image file in the class-folder layout."""
    if image_column and row.line:
        return f"{row.where()} ({row.path(image_column)})"
    return row.where()


def check_leakage(
    splits: Splits, image_column: str | None = None, columns: Sequence[str] = (), max_pairs: int = 5
) -> CheckResult:
    leaks = find_leaks(splits, image_column, columns)
    samples = sum(len(rows) for rows in splits.values())
    how = " + ".join(
        (["image file bytes (blake2b)"] if image_column else [])
        + ([f"{len(columns)} input column{'s' if len(columns) > 1 else ''}"] if columns else [])
    )
    result = CheckResult("leakage", f"{samples} samples compared by {how or 'nothing'}: {len(leaks)} identical pairs")
    if leaks:
        shown = "; ".join(
            f"{a}: {_describe(ra, image_column)} == {b}: {_describe(rb, image_column)}"
            for a, ra, b, rb in leaks[:max_pairs]
        )
        more = f" (and {len(leaks) - max_pairs} more)" if len(leaks) > max_pairs else ""
        result.problems.append(f"{len(leaks)} samples appear in more than one split (leakage): {shown}{more}")
    return result


def input_columns(datamodule: Any) -> tuple[str | None, list[str]]:
    """The image column (None without images) and the other input columns of the project's DataModule."""
    inputs = getattr(datamodule, "inputs", {}) or {}
    image_column = getattr(inputs.get("image"), "column", None)
    columns = datamodule.input_columns() if hasattr(datamodule, "input_columns") else []
    return image_column, [column for column in columns if column]


# ------------------------------------------------------------------------------------------------ sample grid
def denormalize(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """[N, C, H, W] normalized images -> [N, 3, H, W] in [0, 1] (per-image min-max without mean/std)."""
    images = images.detach().float().cpu()
    if mean is not None and std is not None and len(mean) == images.shape[1]:
        images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    else:
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-8)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images[:, :3].clamp(0, 1)


def class_colours(num_classes: int) -> torch.Tensor:
    """[C, 3] colours in [0, 1]: class 0 (usually background) black, the others well apart in hue."""
    colours = [(0.0, 0.0, 0.0)] + [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.9, 1.0) for i in range(num_classes - 1)]
    return torch.tensor(colours[: max(1, num_classes)], dtype=torch.float32)


def mask_overlay(images: torch.Tensor, masks: torch.Tensor, num_classes: int, alpha: float = 0.5) -> torch.Tensor:
    """Each image next to itself with its mask blended in: [N, 3, H, W] + [N, H, W] -> [N, 3, H, 2W]."""
    masks = masks.detach().cpu().long()
    num_classes = max(num_classes, int(masks.max()) + 1 if masks.numel() else 1)
    coloured = class_colours(num_classes)[masks.clamp_min(0)].permute(0, 3, 1, 2)  # [N, 3, H, W]
    return torch.cat([images, (1 - alpha) * images + alpha * coloured], dim=3)


def grid_titles(
    targets: Any, class_names: Sequence[str], target_stats: Mapping[str, Sequence[float]] | None = None
) -> list[str] | None:
    """A caption per sample from its target: class name (multiclass, binary), the positive labels (multilabel),
    the values in target units (regression), the classes present (segmentation masks)."""
    if not torch.is_tensor(targets) or targets.ndim == 0:
        return None
    targets = targets.detach().cpu()
    if targets.ndim == 1 and not targets.is_floating_point():  # multiclass: class indices
        return [_name(class_names, t) for t in targets.tolist()]
    if targets.ndim == 1:  # binary: 0/1 of the positive class
        return [_name(class_names, int(t > 0.5)) for t in targets.tolist()]
    if targets.ndim == 2 and target_stats is not None:  # regression: standardized, shown in target units
        values = targets.float() * torch.tensor(target_stats["std"]) + torch.tensor(target_stats["mean"])
        return [", ".join(f"{v:.3g}" for v in row) for row in values.tolist()]
    if targets.ndim == 2:  # multilabel: 0/1 per label
        return [
            "+".join(_name(class_names, i) for i, v in enumerate(row) if v > 0.5) or "none" for row in targets.tolist()
        ]
    if targets.ndim == 3 and not targets.is_floating_point():  # segmentation masks
        return ["+".join(_name(class_names, int(c)) for c in mask.unique().tolist()) for mask in targets]
    return None


def sample_grid(images: torch.Tensor, titles: Sequence[str] | None = None, tile: int = 96) -> Image.Image:
    """A grid of [N, 3, H, W] images in [0, 1], each scaled up to at least `tile` px, with its title below."""
    n, _, height, width = images.shape
    scale = max(1, math.ceil(tile / max(height, width)))  # whole-number factor: pixels stay sharp
    cell_w, cell_h = width * scale, height * scale
    caption = 14 if titles else 0
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = Image.new("RGB", (columns * (cell_w + 2), rows * (cell_h + caption + 2)), "white")
    draw, font = ImageDraw.Draw(grid), ImageFont.load_default()
    pixels = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    for i in range(n):
        x, y = (i % columns) * (cell_w + 2), (i // columns) * (cell_h + caption + 2)
        image = Image.fromarray(pixels[i]).resize((cell_w, cell_h), Image.Resampling.NEAREST)
        grid.paste(image, (x, y))
        if titles:
            draw.text((x + 2, y + cell_h + 1), str(titles[i])[: max(3, cell_w // 6)], fill="black", font=font)
    return grid


def log_image(trainer: pl.Trainer, key: str, image: Image.Image) -> None:
    """The image to W&B or TensorBoard; other loggers (CSV) get nothing, the file is in the run folder."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, np.asarray(image), trainer.global_step, dataformats="HWC")


# --------------------------------------------------------------------------------------------------- callback
@dataclass(frozen=True)
class SanityLimits:
    """Where the sanity checks draw the line between fine and a warning.

    Args:
        min_init_loss_ratio: warn when init loss / chance loss is below this.
        max_init_loss_ratio: warn when init loss / chance loss is above this.
        max_abs_mean: warn when a channel's mean is further than this from 0.
        max_std: warn when a channel's standard deviation is above this.
        min_std: warn (normalized twice) when every channel's standard deviation is below this.
        max_imbalance: warn when a split's largest class has this many times the samples of its smallest.
        max_leak_pairs: how many identical pairs the leakage warning names.
        grid_samples: how many training samples the grid shows.
    """

    min_init_loss_ratio: float = 0.5
    max_init_loss_ratio: float = 1.5
    max_abs_mean: float = 3.0
    max_std: float = 5.0
    min_std: float = 0.2
    max_imbalance: float = 10.0
    max_leak_pairs: int = 5
    grid_samples: int = 16


class SanityChecks(pl.Callback):
    """Checks the model, the first batch and the data splits once, before the first training step.

    Args:
        init_loss: compare the first batch's loss at initialization with the task's chance loss.
        inputs: NaN/Inf, range and per-channel mean/std of the first batch's float inputs; index ranges of
            integer inputs (categories, token ids); padding masks.
        labels: class counts per split; classes missing from a split; imbalance (classification only).
        leakage: identical samples across splits (image files by content hash, other inputs by their values).
        sample_grid: save `sample_batch.png` (denormalized training images with their targets) and log it.
        limits: the thresholds of the checks (SanityLimits), e.g. `limits: {max_imbalance: 20}`.
    """

    def __init__(
        self,
        init_loss: bool = True,
        inputs: bool = True,
        labels: bool = True,
        leakage: bool = True,
        sample_grid: bool = True,
        limits: SanityLimits = SanityLimits(),  # noqa: B008 - frozen, so one shared default is safe
    ):
        super().__init__()
        self.enabled = {
            "init_loss": init_loss,
            "inputs": inputs,
            "labels": labels,
            "leakage": leakage,
            "sample_grid": sample_grid,
        }
        self.init_loss_range = (limits.min_init_loss_ratio, limits.max_init_loss_ratio)
        self.input_limits = {"max_abs_mean": limits.max_abs_mean, "max_std": limits.max_std, "min_std": limits.min_std}
        self.max_imbalance = limits.max_imbalance
        self.max_leak_pairs = limits.max_leak_pairs
        self.grid_samples = limits.grid_samples
        self.results: list[CheckResult] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Every rank runs the forward pass (sharded models need all ranks); rank zero reads files and reports.
        self.results = []
        needs_batch = self.enabled["init_loss"] or self.enabled["inputs"] or self.enabled["sample_grid"]
        batch = self._first_train_batch(trainer, pl_module) if needs_batch else None
        if not isinstance(batch, dict):  # the checks below read the project's batch dicts
            batch = {}
        if self.enabled["init_loss"] and hasattr(pl_module, "task") and TARGET_KEY in batch:
            if trainer.global_step > 0:  # resumed: the network is trained, chance says nothing
                self.results.append(CheckResult("init loss", f"skipped (resumed at step {trainer.global_step})"))
            else:
                self._check_init_loss(trainer, pl_module, batch)
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        if self.enabled["inputs"] and batch:
            specs = getattr(pl_module, "inputs", None) or getattr(datamodule, "input_specs", None)
            self.results.append(check_inputs(batch, **self.input_limits, limits=index_limits(specs)))
        splits = getattr(datamodule, "splits", None)
        class_names = getattr(datamodule, "class_names", None) or getattr(
            getattr(pl_module, "task", None), "class_names", []
        )
        if self.enabled["labels"] and splits:
            labels = {split: datamodule.labels(split) for split in splits} if hasattr(datamodule, "labels") else {}
            if labels and all(value is not None for value in labels.values()):
                self.results.append(check_labels(labels, class_names, self.max_imbalance))
            else:
                self.results.append(CheckResult("labels", "skipped: no class labels to count (not classification)"))
        if self.enabled["leakage"] and splits:
            image_column, columns = input_columns(datamodule)
            self.results.append(check_leakage(splits, image_column, columns, self.max_leak_pairs))
        if self.enabled["sample_grid"] and torch.is_tensor(batch.get("image")):
            self.results.append(self._save_grid(trainer, batch, class_names))
        for result in self.results:
            for problem in result.problems:
                rank_zero_warn(f"sanity check: {problem}")
        print(self.summary(), flush=True)

    @staticmethod
    def _first_train_batch(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        loader = trainer.train_dataloader
        if isinstance(loader, dict):
            loader = next(iter(loader.values()))
        elif isinstance(loader, (list, tuple)):
            loader = loader[0]
        # Collate the first samples straight from the dataset: iterating the loader itself would advance its
        # persistent workers' iterator and cut the first epoch short; this also leaves every RNG untouched.
        dataset = loader.dataset
        size = min(loader.batch_size or 1, len(dataset))
        batch = loader.collate_fn([dataset[i] for i in range(size)])
        batch = pl_module.on_before_batch_transfer(batch, 0)
        return trainer.strategy.batch_to_device(batch)

    def _check_init_loss(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: dict[str, Any]) -> None:
        plugin = trainer.precision_plugin  # bf16-true weights need bf16 inputs, as in a real step
        with plugin.forward_context():
            loss = init_loss(pl_module, plugin.convert_input(batch))
        chance, note = chance_for_batch(pl_module.task, batch[TARGET_KEY])
        low, high = self.init_loss_range
        result = check_init_loss(loss, chance, low, high, note)
        self.results.append(result)
        metrics = {"sanity/init_loss": loss, "sanity/init_loss_ratio": loss / chance if chance > 0 else math.inf}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def _save_grid(self, trainer: pl.Trainer, batch: dict[str, Any], class_names: Sequence[str]) -> CheckResult:
        images = batch["image"][: self.grid_samples]
        config = getattr(trainer.datamodule, "data_config", None)
        images = denormalize(images, getattr(config, "mean", None), getattr(config, "std", None))
        targets = batch.get(TARGET_KEY)
        targets = targets[: len(images)] if torch.is_tensor(targets) and targets.ndim else None
        if targets is not None and targets.ndim == 3 and not targets.is_floating_point():  # segmentation masks
            images = mask_overlay(images, targets, len(class_names))
        target_stats = getattr(trainer.datamodule, "target_stats", None)
        grid = sample_grid(images, grid_titles(targets, class_names, target_stats))
        path = Path(trainer.default_root_dir) / GRID_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        log_image(trainer, "sanity/sample_batch", grid)
        return CheckResult("sample grid", str(path))

    def summary(self) -> str:
        lines = ["Sanity checks (once, before the first training step):"]
        for result in self.results:
            status = f"WARNING ({len(result.problems)})" if result.problems else "ok"
            lines.append(f"  {result.name:<12} {status:<12} {result.summary}")
        return "\n".join(lines)
