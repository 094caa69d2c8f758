"""Ensembles for free: EMA or SWA of the weights, and snapshot ensembles of a cosine-with-restarts schedule.

Configured by the `ensembles:` section of the config (not the trainer's callback list, which a second --config
file would replace); everything is off by default:

    --ensembles.ema_decay 0.999        validate and checkpoint an exponential moving average of the weights
    --ensembles.swa_lrs 1e-4           stochastic weight averaging over the last epochs (Lightning's SWA)
    --ensembles.snapshots true         a snapshot at the end of every restart cycle, and their ensemble evaluated

EMA uses Lightning's EMAWeightAveraging: validation (hence early stopping and the checkpoint choice) runs on the
averaged weights, checkpoints hold them as `state_dict` (the raw weights as `current_model_state`, so a resumed
fit continues both), and after fit the model holds them. SWA uses Lightning's StochasticWeightAveraging, which
replaces the schedule by SWALR from `swa_epoch_start`; the averaged weights are saved as checkpoints/swa.ckpt and
evaluated after fit. Neither works with sharded strategies (FSDP, DeepSpeed).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EMAWeightAveraging, StochasticWeightAveraging

from ...errors import ProjectError
from ..averaging import evaluate_ensemble, to_markdown
from ..checkpoint_io import read_checkpoint

SPLITS = ("train", "train_dev", "val", "test")
SNAPSHOT_FILE = "snapshots"  # <run>/snapshots.json and snapshots.md
SWA_FILE = "swa"  # <run>/swa.json, <run>/checkpoints/swa.ckpt


class Ensembles:
    """The `ensembles:` section: which weight averaging and snapshot callbacks a fit gets.

    Args:
        ema_decay: exponential moving average of the weights with this decay per optimizer step (e.g. 0.999:
            an average over roughly the last 1000 steps); null: off.
        ema_start_step: the average starts at this optimizer step (earlier weights are far from the final ones).
        swa_lrs: stochastic weight averaging with this constant learning rate once it starts (annealed to it over
            `swa_annealing_epochs`); the weights are averaged once per epoch; null: off.
        swa_epoch_start: the first averaged epoch: an int (1-based) or a fraction of max_epochs.
        swa_annealing_epochs: epochs of annealing from the schedule's learning rate to `swa_lrs`.
        snapshots: save checkpoints/snapshot-epochNN.ckpt at the end of every restart cycle of the schedule
            (needs the cosine-with-restarts schedule) and, after fit, evaluate each snapshot and the average of
            their predictions (<run>/snapshots.json and .md).
        snapshot_splits: the splits the snapshots are evaluated on, e.g. [val, test].
    """

    def __init__(
        self,
        ema_decay: float | None = None,
        ema_start_step: int = 0,
        swa_lrs: float | None = None,
        swa_epoch_start: int | float = 0.8,
        swa_annealing_epochs: int = 2,
        snapshots: bool = False,
        snapshot_splits: list[str] | None = None,
    ):
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ProjectError(f"ensembles.ema_decay={ema_decay} must be between 0 and 1 (e.g. 0.999), or null (off)")
        if swa_lrs is not None and not swa_lrs > 0:
            raise ProjectError(f"ensembles.swa_lrs={swa_lrs} must be a positive learning rate, or null (off)")
        if swa_lrs is not None and (ema_decay is not None or snapshots):
            # SWA replaces the schedule (the restarts snapshots need) and averages the weights EMA also averages.
            raise ProjectError("ensembles.swa_lrs cannot be combined with ensembles.ema_decay or ensembles.snapshots")
        splits = ["val"] if snapshot_splits is None else list(snapshot_splits)
        unknown = [split for split in splits if split not in SPLITS]
        if unknown or not splits:
            raise ProjectError(f"ensembles.snapshot_splits={splits}: choose from {', '.join(SPLITS)}")
        self.ema_decay, self.ema_start_step = ema_decay, ema_start_step
        self.swa_lrs, self.swa_epoch_start, self.swa_annealing_epochs = swa_lrs, swa_epoch_start, swa_annealing_epochs
        self.snapshots, self.snapshot_splits = snapshots, splits

    def callbacks(self) -> list[Callback]:
        """The callbacks these settings turn on (none by default)."""
        callbacks: list[Callback] = []
        if self.ema_decay is not None:
            callbacks.append(EMA(decay=self.ema_decay, update_starting_at_step=self.ema_start_step))
        if self.swa_lrs is not None:
            callbacks.append(SWA(float(self.swa_lrs), self.swa_epoch_start, self.swa_annealing_epochs))
        if self.snapshots:
            callbacks.append(SnapshotEnsemble(self.snapshot_splits))
        return callbacks


def _check_not_sharded(trainer: pl.Trainer, key: str) -> None:
    name = type(trainer.strategy).__name__
    if "FSDP" in name or "DeepSpeed" in name:
        raise ProjectError(f"{key} averages whole models, which {name} shards: use ddp, or set {key} to null")


class EMA(EMAWeightAveraging):
    """Lightning's EMAWeightAveraging, kept on the training device and refused for sharded strategies."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            _check_not_sharded(trainer, "ensembles.ema_decay")
            # At setup the model is still on the CPU: an average kept there would copy every weight off the GPU
            # after each step.
            self._device = self._device or trainer.strategy.root_device
        with warnings.catch_warnings():
            # Our configure_model only sets the memory format and compiles; it shards nothing.
            warnings.filterwarnings("ignore", message=".*WeightAveraging doesn't support sharding.*")
            super().setup(trainer, pl_module, stage)


