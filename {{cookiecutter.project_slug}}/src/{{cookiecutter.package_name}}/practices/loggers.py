"""Loggers: W&B offline without a key, the run's settings and provenance logged once, W&B runs ended cleanly."""

from __future__ import annotations

import netrc
import os

import pytorch_lightning as pl
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from .provenance import provenance

# The command's settings the model's and data's hyperparameters (which Lightning logs itself) leave out.
RUN_SETTINGS = ("seed_everything", "trainer", "checkpoint", "ensembles", "ckpt_path", "runs_dir")


def _wandb_key_in_netrc() -> bool:
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_key_found() -> bool:
    """An API key W&B uses without prompting: WANDB_API_KEY, or the one `wandb login` saved in ~/.netrc."""
    return bool(os.environ.get("WANDB_API_KEY")) or _wandb_key_in_netrc()


def wandb_offline_without_key() -> bool:
    """Without an API key W&B would prompt for one (or fail with no terminal): run it offline instead.

    Respects an explicit WANDB_MODE. Returns True when it switched W&B to offline.
    """
    if os.environ.get("WANDB_MODE") or wandb_key_found():
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


class SaveAndLogConfig(SaveConfigCallback):
    """Lightning's config.yaml in the run folder, plus one call to every logger with the rest of the command's
    settings (RUN_SETTINGS) and where the run came from: git commit, data fingerprint, package and template
    versions. With the hyperparameters Lightning logs, the logger's run holds everything needed to repeat it.

    W&B also keeps the optimizing metric's best value (not its last) as the run's summary, which is what the runs
    table and a sweep rank runs by."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        settings = self.config.as_dict()
        logged = {key: settings[key] for key in RUN_SETTINGS if key in settings}
        logged["provenance"] = provenance(trainer.datamodule)
        task = getattr(pl_module, "task", None)
        for logger in trainer.loggers:
            logger.log_hyperparams(logged)
            if isinstance(logger, WandbLogger) and task is not None:
                logger.experiment.define_metric(f"val/{task.monitor}", summary=task.mode)
