"""Label issues: the samples whose given label a model that never trained on them disagrees with (cleanlab).

    python -m PACKAGE label-issues --folds 5 --config configs/default.yaml --config configs/toy.yaml

Runs `cv` (practices/multirun.py: one fit per fold; every other argument goes to each fit) and, after each fold's
fit, predicts the fold's held-out rows with that fold's kept checkpoint. Every non-test sample thus gets an
out-of-fold prediction from a model that never saw its label, which is what confident learning needs: cleanlab
(`pip install -e ".[data-centric]"`) scores each given label and flags the likely wrong ones. How is the task's
business: `Task.label_issues` (tasks/), which calls the cleanlab helpers below; a task without it is refused.

Writes into `runs/<time>-label-issues-<id>/`:
- `label_issues.csv`: every non-test sample, most suspect first: rank, id, fold, given_label, suggested_label,
  label_quality (0..1, low = suspect; for classes the self-confidence, the out-of-fold probability of the given
  label), flagged (confident learning's verdict; regression: a residual outlier, see `numeric_label_issues`);
- `label_issues.json`: the counts, the top suspects and the data's identity, by which `diagnose` mentions them;
- `label_issues.png` (image inputs): the top suspects with their given and suggested labels;
- with a W&B logger, the same top suspects as a table in a run of their own.

The workflow: find (this command) -> review the top of the CSV (and the PNG) -> fix the labels that are wrong in
your data files -> retrain (and run it again: the ranking changes with the labels).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..answers import TASK_TYPE
from ..data.datamodule import RowDataset
from ..data.table import Row
from ..errors import ProjectError
from ..tasks import Task, load_task_class
from . import multirun, runs
from .callbacks.diagnosis import weights_from
from .error_analysis import denormalize, image_grid
from .evaluation import evaluate_split

PACKAGE = __package__.split(".")[0]
CSV_FILE = "label_issues.csv"
RESULT_FILE = "label_issues.json"
IMAGE_FILE = "label_issues.png"
COLUMNS = ("rank", "id", "fold", "given_label", "suggested_label", "label_quality", "flagged")
EXTRA = 'pip install -e ".[data-centric]"'
# Regression has no confident-learning verdict: a label is flagged when its out-of-fold residual lies further than
# this many robust standard deviations (1.4826 x the median absolute deviation) from the median residual.
OUTLIER_SIGMAS = 3.0


def require_cleanlab() -> ModuleType:
    """cleanlab, or one line naming the extra that installs it."""
    try:
        import cleanlab
        import cleanlab.filter
        import cleanlab.multilabel_classification.rank
        import cleanlab.rank
        import cleanlab.regression.rank
    except ImportError:
        raise ProjectError(f"label-issues needs cleanlab: {EXTRA}") from None
    return cleanlab


@dataclass
class OutOfFold:
    """Each fold's held-out rows, predicted by that fold's kept checkpoint."""

    ids: list[str] = field(default_factory=list)
    folds: list[int] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)  # task.activation: probabilities or target units
    targets: list[torch.Tensor] = field(default_factory=list)  # as the dataset gives them
    rows: dict[str, Row] = field(default_factory=dict)
    task: Any = None
    datamodule: Any = None  # the last fold's: its readers draw the suspects' images
    loggers: list = field(default_factory=list)

    def add(self, cli: Any) -> None:
        """After one fold's fit: its best checkpoint on its val split (the held-out fold)."""
        model, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
        check_task(type(model.task))
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        device = trainer.strategy.root_device
        home = model.device
        with weights_from(model, best):
            model.to(device)
            try:
                evaluation = evaluate_split(model, datamodule, "val", device, trainer.precision_plugin)
            finally:
                model.to(home)
        fold = self.folds[-1] + 1 if self.folds else 0  # cv runs the folds in order
        self.ids += evaluation.ids
        self.folds += [fold] * len(evaluation.ids)
        self.outputs.append(model.task.activation(evaluation.outputs).float())
        self.targets.append(evaluation.targets)
        self.rows.update({row.id: row for row in datamodule.splits["val"]})
        self.task, self.datamodule, self.loggers = model.task, datamodule, list(trainer.loggers)


def has_label_issues(task_class: type) -> bool:
    """Whether a task scores label issues: it overrides `Task.label_issues` (tasks/__init__.py)."""
    return getattr(task_class, "label_issues", Task.label_issues) is not Task.label_issues


def check_task(task_class: type) -> None:
    """One line for a task without label-issue scoring (segmentation: a label per pixel, which would need every
    image's per-pixel probabilities; a task of your own until it implements `label_issues`)."""
    if not has_label_issues(task_class):
        raise ProjectError(
            f"label-issues: the task {task_class.__name__} has no label-issue scoring (Task.label_issues); the "
            "project's class, multi-label and regression tasks have one"
        )


@dataclass
class LabelScores:
    """What a task's `label_issues` gives, one entry per sample."""

    given: list[str]  # the given label, as text
    suggested: list[str]  # what the out-of-fold model predicts instead
    quality: np.ndarray  # [N] 0..1, low = the given label is likely wrong
    flagged: np.ndarray  # [N] bool


