"""Images on disk -> tensors: the backbone's input config, transforms, class folders and the image reader.

Two layouts: class folders `<root>/<split>/<class>/<file>` (classification; a label comes from the folder its
file sits in, so image and label are paired by construction), or a manifest CSV whose `data.image.column`
names each image (and `data.image.mask_column` its segmentation mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy
import torch
from PIL import Image, UnidentifiedImageError
from pytorch_lightning.utilities import rank_zero_warn
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ..errors import DataError
from .augment import random_ops, resolve_preset
from .image_check import describe, find_bad_images
from .table import Row

# Used when the image encoder names no normalization of its own (a network trained from scratch).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MASK_MODES = frozenset({"L", "P", "I", "I;16"})  # one channel of class indices
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class ImageDataConfig:
    """Input size and normalization the image encoder expects (or `image_size` when overridden)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @classmethod
    def for_encoder(cls, image_config: dict[str, Any] | None, image_size: int | None = None) -> ImageDataConfig:
        """From what the network's image encoder expects (its `data_config`, linked in by the CLI): its input
        size unless `image_size` overrides it, its normalization (ImageNet statistics when it names none)."""
        config = image_config or {}
        source = config.get("source", "the image encoder")
        size = image_size or config.get("image_size")
        if not size:
            raise DataError(f"data.image.size is null and {source} names no input size: set data.image.size")
        trained_at = config.get("image_size")
        if config.get("pretrained") and trained_at and not trained_at / 2 < size < trained_at * 2:
            rank_zero_warn(
                f"{source} was pretrained on {trained_at} px images but data.image.size={size}: pretrained "
                f"features transfer poorly that far from their scale; use a data.image.size near {trained_at}, or "
                "pretrained: false"
            )
        interpolation = config.get("interpolation", "bilinear")
        return cls(
            int(size),
            tuple(config.get("mean", IMAGENET_MEAN)),
            tuple(config.get("std", IMAGENET_STD)),
            interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear",
        )

    def transform(self, train: bool, augment: str | bool = "light", masks: bool = False) -> T.Compose:
        """Train: the `augment` preset's random ops (data/augment.py; `masks`: keep segmentation masks aligned);
        eval, and train with augment none: resize + center crop."""
        interpolation = InterpolationMode(self.interpolation)
        ops = random_ops(resolve_preset(augment), self.image_size, self.mean, interpolation, masks) if train else []
        to_float = [T.ToDtype(torch.float32, scale=True), T.Normalize(self.mean, self.std)]
        if ops:  # random ops on uint8 image tensors
            return T.Compose([T.ToImage(), *ops, *to_float])
        # No augmentation: resize the short side then crop the centre. No crop_pct margin, so nothing at the
        # borders of a user's image is cut off at evaluation. Both on the PIL image, so PIL resamples: the
        # exported preprocess.py (practices/deploy_preprocess.py), which has PIL but no torch, then computes the
        # same pixels. torchvision's tensor resize differs from PIL's by up to 2 of 255 levels (bicubic).
        resize = T.Resize(self.image_size, interpolation=interpolation, antialias=True)
        return T.Compose([resize, T.CenterCrop(self.image_size), T.ToImage(), *to_float])

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The evaluation transform's parameters, for deployment (practices/deploy_preprocess.py reads them)."""
        size = self.image_size
        return {
            "convert": "RGB",
            "resize_short_side": size,
            "interpolation": self.interpolation,
            "center_crop": [size, size],
            "scale": "1/255",
            "mean": list(self.mean),
            "std": list(self.std),
            "steps": [
                "PIL.Image.open(path) (no EXIF rotation); 16-bit or 32-bit integer images: round(value / 65535 * "
                "255), float images (0..1): round(value * 255), as uint8; then .convert('RGB')",
                f"resize with PIL.Image.resize({self.interpolation}) so the short side is {size}: the long side "
                f"becomes int({size} * long / short); an image already that size is left as it is",
                f"crop the centre {size} x {size}: left = round((width - {size}) / 2), top = round((height - "
                f"{size}) / 2) (Python's round, half to even)",
                "to float32 [3, H, W] (channels R, G, B first), times float32(1 / 255)",
                "per channel: subtract mean, then divide by std (float32)",
            ],
        }


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