class SWA(StochasticWeightAveraging):
    """Lightning's StochasticWeightAveraging; after fit, the averaged weights are saved and evaluated.

    Lightning averages the weights at the START of every epoch from `swa_epoch_start` to the last (so the last
    epoch's own updates are not in the average).

    Lightning validates the averaged weights only for models with BatchNorm (its extra epoch that recomputes
    the BatchNorm statistics ends in a validation), and keeps them only in memory. Here they are always written
    to checkpoints/swa.ckpt, evaluated on val, and reported next to the best checkpoint's score.
    """

    def __init__(self, swa_lrs: float, swa_epoch_start: int | float, annealing_epochs: int):
        super().__init__(swa_lrs=swa_lrs, swa_epoch_start=swa_epoch_start, annealing_epochs=annealing_epochs)
        self.result: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        _check_not_sharded(trainer, "ensembles.swa_lrs")
        super().setup(trainer, pl_module, stage)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run:  # a debug run saves nothing
            return
        if self.n_averaged is None or int(self.n_averaged) == 0:  # e.g. early stopping before swa_epoch_start
            print("SWA: no epoch was averaged (training ended before ensembles.swa_epoch_start)")
            return
        if trainer.current_epoch - 1 < self.swa_end:  # Lightning copies the average in only after the last epoch
            self.transfer_weights(self._average_model, pl_module)
            print("SWA: training stopped early; the average of the epochs so far is used (BatchNorm not refreshed)")
        folder = _checkpoint_folder(trainer)
        path = folder / f"{SWA_FILE}.ckpt"
        trainer.save_checkpoint(path, weights_only=True)
        if not trainer.is_global_zero:
            return
        split_metrics = evaluate_ensemble(
            {"swa": pl_module}, trainer.datamodule, "val", trainer.strategy.root_device, trainer.precision_plugin
        )
        monitor = pl_module.task.monitor
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_score", None)
        self.result = {
            "checkpoint": str(path),
            "averaged_epochs": int(self.n_averaged),
            "val": split_metrics["swa"],
            "best_checkpoint": getattr(callback, "best_model_path", None),
            "best_checkpoint_score": None if best is None else float(best),
        }
        Path(trainer.default_root_dir, f"{SWA_FILE}.json").write_text(json.dumps(self.result, indent=2))
        versus = f" (best checkpoint: {callback.monitor} {float(best):.4f})" if best is not None else ""
        score = split_metrics["swa"][monitor]
        print(f"SWA of {self.result['averaged_epochs']} epochs: val/{monitor} {score:.4f}{versus}")
        print(f"SWA weights: {path} (test them with --ckpt_path {path})")


