"""Progress output for logs that are not a terminal (CI, SLURM, `nohup ... > log`).

A live progress bar redraws the same line with carriage returns, which turns a log file into megabytes of
noise. This prints one plain line every `trainer.log_every_n_steps` training steps (or `every_n_steps` when
given) and one at the end of each epoch.
"""

from __future__ import annotations

import sys
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar


class PlainProgressBar(ProgressBar):
    def __init__(self, every_n_steps: int | None = None):
        super().__init__()
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._epoch_start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, trainer: pl.Trainer, message: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(message, flush=True)

    def _metrics(self, trainer: pl.Trainer, prefixes: tuple[str, ...]) -> str:
        items = sorted(
            (k, v) for k, v in self.get_metrics(trainer, trainer.lightning_module).items() if k.startswith(prefixes)
        )
        return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        step = batch_idx + 1
        if step % (self.every_n_steps or trainer.log_every_n_steps or 50) == 0:
            total = self.total_train_batches
            self._print(
                trainer, f"epoch {trainer.current_epoch} step {step}/{total}  {self._metrics(trainer, ('train/',))}"
            )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        seconds = time.perf_counter() - self._epoch_start
        self._print(
            trainer,
            f"epoch {trainer.current_epoch} done in {seconds:.1f}s  {self._metrics(trainer, ('train/', 'val/'))}",
        )

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print(trainer, f"test  {self._metrics(trainer, ('test/',))}")


def progress_bar_for(stream: object = sys.stdout) -> ProgressBar:
    """A live rich bar on a terminal, plain periodic lines anywhere else."""
    isatty = getattr(stream, "isatty", None)
    return RichProgressBar() if isatty is not None and isatty() else PlainProgressBar()
