"""Error analysis for classification: confusion matrix, most-confused pairs, the worst examples as a grid.

Images are drawn with PIL (a dependency already); the confusion matrix uses matplotlib when it is installed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torchmetrics.classification import MulticlassConfusionMatrix

CELL = 36  # pixels per confusion-matrix cell
TILE = 128  # pixels per worst-example tile


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> MulticlassConfusionMatrix:
    """Rows are true classes, columns predicted classes (counts)."""
    # Rank zero evaluates alone after a DDP fit: computing must not wait for the other ranks.
    metric = MulticlassConfusionMatrix(num_classes, sync_on_compute=False)
    metric.update(predictions, targets)
    return metric


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


def confusion_matrix_image(metric: MulticlassConfusionMatrix, class_names: Sequence[str]) -> Image.Image:
    try:
        import matplotlib.pyplot as plt  # not a dependency: used when the user has it
    except ImportError:
        return _heat_map(metric.compute(), class_names)
    fig, _ = metric.plot(labels=list(class_names))
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
    image = Image.new("RGB", (margin + n * CELL + 8, margin + n * CELL + 8), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, margin - 28), "rows: true", fill="gray", font=font)
    draw.text((4, margin - 16), "cols: predicted", fill="gray", font=font)
    shares = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    for i in range(n):
        draw.text((4, margin + i * CELL + CELL // 3), names[i], fill="black", font=font)  # true class: rows
        label = Image.new("RGB", (margin - 8, 12), "white")  # predicted class: columns, written upwards
        ImageDraw.Draw(label).text((0, 0), names[i], fill="black", font=font)
        image.paste(label.rotate(90, expand=True), (margin + i * CELL + CELL // 3, 4))
        for j in range(n):
            shade = float(shares[i, j])
            colour = tuple(int(255 - shade * (255 - c)) for c in (31, 80, 160))  # white -> dark blue
            box = (margin + j * CELL, margin + i * CELL, margin + (j + 1) * CELL - 1, margin + (i + 1) * CELL - 1)
            draw.rectangle(box, fill=colour, outline=(200, 200, 200))
            text = str(int(matrix[i, j]))
            draw.text((box[0] + 4, box[1] + CELL // 3), text, fill="white" if shade > 0.5 else "black", font=font)
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
