"""Logger set-up that must happen before a logger is built."""

from __future__ import annotations

import netrc
import os

from pytorch_lightning.utilities import rank_zero_info


def _wandb_key_in_netrc() -> bool:
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_offline_without_key() -> bool:
    """Without an API key W&B would prompt for one (or fail with no terminal): run it offline instead.

    Respects an explicit WANDB_MODE. Returns True when it switched W&B to offline.
    """
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY") or _wandb_key_in_netrc():
        return False
    os.environ["WANDB_MODE"] = "offline"
    rank_zero_info(
        "W&B: no API key found (WANDB_API_KEY or `wandb login`), logging offline; "
        "upload later with `wandb sync <run folder>/wandb`"
    )
    return True


def finish_wandb_runs(loggers: list) -> None:
    """End this command's W&B runs, so a next command in the same process (tests, notebooks) starts or resumes
    its own run instead of silently logging into this one."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()
