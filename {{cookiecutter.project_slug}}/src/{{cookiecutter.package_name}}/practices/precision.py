"""Strategy and precision checks that turn a crash deep inside a launcher into one line up front."""

from __future__ import annotations

import importlib.util

import torch
from pytorch_lightning.utilities import rank_zero_warn

from ..errors import ProjectError


def supported_precision(precision: str | int | None) -> str | int | None:
    """bf16-mixed on a GPU without bf16 (before Ampere) becomes 16-mixed, with a warning."""
    if precision == "bf16-mixed" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        rank_zero_warn("trainer.precision=bf16-mixed: this GPU has no bf16, using 16-mixed (fp16 with loss scaling)")
        return "16-mixed"
    return precision


def check_strategy_available(strategy: object) -> None:
    """DeepSpeed is an optional extra: say how to install it instead of failing on import."""
    name = strategy if isinstance(strategy, str) else getattr(strategy, "class_path", "") or ""
    if "deepspeed" in name.lower() and importlib.util.find_spec("deepspeed") is None:
        raise ProjectError(f"trainer.strategy={name} needs DeepSpeed: pip install -e '.[deepspeed]'")