def scan_class_folders(split_dir: Path, root: Path) -> list[Row]:
    """One row per image of a split folder, {"image": file, "target": class folder}, sorted by class then file."""
    rows = []
    for name in class_folders(split_dir):
        images = list_images(split_dir / name)
        if not images:
            raise DataError(f"class folder {split_dir / name} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        rows.extend(Row({"image": str(path.relative_to(root)), "target": name}, path, 0, root) for path in images)
    return rows


def to_8_bit(image: Image.Image, path: Path) -> Image.Image:
    """16-bit and 32-bit integer images (microscopy, medical, depth) scaled from their type's range to 0..255, and
    float images in 0..1 to 0..255: `convert("RGB")` alone would clip every value above 255 to white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # PIL opens 16-bit PNGs and TIFFs as I;16 or I
        pixels = numpy.asarray(image, dtype=numpy.float64)
        low, high = float(pixels.min(initial=0)), float(pixels.max(initial=0))
        if low < 0 or high > 65535:
            raise DataError(f"image {path} has integer values in [{low:g}, {high:g}]; expected 16-bit 0..65535")
        pixels = pixels / 65535.0 * 255.0
    elif image.mode == "F":
        pixels = numpy.asarray(image, dtype=numpy.float64)
        low, high = float(numpy.nanmin(pixels)), float(numpy.nanmax(pixels))
        if low < 0.0 or high > 1.0:
            raise DataError(f"float image {path} has values in [{low:g}, {high:g}]; expected 0..1 (rescale it)")
        pixels = pixels * 255.0
    else:
        return image
    return Image.fromarray(numpy.clip(numpy.rint(pixels), 0, 255).astype(numpy.uint8))


def load_rgb(path: Path | BinaryIO) -> Image.Image:
    try:
        with Image.open(path) as image:
            return to_8_bit(image, path).convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DataError(f"cannot read image {path}: {error}") from None


def load_mask_mode(path: Path) -> str:
    with Image.open(path) as mask:
        return mask.mode


def load_mask(path: Path | BinaryIO) -> Image.Image:
    """A segmentation mask: one channel, the pixel value is the class index."""
    try:
        with Image.open(path) as mask:
            if mask.mode not in MASK_MODES:
                raise DataError(f"mask {path} has mode {mask.mode}; expected one channel of class indices (L or P)")
            return mask.copy() if mask.mode in ("L", "P") else mask.convert("I")
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DataError(f"cannot read mask {path}: {error}") from None


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DataError(f"cannot read image {path}: {error}") from None


class ImageReader:
    """A row's image (and, for segmentation, its mask) -> {"image": [3, H, W] float32 (, "target": [H, W] int64)}.

    Image and mask go through one transform call, so a random crop or flip moves both the same way (torchvision
    resizes masks with nearest-neighbour interpolation and leaves their values unnormalized).
    """

    def __init__(
        self,
        config: ImageDataConfig,
        column: str = "image",
        mask_column: str | None = None,
        augment: str | bool = "light",
    ):
        self.config = config
        self.column = column
        self.mask_column = mask_column
        self.augment = resolve_preset(augment)
        self.transforms = {
            train: config.transform(train=train, augment=self.augment, masks=bool(mask_column))
            for train in (True, False)
        }

    def fit(self, rows: list[Row]) -> None:
        """Nothing to learn: normalization comes from the image encoder's config."""

    def check(self, rows: list[Row]) -> None:
        """Every image (and mask) file opens and verifies; all unusable files are named at once, in one line."""
        files: dict[Path, str] = {}  # file -> where it is named (the file itself, or the CSV cell naming it)
        for row in rows:
            columns = [self.column, self.mask_column] if self._has_mask(row) else [self.column]
            for column in columns:
                if not row.get(column).strip():
                    raise DataError(f"{row.where(column)}: the cell is empty; it must name an image file")
                files.setdefault(row.path(column), f"{row.where(column)}: {row.path(column)}" if row.line else "")
        bad = find_bad_images(files)
        if bad:
            raise DataError(describe({files[path] or str(path): reason for path, reason in bad.items()}))
        for row in rows:
            if self._has_mask(row):
                image, mask = row.path(self.column), row.path(self.mask_column)
                if load_mask_mode(mask) not in MASK_MODES:
                    raise DataError(
                        f"{row.where(self.mask_column)}: mask {mask} has mode {load_mask_mode(mask)}; expected one "
                        "channel of class indices (L or P)"
                    )
                image_size, mask_size = image_size_of(image), image_size_of(mask)
                if image_size != mask_size:
                    raise DataError(
                        f"{row.where(self.mask_column)}: mask {mask} is {mask_size[0]}x{mask_size[1]} but its image "
                        f"{image} is {image_size[0]}x{image_size[1]}; a mask must have its image's size"
                    )

    def read(self, row: Row, train: bool) -> dict[str, Any]:
        image = load_rgb(row.source(self.column))
        transform = self.transforms[train]
        if not self._has_mask(row):
            return {"image": transform(image)}
        mask = load_mask(row.source(self.mask_column))
        mask = tv_tensors.Mask(torch.from_numpy(numpy.array(mask, dtype=numpy.int64)))
        image, mask = transform(image, mask)
        return {"image": image, "target": mask.as_subclass(torch.Tensor)}

    def _has_mask(self, row: Row) -> bool:
        # Training splits must have the mask column (read_csv checks); rows to predict need not.
        return bool(self.mask_column) and self.mask_column in row.values

    @property
    def spec(self) -> dict[str, Any]:
        return {"image_size": self.config.image_size}

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What turns a raw image file into the model's "image" input (export writes it to preprocess.json)."""
        return {
            "kind": "image",
            "column": self.column,
            "inputs": {"image": {"dtype": "float32", "shape": [3, self.config.image_size, self.config.image_size]}},
            **self.config.preprocessing,
        }