def _names(names: list[str], indices: np.ndarray) -> str:
    """Several labels as predictions.csv writes them: joined by "|" ("" for none)."""
    return "|".join(names[i] for i in indices)


def class_label_issues(class_names: list[str], labels: torch.Tensor, probs: torch.Tensor) -> LabelScores:
    """One class per sample (`labels` [N] class indices, `probs` [N, C] out-of-fold probabilities): quality is the
    self-confidence, P(given class); flagged is confident learning's prune-by-noise-rate verdict."""
    cleanlab = require_cleanlab()
    given = labels.numpy()
    p = probs.double().numpy()
    p = p / p.sum(axis=1, keepdims=True)  # float32 softmax rounding: cleanlab wants rows summing to 1
    quality = cleanlab.rank.get_label_quality_scores(given, p, method="self_confidence")
    flagged = cleanlab.filter.find_label_issues(given, p, n_jobs=1)  # one process: a CPU's cores train the folds
    suggested = p.argmax(axis=1)
    return LabelScores([class_names[i] for i in given], [class_names[i] for i in suggested], quality, flagged)


def multilabel_label_issues(label_names: list[str], labels: torch.Tensor, probs: torch.Tensor) -> LabelScores:
    """Any number of labels per sample (`labels` [N, L] bool, `probs` [N, L]): each label's self-confidence,
    aggregated per sample by cleanlab; flagged when any label of the sample looks wrong. The suggestion is every
    label predicted above 0.5."""
    cleanlab = require_cleanlab()
    given = [np.flatnonzero(row).tolist() for row in labels.numpy()]
    p = probs.double().numpy()
    quality = cleanlab.multilabel_classification.rank.get_label_quality_scores(given, p)
    flagged = cleanlab.filter.find_label_issues(given, p, multi_label=True, n_jobs=1)
    suggested = [np.flatnonzero(row > 0.5) for row in p]
    return LabelScores(
        [_names(label_names, np.array(x, dtype=int)) for x in given],
        [_names(label_names, x) for x in suggested],
        quality,
        flagged,
    )


def numeric_label_issues(given: torch.Tensor, predicted: torch.Tensor) -> LabelScores:
    """Numbers (`given` and `predicted` [N, K], in the targets' units): cleanlab's OUTRE score per column (low =
    far from what the out-of-fold model predicts, relative to its neighbours), the lowest over the columns; flagged
    when a column's residual lies more than OUTLIER_SIGMAS robust standard deviations from the median residual."""
    cleanlab = require_cleanlab()
    y, y_hat = given.double().numpy(), predicted.double().numpy()
    per_column = [cleanlab.regression.rank.get_label_quality_scores(y[:, j], y_hat[:, j]) for j in range(y.shape[1])]
    quality = np.min(np.stack(per_column), axis=0)
    residual = y_hat - y
    deviation = np.abs(residual - np.median(residual, axis=0))
    scale = 1.4826 * np.median(deviation, axis=0)  # the MAD as a standard deviation
    flagged = (deviation > OUTLIER_SIGMAS * np.maximum(scale, 1e-12)).any(axis=1)

    def text(values: np.ndarray) -> str:
        return ", ".join(f"{v:.4g}" for v in values)

    return LabelScores([text(v) for v in y], [text(v) for v in y_hat], quality, flagged)


def ranked_rows(oof: OutOfFold, scores: LabelScores) -> list[dict[str, Any]]:
    """One row per sample, most suspect (lowest quality) first; ties in id order, so the ranking is stable."""
    order = sorted(range(len(oof.ids)), key=lambda i: (float(scores.quality[i]), oof.ids[i]))
    return [
        {
            "rank": rank,
            "id": oof.ids[i],
            "fold": oof.folds[i],
            "given_label": scores.given[i],
            "suggested_label": scores.suggested[i],
            "label_quality": round(float(scores.quality[i]), 6),
            "flagged": bool(scores.flagged[i]),
        }
        for rank, i in enumerate(order, 1)
    ]


def data_identity(datamodule: Any) -> str:
    """Which rows, with which cells (labels included), the non-test data holds: the same for every fold of `cv` and
    for a plain fit on the same data, so `diagnose` finds the label issues of its data; changed labels change it."""
    rows = sorted(
        (row for split, split_rows in datamodule.splits.items() if split != "test" for row in split_rows),
        key=lambda row: row.id,
    )
    digest = hashlib.sha256()
    for row in rows:
        digest.update(f"{row.id}:{json.dumps(row.values, sort_keys=True)}\n".encode())
    return digest.hexdigest()[:16]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def suspects_image(oof: OutOfFold, suspects: list[dict[str, Any]]) -> Image.Image | None:
    """The suspects' images as the model saw them (evaluation transform), captioned given -> suggested."""
    datamodule = oof.datamodule
    reader = getattr(datamodule, "inputs", {}).get("image")
    if reader is None or not suspects:
        return None
    dataset = RowDataset([oof.rows[s["id"]] for s in suspects], [reader], train=False)
    config = datamodule.data_config
    images = [denormalize(dataset[i]["image"], config.mean, config.std) for i in range(len(dataset))]
    captions = [
        f"#{s['rank']} {s['given_label']}\n-> {s['suggested_label']} {s['label_quality']:.2f}" for s in suspects
    ]
    return image_grid(images, captions, columns=8)


