"""Procedurally drawn shapes for the toy images, and their segmentation masks.

Each shape gets a random position, size, rotation and colour on a noisy background, so a model has to learn
shape rather than colour or position. All randomness comes from the `random.Random` passed in (PIL's own noise
generator is not seedable), so the same generator state draws byte-identical images.
"""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "cross", "square", "star", "triangle")  # every shape, sorted: the class-folder default
SHAPES = ("circle", "square", "triangle", "star", "cross")  # latent index -> shape, most distinct first


def _polygon(cx: float, cy: float, radius: float, angle: float, vertices: int, inner: float = 1.0) -> list:
    """Corners of a regular polygon (inner < 1 alternates radii, which draws a star)."""
    points = []
    steps = vertices * (2 if inner < 1.0 else 1)
    for i in range(steps):
        r = radius * (inner if i % 2 else 1.0) if inner < 1.0 else radius
        a = angle + 2 * math.pi * i / steps
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def _paint(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, angle: float, fill) -> None:
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius, angle, 4), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius, angle, 3), fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, radius, angle, 5, inner=0.45), fill=fill)
    elif shape == "cross":
        width = max(2, int(radius * 0.45))
        for a in (angle, angle + math.pi / 2):
            dx, dy = radius * math.cos(a), radius * math.sin(a)
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=fill, width=width)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(CLASSES)}")


def _noise(size: int, sigma: float, rng: random.Random) -> Image.Image:
    """Grey noise around 128 with roughly `sigma` standard deviation, drawn from `rng`."""
    noise = Image.frombytes("L", (size, size), rng.randbytes(size * size))  # uniform: standard deviation ~74
    return Image.blend(Image.new("L", (size, size), 128), noise, min(1.0, sigma / 74.0)).convert("RGB")


def draw_scene(
    shapes: list[str],
    size: int,
    rng: random.Random,
    *,
    radii: list[float] | None = None,
    mask_values: list[int] | None = None,
) -> tuple[Image.Image, Image.Image | None]:
    """An RGB image of `shapes` (drawn in order, kept apart when possible) and, with `mask_values`, its mask.

    `radii` are fractions of `size` (random when None: larger for one shape than for two). The mask is an L-mode
    image: 0 = background, `mask_values[i]` where shape i is visible.
    """
    background = tuple(rng.randint(0, 110) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    mask = Image.new("L", (size, size), 0) if mask_values is not None else None
    draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(mask) if mask is not None else None
    placed: list[tuple[float, float, float]] = []
    for i, shape in enumerate(shapes):
        colour = tuple(rng.randint(140, 255) for _ in range(3))
        low, high = (0.22, 0.36) if len(shapes) == 1 else (0.14, 0.22)
        radius = (radii[i] if radii is not None else rng.uniform(low, high)) * size
        for _ in range(20):  # a few tries to keep shapes from covering each other
            cx = rng.uniform(radius, size - radius)
            cy = rng.uniform(radius, size - radius)
            if all(math.hypot(cx - x, cy - y) > radius + r for x, y, r in placed):
                break
        placed.append((cx, cy, radius))
        angle = rng.uniform(0, 2 * math.pi)
        _paint(draw, shape, cx, cy, radius, angle, colour)
        if mask_draw is not None and mask_values is not None:
            _paint(mask_draw, shape, cx, cy, radius, angle, mask_values[i])
    noise = _noise(size, rng.uniform(10, 30), rng)
    image = Image.blend(image, noise, 0.15).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))
    return image, mask


def draw_shape(shape: str, size: int, rng: random.Random) -> Image.Image:
    """One RGB image of `shape`, with random placement, colour and background noise."""
    return draw_scene([shape], size, rng)[0]
