"""Training-image augmentation presets (`data.image.augment`) and progressive resizing (`data.image.size_schedule`).

Presets, applied to the training split only (val, test and predict always get the evaluation transform):
    none    the evaluation transform (resize + centre crop): for debugging and overfitting one batch.
    light   random resized crop (60-100% of the area) + horizontal flip + a shift of up to 1/8 of the side. The
            border a shift uncovers is filled by reflecting the image, not with black: black strips are a feature
            the network would learn that no test image has.
    strong  light + colour jitter + timm's RandAugment ("rand-m9-mstd0.5-inc1", timm's ImageNet recipe: two
            random ops per image). Its rotate / shear / translate ops fill with the normalization mean colour.
            With segmentation masks RandAugment draws from its colour ops only: it works on the image alone
            (PIL), so its geometric ops would move the image away from its mask.

Image and mask go through one torchvision v2 call, so every geometric op moves both the same way (masks with
nearest-neighbour interpolation); photometric ops touch the image only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from timm.data.auto_augment import rand_augment_transform
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError

PRESETS = ("none", "light", "strong")
RAND_AUGMENT = "rand-m9-mstd0.5-inc1"
# RandAugment's ops that move no pixel (the "increasing" variants, as RAND_AUGMENT's inc1 selects): safe for masks.
RAND_AUGMENT_COLOUR_OPS = [
    "AutoContrast",
    "Equalize",
    "Invert",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
]


def resolve_preset(augment: str | bool) -> str:
    """The preset name of `data.image.augment`; true / false (the former on / off switch) mean light / none."""
    if augment is True or augment is False:
        return "light" if augment else "none"
    if augment not in PRESETS:
        raise DataError(
            f"data.image.augment={augment!r} is not an augmentation preset; choose one of {', '.join(PRESETS)} "
            "(true / false mean light / none)"
        )
    return augment


def random_ops(
    preset: str,
    size: int,
    mean: tuple[float, float, float],
    interpolation: InterpolationMode,
    masks: bool = False,
) -> list[Callable[..., Any]]:
    """The random ops of a preset, uint8 image tensors (and masks) of any size -> `size` x `size`; none: []."""
    if preset == "none":
        return []
    ops: list[Callable[..., Any]] = [
        T.RandomResizedCrop(size, scale=(0.6, 1.0), interpolation=interpolation, antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomCrop(size, padding=max(1, size // 8), padding_mode="reflect"),
    ]
    if preset == "strong":
        hparams = {
            "translate_const": int(size * 0.45),  # timm's create_transform values
            "img_mean": tuple(min(255, round(255 * m)) for m in mean),
        }
        rand_augment = rand_augment_transform(RAND_AUGMENT, hparams, RAND_AUGMENT_COLOUR_OPS if masks else None)
        ops += [T.ColorJitter(0.3, 0.3, 0.3), OnImage(rand_augment)]
    return ops


class OnImage:
    """A PIL-image transform (timm's RandAugment) on the image of a v2 pipeline; a mask passes through unchanged."""

    def __init__(self, pil_transform: Callable[[Any], Any]):
        self.pil_transform = pil_transform

    def __call__(self, image: torch.Tensor, *others: Any) -> Any:
        image = tv_tensors.Image(TF.pil_to_tensor(self.pil_transform(TF.to_pil_image(image))))
        return (image, *others) if others else image

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pil_transform!r})"


class SizeSchedule:
    """`data.image.size_schedule`, e.g. {0: 64, 5: 128}: the training image side from each listed epoch on.

    Progressive resizing: early epochs train faster on small images, later ones at full resolution. Batches are
    resized on the device after transfer (`DataModule.on_after_batch_transfer`), from the loader's
    `data.image.size` crops, so the size follows `trainer.current_epoch` exactly, also when resuming. Setting it
    on the dataset instead would reach some batches late: persistent workers keep the dataset they copied, and
    Lightning starts the first (or resumed) epoch's iterator, prefetching, before `on_train_epoch_start`.
    Validation, test and predict stay at data.image.size.
    """

    def __init__(self, schedule: Mapping[int | str, int], image_size: int):
        try:
            steps = {int(epoch): int(size) for epoch, size in schedule.items()}
        except (TypeError, ValueError, AttributeError):
            steps = {}
        if not steps or min(steps) < 0 or not all(0 < size <= image_size for size in steps.values()):
            example = dict([(0, image_size // 2), (5, image_size)])
            raise DataError(
                f"data.image.size_schedule={steps or schedule!r} must map epochs (>= 0) to image sides between 1 and "
                f"data.image.size={image_size} (the size val/test use), e.g. {example}"
            )
        self.steps = dict(sorted(steps.items()))
        self.image_size = image_size

    def size_at(self, epoch: int) -> int:
        """The side at `epoch`: the latest listed epoch's size; data.image.size before the first one."""
        sizes = [size for start, size in self.steps.items() if start <= epoch]
        return sizes[-1] if sizes else self.image_size

    def resize(self, batch: dict[str, Any], epoch: int) -> dict[str, Any]:
        """A training batch with its images (and segmentation masks) at the side of `epoch`."""
        size = self.size_at(epoch)
        image = batch["image"]
        if image.shape[-2:] == (size, size):
            return batch
        resized = {**batch, "image": F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)}
        target = batch.get("target")
        if isinstance(target, torch.Tensor) and target.shape[-2:] == image.shape[-2:] and target.dim() == 3:
            # segmentation: class indices, so nearest neighbour (never an average of two classes)
            resized["target"] = F.interpolate(target[:, None].float(), size=(size, size), mode="nearest-exact")[
                :, 0
            ].to(target.dtype)
        return resized