def log_to_wandb(folder: Path, oof: OutOfFold, suspects: list[dict[str, Any]]) -> bool:
    """The top suspects as a W&B table, in a run of their own (offline when the server is out of reach); True when
    the fits logged to W&B."""
    from pytorch_lightning.loggers import WandbLogger

    from .loggers import wandb_offline_when_unavailable

    logger = next((lg for lg in oof.loggers if isinstance(lg, WandbLogger)), None)
    if logger is None:
        return False
    import wandb

    wandb_offline_when_unavailable(folder)
    columns = list(COLUMNS)
    data = [[s[c] for c in columns] for s in suspects]
    reader = getattr(oof.datamodule, "inputs", {}).get("image")
    if reader is not None:
        dataset = RowDataset([oof.rows[s["id"]] for s in suspects], [reader], train=False)
        config = oof.datamodule.data_config
        images = [wandb.Image(denormalize(dataset[i]["image"], config.mean, config.std)) for i in range(len(dataset))]
        columns, data = ["image", *columns], [[image, *row] for image, row in zip(images, data, strict=True)]
    # create_new: a run of its own, whatever run a notebook or the fits may have left open.
    run = wandb.init(
        project=logger.name, name=folder.name, dir=str(folder), job_type="label-issues", reinit="create_new"
    )
    try:
        run.log({"label_issues/top": wandb.Table(columns=columns, data=data)})
    finally:
        run.finish()
    return True


def main(argv: list[str], fit: multirun.Fit) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PACKAGE} label-issues",
        description=(
            "Find likely wrong labels: k-fold cv, each fold's held-out rows predicted by its kept checkpoint, "
            "then cleanlab ranks every non-test sample's given label (label_issues.csv, most suspect first)."
        ),
        epilog=f"Every other argument goes to each fit as is (see `python -m {PACKAGE} fit --help`). Needs {EXTRA}.",
        allow_abbrev=False,
    )
    parser.add_argument("--folds", type=int, default=5, help="cv folds K (default 5)")
    parser.add_argument("--show", type=int, default=32, help="top suspects in the image grid and W&B table (32)")
    args, rest = parser.parse_known_args(argv)
    if args.folds < 2:
        parser.error(f"--folds={args.folds}: must be >= 2")
    if args.show < 0:
        parser.error(f"--show={args.show}: must be >= 0")
    require_cleanlab()  # before any training
    check_task(load_task_class(TASK_TYPE))  # the project's own task (a configured one is checked after fold 1)
    oof = OutOfFold()
    report = multirun.cv_main(["--folds", str(args.folds), *rest], fit, after_fold=oof.add)
    targets, outputs = torch.cat(oof.targets), torch.cat(oof.outputs)
    scores = oof.task.label_issues(targets, outputs)
    rows = ranked_rows(oof, scores)
    folder = runs.new_run_dir(Path(report["runs"][0]["run_dir"]).parent, "label-issues")
    csv_path = write_csv(folder / CSV_FILE, rows)
    suspects = rows[: args.show]
    flagged = sum(row["flagged"] for row in rows)
    image = suspects_image(oof, suspects)
    if image is not None:
        image.save(folder / IMAGE_FILE)
    result = {
        "task": oof.task.name,
        "samples": len(rows),
        "flagged": flagged,
        "folds": args.folds,
        "csv": str(csv_path),
        "image": str(folder / IMAGE_FILE) if image is not None else None,
        "data": data_identity(oof.datamodule),
        "cv_runs": [run["run_dir"] for run in report["runs"]],
        "top": suspects,
    }
    runs.write_json(folder / RESULT_FILE, result)
    logged = log_to_wandb(folder, oof, suspects)
    share = f" ({flagged / len(rows):.1%})" if rows else ""
    print(
        f"\nLabel issues: {flagged} of {len(rows)} non-test samples flagged{share}; all {len(rows)} ranked, most "
        f"suspect first, in {csv_path}"
        + (f" (top {len(suspects)}: {folder / IMAGE_FILE})" if image else "")
        + (" and in W&B" if logged else "")
        + "\nNext: review the top rows, fix the labels that are wrong in your data files, then retrain (and run "
        "label-issues again)."
    )
    return result


def diagnosis_notes(runs_dir: Path, datamodule: Any) -> list[str]:
    """A note for the diagnosis report when a `label-issues` run found suspects in exactly this data."""
    if not hasattr(datamodule, "splits"):
        return []
    identity = None
    for path in sorted(Path(runs_dir).glob(f"*/{RESULT_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        identity = identity or data_identity(datamodule)
        if result.get("data") == identity:
            flagged, samples = result.get("flagged", 0), result.get("samples", 0)
            advice = ": review them, fix the wrong ones in the data files and retrain" if flagged else ""
            return [
                f"`label-issues` flagged {flagged} of the {samples} non-test labels of this data as likely wrong "
                f"({path.parent / CSV_FILE}){advice}."
            ]
    return []