def _checkpoint_folder(trainer: pl.Trainer) -> Path:
    dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
    return Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "checkpoints"


def cycle_end_epochs(pl_module: pl.LightningModule, max_epochs: int | None) -> list[int]:
    """0-based epochs at whose end a restart cycle of the model's schedule ends; [] for a schedule without restarts
    (the contract's optional `lr_schedule`, contract.py)."""
    schedule = getattr(pl_module, "lr_schedule", None)
    return schedule.cycle_ends(max_epochs or 0) if schedule is not None else []


class SnapshotEnsemble(Callback):
    """A checkpoint at the end of every restart cycle, and after fit their ensemble evaluated next to each snapshot.

    Each snapshot is a weights-only checkpoint `snapshot-epochNN.ckpt` in the run's checkpoint folder (NN: the
    0-based epoch it ends). The ensemble predicts the mean of the snapshots' activations (probabilities, values,
    per-pixel probabilities); its metrics are computed from that mean exactly as a single model's are.
    """

    def __init__(self, splits: list[str] | tuple[str, ...] = ("val",)):
        self.splits = list(splits)
        self.epochs: list[int] = []
        self.paths: list[str] = []
        self.result: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.epochs = cycle_end_epochs(pl_module, trainer.max_epochs)
        if not self.epochs:
            raise ProjectError(
                "ensembles.snapshots needs a schedule with restarts that end within trainer.max_epochs "
                "(model.lr_scheduler.name: sgdr with model.lr_scheduler.restart_epochs <= trainer.max_epochs)"
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.current_epoch not in self.epochs:
            return
        path = _checkpoint_folder(trainer) / f"snapshot-epoch{trainer.current_epoch:02d}.ckpt"
        trainer.save_checkpoint(path, weights_only=True)  # weights (EMA ones, if on) and hyperparameters
        if str(path) not in self.paths:
            self.paths.append(str(path))

    def state_dict(self) -> dict[str, Any]:
        return {"paths": self.paths}  # a resumed fit still ensembles the snapshots saved before the restart

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.paths = list(state_dict.get("paths", []))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero:
            return
        paths = [path for path in self.paths if Path(path).is_file()]
        if not paths:
            print(f"Snapshot ensemble: no snapshot saved (restart cycles end after epochs {self.epochs})")
            return
        self.result = self.evaluate(trainer, pl_module, paths)

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, paths: list[str]) -> dict[str, Any]:
        """Each snapshot's and the ensemble's metrics on `self.splits`; written, printed and logged."""
        device = trainer.strategy.root_device
        members = {}
        for path in paths:
            member = copy.deepcopy(pl_module)  # the same architecture (and precision) as the trained model
            member.load_state_dict(read_checkpoint(path)["state_dict"])
            members[Path(path).stem] = member.to(device)
        datamodule = trainer.datamodule
        splits = [split for split in self.splits if split in datamodule.splits]
        metrics = {
            split: evaluate_ensemble(members, datamodule, split, device, trainer.precision_plugin) for split in splits
        }
        monitor = pl_module.task.monitor
        result = {"snapshots": paths, "monitor": monitor, "metrics": metrics}
        run_dir = Path(trainer.default_root_dir)
        (run_dir / f"{SNAPSHOT_FILE}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        table = to_markdown(metrics, monitor)
        heading = f"Snapshot ensemble of {len(paths)} snapshots (mean of their activations)"
        (run_dir / f"{SNAPSHOT_FILE}.md").write_text(f"# {heading}\n\n{table}", encoding="utf-8")
        print(f"\n{heading}:\n{table}Written to {run_dir / f'{SNAPSHOT_FILE}.md'}")
        scalars = {
            f"snapshot_ensemble/{split}/{name}": value
            for split, by_model in metrics.items()
            for name, value in by_model["ensemble"].items()
        }
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
        return result
