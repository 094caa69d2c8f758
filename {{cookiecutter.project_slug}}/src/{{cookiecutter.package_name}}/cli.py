"""Command line: LightningCLI (fit / validate / test / predict) plus the project's own commands.

    python -m PACKAGE toy-data
    python -m PACKAGE fit     --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE test    --config configs/default.yaml --config configs/toy.yaml --ckpt_path best
    python -m PACKAGE predict --config configs/default.yaml --config configs/toy.yaml --ckpt_path best
    python -m PACKAGE baseline --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE diagnose --config configs/default.yaml --config configs/toy.yaml --ckpt_path best
    python -m PACKAGE lr-find  --config configs/default.yaml --config configs/toy.yaml [--num_training 100]
    python -m PACKAGE export   --config configs/default.yaml --config configs/toy.yaml --ckpt_path best
    python -m PACKAGE serve    --config configs/default.yaml --config configs/toy.yaml --ckpt_path best [--port 8000]
    python -m PACKAGE repeat   --repeats 5 --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE cv       --folds 5   --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE label-issues --folds 5 --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE sweep    --file configs/sweep.yaml [--count 20] [--dry-run]
    python -m PACKAGE optimize-data --config configs/default.yaml --config configs/toy.yaml [--output s3://...]

Every run gets its own folder under `runs/` (practices/runs.py); `--ckpt_path last|best` finds the newest one.
`lr-find` plots loss vs learning rate and prints the `--model.optimizer.lr` to use (practices/lr_finder.py);
`repeat` and `cv` run `fit` once per seed / fold and report mean ± std of the optimizing metric
(practices/multirun.py); `label-issues` ranks the non-test labels by how likely they are wrong, from `cv`'s
out-of-fold predictions (practices/label_issues.py, cleanlab); `sweep` runs a W&B agent whose trials are `fit`
commands (practices/sweep.py); `export` writes TorchScript and ONNX files of a checkpoint and checks them against
it (practices/export.py); `serve` answers HTTP requests with a checkpoint's predictions (practices/serve.py,
LitServe: pip install -e ".[serve]"). The model is any LightningModule the config names (`model.class_path`):
module.Model, or one of your own (contract.py).
"""

from __future__ import annotations

import importlib
import itertools
import os
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import Namespace
from pytorch_lightning import Callback, Trainer
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only

from .data import streaming, toy
from .data.datamodule import DataModule
from .errors import ProjectError
from .practices import compatibility, label_issues, multirun, runs, sweep
from .practices.callbacks.checkpoint import LastEveryEpochCheckpoint
from .practices.callbacks.diagnosis import Diagnosis
from .practices.callbacks.ensembles import Ensembles
from .practices.callbacks.prediction_writer import CSVPredictionWriter
from .practices.callbacks.progress import progress_bar_for
from .practices.callbacks.resume import ConfiguredOptimizerOnResume
from .practices.checkpoint_io import AtomicCheckpointIO, read_checkpoint
from .practices.compatibility import TrainedOn
from .practices.loggers import (
    LIGHTNING_CSV_LOGGERS,
    HParamsMetric,
    SaveAndLogConfig,
    continue_histories,
    finish_wandb_runs,
    skip_wandb_launch_import_when_nothing_staged,
    wandb_offline_when_unavailable,
)
from .practices.precision import check_strategy_available, supported_precision
from .practices.trainer import ProjectTrainer

PACKAGE = __package__
# Recipes that are not the model: each a callback with a config section of its own (not trainer.callbacks entries:
# a second --config file would replace that whole list), joined to the Trainer's callbacks when switched on, for
# the commands it serves. Image-only recipes are missing from projects without images (the module is not there).
RECIPES = {
    "finetuning": (".practices.callbacks.finetuning", "StagedFinetuning", ("fit",)),
    "mixing": (".practices.callbacks.mixing", "MixupCutmix", ("fit",)),
    "tta": (".practices.tta", "TestTimeAugmentation", ("test", "predict", "serve")),
}
# LightningCLI's own top-level --optimizer / --lr_scheduler would replace configure_optimizers and silently drop
# the parameter groups, the schedule and fine-tuning; the model's own keys keep them.
REFUSED_KEYS = {
    "optimizer": "model.optimizer (e.g. --model.optimizer torch.optim.SGD --model.optimizer.lr 0.1)",
    "lr_scheduler": "model.lr_scheduler (e.g. --model.lr_scheduler.name onecycle)",
}


