"""Checks that run once, before the first training step, and catch the bugs that waste a whole run.

- loss at initialization: an untrained network should predict about uniformly, so its loss on the first batch
  should be near the task's chance loss (ln C for C classes); far above means it starts confidently wrong, far
  below means the answer leaks into the input;
- the input batch: dtype, NaN/Inf, value range and per-channel mean/std after normalization (raw pixels,
  normalization missing or applied twice);
- the labels: class counts per split, classes missing from a split, class imbalance;
- leakage: byte-identical files in more than one split (content hashes);
- a grid of denormalized training samples with their class names, `sample_batch.png` in the run folder.

Each problem is one warning (`rank_zero_warn`) naming what was found; a summary block is printed either way.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw, ImageFont
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_warn

GRID_FILE = "sample_batch.png"
TARGET_KEY = "target"


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


def check_init_loss(loss: float, chance: float, low: float = 0.5, high: float = 1.5) -> CheckResult:
    ratio = loss / chance if chance > 0 else math.inf
    result = CheckResult("init loss", f"{loss:.4f} vs chance {chance:.4f}: ratio {ratio:.2f}")
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


def check_inputs(
    batch: dict[str, Any], max_abs_mean: float = 3.0, max_std: float = 5.0, min_std: float = 0.2
) -> CheckResult:
    """Statistics of every input tensor of the batch; problems when they do not look normalized once.

    Per channel (dim 1: image channels, tabular features). After mean/std normalization channel means are
    near 0 and standard deviations near 1. Raw pixels give means of about 100; images only scaled to [0, 1] have
    no negative values; scaling twice (e.g. dividing by 255 twice) leaves every channel with a tiny spread.
    """
    lines, problems = [], []
    for key, x in batch.items():
        if key == TARGET_KEY or not torch.is_tensor(x):
            continue
        if not x.is_floating_point():
            if x.ndim == 4:  # images; integer token ids of sequences are fine
                problems.append(f"input '{key}' has dtype {x.dtype}: convert images to float and normalize them")
            lines.append(f"{key} {x.dtype} {list(x.shape)}")
            continue
        x = x.detach().float()
        finite = torch.isfinite(x)
        if not finite.all():
            nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
            problems.append(f"input '{key}' holds {nan} NaN and {inf} Inf values in the first training batch")
            lines.append(f"{key} {x.dtype} {list(x.shape)}: {nan} NaN, {inf} Inf")
            continue
        dims = [d for d in range(x.ndim) if d != 1] if x.ndim > 1 else [0]
        mean, std = x.mean(dim=dims), x.std(dim=dims, correction=0)
        low, high = float(x.min()), float(x.max())
        lines.append(f"{key} {x.dtype} {list(x.shape)} range [{low:.3g}, {high:.3g}] mean {_fmt(mean)} std {_fmt(std)}")
        found = []
        if x.ndim == 4 and low >= 0 and 1.0 < high <= 255:
            found.append(f"values in [0, 255] (max {high:.3g}): raw pixel values")
        elif x.ndim == 4 and low >= 0 and high <= 1.0:
            found.append("values in [0, 1] and none negative: scaled but not mean/std normalized")
        if (mean.abs() > max_abs_mean).any() or (std > max_std).any():
            found.append(f"channel means {_fmt(mean)} / stds {_fmt(std)} (expected near 0 / 1)")
        if found:
            problems.append(f"input '{key}' looks unnormalized: " + "; ".join(found))
        elif (std < min_std).all():
            problems.append(
                f"input '{key}' looks normalized twice: every channel's std is below {min_std} ({_fmt(std)}); "
                "is the input scaled or normalized a second time?"
            )
    return CheckResult("inputs", "; ".join(lines) or "no tensors besides the target", problems)


# ----------------------------------------------------------------------------------------------------- labels
Splits = dict[str, Sequence[tuple[Path, Any]]]


def _name(class_names: Sequence[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else str(label)


def check_labels(splits: Splits, class_names: Sequence[str], max_imbalance: float = 10.0) -> CheckResult:
    """Class counts per split, classes missing from a split, imbalance (largest / smallest class count)."""
    parts, problems = [], []
    for split in sorted(splits, key=lambda name: (name != "train", name)):  # train first
        samples = splits[split]
        counts = Counter(label for _, label in samples if isinstance(label, int))
        if not counts:
            parts.append(f"{split} {len(samples)} (no class labels)")
            continue
        missing = [name for i, name in enumerate(class_names) if counts[i] == 0]
        present = [n for n in counts.values() if n > 0]
        ratio = max(present) / min(present)
        parts.append(f"{split} {len(samples)} ({len(present)} classes, imbalance {ratio:.1f})")
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
def _digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_leaks(splits: Splits) -> list[tuple[str, Path, str, Path]]:
    """Pairs of byte-identical files in two different splits: (split, path, other split, other path).

    Only files whose size occurs in more than one split are read and hashed: identical content needs identical
    size, so datasets of compressed images hash few files.
    """
    by_size: dict[int, list[tuple[str, Path]]] = defaultdict(list)
    for split, samples in splits.items():
        for path, _ in samples:
            by_size[Path(path).stat().st_size].append((split, Path(path)))
    by_digest: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for files in by_size.values():
        if len({split for split, _ in files}) > 1:
            for split, path in files:
                by_digest[_digest(path)].append((split, path))
    leaks = []
    for files in by_digest.values():
        for i, (split_a, path_a) in enumerate(files):
            for split_b, path_b in files[i + 1 :]:
                if split_a != split_b:
                    leaks.append((split_a, path_a, split_b, path_b))
    return sorted(leaks, key=lambda leak: (leak[0], str(leak[1]), leak[2], str(leak[3])))


def check_leakage(splits: Splits, max_pairs: int = 5) -> CheckResult:
    leaks = find_leaks(splits)
    files = sum(len(samples) for samples in splits.values())
    result = CheckResult("leakage", f"{files} files compared by content hash (blake2b): {len(leaks)} identical pairs")
    if leaks:
        shown = "; ".join(f"{a}: {pa} == {b}: {pb}" for a, pa, b, pb in leaks[:max_pairs])
        more = f" (and {len(leaks) - max_pairs} more)" if len(leaks) > max_pairs else ""
        result.problems.append(f"{len(leaks)} files appear in more than one split (leakage): {shown}{more}")
    return result


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
class SanityChecks(pl.Callback):
    """Checks the model, the first batch and the data splits once, before the first training step.

    Args:
        init_loss: compare the first batch's loss at initialization with the task's chance loss.
        inputs: dtype, NaN/Inf, range and per-channel mean/std of the first batch's inputs.
        labels: class counts per split; classes missing from a split; imbalance.
        leakage: identical files across splits by content hash (reads every file whose size occurs in two splits).
        sample_grid: save `sample_batch.png` (denormalized training samples with class names) and log it.
        min_init_loss_ratio: warn when init loss / chance loss is below this.
        max_init_loss_ratio: warn when init loss / chance loss is above this.
        max_abs_mean: warn when a channel's mean is further than this from 0.
        max_std: warn when a channel's standard deviation is above this.
        min_std: warn (normalized twice) when every channel's standard deviation is below this.
        max_imbalance: warn when a split's largest class has this many times the samples of its smallest.
        max_leak_pairs: how many identical pairs the leakage warning names.
        grid_samples: how many training samples the grid shows.
    """

    def __init__(
        self,
        init_loss: bool = True,
        inputs: bool = True,
        labels: bool = True,
        leakage: bool = True,
        sample_grid: bool = True,
        min_init_loss_ratio: float = 0.5,
        max_init_loss_ratio: float = 1.5,
        max_abs_mean: float = 3.0,
        max_std: float = 5.0,
        min_std: float = 0.2,
        max_imbalance: float = 10.0,
        max_leak_pairs: int = 5,
        grid_samples: int = 16,
    ):
        super().__init__()
        self.enabled = {
            "init_loss": init_loss,
            "inputs": inputs,
            "labels": labels,
            "leakage": leakage,
            "sample_grid": sample_grid,
        }
        self.init_loss_range = (min_init_loss_ratio, max_init_loss_ratio)
        self.input_limits = {"max_abs_mean": max_abs_mean, "max_std": max_std, "min_std": min_std}
        self.max_imbalance = max_imbalance
        self.max_leak_pairs = max_leak_pairs
        self.grid_samples = grid_samples
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
        if self.enabled["inputs"] and batch:
            self.results.append(check_inputs(batch, **self.input_limits))
        datamodule = trainer.datamodule
        splits = getattr(datamodule, "splits", None)
        class_names = getattr(datamodule, "class_names", None) or getattr(
            getattr(pl_module, "task", None), "class_names", []
        )
        if self.enabled["labels"] and splits:
            self.results.append(check_labels(splits, class_names, self.max_imbalance))
        if self.enabled["leakage"] and splits:
            self.results.append(check_leakage(splits, self.max_leak_pairs))
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
        chance = float(pl_module.task.chance_loss)
        low, high = self.init_loss_range
        result = check_init_loss(loss, chance, low, high)
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
        titles = None
        if torch.is_tensor(targets) and targets.ndim == 1 and not targets.is_floating_point():
            titles = [_name(class_names, t) for t in targets.tolist()]
        grid = sample_grid(images, titles[: len(images)] if titles else None)
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
