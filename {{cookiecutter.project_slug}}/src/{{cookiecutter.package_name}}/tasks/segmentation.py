"""A class per pixel: C logit maps, softmax over classes, cross-entropy + soft Dice; mean IoU and pixel accuracy.

Soft Dice (multiclass, from the softmax probabilities p and the one-hot target y), per class c:
    dice_c = 2 * sum(p_c * y_c) / (sum(p_c) + sum(y_c))      (sums over pixels)
and the Dice loss is the mean of (1 - dice_c) over the classes PRESENT in the target (no smoothing term: a
present class has sum(y_c) >= 1). Absent classes are left to the cross-entropy, which already penalizes
predicting them; averaging over all classes would instead let empty classes dominate small batches.
`loss` pools the pixels of the whole batch (batch Dice, stabler); `per_sample_loss` uses each image alone, so
`loss(outputs[i:i+1], target[i:i+1]) == per_sample_loss(outputs, target)[i]`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

import numpy
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from ..data.toy import ToyRows
from ..errors import DataError
from ..practices.baselines import Constant, fit_linear, log_frequencies
from ..practices.error_analysis import confusion_matrix, confusion_section, markdown_cell
from ..practices.evaluation import SplitEvaluation
from . import PROBABILITY_EPS, Task

PIXELS_PER_IMAGE = 256  # the per-pixel linear baseline is fitted on this many training pixels sampled per image
PALETTE = (
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
)  # fmt: skip


def mask_image(mask: torch.Tensor) -> Image.Image:
    """A class map [H, W] in PALETTE colours (class 0 black)."""
    palette = torch.tensor(PALETTE, dtype=torch.uint8)
    return Image.fromarray(palette[mask.long() % len(PALETTE)].numpy())


def iou_table(matrix: torch.Tensor, class_names: Sequence[str]) -> list[dict]:
    """Per class from the pixel confusion matrix: IoU and its share of the pixels, true and predicted."""
    matrix = matrix.double()
    total = matrix.sum().clamp(min=1)
    true, predicted, hits = matrix.sum(1), matrix.sum(0), matrix.diagonal()
    union = true + predicted - hits
    return [
        {
            "class": name,
            "iou": round(float(hits[c] / union[c]), 4) if union[c] > 0 else None,  # None: absent and never predicted
            "true_share": round(float(true[c] / total), 4),
            "predicted_share": round(float(predicted[c] / total), 4),
        }
        for c, name in enumerate(class_names)
    ]


class PixelFeatures(torch.nn.Module):
    """A batch -> its normalized images [B, 3, H, W]: each pixel's colour is its feature vector."""

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["image"].float()

    def describe(self) -> str:
        return "the colour of each pixel (a 1x1 convolution on the normalized image)"


