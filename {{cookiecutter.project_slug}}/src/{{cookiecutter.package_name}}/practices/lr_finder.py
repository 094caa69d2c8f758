"""Learning-rate range test: Lightning's Tuner runs the sweep, our own rule picks the LR, PIL draws the plot.

The sweep (`Tuner.lr_find`) trains `num_training` steps from the current weights while the learning rate grows
exponentially from `min_lr` to `max_lr`, and stops early once its smoothed loss exceeds `early_stop_threshold`
times the best. Afterwards it restores the weights, optimizer and loop state from a temporary `.lr_find_*.ckpt`,
which it deletes: no model file is written or changed.

The Tuner keeps only an exponential moving average of the loss (beta 0.98) whose bias correction is one step late,
so its first values are about half the real loss and the curve rises over the first dozens of steps before it can
fall. Here the raw loss of every step is recorded too and smoothed with a centred moving average (about a tenth of
the sweep wide): no start-up bias and no lag to shift the curve to higher learning rates.

Every parameter group is swept at the same learning rate, so the result is the peak LR, `--model.optimizer.lr`; ratios
between groups (discriminative learning rates) are applied on top of it when training.

Suggestion rule: the LR at which the smoothed loss falls fastest per decade (steepest descent on a log-LR axis),
searched only up to the loss minimum, since past it training is already diverging. Lightning's own rule takes the
slope on a linear LR axis, which favours the noisy high-LR end of the curve (PL issue #21141). When the curve
hardly falls before its minimum (fewer than 3 points), the suggestion is the LR at the minimum / 10 instead: the
other classic rule, also reported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw, ImageFont
from pytorch_lightning.tuner import Tuner

from ..errors import ProjectError
from .callbacks.sanity import log_image
from .runs import write_json

PLOT_FILE = "lr_find.png"
RESULT_FILE = "lr_find.json"


def smooth(losses: list[float], window: int | None = None) -> list[float]:
    """Centred moving average of the finite losses (NaN where a window holds none); default window ~ n / 10."""
    n = len(losses)
    half = (window or max(3, n // 10)) // 2
    smoothed = []
    for i in range(n):
        finite = [v for v in losses[max(0, i - half) : i + half + 1] if math.isfinite(v)]
        smoothed.append(sum(finite) / len(finite) if finite else math.nan)
    return smoothed


def suggest(lrs: list[float], losses: list[float]) -> dict[str, Any]:
    """The suggested LR from a sweep's (increasing) LRs and smoothed losses, with both rules' values.

    Returns {"suggestion", "rule", "steepest_lr", "min_loss_lr", "min_loss_lr_div_10", "index"} where index is the
    sweep step of the suggestion (None for the min/10 rule, which lies between steps)."""
    points = [(lr, loss) for lr, loss in zip(lrs, losses, strict=True) if lr > 0 and math.isfinite(loss)]
    if len(points) < 3:
        raise ProjectError(
            f"lr-find recorded {len(points)} finite losses: raise --num_training or check that training runs"
        )
    x = torch.tensor([math.log10(lr) for lr, _ in points], dtype=torch.float64)
    y = torch.tensor([loss for _, loss in points], dtype=torch.float64)
    lowest = int(torch.argmin(y))
    min_loss_lr = points[lowest][0]
    # The first points are averages over a half window only, hence noisier (Lightning's rule skips 10 of 100).
    start = min(len(points) // 20, 5)
    steepest_lr, index = None, None
    if lowest - start >= 2:
        slopes = torch.gradient(y[start : lowest + 1], spacing=(x[start : lowest + 1],))[0]
        steepest = start + int(torch.argmin(slopes))
        if slopes.min() < 0:
            steepest_lr = points[steepest][0]
            index = lrs.index(steepest_lr)
    rule = "steepest descent of the smoothed loss (log LR axis)" if steepest_lr else "LR at the minimum loss / 10"
    if lowest == 0:  # the loss never fell below its first value: the sweep started too high, or nothing trains
        rule += (
            "; the loss never fell, so this lies below the swept range: rerun with a lower --min_lr, and if it "
            "still does not fall, check that the model can overfit one batch (configs/debug/overfit_batch.yaml)"
        )
    return {
        "suggestion": steepest_lr or min_loss_lr / 10,
        "rule": rule,
        "steepest_lr": steepest_lr,
        "min_loss_lr": min_loss_lr,
        "min_loss_lr_div_10": min_loss_lr / 10,
        "index": index,
    }


def range_test(
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    min_lr: float,
    max_lr: float,
    num_training: int,
    early_stop_threshold: float | None,
) -> dict[str, Any]:
    """Runs the sweep and returns {"lr", "raw_loss", "loss" (smoothed), **suggest(...)}; the weights are unchanged."""
    if not 0 < min_lr < max_lr:
        raise ProjectError(f"lr-find: --min_lr={min_lr} and --max_lr={max_lr} need 0 < min_lr < max_lr")
    if num_training < 5:
        raise ProjectError(f"lr-find: --num_training={num_training} is too few steps for a curve (use >= 5, e.g. 100)")
    if trainer.fast_dev_run:
        raise ProjectError("lr-find does nothing under trainer.fast_dev_run (Lightning skips it): drop that config")
    loop = trainer.fit_loop
    saved = loop.max_epochs, trainer.check_val_every_n_epoch
    # Lightning stops the sweep at max_epochs (with a short config it never reaches num_training steps), and it
    # validates at each epoch end although only the training loss is used: lift the cap, skip validation.
    if loop.max_epochs != -1:
        loop.max_epochs = max(loop.max_epochs or 1, num_training * trainer.accumulate_grad_batches)
    trainer.check_val_every_n_epoch = 10**9
    raw: list[float] = []
    model_hook = model.on_train_batch_end  # the model's own hook (bound), called first

    def record_raw_loss(outputs: Any, batch: Any, batch_idx: int) -> None:
        # The Tuner's callback records one loss per optimizer step, at the same moment: the lists stay aligned.
        model_hook(outputs, batch, batch_idx)
        if (loop.batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            loss = outputs if isinstance(outputs, torch.Tensor) else (outputs or {}).get("loss")
            raw.append(float(loss) if loss is not None else math.nan)

    model.on_train_batch_end = record_raw_loss  # for this sweep only: Lightning calls the instance's hook
    try:
        finder = Tuner(trainer).lr_find(
            model,
            datamodule=datamodule,
            min_lr=min_lr,
            max_lr=max_lr,
            num_training=num_training,
            mode="exponential",
            early_stop_threshold=early_stop_threshold,
            update_attr=False,  # the suggestion is printed for the user to pass; nothing trains after this
        )
    finally:
        loop.max_epochs, trainer.check_val_every_n_epoch = saved
        del model.on_train_batch_end
    lrs = [float(v) for v in finder.results["lr"]][: len(raw)]
    losses = smooth(raw[: len(lrs)])
    return {"lr": lrs, "raw_loss": raw[: len(lrs)], "loss": losses, **suggest(lrs, losses)}


def plot(result: dict[str, Any], size: tuple[int, int] = (640, 420)) -> Image.Image:
    """Smoothed loss against the LR on a log axis, decade ticks, the suggestion marked in red."""
    width, height = size
    left, right, top, bottom = 64, 16, 28, 40
    points = [(lr, loss) for lr, loss in zip(result["lr"], result["loss"], strict=True) if math.isfinite(loss)]
    x0, x1 = math.log10(points[0][0]), math.log10(points[-1][0])
    x1 = x1 if x1 > x0 else x0 + 1
    lowest = min(loss for _, loss in points)
    # The y range ends a little above the start of the curve, so a diverging tail does not flatten the rest.
    highest = max(loss for lr, loss in points if lr <= result["min_loss_lr"])
    highest = max(highest, points[0][1]) + 0.1 * (highest - lowest or 1.0)
    lowest -= 0.05 * (highest - lowest)

    def to_pixel(lr: float, loss: float) -> tuple[float, float]:
        x = left + (math.log10(lr) - x0) / (x1 - x0) * (width - left - right)
        y = top + (highest - min(max(loss, lowest), highest)) / (highest - lowest) * (height - top - bottom)
        return x, y

    image = Image.new("RGB", size, "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    for decade in range(math.ceil(x0), math.floor(x1) + 1):
        x, _ = to_pixel(10.0**decade, lowest)
        draw.line((x, top, x, height - bottom), fill=(225, 225, 225))
        draw.text((x - 12, height - bottom + 4), f"1e{decade}", fill="black", font=font)
    for k in range(5):
        loss = lowest + k * (highest - lowest) / 4
        _, y = to_pixel(10.0**x0, loss)
        draw.text((4, y - 6), f"{loss:.3g}", fill="black", font=font)
    raw = [(lr, loss) for lr, loss in zip(result["lr"], result["raw_loss"], strict=True) if math.isfinite(loss)]
    if len(raw) >= 2:
        draw.line([to_pixel(lr, loss) for lr, loss in raw], fill=(170, 190, 225), width=1)  # raw: light
    draw.line([to_pixel(lr, loss) for lr, loss in points], fill=(31, 80, 160), width=2)  # smoothed
    lr = result["suggestion"]
    x, _ = to_pixel(lr, lowest)
    draw.line((x, top, x, height - bottom), fill=(200, 30, 30), width=1)
    if result["index"] is not None:
        px, py = to_pixel(lr, result["loss"][result["index"]])
        draw.ellipse((px - 5, py - 5, px + 5, py + 5), outline=(200, 30, 30), width=2)
    draw.text((left, 8), f"suggested lr {lr:.3g}: {result['rule']}", fill=(200, 30, 30), font=font)
    draw.text((width // 2 - 60, height - 16), "learning rate (log scale)", fill="black", font=font)
    return image


def to_json(result: dict[str, Any]) -> dict[str, Any]:
    """The result with non-finite losses as null (JSON has no NaN), plus the flag that applies the suggestion."""

    def finite(values: list[float]) -> list[float | None]:
        return [v if math.isfinite(v) else None for v in values]

    return {
        **result,
        "loss": finite(result["loss"]),
        "raw_loss": finite(result["raw_loss"]),
        "flag": flag(result["suggestion"]),
    }


def flag(lr: float) -> str:
    return f"--model.optimizer.lr {lr:.3g}"


def log_to(trainer: pl.Trainer, result: dict[str, Any], image: Image.Image) -> None:
    """The suggestion to every logger, the plot to those that take images (CSV: the PNG in the run folder)."""
    for logger in trainer.loggers:
        logger.log_metrics({"lr_find/suggestion": result["suggestion"]}, step=0)
    log_image(trainer, "lr_find/plot", image)
    for logger in trainer.loggers:
        logger.finalize("success")  # no fit follows, so nothing else flushes the logger's files


def write(run_dir: Path, result: dict[str, Any], image: Image.Image) -> tuple[Path, Path]:
    image.save(run_dir / PLOT_FILE)
    return run_dir / PLOT_FILE, write_json(run_dir / RESULT_FILE, to_json(result))
