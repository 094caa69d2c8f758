"""N numbers: N outputs in the standardized space of the targets, MSE or Huber loss; MAE, RMSE and R2.

The data layer standardizes every target column with the TRAIN mean and std, so the loss weighs the outputs
equally and an untrained network (outputs near 0) predicts the train mean. Metrics and predictions undo the
scaling, so MAE, RMSE and R2 are in the target's own units (with several outputs, MAE and RMSE pool all of
them, and R2 is the average over outputs).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from ..data.toy import COLOURS, SEQUENCE_COLUMN, ToyRows, filler_sentence, tabular_cells
from ..data.toy_shapes import SHAPES
from ..practices.error_analysis import markdown_cell
from ..practices.evaluation import SplitEvaluation
from ..practices.label_issues import LabelScores, numeric_label_issues
from . import Task

LOSSES = ("mse", "huber")
INTENSITIES = ("barely", "slightly", "somewhat", "fairly", "quite", "very", "extremely")  # toy sentences, in order


def residual_table(predictions: torch.Tensor, targets: torch.Tensor, names: Sequence[str]) -> list[dict]:
    """Per target in its own units: MAE, RMSE, bias (mean of prediction - truth), largest |residual|."""
    residuals = (predictions.double() - targets.double()).reshape(len(predictions), -1)
    return [
        {
            "target": name,
            "mae": round(float(r.abs().mean()), 6),
            "rmse": round(float(r.pow(2).mean().sqrt()), 6),
            "bias": round(float(r.mean()), 6),
            "max_abs": round(float(r.abs().max()), 6),
        }
        for name, r in zip(names, residuals.unbind(1), strict=True)
    ]


class RegressionTask(Task):
    """Args:
    class_names: filled in from the data (`bind`): the target columns.
    target_stats: filled in from the data (`bind`): train mean and std of every target.
    loss: "mse" or "huber" (less sensitive to outliers).
    """

    name = "regression"
    monitor = "rmse"
    mode = "min"

    def __init__(
        self,
        class_names: list[str] | None = None,
        target_stats: dict[str, list[float]] | None = None,
        loss: str = "mse",
    ):
        if loss not in LOSSES:
            raise ValueError(f"model.task loss={loss!r} is not one of {', '.join(LOSSES)}")
        self.loss_name = loss
        super().__init__(class_names, target_stats)

    @staticmethod
    def target_reader(target_columns: list[str], classes: list[str] | None) -> Any:
        from ..data.targets import RegressionTarget

        return RegressionTarget(target_columns)

    def _set_targets(self, class_names: list[str], target_stats: dict[str, list[float]] | None) -> None:
        if len(class_names) < 1:
            raise ValueError("regression needs at least 1 target column, got none")
        self.class_names = list(class_names)
        self.num_outputs = len(class_names)
        stats = target_stats or {"mean": [0.0] * self.num_outputs, "std": [1.0] * self.num_outputs}
        for key in ("mean", "std"):
            if len(stats.get(key) or []) != self.num_outputs:
                raise ValueError(
                    f"regression target_stats[{key!r}] needs {self.num_outputs} values (one per target: "
                    f"{', '.join(self.class_names)}), got {stats.get(key)}"
                )
        if not all(s > 0 for s in stats["std"]):
            raise ValueError(f"regression target_stats['std'] must be positive, got {stats['std']}")
        self.mean = [float(m) for m in stats["mean"]]
        self.std = [float(s) for s in stats["std"]]

    @property
    def chance_loss(self) -> float:
        """Loss of predicting 0 (the train mean) for standardized targets: MSE 1.0; Huber about 0.5 (0.5 z^2)."""
        return 1.0 if self.loss_name == "mse" else 0.5

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over outputs, in standardized units."""
        target = target.to(outputs.dtype).reshape(outputs.shape)
        if self.loss_name == "huber":
            losses = F.huber_loss(outputs, target, reduction="none", delta=1.0)
        else:
            losses = F.mse_loss(outputs, target, reduction="none")
        return losses.mean(dim=1)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.per_sample_loss(outputs, target).mean()

    def metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "mae": MeanAbsoluteError(),
                "rmse": MeanSquaredError(squared=False),
                "r2": R2Score(multioutput="uniform_average"),
            }
        )

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The train mean and std of every target, as tensors of `like`'s dtype and device."""
        return (
            torch.tensor(self.mean, dtype=like.dtype, device=like.device),
            torch.tensor(self.std, dtype=like.dtype, device=like.device),
        )

    def _unstandardize(self, values: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(values)
        return values * std + mean

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and targets in target units; [B] for one output (what torchmetrics expects), else [B, N]."""
        preds = self._unstandardize(outputs)
        target = self._unstandardize(target.to(outputs.dtype).reshape(outputs.shape))
        return (preds[:, 0], target[:, 0]) if self.num_outputs == 1 else (preds, target)

    def error(self, outputs: torch.Tensor, target: torch.Tensor) -> float:
        """RMSE in standardized units, averaged over outputs: 0 is perfect, 1.0 is as good as predicting the
        train mean (so above 1 the network does worse than that constant)."""
        squared = (outputs - target.to(outputs.dtype).reshape(outputs.shape)) ** 2
        return float(squared.mean(dim=0).sqrt().mean())

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return self._unstandardize(outputs)

    def inverse_activation(self, activated: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(activated)
        return (activated - mean) / std

    def prediction_rows(self, activated: torch.Tensor) -> list[dict[str, object]]:
        """One CSV row per sample: every output in target units (7 significant digits, float32's precision)."""
        return [
            {f"pred_{name}": float(f"{v:.7g}") for name, v in zip(self.class_names, values, strict=True)}
            for values in activated.tolist()
        ]

    # --- diagnosis, baselines, error analysis, export ---------------------------------------------------------------
    error_meaning = (
        "RMSE in units of each target's train standard deviation, averaged over targets "
        "(1.0 = as good as predicting the train mean)"
    )
    error_is_rate = False
    linear_baseline = "linear regression"
    constant_baseline = "mean"
    look_at = "the residuals per target"
    output_name = "values"
    output_meaning = "predicted values in the targets' own units, [batch, targets]"
    output_decoding = {"decode": "values"}

    def constant_outputs(self, targets: torch.Tensor) -> torch.Tensor:
        """The training mean of every (standardized) target."""
        return targets.double().reshape(len(targets), -1).mean(0).float()

    def describe_constant(self, constant: torch.Tensor) -> str:
        values = self.activation(constant[None])[0].tolist()  # back to the target's units
        means = ", ".join(f"{n} {v:.4g}" for n, v in zip(self.class_names, values, strict=True))
        return f"the training mean of every target ({means})"

    def persistence_outputs(self, last_values: torch.Tensor) -> torch.Tensor | None:
        """Every target predicted as the series' last value ("tomorrow = today"; for several targets, e.g. the
        next steps, each of them), standardized like the targets."""
        return self.inverse_activation(last_values.float()[:, None].expand(-1, self.num_outputs))

    def analyze_errors(self, evaluation: SplitEvaluation) -> tuple[dict[str, Any], list[str], dict[str, Image.Image]]:
        """The residuals per target, in its units: MAE, RMSE, bias and the largest."""
        predictions, targets = self.activation(evaluation.outputs), self.activation(evaluation.targets.float())
        table = residual_table(predictions, targets, self.class_names)
        lines = ["Residuals (prediction - truth) per target, in its units:", ""]
        lines += ["| target | MAE | RMSE | bias | largest abs |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {markdown_cell(r['target'])} | {r['mae']:.4g} | {r['rmse']:.4g} | {r['bias']:+.4g} | "
            f"{r['max_abs']:.4g} |"
            for r in table
        ]
        return {"residuals": table}, [*lines, ""], {}

    def describe_example(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        true = self.activation(target.reshape(1, -1).float())[0].tolist()  # back to the target's units
        predicted = self.activation(output[None])[0].tolist()
        return {"true": ", ".join(f"{v:.4g}" for v in true), "predicted": ", ".join(f"{v:.4g}" for v in predicted)}

    def label_issues(self, targets: torch.Tensor, outputs: torch.Tensor) -> LabelScores:
        """Each given value against the out-of-fold prediction, in the targets' units."""
        return numeric_label_issues(self.activation(targets.float().reshape(outputs.shape)), outputs)

    # --- toy data ---------------------------------------------------------------------------------------------------
    toy_target_columns = ("target", "target_2")

    @classmethod
    def toy_classes(cls, modalities: Sequence[str], classes: Sequence[str] | None = None) -> tuple[str, ...]:
        """No classes: the outputs are the target columns."""
        return ()

    @classmethod
    def toy_description(cls, classes: Sequence[str]) -> str:
        return "target, target_2 = numbers"

    @classmethod
    def toy_row(cls, toy: ToyRows, split: str, index: int, rng: random.Random) -> dict[str, str]:
        """Every input adds to both targets: the image its shape's size and which shape, a tabular row x0 and its
        colour, a sentence its intensity word and its length."""
        row, first, second = {}, 0.0, 0.0  # every input adds 4 * u (in [0, 4]) and 3 * v (in [0, 3])
        if "image" in toy.modalities:
            u, shape = rng.random(), rng.randrange(4)
            row |= toy.image(split, index, [SHAPES[shape]], rng, radii=[0.12 + 0.26 * u])
            first, second = first + 4 * u, second + shape
        if "tabular" in toy.modalities:
            u, colour = rng.random(), rng.randrange(len(COLOURS))
            row |= tabular_cells(4 * u - 2, COLOURS[colour], rng)
            first, second = first + 4 * u, second + colour
        if "sequence" in toy.modalities:
            intensity, length = rng.randrange(len(INTENSITIES)), rng.randint(6, 12)
            row[SEQUENCE_COLUMN] = filler_sentence([INTENSITIES[intensity]], rng, length)
            first, second = first + 4 * intensity / (len(INTENSITIES) - 1), second + (length - 6) / 2
        row["target"] = f"{first + rng.gauss(0, 0.1):.4f}"
        row["target_2"] = f"{second + rng.gauss(0, 0.1):.4f}"
        return row
