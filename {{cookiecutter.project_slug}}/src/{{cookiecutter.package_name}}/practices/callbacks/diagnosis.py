"""After fit: is the model under-fitting, over-fitting or facing data mismatch, and what to try next.

Evaluates the best checkpoint on train, train-dev, val and test (evaluation transform everywhere), compares the
errors with a reference error (bias_variance.py), and looks at the val errors (error_analysis.py: the task's own
analysis, e.g. the most-confused classes, per-label F1, residuals or per-class IoU, and the worst examples).
Writes `diagnosis.md`, `diagnosis.json` and the images (`confusion_matrix.png` for classes, `worst_examples.png`
for image inputs) into the run folder and logs them. The `diagnose` command runs the same on a checkpoint.

It also compares the checkpoint with the baselines (practices/baselines.py) on val, on the optimizing metric:
the newest `baseline` run on the same data and setup, else the baselines fitted there and then (a few seconds on
a capped train sample). When the model is worse than the best of them it prints one WARNING line with what to
try; the comparison goes to `baseline_comparison.json` (and the fit's summary.json), diagnosis.json and the
loggers (`baseline/*`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy
import pytorch_lightning as pl
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from ...errors import ProjectError
from ...tasks import Task
from .. import baselines
from ..bias_variance import Diagnosis as Report
from ..bias_variance import SplitErrors, diagnose, title, to_dict, to_markdown
from ..checkpoint_io import read_checkpoint
from ..error_analysis import analyze, example_tiles
from ..evaluation import SplitEvaluation, evaluate_split

SPLITS = ("train", "train_dev", "val", "test")


class Diagnosis(pl.Callback):
    """Bias / variance / data-mismatch diagnosis and error analysis at the end of fit.

    Args:
        reference_error: human-level error on this task (a proxy for the Bayes error), in the task's error units
            (the task's `error_meaning`: an error rate such as 0.02, or for regression an RMSE in train standard
            deviations). None: the best val error of the newest `baseline` run in the runs folder (when
            `use_baseline`), else 0.
        use_baseline: fall back to the newest baseline result when `reference_error` is None.
        worst_k: how many of the highest-loss val examples to show.
        enabled: run after fit (the `diagnose` command runs regardless).
        tolerance: gaps up to this size (an error difference, 0.01 = one point of error rate) are not a problem.
        train_samples: measure the train error on at most this many training samples (seeded); None: all.
            Train error is an estimate anyway, and a full pass over a large training set costs an epoch.
        compare_baselines: compare the model with the baselines on val and warn when it is worse.
        baseline_train_samples: without a `baseline` run on the same data, the baselines are fitted on at most
            this many training samples (seeded); None: all.
    """

    def __init__(
        self,
        reference_error: float | None = None,
        use_baseline: bool = True,
        worst_k: int = 16,
        enabled: bool = True,
        tolerance: float = 0.01,
        train_samples: int | None = 10000,
        compare_baselines: bool = True,
        baseline_train_samples: int | None = 5000,
    ):
        if reference_error is not None and not reference_error >= 0.0:
            raise ValueError(f"reference_error={reference_error} is an error: 0 or more (0 = perfect)")
        self.reference_error = reference_error
        self.use_baseline = use_baseline
        self.worst_k = worst_k
        self.enabled = enabled
        self.tolerance = tolerance
        self.train_samples = train_samples
        self.compare_baselines = compare_baselines
        self.baseline_train_samples = baseline_train_samples
        self.comparison: dict[str, Any] | None = None  # the latest run's baseline comparison (the fit's summary.json)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # fast_dev_run and overfit_batches runs are debugging runs: their errors diagnose nothing.
        if not self.enabled or trainer.fast_dev_run or trainer.overfit_batches or not trainer.is_global_zero:
            return
        if "FSDP" in type(trainer.strategy).__name__ or "DeepSpeed" in type(trainer.strategy).__name__:
            # Sharded weights: one rank alone cannot run the model. A checkpoint on one device can.
            print("Diagnosis skipped under a sharded strategy: run the `diagnose` command on the checkpoint.")
            return
        if not hasattr(trainer.datamodule, "splits"):
            print("Diagnosis skipped: it reads the splits of the project's DataModule, and fit got none.")
            return
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") or None
        with weights_from(pl_module, best):
            self.run(trainer, pl_module, trainer.datamodule, source=best or "the final weights")

    def run(
        self,
        trainer: pl.Trainer,
        module: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        source: str,
        notes: list[str] | None = None,
    ) -> dict[str, Any]:
        """Evaluate every split, diagnose, write and log the report; returns what diagnosis.json holds."""
        run_dir = Path(trainer.default_root_dir)
        device = trainer.strategy.root_device
        home = module.device  # after fit the Trainer has moved the model to the CPU; evaluate on the accelerator
        module.to(device)
        try:
            evaluations = {
                split: evaluate_split(
                    module,
                    datamodule,
                    split,
                    device,
                    trainer.precision_plugin,
                    self.train_samples if split in ("train", "train_dev") else None,
                    metrics=split == "val",
                )
                for split in SPLITS
                if split in datamodule.splits
            }
        finally:
            module.to(home)
        reference, reference_source, reference_notes = self.reference(run_dir.parent)
        errors = SplitErrors(reference, **{split: evaluation.error for split, evaluation in evaluations.items()})
        sizes = {split: len(evaluation.targets) for split, evaluation in evaluations.items()}
        task = module.task
        inputs = tuple(getattr(datamodule, "inputs", None) or module.inputs or ())
        report = diagnose(errors, self.tolerance, reference_source, sizes, task, inputs)
        report.notes.extend([*reference_notes, *(notes or [])])
        from ..label_issues import diagnosis_notes  # here: label_issues imports this module

        report.notes.extend(diagnosis_notes(run_dir.parent, datamodule))  # a label-issues run on this data
        result = {**to_dict(report), "weights": source}
        analysis, analysis_md, images = analyze(task, datamodule, evaluations["val"], self.worst_k)
        result["error_analysis"] = analysis
        markdown = f"# Diagnosis\n\nWeights: {source}\n\n{to_markdown(report, task)}{analysis_md}"
        run_dir.mkdir(parents=True, exist_ok=True)
        comparison = self.baseline_comparison(trainer, module, datamodule, evaluations["val"], run_dir)
        self.comparison = comparison
        if comparison is not None:
            result["baseline_comparison"] = comparison
            (run_dir / baselines.COMPARISON_FILE).write_text(json.dumps(comparison, indent=2), encoding="utf-8")
            markdown += comparison_markdown(comparison)
        (run_dir / "diagnosis.md").write_text(markdown, encoding="utf-8")
        (run_dir / "diagnosis.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        for name, image in images.items():
            image.save(run_dir / f"{name}.png")
        print(f"\nDiagnosis ({source}): {title(report)}\n\n{to_markdown(report, task)}")
        print(f"Diagnosis written to {run_dir / 'diagnosis.md'}")
        if comparison is not None:
            print(comparison["warning"] or comparison_line(comparison))
        self.log_to(trainer, report, markdown, images, comparison)
        log_examples_table(trainer, task, datamodule, evaluations["val"], analysis["worst_examples"])
        return result

    def reference(self, runs_dir: Path) -> tuple[float | None, str, list[str]]:
        """The reference error, where it comes from, and what that means for the avoidable bias."""
        if self.reference_error is not None:
            return self.reference_error, "configured human-level error", []
        latest = baselines.latest_result(runs_dir) if self.use_baseline else None
        if latest is not None:
            note = (
                "The reference is a baseline's error, an upper bound on the Bayes error: avoidable bias against it "
                "only says whether the model fits the training set better than the baseline does val. Set "
                "`reference_error` to a human-level error for a real estimate."
            )
            return latest[0], f"best baseline's val error: {latest[1]}", [note]
        return None, "unknown: set reference_error to a human-level error, or run `baseline`", []

    def baseline_comparison(
        self,
        trainer: pl.Trainer,
        module: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        val: SplitEvaluation,
        run_dir: Path,
    ) -> dict[str, Any] | None:
        """The model's val metric against the baselines' (`baselines.compare`), with where they come from."""
        task = module.task
        if not self.compare_baselines or task.monitor not in val.metrics:
            return None
        started = time.perf_counter()
        found = baselines.find_result(run_dir.parent, task, datamodule)
        if found is not None:
            result, source = found[0], f"the baseline run {found[1]}"
        else:
            try:
                result = baselines.run_baselines(
                    task, datamodule, max_train_samples=self.baseline_train_samples, splits=("train", "val")
                )
            except NotImplementedError as error:  # a task of the user's own without the baseline hooks
                print(f"Baseline comparison skipped: the task has no baselines ({error or 'NotImplementedError'})")
                return None
            source = f"fitted now on {result['train_samples']} training samples (`baseline` runs them on every split)"
        comparison = baselines.compare(val.metrics, result, task, next_steps(trainer, task, val.metrics, result))
        comparison["descriptions"] = result["descriptions"]
        comparison["source"] = source
        comparison["seconds"] = round(time.perf_counter() - started, 2)
        return comparison

    @staticmethod
    def log_to(
        trainer: pl.Trainer,
        report: Report,
        markdown: str,
        images: dict[str, Image.Image],
        comparison: dict[str, Any] | None = None,
    ) -> None:
        """Scalars to every logger; the table and images where the logger takes them (CSV: the files only)."""
        scalars = {f"diagnosis/{name}_error": value for name, value in vars(report.errors).items() if value is not None}
        scalars.update({f"diagnosis/{name}": value for name, value in report.gaps.items()})
        if comparison is not None:  # e.g. baseline/linear_val_acc, baseline/model_val_acc, baseline/model_worse
            metric = comparison["metric"].replace("/", "_")
            scalars.update({f"baseline/{name}_{metric}": value for name, value in comparison["baselines"].items()})
            scalars[f"baseline/model_{metric}"] = comparison["model"]
            scalars["baseline/model_worse"] = float(comparison["verdict"] == "worse")
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                rows = [[name, value] for name, value in scalars.items()]
                logger.log_table(key="diagnosis/table", columns=["quantity", "value"], data=rows)
                for name, image in images.items():
                    logger.log_image(key=f"diagnosis/{name}", images=[image])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("diagnosis", markdown, trainer.global_step)
                for name, image in images.items():
                    pixels = numpy.asarray(image)  # [H, W, 3] uint8
                    logger.experiment.add_image(f"diagnosis/{name}", pixels, trainer.global_step, dataformats="HWC")


def next_steps(trainer: pl.Trainer, task: Task, model: dict[str, float], result: dict[str, Any]) -> str:
    """What to try when the model is worse than a baseline, in one clause: the fixes of an under-trained model
    (learning rate, epochs, normalization), or, when it does not even beat the constant, a bug hunt first."""
    sign = 1.0 if task.mode == "max" else -1.0
    constant = result["baselines"].get(task.constant_baseline, {}).get("val", {}).get(task.monitor)
    value = model[task.monitor]
    if constant is not None and not (math.isfinite(value) and sign * (value - constant) > 0):
        return (
            f"it does not beat the {task.constant_baseline} baseline: check the labels, the loss and the inputs' "
            "normalization (the sanity checks at the start), then the learning rate (`lr-find`)"
        )
    optimizers = getattr(trainer, "optimizers", None) or []
    peaks = [group.get("initial_lr", group["lr"]) for group in optimizers[0].param_groups] if optimizers else []
    lr = f" (now {max(peaks):.3g})" if peaks else ""
    steps = [f"a higher --model.optimizer.lr{lr}, or the one `lr-find` suggests"]
    if trainer.current_epoch:
        steps.append(f"more epochs (ran {trainer.current_epoch} of --trainer.max_epochs {trainer.max_epochs})")
    steps.append("inputs on a common scale (the sanity checks at the start)")
    return "try " + "; ".join(steps)


def comparison_line(comparison: dict[str, Any]) -> str:
    """The comparison in one line when the model is not worse."""
    best, metric = comparison["best_baseline"], comparison["metric"].split("/")[-1]
    relation = "beats" if comparison["verdict"] == "better" else "ties with"
    return (
        f"Baselines: the model (val {metric} {comparison['model']:.4g}) {relation} the best baseline, "
        f"{best} ({comparison['baselines'][best]:.4g})"
    )


def comparison_markdown(comparison: dict[str, Any]) -> str:
    """The comparison as a section of diagnosis.md."""
    metric = comparison["metric"]
    lines = ["", "## Against the baselines", "", f"| model or baseline | {metric} |", "|---|---:|"]
    lines.append(f"| the model | {comparison['model']:.4g} |")
    lines += [f"| {name} | {value:.4g} |" for name, value in comparison["baselines"].items()]
    lines += ["", comparison["warning"] or comparison_line(comparison), "", f"Baselines: {comparison['source']}.", ""]
    lines += [f"- {name}: {text}." for name, text in comparison["descriptions"].items()]
    return "\n".join(lines) + "\n"


EXAMPLE_COLUMNS = ("id", "inputs", "true", "predicted", "confidence", "pixel_error", "loss")


def log_examples_table(
    trainer: pl.Trainer,
    task: Task,
    datamodule: pl.LightningDataModule,
    evaluation: SplitEvaluation,
    examples: list[dict[str, Any]],
) -> None:
    """W&B: the worst examples as a table to sort and filter (the input as an image, or the row's cells; truth,
    prediction, confidence, loss). Other loggers have the same rows in diagnosis.md."""
    loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
    if not loggers or not examples:
        return
    import wandb

    columns = [key for key in EXAMPLE_COLUMNS if key in examples[0]]
    pictures: list[str] = []
    if "image" in getattr(datamodule, "inputs", {}):
        pictures = list(task.example_pictures)
        tiles = example_tiles(task, datamodule, evaluation, examples)
    rows = [
        [*(wandb.Image(tile) for tile in (tiles[i] if pictures else [])), *(example[key] for key in columns)]
        for i, example in enumerate(examples)
    ]
    for logger in loggers:
        logger.log_table(key=f"diagnosis/worst_{evaluation.split}_examples", columns=[*pictures, *columns], data=rows)


@contextmanager
def weights_from(module: pl.LightningModule, checkpoint: str | None) -> Iterator[None]:
    """Temporarily load a checkpoint's weights into the module (no checkpoint: the weights as they are)."""
    if not checkpoint:
        yield
        return
    current = {name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()}
    load_weights(module, checkpoint)
    try:
        yield
    finally:
        module.load_state_dict(current)


def load_weights(module: pl.LightningModule, checkpoint: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint's state_dict into the module; returns the whole checkpoint."""
    state = read_checkpoint(checkpoint)  # data only: a file whose pickle would run code is refused
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as error:  # another backbone or number of classes than the configured model
        lines = [line.strip() for line in str(error).strip().splitlines()]
        detail = lines[1] if len(lines) > 1 else lines[0]  # the first line only says "Error(s) in loading"
        detail = detail if len(detail) < 160 else detail[:160] + "..."
        message = f"{checkpoint} does not fit the configured model (use the fit's model.* settings): {detail}"
        raise ProjectError(message) from None
    return state