def pixel_sample(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple:
    """Up to PIXELS_PER_IMAGE random pixels of every image: colours [P, 3] and their classes [P]."""
    pixels = images.movedim(1, -1).flatten(1, 2)  # [B, H*W, 3]
    classes = masks.flatten(1)  # [B, H*W]
    n = min(PIXELS_PER_IMAGE, classes.shape[1])
    index = torch.stack([torch.randperm(classes.shape[1], generator=generator)[:n] for _ in range(len(images))])
    colours = pixels.gather(1, index[..., None].expand(-1, -1, pixels.shape[-1]))
    return colours.flatten(0, 1), classes.gather(1, index).flatten()


class SegmentationTask(Task):
    """Args:
    class_names: filled in from the data (`bind`): class names by mask value.
    dice_weight: loss = cross-entropy + dice_weight * Dice.
    """

    name = "segmentation"
    monitor = "miou"
    mode = "max"
    reads_masks = True  # the target is the image's mask, read by the image reader

    def __init__(self, class_names: list[str] | None = None, dice_weight: float = 1.0):
        if dice_weight < 0:
            raise ValueError(f"model.task dice_weight must be >= 0, got {dice_weight}")
        self.dice_weight = float(dice_weight)
        super().__init__(class_names)

    def _set_targets(self, class_names: list[str], target_stats: dict[str, list[float]] | None) -> None:
        if len(class_names) < 2:
            raise ValueError(f"segmentation needs at least 2 classes (e.g. background and object), got {class_names}")
        self.class_names = list(class_names)
        self.num_outputs = self.num_classes = len(class_names)

    @property
    def chance_loss(self) -> float:
        """The loss of uniform predictions (p = 1/C everywhere): ln C + dice_weight * (1 - 1/C).

        The cross-entropy part is exactly ln C. The Dice part of a class covering a fraction f of the pixels is
        1 - 2f / (1 + C f), so it depends on the class balance: (1 - 1/C) is its value when every class covers
        1/C of the pixels. Over all possible balances it lies in [(C-1)/(C+1), 1 - 2/(C(C+1))], i.e. within
        C/(C+1) .. (C+2)/(C+1) (2/3 .. 4/3) of this value, so the whole loss is too.
        """
        return math.log(self.num_classes) + self.dice_weight * (1.0 - 1.0 / self.num_classes)

    def _check_target(self, target: torch.Tensor) -> None:
        # Out-of-range class indices would otherwise fail inside cross_entropy (a device-side assert on a GPU).
        if target.numel() == 0:
            return
        low, high = torch.stack(torch.aminmax(target)).tolist()  # one device sync
        if low < 0 or high >= self.num_classes:
            raise DataError(
                f"segmentation mask values must be class indices 0..{self.num_classes - 1} "
                f"({', '.join(self.class_names)}), found values {low}..{high}"
            )

    def _dice_loss(self, outputs: torch.Tensor, target: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """Mean over present classes of 1 - soft Dice, summing over `dims` of [B, C, H, W]."""
        probs = outputs.float().softmax(dim=1)
        onehot = F.one_hot(target, self.num_classes).movedim(-1, 1).to(probs.dtype)
        intersection = (probs * onehot).sum(dims)
        cardinality = (probs + onehot).sum(dims)
        present = onehot.sum(dims) > 0
        dice = 2 * intersection / cardinality.clamp_min(1e-6)
        return ((1 - dice) * present).sum(-1) / present.sum(-1).clamp_min(1)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check_target(target)
        loss = F.cross_entropy(outputs.float(), target)
        if self.dice_weight:
            loss = loss + self.dice_weight * self._dice_loss(outputs, target, dims=(0, 2, 3))
        return loss

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check_target(target)
        loss = F.cross_entropy(outputs.float(), target, reduction="none").flatten(1).mean(1)
        if self.dice_weight:
            loss = loss + self.dice_weight * self._dice_loss(outputs, target, dims=(2, 3))
        return loss

    def metrics(self) -> MetricCollection:
        # Both accumulate over every pixel of the epoch: miou from one confusion matrix, not a mean of batch IoUs.
        return MetricCollection(
            {
                "miou": MulticlassJaccardIndex(self.num_classes, average="macro"),
                "pixel_acc": MulticlassAccuracy(self.num_classes, average="micro", multidim_average="global"),
            }
        )

    def metric_inputs(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted class maps [B, H, W] (torchmetrics would take the [B, C, H, W] logits too and argmax them)."""
        return outputs.argmax(dim=1), target

    def error(self, outputs: torch.Tensor, target: torch.Tensor) -> float:
        """Fraction of pixels misclassified (1 - pixel accuracy)."""
        return float((outputs.argmax(dim=1) != target).float().mean())

    def activation(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.softmax(dim=1)

    def inverse_activation(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.clamp_min(PROBABILITY_EPS).log()  # softmax(log p) = p when p sums to 1 over classes

    def prediction_rows(self, activated: torch.Tensor) -> list[dict[str, object]]:
        """One CSV row per image: the fraction of its pixels predicted as each class, and the mean max probability."""
        confidence, index = activated.max(dim=1)
        counts = F.one_hot(index.flatten(1), self.num_classes).float().mean(dim=1)  # [B, C]
        rows = []
        for fractions, conf in zip(counts.tolist(), confidence.flatten(1).mean(1).tolist(), strict=True):
            row: dict[str, object] = {
                f"pixels_{name}": round(fraction, 6) for name, fraction in zip(self.class_names, fractions, strict=True)
            }
            row["confidence"] = round(conf, 6)
            rows.append(row)
        return rows

    def prediction_mask(self, activated: torch.Tensor) -> numpy.ndarray:
        """Predicted class per pixel as uint8 [B, H, W] (pixel value = class index, as in the input masks)."""
        if self.num_classes > 256:
            raise ValueError(f"{self.num_classes} classes do not fit a uint8 mask")
        return activated.argmax(dim=1).to(torch.uint8).cpu().numpy()

    # --- diagnosis, baselines, error analysis, export ---------------------------------------------------------------
    error_meaning = "the fraction of pixels misclassified"
    linear_baseline = "per-pixel logistic regression"
    look_at = "the per-class IoU table"
    example_pictures = ("image", "true mask", "predicted mask")
    output_name = "probabilities"
    output_meaning = "probability of each class per pixel (softmax), [batch, classes, height, width]"
    output_decoding = {
        "decode": "pixel_argmax",
        "resolution": "the network's input: the resized, centre-cropped image",
    }

    def baseline_features(self, inputs: dict[str, dict[str, Any]], feature_size: int) -> torch.nn.Module:
        return PixelFeatures()

    def fit_baselines(self, train: Iterable[tuple], steps: int) -> dict[str, torch.nn.Module]:
        """Every pixel counts for the class frequencies (the majority baseline: the most frequent pixel class); a
        sample of them fits a per-pixel linear model, scored with the task's loss on 1x1 "images"."""
        generator = torch.Generator().manual_seed(0)
        colours, classes, counts = [], [], torch.zeros(self.num_outputs, dtype=torch.long)
        for images, masks, _ in train:
            pixels, labels = pixel_sample(images, masks, generator)
            colours.append(pixels)
            classes.append(labels)
            counts += torch.bincount(masks.flatten(), minlength=self.num_outputs)

        def loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return self.loss(outputs[:, :, None, None], target[:, None, None])

        linear = fit_linear(torch.cat(colours), torch.cat(classes), self.num_outputs, loss, steps, pixelwise=True)
        return {self.constant_baseline: Constant(log_frequencies(counts)), "linear": linear}

    def describe_constant(self, constant: torch.Tensor) -> str:
        return f"every pixel `{self.majority_class(constant)}`, the most frequent training pixel class"

    def majority_class(self, constant: torch.Tensor) -> str | None:
        return self.class_names[int(constant.argmax())]

    def analyze_errors(self, evaluation: SplitEvaluation) -> tuple[dict[str, Any], list[str], dict[str, Image.Image]]:
        """IoU per class and the pixel confusion matrix (`evaluation.outputs` are the predicted class maps)."""
        matrix = confusion_matrix(evaluation.outputs, evaluation.targets, self.num_classes)
        table = iou_table(matrix, self.class_names)
        lines = ["IoU per class (share of the pixels: true / predicted):", ""]
        lines += ["| class | IoU | true share | predicted share |", "|---|---:|---:|---:|"]
        lines += [
            f"| {markdown_cell(r['class'])} | {'-' if r['iou'] is None else format(r['iou'], '.3f')} | "
            f"{r['true_share']:.3f} | {r['predicted_share']:.3f} |"
            for r in table
        ]
        analysis, confusion_lines, images = confusion_section(matrix, self.class_names, evaluation.split, "pixels")
        return {**analysis, "per_class": table}, [*lines, "", *confusion_lines], images

    def describe_example(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        """The classes present in the true and the predicted class map, and the share of wrong pixels."""
        present = [self.class_names[c] for c in torch.unique(target.long()).tolist()]
        found = [self.class_names[c] for c in torch.unique(output.long()).tolist()]
        pixel_error = float((output.long() != target.long()).float().mean())
        return {"true": ", ".join(present), "predicted": ", ".join(found), "pixel_error": round(pixel_error, 4)}

    def example_tiles(self, image: Image.Image, target: torch.Tensor, output: torch.Tensor) -> list[Image.Image]:
        return [image, mask_image(target), mask_image(output)]

    def example_captions(self, example: dict[str, Any]) -> list[str]:
        return [f"loss {example['loss']:.3f}", "true", f"pred {example['pixel_error']:.0%} wrong"]

    # --- toy data ---------------------------------------------------------------------------------------------------
    toy_target_columns = ()  # the mask column is the target

    @classmethod
    def toy_classes(cls, modalities: Sequence[str], classes: Sequence[str] | None = None) -> tuple[str, ...]:
        """The background (mask value 0), then shapes."""
        classes = tuple(classes or ("background", "circle", "square", "triangle"))
        if len(classes) < 2:
            raise ValueError(f"segmentation needs at least 2 classes, got {classes}")
        return classes

    @classmethod
    def toy_description(cls, classes: Sequence[str]) -> str:
        return f"mask = class index per pixel ({', '.join(f'{i} {c}' for i, c in enumerate(classes))})"

    @classmethod
    def toy_row(cls, toy: ToyRows, split: str, index: int, rng: random.Random) -> dict[str, str]:
        """The image shows one or two shapes, every other input one latent; each shape's class in the mask is its
        latent shifted by the other inputs' latents."""
        latents = {m: rng.sample(range(toy.k), rng.randint(1, 2) if m == "image" else 1) for m in toy.modalities}
        shift = sum(z[0] for modality, z in latents.items() if modality != "image")
        mask_values = [1 + (z + shift) % toy.k for z in latents["image"]]
        return toy.inputs(split, index, latents, rng, mask_values=mask_values)
