"""Error analysis of one split, for every task: what the model gets wrong, and the worst examples.

The task analyses its own errors (`Task.analyze_errors`, tasks/): e.g. a confusion matrix and the most-confused
pairs for classes (`confusion_section` here), precision, recall and F1 per label, residuals per target, IoU per
class. The worst examples (highest per-sample loss) come for every task: a table of ids with their true and
predicted targets as the task describes them (and, for tabular or sequence inputs, the first input columns), and
an image grid when the inputs hold images (the task's `example_tiles`, e.g. image, true mask, predicted mask).
Images are drawn with PIL (a dependency already); the confusion matrix uses matplotlib when it is installed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw, ImageFont
from torchmetrics.classification import MulticlassConfusionMatrix

from .evaluation import SplitEvaluation, eval_dataset

if TYPE_CHECKING:
    from ..tasks import Task

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


def confusion_section(
    matrix: torch.Tensor, class_names: Sequence[str], split: str, unit: str = "samples"
) -> tuple[dict[str, Any], list[str], dict[str, Image.Image]]:
    """A confusion matrix [C, C] (`unit`: what it counts) as error analysis: (its entries in diagnosis.json, the
    Markdown lines with the most-confused pairs, the drawn matrix)."""
    pairs = most_confused(matrix, class_names)
    lines = [f"Most-confused pairs (true -> predicted: {unit}):", ""]
    lines += [f"- {p['true']} -> {p['predicted']}: {p['count']}" for p in pairs] or [f"- none: no {split} errors"]
    lines += ["", f"Confusion matrix ({unit}): confusion_matrix.png (rows: true class, columns: predicted).", ""]
    analysis = {"confusion_matrix": matrix.tolist(), "most_confused": pairs}
    return analysis, lines, {"confusion_matrix": confusion_matrix_image(matrix, class_names)}


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


def markdown_cell(value: Any) -> str:
    """A value as the cell of a Markdown table."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def worst_examples(task: Task, evaluation: SplitEvaluation, k: int) -> list[dict[str, Any]]:
    """The k samples with the highest loss, worst first: id, loss, true and predicted target."""
    worst = evaluation.losses.topk(min(k, len(evaluation.losses))).indices.tolist()
    return [
        {
            "id": evaluation.ids[i],
            "loss": round(float(evaluation.losses[i]), 4),
            **task.describe_example(evaluation.outputs[i], evaluation.targets[i]),
        }
        for i in worst
    ]


def input_summary(
    datamodule: pl.LightningDataModule, max_columns: int = 6, width: int = 80, split: str | None = None
) -> dict[str, str]:
    """id -> the first tabular / sequence input cells of each row, as the CSV holds them ("x0=1.2, colour=red"), of
    one split (a user's id column may repeat an id in another split) or, with `split` None, of all."""
    columns = datamodule.input_columns()
    if not columns:
        return {}
    summary = {}
    splits = [datamodule.splits[split]] if split in datamodule.splits else datamodule.splits.values()
    for rows in splits:
        for row in rows:
            text = ", ".join(f"{c}={row.values.get(c, '').strip()}" for c in columns[:max_columns])
            summary[row.id] = text if len(text) <= width else text[: width - 3] + "..."
    return summary


def analyze(
    task: Task, datamodule: pl.LightningDataModule, evaluation: SplitEvaluation, worst_k: int = 16
) -> tuple[dict[str, Any], str, dict[str, Image.Image]]:
    """The error analysis of one split: (what diagnosis.json holds, the Markdown section, images by file stem)."""
    split = evaluation.split
    section, section_lines, images = task.analyze_errors(evaluation)
    analysis: dict[str, Any] = {"split": split, **section}
    lines = ["", f"## Error analysis ({split})", "", *section_lines]

    examples = worst_examples(task, evaluation, worst_k)
    summary = input_summary(datamodule, split=split)
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
        cells = [f"{example[c]:.3f}" if isinstance(example[c], float) else markdown_cell(example[c]) for c in columns]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    if has_images and examples:
        images["worst_examples"] = worst_examples_image(task, datamodule, evaluation, examples)
    return analysis, "\n".join(lines) + "\n", images


def example_tiles(
    task: Task, datamodule: pl.LightningDataModule, evaluation: SplitEvaluation, examples: list[dict[str, Any]]
) -> list[list[Image.Image]]:
    """Per example, what the model saw, as the task draws it (`task.example_tiles`): [image], or e.g. for
    segmentation [image, true mask, predicted mask]."""
    dataset = eval_dataset(datamodule, evaluation.split)
    position = {row.id: i for i, row in enumerate(dataset.rows)}
    index = {sample: i for i, sample in enumerate(evaluation.ids)}
    config = datamodule.data_config
    tiles = []
    for example in examples:
        item = dataset[position[example["id"]]]
        image = denormalize(item["image"], config.mean, config.std)
        tiles.append(task.example_tiles(image, item["target"], evaluation.outputs[index[example["id"]]]))
    return tiles


def worst_examples_image(
    task: Task, datamodule: pl.LightningDataModule, evaluation: SplitEvaluation, examples: list[dict[str, Any]]
) -> Image.Image:
    """The examples' pictures with the task's captions (`task.example_captions`), at least two examples a row."""
    captions = [caption for example in examples for caption in task.example_captions(example)]
    tiles = [tile for row in example_tiles(task, datamodule, evaluation, examples) for tile in row]
    return image_grid(tiles, captions, columns=max(4, 2 * len(task.example_pictures)))
