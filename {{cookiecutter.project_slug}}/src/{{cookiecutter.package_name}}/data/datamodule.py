"""The DataModule: finds the splits, builds datasets and loaders.

Splits come from `<root>/train`, `<root>/val` and `<root>/test`. A missing val or test folder is carved out of
train with a seeded, stratified split (same seed, same split). Normalization comes from the backbone's
pretrained config, the same for every split.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ..errors import DataError
from .image import UNLABELLED, ImageDataConfig, ImageDataset, class_folders, list_images, scan_split

Samples = list[tuple[Path, int]]
PACKAGE = __package__.split(".")[0]


def stratified_split(samples: Samples, fraction: float, seed: int) -> tuple[Samples, Samples]:
    """Split off `fraction` of every class (at least one sample of a class with two or more); seeded."""
    by_class: dict[int, Samples] = defaultdict(list)
    for sample in samples:
        by_class[sample[1]].append(sample)
    rng = random.Random(seed)
    keep, held_out = [], []
    for label in sorted(by_class):
        items = sorted(by_class[label])
        rng.shuffle(items)
        n = round(len(items) * fraction)
        n = max(n, 1) if len(items) >= 2 and fraction > 0 else n
        held_out.extend(items[:n])
        keep.extend(items[n:])
    return sorted(keep, key=_by_label_then_path), sorted(held_out, key=_by_label_then_path)


def _by_label_then_path(sample: tuple[Path, int]) -> tuple[int, str]:
    return sample[1], str(sample[0])


def default_num_workers() -> int:
    """One core stays with the training loop; more than 8 workers rarely helps image decoding."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class DataModule(pl.LightningDataModule):
    """Image-folder data.

    Args:
        root: dataset folder holding train/ (and optionally val/, test/), each with one folder per class.
        backbone: the model's timm backbone (linked from model.backbone): gives input size and normalization.
        image_size: input side in pixels; None uses the backbone's pretrained input size.
        batch_size: samples per batch (per device).
        num_workers: data loader processes; None picks cpu_count - 1 (max 8).
        val_fraction: share of each class moved from train to val when there is no val/ folder.
        test_fraction: share of each class moved from train to test when there is no test/ folder.
        split_seed: seed of those splits (fixed, so the splits never change between runs).
        train_dev_fraction: share of each training class held out as `train_dev`: same distribution as train,
            never trained on; the diagnosis compares it with val to tell over-fitting from data mismatch.
        augment: random resized crop + horizontal flip on the training split.
        predict_root: folder of images to predict (any layout); None predicts the test split.
    """

    def __init__(
        self,
        root: str = "data/toy",
        backbone: str = "resnet18",
        image_size: int | None = None,
        batch_size: int = 64,
        num_workers: int | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        train_dev_fraction: float = 0.0,
        augment: bool = True,
        predict_root: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(
                f"data.root={root!r} does not exist (relative to {Path.cwd()}); "
                f"write the toy dataset with `python -m {PACKAGE} toy-data` or point data.root at your data"
            )
        # Scanned here, not in setup(), so the number of classes is known when the model is built.
        self.class_names = class_folders(self.root / "train")
        self.num_classes = len(self.class_names)
        self.splits = self._find_splits()
        self.fingerprint = self._fingerprint()
        self.data_config = ImageDataConfig.for_backbone(backbone, image_size)
        self.num_workers = default_num_workers() if num_workers is None else num_workers

    def _find_splits(self) -> dict[str, Samples]:
        train = scan_split(self.root / "train", self.class_names)
        splits = {}
        for name, fraction in (("test", self.hparams.test_fraction), ("val", self.hparams.val_fraction)):
            if (self.root / name).is_dir():
                splits[name] = scan_split(self.root / name, self.class_names)
            else:
                train, splits[name] = stratified_split(train, fraction, self.hparams.split_seed)
                if not splits[name]:
                    raise DataError(f"no {self.root / name} folder and data.{name}_fraction=0: nothing to {name} on")
        if self.hparams.train_dev_fraction > 0:
            fraction = self.hparams.train_dev_fraction
            train, splits["train_dev"] = stratified_split(train, fraction, self.hparams.split_seed)
        # A seeded shuffle (the order is still the same every run): unshuffled views of train, like
        # `overfit_batches` or a first batch for sanity checks, then see every class, not just the first one.
        random.Random(self.hparams.split_seed).shuffle(train)
        splits["train"] = train
        return splits

    def _fingerprint(self) -> str:
        """Identity of the data (split membership, names and sizes), stored in checkpoints."""
        digest = hashlib.sha256()
        for split in sorted(self.splits):
            for path, label in self.splits[split]:
                digest.update(f"{split}:{path.relative_to(self.root)}:{label}:{path.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]

    def dataset(self, split: str) -> ImageDataset:
        transform = self.data_config.transform(train=split == "train", augment=self.hparams.augment)
        return ImageDataset(self.splits[split], transform)

    def _loader(self, dataset: ImageDataset, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        # A last batch of one sample breaks BatchNorm; drop the remainder when there is more than one batch.
        return self._loader(dataset, shuffle=True, drop_last=len(dataset) > self.hparams.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.predict_root is None:
            return self.test_dataloader()
        folder = Path(self.hparams.predict_root)
        if not folder.is_dir():
            raise DataError(f"data.predict_root={str(folder)!r} does not exist")
        images = list_images(folder)
        if not images:
            raise DataError(f"data.predict_root={str(folder)!r} holds no images")
        dataset = ImageDataset([(path, UNLABELLED) for path in images], self.data_config.transform(train=False))
        return self._loader(dataset)