def available_recipes() -> dict[str, type[Callback]]:
    """The recipe callbacks this project has: config section -> class."""
    recipes = {}
    for section, (module_name, class_name, _) in RECIPES.items():
        try:
            module = importlib.import_module(module_name, __package__)
        except ModuleNotFoundError:  # pruned at render: the project has no image input
            continue
        recipes[section] = getattr(module, class_name)
    return recipes


def task_class_path(task: Namespace | None) -> str | None:
    """The task's class path, for the data's target reader (a parse-time link: the data is built first)."""
    return None if task is None else task.class_path


def image_data_config(network: Namespace | None) -> dict[str, Any] | None:
    """What the network's image encoder needs of the data (input size, normalization), read from its config by the
    network class's `data_config` (models/network.py); None when the class has none (the data's defaults apply)."""
    if network is None:
        return None
    module_name, _, class_name = network.class_path.rpartition(".")
    data_config = getattr(getattr(importlib.import_module(module_name), class_name), "data_config", None)
    if data_config is None:
        return None
    init_args = network.get("init_args")
    return data_config(**(init_args.as_dict() if init_args is not None else {}))


# Commands that are not Trainer methods: name -> main(argv). repeat and cv run `fit` (main below) several times.
PROJECT_COMMANDS: dict[str, Callable[[list[str]], object]] = {
    "toy-data": toy.main,
    "repeat": lambda argv: multirun.repeat_main(argv, fit=main),
    "cv": lambda argv: multirun.cv_main(argv, fit=main),
    "label-issues": lambda argv: label_issues.main(argv, fit=main),
    "sweep": sweep.main,
    "optimize-data": streaming.optimize_data_main,  # LitData chunks for data.source.format: streaming
}
# Trainer-method commands typed with a hyphen, as the other commands are: name -> method.
HYPHENATED = {"lr-find": "lr_find"}


