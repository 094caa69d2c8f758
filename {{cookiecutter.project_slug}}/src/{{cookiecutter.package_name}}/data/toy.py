"""Write a small, learnable image dataset in the same on-disk layout a user brings.

    <root>/<split>/<class>/<index>.png      split in {train, val, test}

Each image is one procedurally drawn shape (the class) at a random position, size, rotation and colour on a
noisy background, so a model has to learn shape rather than colour or position. Everything is drawn from one
seeded generator: the same seed writes byte-identical files.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "cross", "square", "star", "triangle")
SPLIT_SIZES = {"train": 160, "val": 40, "test": 40}  # images per class


def _polygon(cx: float, cy: float, radius: float, angle: float, vertices: int, inner: float = 1.0) -> list:
    """Corners of a regular polygon (inner < 1 alternates radii, which draws a star)."""
    points = []
    steps = vertices * (2 if inner < 1.0 else 1)
    for i in range(steps):
        r = radius * (inner if i % 2 else 1.0) if inner < 1.0 else radius
        a = angle + 2 * math.pi * i / steps
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def draw_shape(shape: str, size: int, rng: random.Random) -> Image.Image:
    """One RGB image of `shape`, with random placement, colour and background noise."""
    background = tuple(rng.randint(0, 110) for _ in range(3))
    colour = tuple(rng.randint(140, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.22, 0.36) * size
    cx = rng.uniform(radius, size - radius)
    cy = rng.uniform(radius, size - radius)
    angle = rng.uniform(0, 2 * math.pi)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius, angle, 4), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius, angle, 3), fill=colour)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, radius, angle, 5, inner=0.45), fill=colour)
    elif shape == "cross":
        width = max(2, int(radius * 0.45))
        for a in (angle, angle + math.pi / 2):
            dx, dy = radius * math.cos(a), radius * math.sin(a)
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=colour, width=width)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(CLASSES)}")
    noise = Image.effect_noise((size, size), rng.uniform(10, 30)).convert("RGB")
    return Image.blend(image, noise, 0.15).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))


def write_toy_dataset(
    root: str | Path,
    size: int = 64,
    per_class: dict[str, int] | None = None,
    classes: tuple[str, ...] = CLASSES,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the dataset under `root` and return it. Refuses to touch a non-empty folder unless `overwrite`."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} already exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(root)
    per_class = per_class or SPLIT_SIZES
    rng = random.Random(seed)
    for split, count in per_class.items():
        for shape in classes:
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                draw_shape(shape, size, rng).save(folder / f"{index:04d}.png")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="toy-data", description="Write the toy image dataset (<root>/<split>/<class>/<file>.png)."
    )
    parser.add_argument("--root", default="data/toy", help="output folder (default: data/toy)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    args = parser.parse_args(argv)
    try:
        root = write_toy_dataset(args.root, size=args.size, seed=args.seed, overwrite=args.overwrite)
    except FileExistsError as error:
        parser.exit(2, f"toy-data: {error}\n")
    counts = ", ".join(f"{split} {n * len(CLASSES)}" for split, n in SPLIT_SIZES.items())
    print(f"Wrote {len(CLASSES)} classes ({', '.join(CLASSES)}) to {root}: {counts} images.")
