"""Command line: LightningCLI (fit / validate / test / predict) plus the project's own commands.

    python -m PACKAGE toy-data
    python -m PACKAGE fit     --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE test    --config configs/default.yaml --config configs/toy.yaml --ckpt_path best
    python -m PACKAGE predict --config configs/default.yaml --config configs/toy.yaml --ckpt_path best
    python -m PACKAGE baseline --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE diagnose --config configs/default.yaml --config configs/toy.yaml --ckpt_path best

Every run gets its own folder under `runs/` (see runs.py); `--ckpt_path last|best` finds the newest one.
"""

from __future__ import annotations

import itertools
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from . import runs
from .callbacks.prediction_writer import CSVPredictionWriter
from .callbacks.progress import progress_bar_for
from .checkpoint_io import AtomicCheckpointIO
from .data import toy
from .data.datamodule import DataModule
from .errors import ProjectError
from .loggers import finish_wandb_runs, wandb_offline_without_key
from .module import Model
from .precision import check_strategy_available, supported_precision
from .trainer import ProjectTrainer

PACKAGE = __package__
# Commands that are not Trainer methods: name -> main(argv).
PROJECT_COMMANDS: dict[str, Callable[[list[str]], None]] = {"toy-data": toy.main}


class ProjectCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # ProjectTrainer's methods become subcommands like fit's; model and data come from the config, as for validate.
        return {**LightningCLI.subcommands(), "baseline": {"model", "datamodule"}, "diagnose": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--runs_dir", default="runs", help="Folder that holds one sub-folder per run.")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # The model's task decides how targets are read, its backbone the input size and normalization; the data
        # decides the classes, the regression target scaling and the encoder sizes (features, vocabulary).
        parser.link_arguments("model.task", "data.task")
        parser.link_arguments("model.backbone", "data.backbone")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.target_stats", "model.target_stats", apply_on="instantiate")
        parser.link_arguments("data.input_specs", "model.inputs", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        ckpt_path = self._resolve_ckpt_path(config.runs_dir, config.get("ckpt_path"))
        if "ckpt_path" in config:  # `baseline` takes no checkpoint
            config.ckpt_path = str(ckpt_path) if ckpt_path else None
        resuming = ckpt_path is not None and self.subcommand == "fit"
        # A resumed fit continues in its own folder and its own logger runs.
        run_dir = runs.run_dir_of_checkpoint(ckpt_path) if resuming else None
        self.run_dir = run_dir or runs.new_run_dir(config.runs_dir, self.subcommand)
        runs.share_with_child_processes(self.run_dir)
        config.trainer.default_root_dir = str(self.run_dir)
        config.checkpoint.dirpath = str(self.run_dir / "checkpoints")
        loggers = _as_list(config.trainer.logger)
        versions = runs.saved_logger_versions(ckpt_path) if resuming else []
        for logger, version in itertools.zip_longest(loggers, versions[: len(loggers)]):
            if "save_dir" in logger.init_args:
                logger.init_args.save_dir = str(self.run_dir)
            if version is not None and "version" in logger.init_args:
                logger.init_args.version = version
            if logger.class_path.endswith("WandbLogger"):
                logger.init_args.name = logger.init_args.get("name") or self.run_dir.name
                wandb_offline_without_key()
        check_strategy_available(config.trainer.get("strategy"))
        config.trainer.precision = supported_precision(config.trainer.get("precision"))
        self._started = time.perf_counter()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # Crash-safe checkpoint files, unless a strategy brings its own writer (DeepSpeed, sharded FSDP).
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _resolve_ckpt_path(self, runs_dir: str, ckpt_path: str | None) -> Path | None:
        if ckpt_path in (None, ""):
            return None
        if ckpt_path == "last":
            return runs.find_last_checkpoint(runs_dir)
        if ckpt_path == "best":
            return runs.find_best_checkpoint(runs_dir)
        path = Path(ckpt_path)
        if not path.is_file():
            raise ProjectError(f"ckpt_path={ckpt_path!r} does not exist (use a file, 'last' or 'best')")
        return path

    @rank_zero_only
    def after_validate(self) -> None:
        self._write_metrics("validate")

    @rank_zero_only
    def after_test(self) -> None:
        self._write_metrics("test")

    def _write_metrics(self, command: str) -> None:
        """`<run>/<command>_metrics.json`: the numbers a script or a report reads back (synced across ranks)."""
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        path = runs.write_json(self.run_dir / f"{command}_metrics.json", metrics)
        print(f"Metrics written to {path}")

    @rank_zero_only
    def after_fit(self) -> None:
        trainer = self.trainer
        callback = trainer.checkpoint_callback
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        summary = {
            "run_dir": str(self.run_dir),
            "seconds": round(time.perf_counter() - self._started, 1),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "val_metrics": metrics,
            "monitor": getattr(callback, "monitor", None),
            "best_score": _float_or_none(getattr(callback, "best_model_score", None)),
            "best_checkpoint": getattr(callback, "best_model_path", None) or None,
            "last_checkpoint": getattr(callback, "last_model_path", None) or None,
        }
        if trainer.fast_dev_run:
            print(f"fast_dev_run finished in {summary['seconds']} s (no checkpoints are written in this mode)")
            return
        runs.write_json(self.run_dir / runs.SUMMARY_FILE, summary)
        print(f"\nFinished fit in {summary['seconds']} s: {summary['epochs']} epochs, {summary['global_step']} steps")
        print("Final validation metrics:")
        for name, value in sorted(metrics.items()):
            print(f"  {name:<12} {value:.4f}")
        if summary["best_checkpoint"]:
            print(f"Best checkpoint ({summary['monitor']}={summary['best_score']:.4f}): {summary['best_checkpoint']}")
        print(f"Run folder: {self.run_dir}")


def _as_list(value: object) -> list:
    if not value or value is True:
        return []
    return list(value) if isinstance(value, list) else [value]


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)


def _one_line(error: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it with its traceback."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    # A worker's traceback ends with "package.errors.DataError: <message>".
    return re.sub(r"^[\w.]+Error: ", "", lines[-1]) if lines else type(error).__name__


def main(args: list[str] | None = None) -> ProjectCLI | None:
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in PROJECT_COMMANDS:
        PROJECT_COMMANDS[argv[0]](argv[1:])
        return None
    epilog = "project commands: " + ", ".join(
        f"{name} (python -m {PACKAGE} {name} --help)" for name in PROJECT_COMMANDS
    )
    try:
        cli = ProjectCLI(
            Model,
            DataModule,
            trainer_class=ProjectTrainer,
            trainer_defaults={"callbacks": [progress_bar_for(sys.stdout), CSVPredictionWriter()]},
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": f"python -m {PACKAGE}", "epilog": epilog},
            args=args,  # None: LightningCLI reads sys.argv itself
        )
        finish_wandb_runs(cli.trainer.loggers)
        return cli
    except ProjectError as error:
        sys.exit(f"error: {_one_line(error)}")
    finally:
        runs.forget_shared_run_dir()