class ProjectCLI(LightningCLI):
    def __init__(self, *args: Any, only_subcommand: str | None = None, **kwargs: Any) -> None:
        # Each subcommand's parser reads the signatures of the trainer, model, data and callbacks (about 0.2 s each,
        # eight of them): only the typed one is built in full; the others stay empty parsers that still list
        # themselves in --help. None builds them all (a command line that names no subcommand).
        self._only_subcommand = only_subcommand
        super().__init__(*args, **kwargs)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        if self._only_subcommand is None or subcommand == self._only_subcommand:
            return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        self._subcommand_method_arguments[subcommand] = []
        return self.init_parser(**kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # ProjectTrainer's methods become subcommands like fit's; model and data come from the config, as for validate.
        own = {"model", "datamodule"}
        commands = ("baseline", "diagnose", "export", "lr_find", "serve")
        return {**LightningCLI.subcommands(), **dict.fromkeys(commands, own)}

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
        # Sections of their own, not trainer.callbacks entries: a second --config file replaces that whole list.
        parser.add_class_arguments(Ensembles, "ensembles")
        for section, recipe in available_recipes().items():
            parser.add_class_arguments(recipe, section)
        # The model's task decides how targets are read, its network's image encoder the input size and
        # normalization; the data decides the classes, the regression target scaling and the encoder sizes.
        parser.link_arguments("model.init_args.task", "data.task_class", compute_fn=task_class_path)
        parser.link_arguments("model.init_args.network", "data.image_config", compute_fn=image_data_config)
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.target_stats", "model.init_args.target_stats", apply_on="instantiate")
        parser.link_arguments("data.input_specs", "model.init_args.inputs", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Lightning's step that reads an explicit --ckpt_path's model hyperparameters into the config (to rebuild the
        model the checkpoint was trained as), preceded by the project's: `last` / `best` become the file they name,
        the file is read as data only (one line if it would run code or is no checkpoint), and a checkpoint of
        another task is refused in one line. A resumed fit keeps the configured settings: a new
        --model.optimizer.lr applies (practices/callbacks/resume.py) and config.yaml states what ran."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        self.ckpt_path = self.checkpoint = None
        if "ckpt_path" not in config:  # `baseline` and `lr-find` take no checkpoint
            return
        given = config.ckpt_path
        self.ckpt_path = self._resolve_ckpt_path(config.runs_dir, given)
        config.ckpt_path = str(self.ckpt_path) if self.ckpt_path else None
        if self.ckpt_path is None:
            return
        # Checked in full against the model and data once they are built (instantiate_classes).
        self.checkpoint = compatibility.metadata(read_checkpoint(self.ckpt_path))
        compatibility.check_configured_task(self.ckpt_path, self.checkpoint, config.get("model"))
        if subcommand != "fit" and given not in ("last", "best"):
            super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        ckpt_path = self.ckpt_path
        resuming = ckpt_path is not None and self.subcommand == "fit"
        # A resumed fit continues in its own folder and its own logger runs.
        run_dir = runs.run_dir_of_checkpoint(ckpt_path) if resuming else None
        self.run_dir = run_dir or runs.new_run_dir(config.runs_dir, self.subcommand)
        runs.share_with_child_processes(self.run_dir)
        config.trainer.default_root_dir = str(self.run_dir)
        config.checkpoint.dirpath = str(self.run_dir / "checkpoints")
        loggers = _as_list(config.trainer.logger)
        versions, self.resumed_step = runs.saved_run_state(self.checkpoint) if resuming else ([], None)
        for logger, version in itertools.zip_longest(loggers, versions[: len(loggers)]):
            # Lightning's CSVLogger deletes a version's metrics.csv when a fit resumes into it: the project's
            # subclass (same arguments) continues it.
            if logger.class_path in LIGHTNING_CSV_LOGGERS:
                logger.class_path = f"{PACKAGE}.practices.loggers.CSVLogger"
            if "save_dir" in logger.init_args:
                logger.init_args.save_dir = str(self.run_dir)
            if version is not None and "version" in logger.init_args:
                logger.init_args.version = version
            if logger.class_path.endswith("WandbLogger"):
                logger.init_args.name = logger.init_args.get("name") or self.run_dir.name
                wandb_offline_when_unavailable(self.run_dir)
                skip_wandb_launch_import_when_nothing_staged()
        check_strategy_available(config.trainer.get("strategy"))
        config.trainer.precision = supported_precision(config.trainer.get("precision"))
        self._started = time.perf_counter()

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # What the data inferred (table columns from train.csv) goes into the run's config.yaml, written at setup:
        # the run then repeats as it ran, whatever the data folder holds later.
        data_config = (self.config[self.subcommand] if self.subcommand else self.config).get("data")
        for group, settings in getattr(self.datamodule, "inferred_settings", {}).items():
            for key, value in settings.items():
                if data_config is not None and data_config.get(group) is not None:
                    data_config[f"{group}.{key}"] = value
        # The machinery reads the module only through the contract: a module of the user's own that misses part
        # of it fails here, in one line, instead of deep inside a callback.
        missing = [name for name in ("task", "network", "inputs") if not hasattr(self.model, name)]
        if missing:
            raise ProjectError(
                f"model.class_path={type(self.model).__module__}.{type(self.model).__qualname__} lacks "
                f"{', '.join(missing)}: the project's commands need a module that meets contract.ProjectModule"
            )
        if self.checkpoint is not None:  # trained for this task, classes, inputs and architecture?
            compatibility.check(self.ckpt_path, self.checkpoint, self.model, self.datamodule)
            difference = compatibility.data_difference(self.checkpoint, self.datamodule)
            if difference and self.subcommand in ("validate", "test", "predict"):  # fine, but say so
                rank_zero_info(f"{difference}: {self.subcommand} runs {self.ckpt_path} on the data configured now")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        recipes = [
            recipe
            for section, (_, _, commands) in RECIPES.items()
            if self.subcommand in commands and (recipe := self._get(self.config_init, section, None)) is not None
            if recipe.active
        ]
        if self.subcommand == "fit":  # EMA / SWA / snapshots
            recipes += self._get(self.config_init, "ensembles").callbacks()
        if self.subcommand == "fit" and self.checkpoint is not None:  # a new --model.optimizer.lr applies on resume
            recipes.append(ConfiguredOptimizerOnResume())
        trainer_config = self._get(self.config_init, "trainer")
        # First, so that e.g. the prediction writer sees the test-time-augmented outputs.
        callbacks = recipes + _as_list(trainer_config.get("callbacks"))
        if trainer_config.get("logger") in (False, []):  # `--trainer.logger false`: nothing to log the LR to
            callbacks = [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]
        kwargs["callbacks"] = callbacks
        trainer = super().instantiate_trainer(**kwargs)
        # Crash-safe checkpoint files, unless a strategy brings its own writer (DeepSpeed, sharded FSDP).
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def before_fit(self) -> None:
        if self.checkpoint is not None:  # nothing to train, or a finished run extended by accident: one line
            note = runs.check_resume(
                self.ckpt_path, self.checkpoint, runs.run_dir_of_checkpoint(self.ckpt_path),
                self.trainer.max_epochs, self.trainer.max_steps,
            )  # fmt: skip
            if note and self.trainer.is_global_zero:
                print(note)
        if self.resumed_step is not None:  # the rows / points logged after the checkpoint are redone: drop them
            continue_histories(self.trainer.loggers, self.resumed_step)

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
            "max_epochs": trainer.max_epochs,  # a resume must raise a limit to extend the finished run
            "max_steps": trainer.max_steps,
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
        if self.resumed_step is not None and trainer.global_step == self.resumed_step:  # e.g. max_steps reached
            print(f"\nNothing trained: {self.ckpt_path} had reached the training limits; {self.run_dir} is unchanged")
            return
        # The kept checkpoint against the baselines on val (the Diagnosis callback compared them after fit).
        comparison = next((c.comparison for c in trainer.callbacks if isinstance(c, Diagnosis) and c.comparison), None)
        if comparison is not None:
            summary["baseline_comparison"] = comparison
        runs.write_json(self.run_dir / runs.SUMMARY_FILE, summary)
        print(f"\nFinished fit in {summary['seconds']} s: {summary['epochs']} epochs, {summary['global_step']} steps")
        if metrics:  # the last epoch's, which need not be the kept checkpoint's: say which is which
            print(f"Validation metrics of the last epoch ({trainer.current_epoch - 1}):")
        for name, value in sorted(metrics.items()):
            print(f"  {name:<12} {value:.4f}")
        optimize = summary["optimize"]
        if summary["best_checkpoint"]:
            kept = f"{optimize['metric']} {optimize['value']:.4f}" if optimize["value"] is not None else "checkpoint"
            print(f"Kept checkpoint ({kept}; monitored {summary['monitor']}): {summary['best_checkpoint']}")
        print(f"Run folder: {self.run_dir}")
        if comparison is not None and comparison["warning"]:
            print(comparison["warning"])  # the last line a user reads


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


def refused_key(argv: list[str]) -> str | None:
    """The one-line error for LightningCLI's own --optimizer / --lr_scheduler, on the command line or at the top of
    a --config file; None when neither is used."""
    keys = {arg.split("=")[0][2:].split(".")[0] for arg in argv if arg.startswith("--")}
    configs = [value for flag, value in zip(argv, argv[1:], strict=False) if flag == "--config"]
    configs += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    for value in configs:
        if Path(value).is_file():
            config = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
            keys |= set(config) if isinstance(config, dict) else set()
    for key, instead in REFUSED_KEYS.items():
        if key in keys:
            return (
                f"{key} is not a key of this project: set {instead}, which keeps the parameter groups, "
                "the LR schedule and fine-tuning working"
            )
    return None


def typed_subcommand(argv: list[str]) -> str | None:
    """The Trainer subcommand a command line names; "" for a bare --help (no parser needed in full); None when
    it names none, e.g. a top-level --config file that holds the subcommand (every parser is then built)."""
    names = ProjectCLI.subcommands()
    typed = next((arg for arg in argv if arg in names), None)
    if typed is None and argv and all(arg in ("-h", "--help") for arg in argv):
        return ""
    return typed


def main(args: list[str] | None = None) -> ProjectCLI | None:
    argv = sys.argv[1:] if args is None else args
    refused = refused_key(argv)
    if refused:
        sys.exit(f"error: {refused}")
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
            # Any LightningModule: configs/default.yaml names module.Model, and a user's own module (a Model subclass,
            # or any module meeting contract.ProjectModule) runs through `--model.class_path` / `model: class_path:`.
            pl.LightningModule,
            DataModule,
            subclass_mode_model=True,
            auto_configure_optimizers=False,  # the model's optimizer / lr_scheduler keys instead (REFUSED_KEYS)
            trainer_class=ProjectTrainer,
            trainer_defaults={
                "callbacks": [progress_bar_for(sys.stdout), CSVPredictionWriter(), HParamsMetric(), TrainedOn()]
            },
            save_config_callback=SaveAndLogConfig,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": f"python -m {PACKAGE}", "epilog": epilog},
            args=args,  # None: LightningCLI reads sys.argv itself
            only_subcommand=typed_subcommand(sys.argv[1:] if args is None else args),
        )
        finish_wandb_runs(cli.trainer.loggers)
        return cli
    except ProjectError as error:
        sys.exit(f"error: {_one_line(error)}")
    finally:
        runs.forget_shared_run_dir()
