"""Loggers: W&B offline without a key, the run's settings and provenance logged once, W&B runs ended cleanly, and
a resumed fit that continues each logger's history instead of starting it over."""

from __future__ import annotations

import csv
import math
import netrc
import os
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning import loggers
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_info

from .provenance import provenance

# Lightning's CSVLogger as a config names it; the CLI runs the project's subclass (CSVLogger below) in its place.
LIGHTNING_CSV_LOGGERS = {
    f"{package}.loggers{module}.CSVLogger"
    for package in ("pytorch_lightning", "lightning.pytorch")
    for module in ("", ".csv_logs")
}
PROBE_SECONDS = 3.0  # how long W&B's server may take to answer a request before a run goes offline
# The command's settings the model's and data's hyperparameters (which Lightning logs itself) leave out.
RUN_SETTINGS = ("seed_everything", "trainer", "checkpoint", "ensembles", "ckpt_path", "runs_dir")
# The module through which code stages W&B Launch inputs before a run starts (wandb.launch.manage_config_file, ...).
WANDB_LAUNCH_STAGING = "wandb.sdk.launch.inputs.internal"


def _wandb_key_in_netrc() -> bool:
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_key_found() -> bool:
    """An API key W&B uses without prompting: WANDB_API_KEY, or the one `wandb login` saved in ~/.netrc."""
    return bool(os.environ.get("WANDB_API_KEY")) or _wandb_key_in_netrc()


def wandb_server() -> str:
    """The W&B server's URL: WANDB_BASE_URL (a self-hosted server) or the cloud's."""
    return os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"


def wandb_server_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """True when the W&B server answers an HTTP request within `timeout` seconds (any status: it is there).
    Without this check wandb.init waits about 90 s, then fails with a long traceback. A TCP connection alone is
    not proof: proxies and firewalls accept connections they never answer. The request runs in a thread, as a
    stalled name lookup would ignore the timeout."""
    answered: list[bool] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(wandb_server(), timeout=timeout):
                answered.append(True)
        except urllib.error.HTTPError:  # 401, 404, ...: the server answered
            answered.append(True)
        except (OSError, ValueError):  # refused, timed out, no route, bad URL
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


def wandb_offline_when_unavailable(run_dir: Path | str = "runs/<run>") -> bool:
    """Run W&B offline when it could not log online: no API key (it would prompt, or fail with no terminal), or a
    server that cannot be reached within a few seconds (no network, a firewall). Says why in one line.

    Respects an explicit WANDB_MODE. Returns True when it switched W&B to offline.
    """
    if os.environ.get("WANDB_MODE"):
        return False
    if not wandb_key_found():
        reason = "no API key found (WANDB_API_KEY or `wandb login`)"
    elif not wandb_server_reachable():
        reason = f"{wandb_server()} did not answer within {PROBE_SECONDS:g} s"
    else:
        return False
    os.environ["WANDB_MODE"] = "offline"
    rank_zero_info(f"W&B: {reason}, logging offline; upload later with `wandb sync {run_dir}/wandb/offline-run-*`")
    return True


def skip_wandb_launch_import_when_nothing_staged() -> None:
    """Start W&B runs without importing W&B Launch when no launch input was staged.

    Every `wandb.init` imports `wandb.sdk.launch` to apply "staged launch inputs" (measured: 0.5-0.8 s of a fit's
    start on 2 cores, mostly pydantic reading docstrings of Launch's models). Inputs can only be staged through
    the module named WANDB_LAUNCH_STAGING, so while it is not imported there is nothing to apply and the import is
    skipped; once it is (a W&B Launch job), runs apply the inputs as before.
    """
    from wandb.sdk import wandb_run

    apply_inputs = getattr(wandb_run.Run, "_detect_and_apply_job_inputs", None)
    if apply_inputs is None or getattr(apply_inputs, "when_staged", False):  # another wandb version; or done
        return

    def apply_when_staged(run: wandb_run.Run) -> None:
        if WANDB_LAUNCH_STAGING in sys.modules:
            apply_inputs(run)

    apply_when_staged.when_staged = True
    wandb_run.Run._detect_and_apply_job_inputs = apply_when_staged


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


class ContinuedMetricsWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing metrics.csv is continued, never deleted."""

    def _check_log_dir_exists(self) -> None:
        # Lightning's writer deletes the file here ("Previous log files ... will be deleted"), so a resumed fit
        # would keep only the epochs after the resume. Continue it: new rows are appended under its header.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])

    def drop_rows_from(self, step: int) -> int:
        """Remove the rows logged at `step` or later: the work after the checkpoint a fit resumes from, which the
        resumed fit repeats (and logs again). Returns how many rows were removed."""
        self.save()
        if not self._fs.isfile(self.metrics_file_path):
            return 0
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = list(csv.DictReader(file))
        kept = [row for row in rows if not row.get("step") or float(row["step"]) < step]
        if len(kept) < len(rows):
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
        return len(rows) - len(kept)


class CSVLogger(loggers.CSVLogger):
    """Lightning's CSVLogger (same arguments), except that a resumed fit continues the version's metrics.csv:
    Lightning's own deletes it, losing every epoch before the resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuedMetricsWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuedMetricsWriter(log_dir=self.log_dir)
        return self._experiment

    def continue_from(self, step: int) -> None:
        """Called when a fit resumes from a checkpoint written at `step`: the rows logged after it go."""
        dropped = self.experiment.drop_rows_from(step)
        if dropped:
            rank_zero_info(f"{self.log_dir}/metrics.csv: {dropped} rows logged after the resumed checkpoint removed")


def continue_histories(loggers: list, step: int) -> None:
    """A fit resumed from a checkpoint written at `step`: each logger continues its own history from there.

    CSV: the rows logged after the checkpoint (the work the resumed fit redoes) are removed, earlier rows are kept.
    TensorBoard: nothing to do; its readers drop the points of a tag once an earlier step is logged again.
    W&B: the resumed fit logs into the same run id (offline: a second offline-run-* folder, which `wandb sync`
    uploads after the first); charts are drawn over trainer/global_step, which continues from the checkpoint.
    """
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            logger.continue_from(step)


class HParamsMetric(pl.Callback):
    """TensorBoard's HPARAMS tab compares runs by `hp_metric`, which Lightning only sets to a -1 placeholder. After
    each validation it gets the best value so far of the optimizing metric (val/<task.monitor>) over the epochs
    that met every satisficing limit: the value of the checkpoint the fit keeps, also for a run that was killed."""

    def __init__(self) -> None:
        self.best: float | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        task = getattr(pl_module, "task", None)
        value = trainer.callback_metrics.get(f"val/{task.monitor}") if task is not None else None
        if trainer.sanity_checking or not loggers or value is None:
            return
        score = trainer.callback_metrics.get("satisficing/score")
        if score is not None and not math.isclose(float(score), float(value), rel_tol=1e-6):  # it missed a limit
            return
        value = float(value)
        if self.best is None or (value > self.best if task.mode == "max" else value < self.best):
            self.best = value
        for logger in loggers:
            logger.log_metrics({"hp_metric": self.best}, step=trainer.global_step)

    def state_dict(self) -> dict[str, float | None]:
        return {"best": self.best}  # a resumed fit goes on comparing with the epochs before the resume

    def load_state_dict(self, state_dict: dict[str, float | None]) -> None:
        self.best = state_dict.get("best")
