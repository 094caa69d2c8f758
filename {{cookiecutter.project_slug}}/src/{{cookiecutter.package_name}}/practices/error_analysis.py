"""Error analysis of one split, for every task: what the model gets wrong, and the worst examples.

- multiclass, binary: confusion matrix (binary: 2x2) and the most-confused pairs;
- multilabel: precision, recall, F1 and support per label;
- regression: residuals per target in the target's units (MAE, RMSE, bias, the largest);
- segmentation: IoU per class, from the pixel confusion matrix (also drawn).
The worst examples (highest per-sample loss) come for every task: a table of ids with their true and predicted
targets (and, for tabular or sequence inputs, the first input columns), and an image grid when the inputs hold
images (segmentation: image, true mask, predicted mask). Images are drawn with PIL (a dependency already); the
confusion matrix uses matplotlib when it is installed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw, ImageFont
from torchmetrics.classification import MulticlassConfusionMatrix

from .evaluation import SplitEvaluation, eval_dataset

CELL = 36  # pixels per confusion-matrix cell
TILE = 128  # pixels per worst-example tile


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [C, C]: rows are true classes, columns predicted classes; any shape of class indices (pixels too).

    Counted on this process alone (rank zero evaluates alone after a DDP fit), in chunks, so the class maps of a
    large segmentation split are never widened to int64 all at once.
    """
    matrix = torch.zeros(num_classes * num_classes, dtype=torch.long)
    predictions, targets = predictions.flatten(), targets.flatten()
    chunk = 1 << 24
    for start in range(0, len(targets), chunk):
        pairs = targets[start : start + chunk].long() * num_classes + predictions[start : start + chunk].long()
        matrix += torch.bincount(pairs, minlength=num_classes * num_classes)
    return matrix.view(num_classes, num_classes)


