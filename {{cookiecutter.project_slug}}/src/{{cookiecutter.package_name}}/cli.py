"""Command line: LightningCLI (fit / validate / test / predict) plus the project's own commands.

    python -m PACKAGE toy-data
    python -m PACKAGE fit     --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE test    --config configs/default.yaml --config configs/toy.yaml --ckpt_path best
    python -m PACKAGE predict --config configs/default.yaml --config configs/toy.yaml --ckpt_path best
    python -m PACKAGE baseline --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE diagnose --config configs/default.yaml --config configs/toy.yaml --ckpt_path best
    python -m PACKAGE lr-find  --config configs/default.yaml --config configs/toy.yaml [--num_training 100]
    python -m PACKAGE export   --config configs/default.yaml --config configs/toy.yaml --ckpt_path best
    python -m PACKAGE repeat   --repeats 5 --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE cv       --folds 5   --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE sweep    --file configs/sweep.yaml [--count 20] [--dry-run]

Every run gets its own folder under `runs/` (see runs.py); `--ckpt_path last|best` finds the newest one.
`lr-find` plots loss vs learning rate and prints the `--model.lr` to use (lr_finder.py); `repeat` and `cv` run
`fit` once per seed / fold and report mean ± std of the optimizing metric (multirun.py); `sweep` runs a W&B agent
whose trials are `fit` commands (sweep.py); `export` writes TorchScript and ONNX files of a checkpoint and checks
them against it (export.py).
"""

from __future__ import annotations

import itertools
import os
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytorch_lightning import Trainer
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from .practices import multirun, runs, sweep
from .practices.callbacks.checkpoint import LastEveryEpochCheckpoint
from .practices.callbacks.ensembles import Ensembles
from .practices.callbacks.prediction_writer import CSVPredictionWriter
from .practices.callbacks.progress import progress_bar_for
from .practices.checkpoint_io import AtomicCheckpointIO
from .data import toy
from .data.datamodule import DataModule
from .errors import ProjectError
from .practices.loggers import SaveAndLogConfig, finish_wandb_runs, wandb_offline_without_key
from .module import Model
from .practices.precision import check_strategy_available, supported_precision
from .practices.trainer import ProjectTrainer

PACKAGE = __package__
# Commands that are not Trainer methods: name -> main(argv). repeat and cv run `fit` (main below) several times.
PROJECT_COMMANDS: dict[str, Callable[[list[str]], object]] = {
    "toy-data": toy.main,
    "repeat": lambda argv: multirun.repeat_main(argv, fit=main),
    "cv": lambda argv: multirun.cv_main(argv, fit=main),
    "sweep": sweep.main,
}
# Trainer-method commands typed with a hyphen, as the other commands are: name -> method.
HYPHENATED = {"lr-find": "lr_find"}


class ProjectCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # ProjectTrainer's methods become subcommands like fit's; model and data come from the config, as for validate.
        own = {"model", "datamodule"}
        return {**LightningCLI.subcommands(), "baseline": own, "diagnose": own, "export": own, "lr_find": own}

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Lightning's own `seed_everything: true` ("a random seed") seeds 0 (PL 2.6) and null is rejected: both draw
        # a fresh seed here (parse_arguments); it is logged and saved in the run's config.yaml to repeat the run.
        parser.add_argument(
            "--seed_everything",
            type=bool | int | None,
            default=True,
            help="An int seeds every generator (reproducible runs); null or true: a new random seed each run.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        if config.get("seed_everything") in (None, True):
            inherited = os.environ.get("PL_GLOBAL_SEED") if os.environ.get("LOCAL_RANK", "0") != "0" else None
            # Processes Lightning launches for DDP take rank zero's seed from the environment it set.
            config.seed_everything = int(inherited) if inherited else random.SystemRandom().randrange(2**31)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--runs_dir", default="runs", help="Folder that holds one sub-folder per run.")
        parser.add_lightning_class_args(LastEveryEpochCheckpoint, "checkpoint")
        # A section of its own, not trainer.callbacks entries: a second --config file replaces that whole list.
        parser.add_class_arguments(Ensembles, "ensembles")
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
        ensembles = self._get(self.config_init, "ensembles").callbacks() if self.subcommand == "fit" else []
        if ensembles:  # EMA / SWA / snapshots join the configured callbacks
            kwargs["callbacks"] = _as_list(self._get(self.config_init, "trainer").get("callbacks")) + ensembles
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
            # The optimizing metric at the kept checkpoint: what `repeat` and `cv` report over runs.
            "optimize": {
                "metric": f"val/{self.model.task.monitor}",
                "mode": self.model.task.mode,
                "value": multirun.kept_value(self.run_dir, f"val/{self.model.task.monitor}", callback, metrics),
            },
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
        try:
            PROJECT_COMMANDS[argv[0]](argv[1:])
        except ProjectError as error:
            sys.exit(f"error: {_one_line(error)}")
        return None
    if argv and argv[0] in HYPHENATED:
        if args is None:  # LightningCLI reads sys.argv itself (and DDP launches its processes with it)
            sys.argv[1] = HYPHENATED[argv[0]]
        else:
            args = [HYPHENATED[argv[0]], *argv[1:]]
    epilog = "project commands: " + ", ".join(
        f"{name} (python -m {PACKAGE} {name} --help)" for name in [*PROJECT_COMMANDS, *HYPHENATED]
    )
    try:
        cli = ProjectCLI(
            Model,
            DataModule,
            trainer_class=ProjectTrainer,
            trainer_defaults={"callbacks": [progress_bar_for(sys.stdout), CSVPredictionWriter()]},
            save_config_callback=SaveAndLogConfig,
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
