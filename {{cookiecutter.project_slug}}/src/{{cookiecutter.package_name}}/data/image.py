"""Image folders on disk -> samples -> tensors.

Layout: `<root>/<split>/<class>/<file>`. Labels come from the folder a file sits in, so an image and its
label are paired by construction (never by zipping two separately sorted lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ..errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
UNLABELLED = -1


@dataclass(frozen=True)
class ImageDataConfig:
    """Input size and normalization the backbone was pretrained with (or `image_size` when overridden)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @classmethod
    def for_backbone(cls, backbone: str, image_size: int | None = None) -> ImageDataConfig:
        cfg = timm.get_pretrained_cfg(backbone)
        if cfg is None:
            raise DataError(f"model.backbone={backbone!r} has no timm pretrained config to take normalization from")
        size = image_size or cfg.input_size[-1]
        interpolation = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
        return cls(size, tuple(cfg.mean), tuple(cfg.std), interpolation)

    def transform(self, train: bool, augment: bool = True) -> T.Compose:
        """Train: random resized crop + horizontal flip (when `augment`); eval: resize + center crop."""
        interpolation = InterpolationMode(self.interpolation)
        if train and augment:
            geometry = [
                T.RandomResizedCrop(self.image_size, scale=(0.6, 1.0), interpolation=interpolation, antialias=True),
                T.RandomHorizontalFlip(),
            ]
        else:
            # Resize the short side then crop the centre: no crop_pct margin, so nothing at the borders of a
            # user's image is cut off at evaluation.
            geometry = [
                T.Resize(self.image_size, interpolation=interpolation, antialias=True),
                T.CenterCrop(self.image_size),
            ]
        return T.Compose(
            [T.ToImage(), *geometry, T.ToDtype(torch.float32, scale=True), T.Normalize(self.mean, self.std)]
        )


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted, skipping hidden files."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class sub-folders of one split folder."""
    if not split_dir.is_dir():
        raise DataError(f"data folder {split_dir} does not exist")
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{split_dir} has no class folders; expected {split_dir}/<class>/<image files>")
    return names


def scan_split(split_dir: Path, class_names: list[str]) -> list[tuple[Path, int]]:
    """(path, label) pairs of one split, sorted by class then file name."""
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for name in class_folders(split_dir):
        if name not in index:
            raise DataError(
                f"{split_dir / name} is a class the training split does not have ({', '.join(class_names)})"
            )
        images = list_images(split_dir / name)
        if not images:
            raise DataError(f"class folder {split_dir / name} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        samples.extend((path, index[name]) for path in images)
    return samples


def load_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DataError(f"cannot read image {path}: {error}") from None


class ImageDataset(Dataset):
    """Samples as batch-contract dicts: {"image": [3, H, W] float32, "target": int64, "path": str}."""

    def __init__(self, samples: list[tuple[Path, int]], transform: T.Compose):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        path, target = self.samples[i]
        image = self.transform(load_rgb(path))
        return {"image": image, "target": torch.tensor(target, dtype=torch.long), "path": str(path)}