def most_confused(matrix: torch.Tensor, class_names: Sequence[str], k: int = 5) -> list[dict]:
    """The k largest off-diagonal cells: which true class is most often predicted as which other class."""
    off_diagonal = matrix.clone()
    off_diagonal.fill_diagonal_(0)
    counts, flat = off_diagonal.flatten().topk(min(k, off_diagonal.numel()))
    n = matrix.shape[1]
    return [
        {"true": class_names[i // n], "predicted": class_names[i % n], "count": int(c)}
        for c, i in zip(counts.tolist(), flat.tolist(), strict=True)
        if c > 0
    ]


def confusion_matrix_image(matrix: torch.Tensor, class_names: Sequence[str]) -> Image.Image:
    try:
        import matplotlib.pyplot as plt  # not a dependency: used when the user has it
    except ImportError:
        return _heat_map(matrix, class_names)
    fig, _ = MulticlassConfusionMatrix(len(class_names)).plot(val=matrix, labels=list(class_names))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _heat_map(matrix: torch.Tensor, class_names: Sequence[str]) -> Image.Image:
    """Counts in cells shaded by the row's share (so small classes show their errors too)."""
    font = ImageFont.load_default()
    names = [name[:12] for name in class_names]
    n = len(names)
    margin = max(96, 8 + 7 * max(len(name) for name in names))
    # Cells as wide as the largest count (pixel counts run into millions), at least CELL px.
    cell = max(CELL, 8 + 7 * len(str(int(matrix.max()))))
    image = Image.new("RGB", (margin + n * cell + 8, margin + n * cell + 8), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, margin - 28), "rows: true", fill="gray", font=font)
    draw.text((4, margin - 16), "cols: predicted", fill="gray", font=font)
    shares = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    for i in range(n):
        draw.text((4, margin + i * cell + cell // 3), names[i], fill="black", font=font)  # true class: rows
        label = Image.new("RGB", (margin - 8, 12), "white")  # predicted class: columns, written upwards
        ImageDraw.Draw(label).text((0, 0), names[i], fill="black", font=font)
        image.paste(label.rotate(90, expand=True), (margin + i * cell + cell // 3, 4))
        for j in range(n):
            shade = float(shares[i, j])
            colour = tuple(int(255 - shade * (255 - c)) for c in (31, 80, 160))  # white -> dark blue
            box = (margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1, margin + (i + 1) * cell - 1)
            draw.rectangle(box, fill=colour, outline=(200, 200, 200))
            text = str(int(matrix[i, j]))
            draw.text((box[0] + 4, box[1] + cell // 3), text, fill="white" if shade > 0.5 else "black", font=font)
    return image


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """A normalized [3, H, W] tensor back to the picture the model saw."""
    pixels = image.float().cpu() * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    array = (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def image_grid(images: Sequence[Image.Image], captions: Sequence[str], columns: int = 4) -> Image.Image:
    """Tiles of TILE px with a caption under each."""
    font = ImageFont.load_default()
    rows = max(1, -(-len(images) // columns))
    caption_height = 28
    grid = Image.new("RGB", (columns * TILE, rows * (TILE + caption_height)), "white")
    draw = ImageDraw.Draw(grid)
    for k, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = (k % columns) * TILE, (k // columns) * (TILE + caption_height)
        grid.paste(image.resize((TILE, TILE), Image.Resampling.NEAREST), (x, y))
        for line, text in enumerate(caption.split("\n")[:2]):
            draw.text((x + 3, y + TILE + 2 + 12 * line), text[:20], fill="black", font=font)
    return grid


# --- per task --------------------------------------------------------------------------------------------------
PALETTE = (
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
)  # fmt: skip


def class_predictions(task_type: str, outputs: torch.Tensor) -> torch.Tensor:
    """Predicted class per sample (multiclass: argmax; binary: logit > 0) or per pixel (segmentation: kept as is)."""
    if task_type == "binary":
        return (outputs.reshape(len(outputs)) > 0).long()
    return outputs if task_type == "segmentation" else outputs.argmax(dim=-1)


def per_label_table(outputs: torch.Tensor, targets: torch.Tensor, label_names: Sequence[str]) -> list[dict]:
    """Multilabel, per label at the 0.5 threshold: support (true count), predicted count, precision, recall, F1."""
    predicted, true = outputs > 0, targets > 0.5
    rows = []
    for k, name in enumerate(label_names):
        hits = int((predicted[:, k] & true[:, k]).sum())
        support, count = int(true[:, k].sum()), int(predicted[:, k].sum())
        precision = hits / count if count else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "label": name,
                "support": support,
                "predicted": count,
                "precision": round(precision, 4),
                "recall": round(recall, 4),
                "f1": round(f1, 4),
            }
        )
    return rows


def residual_table(predictions: torch.Tensor, targets: torch.Tensor, names: Sequence[str]) -> list[dict]:
    """Regression, per target in its own units: MAE, RMSE, bias (mean of prediction - truth), largest |residual|."""
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


def iou_table(matrix: torch.Tensor, class_names: Sequence[str]) -> list[dict]:
    """Segmentation, per class from the pixel confusion matrix: IoU and its share of the pixels, true and predicted."""
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


def mask_image(mask: torch.Tensor) -> Image.Image:
    """A class map [H, W] in PALETTE colours (class 0 black)."""
    palette = torch.tensor(PALETTE, dtype=torch.uint8)
    return Image.fromarray(palette[mask.long() % len(PALETTE)].numpy())


def _describe(task_type: str, task: Any, output: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """One sample's true and predicted target as text (and how sure the prediction is, for classification)."""
    names = task.class_names
    if task_type in ("multiclass", "binary"):
        probabilities = task.activation(output[None])[0].float()
        if task_type == "binary":
            positive = float(probabilities.reshape(()))
            predicted, confidence = int(positive > 0.5), max(positive, 1 - positive)
        else:
            confidence, predicted = (float(v) for v in probabilities.max(dim=-1))
        return {"true": names[int(target)], "predicted": names[int(predicted)], "confidence": round(confidence, 4)}
    if task_type == "multilabel":
        true = [n for n, t in zip(names, target.tolist(), strict=True) if t > 0.5]
        predicted = [n for n, o in zip(names, output.tolist(), strict=True) if o > 0]
        return {"true": ", ".join(true) or "(none)", "predicted": ", ".join(predicted) or "(none)"}
    if task_type == "regression":
        true = task.activation(target.reshape(1, -1).float())[0].tolist()  # back to the target's units
        predicted = task.activation(output[None])[0].tolist()
        return {"true": ", ".join(f"{v:.4g}" for v in true), "predicted": ", ".join(f"{v:.4g}" for v in predicted)}
    present = [names[c] for c in torch.unique(target.long()).tolist()]  # segmentation: class maps
    found = [names[c] for c in torch.unique(output.long()).tolist()]
    pixel_error = float((output.long() != target.long()).float().mean())
    return {"true": ", ".join(present), "predicted": ", ".join(found), "pixel_error": round(pixel_error, 4)}


def worst_examples(task_type: str, task: Any, evaluation: SplitEvaluation, k: int) -> list[dict[str, Any]]:
    """The k samples with the highest loss, worst first: id, loss, true and predicted target."""
    worst = evaluation.losses.topk(min(k, len(evaluation.losses))).indices.tolist()
    return [
        {
            "id": evaluation.ids[i],
            "loss": round(float(evaluation.losses[i]), 4),
            **_describe(task_type, task, evaluation.outputs[i], evaluation.targets[i]),
        }
        for i in worst
    ]


def input_summary(datamodule: pl.LightningDataModule, max_columns: int = 6, width: int = 80) -> dict[str, str]:
    """id -> the first tabular / sequence input cells of each row, as the CSV holds them ("x0=1.2, colour=red")."""
    hp = datamodule.hparams
    columns = [*(hp.get("numeric_columns") or []), *(hp.get("categorical_columns") or [])]
    columns += [hp.sequence_column] if hp.get("sequence_column") else []
    if not columns:
        return {}
    summary = {}
    for rows in datamodule.splits.values():
        for row in rows:
            text = ", ".join(f"{c}={row.values.get(c, '').strip()}" for c in columns[:max_columns])
            summary[row.id] = text if len(text) <= width else text[: width - 3] + "..."
    return summary


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def analyze(
    task_type: str, task: Any, datamodule: pl.LightningDataModule, evaluation: SplitEvaluation, worst_k: int = 16
) -> tuple[dict[str, Any], str, dict[str, Image.Image]]:
    """The error analysis of one split: (what diagnosis.json holds, the Markdown section, images by file stem)."""
    split, names = evaluation.split, task.class_names
    analysis: dict[str, Any] = {"split": split}
    images: dict[str, Image.Image] = {}
    lines = ["", f"## Error analysis ({split})", ""]
    if task_type in ("multiclass", "binary", "segmentation"):
        matrix = confusion_matrix(class_predictions(task_type, evaluation.outputs), evaluation.targets, len(names))
        pairs = most_confused(matrix, names)
        analysis.update(confusion_matrix=matrix.tolist(), most_confused=pairs)
        images["confusion_matrix"] = confusion_matrix_image(matrix, names)
        unit = "pixels" if task_type == "segmentation" else "samples"
        if task_type == "segmentation":
            analysis["per_class"] = table = iou_table(matrix, names)
            lines += ["IoU per class (share of the pixels: true / predicted):", ""]
            lines += ["| class | IoU | true share | predicted share |", "|---|---:|---:|---:|"]
            lines += [
                f"| {_cell(r['class'])} | {'-' if r['iou'] is None else format(r['iou'], '.3f')} | "
                f"{r['true_share']:.3f} | {r['predicted_share']:.3f} |"
                for r in table
            ]
            lines.append("")
        lines += [f"Most-confused pairs (true -> predicted: {unit}):", ""]
        lines += [f"- {p['true']} -> {p['predicted']}: {p['count']}" for p in pairs] or [f"- none: no {split} errors"]
        lines += ["", f"Confusion matrix ({unit}): confusion_matrix.png (rows: true class, columns: predicted).", ""]
    elif task_type == "multilabel":
        analysis["per_label"] = table = per_label_table(evaluation.outputs, evaluation.targets, names)
        lines += ["Per label (threshold 0.5):", ""]
        lines += ["| label | support | predicted | precision | recall | F1 |", "|---|---:|---:|---:|---:|---:|"]
        lines += [
            f"| {_cell(r['label'])} | {r['support']} | {r['predicted']} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['f1']:.3f} |"
            for r in table
        ]
        lines.append("")
    elif task_type == "regression":
        predictions, targets = task.activation(evaluation.outputs), task.activation(evaluation.targets.float())
        analysis["residuals"] = table = residual_table(predictions, targets, names)
        lines += ["Residuals (prediction - truth) per target, in its units:", ""]
        lines += ["| target | MAE | RMSE | bias | largest abs |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {_cell(r['target'])} | {r['mae']:.4g} | {r['rmse']:.4g} | {r['bias']:+.4g} | {r['max_abs']:.4g} |"
            for r in table
        ]
        lines.append("")

    examples = worst_examples(task_type, task, evaluation, worst_k)
    summary = input_summary(datamodule)
    for example in examples:
        if summary:
            example["inputs"] = summary.get(example["id"], "")
    analysis["worst_examples"] = examples
    has_images = "image" in getattr(datamodule, "inputs", {})
    extra = [key for key in ("confidence", "pixel_error") if examples and key in examples[0]]
    columns = ["true", "predicted", *extra, "loss", "id", *(["inputs"] if summary else [])]
    where = " (images: worst_examples.png)" if has_images else ""
    lines += [f"Worst {len(examples)} {split} examples (highest loss){where}:", ""]
    numeric = {"confidence", "pixel_error", "loss"}
    lines += [
        "| # | " + " | ".join(columns) + " |",
        "|---:|" + "".join("---:|" if c in numeric else "---|" for c in columns),
    ]
    for k, example in enumerate(examples, 1):
        cells = [f"{example[c]:.3f}" if isinstance(example[c], float) else _cell(example[c]) for c in columns]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    if has_images and examples:
        images["worst_examples"] = worst_examples_image(task_type, datamodule, evaluation, examples)
    return analysis, "\n".join(lines) + "\n", images


def example_tiles(
    task_type: str, datamodule: pl.LightningDataModule, evaluation: SplitEvaluation, examples: list[dict[str, Any]]
) -> list[list[Image.Image]]:
    """Per example, what the model saw: [image], or for segmentation [image, true mask, predicted mask]."""
    dataset = eval_dataset(datamodule, evaluation.split)
    position = {row.id: i for i, row in enumerate(dataset.rows)}
    index = {sample: i for i, sample in enumerate(evaluation.ids)}
    config = datamodule.data_config
    tiles = []
    for example in examples:
        item = dataset[position[example["id"]]]
        tiles.append([denormalize(item["image"], config.mean, config.std)])
        if task_type == "segmentation":
            tiles[-1] += [mask_image(item["target"]), mask_image(evaluation.outputs[index[example["id"]]])]
    return tiles


def worst_examples_image(
    task_type: str, datamodule: pl.LightningDataModule, evaluation: SplitEvaluation, examples: list[dict[str, Any]]
) -> Image.Image:
    """The examples' images as the model saw them; segmentation: image, true mask, predicted mask side by side."""
    captions = []
    for example in examples:
        if task_type == "segmentation":
            captions += [f"loss {example['loss']:.3f}", "true", f"pred {example['pixel_error']:.0%} wrong"]
        elif "confidence" in example:
            captions.append(f"true {example['true']}\npred {example['predicted']} {example['confidence']:.2f}")
        else:
            captions.append(f"true {example['true']}\npred {example['predicted']}")
    tiles = [tile for row in example_tiles(task_type, datamodule, evaluation, examples) for tile in row]
    return image_grid(tiles, captions, columns=6 if task_type == "segmentation" else 4)
