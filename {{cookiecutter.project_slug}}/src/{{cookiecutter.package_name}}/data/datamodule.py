"""The DataModule: reads the splits as rows, builds one reader per input plus the target, makes the loaders.

Two layouts under `root`:
- a manifest CSV per split, `train.csv` (+ `val.csv`, `test.csv`), whose columns the config maps to roles:
  the image path, tabular feature columns, the sequence column, the target column(s);
- class folders `<split>/<class>/<image>` (image classification only).
A missing val or test split is carved out of train, seeded (stratified by class for classification). Readers
learn their statistics (normalization, vocabularies, class names) from the train split only, then every row of
every split is checked once, so bad data fails before the first step with its file, line and column.
With `source.format: streaming` the same rows and samples come from the LitData chunks `optimize-data` wrote
(data/streaming.py), on a disk or in object storage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from ..answers import TASK_TYPE
from ..errors import DataError
from ..tasks import load_task_class
from .options import ImageInput, SequenceInput, Source, Splits, TabularInput, Target, as_options
from .table import Reader, Row, read_csv

PACKAGE = __package__.split(".")[0]
SPLITS = ("train", "val", "test")


def split_off(
    rows: list[Row], fraction: float, seed: int, label: Callable[[Row], int] | None = None
) -> tuple[list[Row], list[Row]]:
    """Move `fraction` of the rows to a held-out split: per class when `label` is given (at least one sample of
    a class with two or more), else overall. Seeded; both parts keep the input order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[label(row) if label else 0].append(i)
    counts = _stratified_counts({key: len(indices) for key, indices in groups.items()}, fraction)
    rng = random.Random(seed)
    held_out: set[int] = set()
    for key in sorted(groups):
        indices = groups[key]
        rng.shuffle(indices)
        held_out.update(indices[: counts[key]])
    keep = [row for i, row in enumerate(rows) if i not in held_out]
    return keep, [row for i, row in enumerate(rows) if i in held_out]


def _stratified_counts(sizes: dict[int, int], fraction: float) -> dict[int, int]:
    """Per-class counts that add up to round(total * fraction): floors first, then the largest remainders (rounding
    each class on its own can miss the total by up to one sample per class). A class of two or more gets at least
    one, so every class is seen in the held-out split."""
    exact = {key: size * fraction for key, size in sizes.items()}
    counts = {key: math.floor(value) for key, value in exact.items()}
    missing = round(sum(sizes.values()) * fraction) - sum(counts.values())
    for key in sorted(exact, key=lambda k: (counts[k] - exact[k], k))[: max(0, missing)]:
        counts[key] += 1
    if fraction > 0:
        counts = {key: max(count, 1) if sizes[key] >= 2 else count for key, count in counts.items()}
    return counts


def fold_split(
    rows: list[Row], num_folds: int, fold: int, seed: int, label: Callable[[Row], int] | None = None
) -> tuple[list[Row], list[Row]]:
    """(the other folds, fold `fold`) of a seeded k-fold partition: the folds are disjoint and cover the rows.

    Per class when `label` is given: each class is shuffled and dealt round-robin over the folds, continuing where
    the previous class stopped, so every fold keeps the class proportions and fold sizes differ by at most one.
    The partition depends on the seed only, never on `fold`. Both parts keep the input order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[label(row) if label else 0].append(i)
    rng = random.Random(seed)
    fold_of: dict[int, int] = {}
    dealt = 0
    for key in sorted(groups):
        indices = groups[key]
        rng.shuffle(indices)
        for j, index in enumerate(indices):
            fold_of[index] = (dealt + j) % num_folds
        dealt += len(indices)
    rest = [row for i, row in enumerate(rows) if fold_of[i] != fold]
    return rest, [row for i, row in enumerate(rows) if fold_of[i] == fold]


def default_num_workers() -> int:
    """One core stays with the training loop; more than 8 workers rarely helps decoding."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class RowDataset(Dataset):
    """Rows -> batch-contract dicts: {"id": str, <input>: ..., "target": ...}, one entry per reader."""

    def __init__(self, rows: list[Row], readers: list[Reader], train: bool = False):
        self.rows = rows
        self.readers = readers
        self.train = train

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        item: dict[str, Any] = {"id": row.id}
        for reader in self.readers:
            item.update(reader.read(row, self.train))
        return item


class DataModule(pl.LightningDataModule):
    """Data for every task and input: the config names which columns play which role.

    Args:
        root: dataset folder: train.csv (+ val.csv, test.csv), or train/ (+ val/, test/) with class folders.
        task_class: the task's class path (linked from model.init_args.task): its `target_reader` reads the
            targets. A module name of tasks/ works too (the default: this project's task type).
        image_config: what the network's image encoder expects (linked from model.init_args.network): input
            size, normalization, interpolation; None or {}: ImageNet statistics, and image_size must be set.
        image: the image input (data/options.py ImageInput: column, mask_column, size, augment, size_schedule);
            None: no images, unless the data is in class folders.
        tabular: the table input (TabularInput: numeric_columns, categorical_columns; a null list is inferred from
            train.csv, printed, and saved in the run's config.yaml); None: none.
        sequence: the sequence input (SequenceInput: column, kind, max_length); None: none.
        target: what is predicted (Target: columns, classes).
        batch_size: samples per batch (per device).
        num_workers: data loader processes; None picks cpu_count - 1 (max 8).
        splits: how val, test, train-dev and cross-validation folds are carved out (Splits).
        predict_path: what `predict` reads: a CSV with the input columns, or (image classification) a folder of
            images in any layout; None predicts the test split.
        source: where the rows come from and what names each (Source: format folder | streaming, streaming_dir,
            id_column).
    """

    size_schedule: Any = None  # progressive resizing (augment.SizeSchedule), set from image.size_schedule

    def __init__(
        self,
        root: str = "data/toy",
        task_class: str = TASK_TYPE,
        image_config: dict[str, Any] | None = None,
        image: ImageInput | None = None,
        tabular: TabularInput | None = None,
        sequence: SequenceInput | None = None,
        target: Target = Target(),  # noqa: B008 - frozen, so one shared default is safe
        batch_size: int = 64,
        num_workers: int | None = None,
        splits: Splits = Splits(),  # noqa: B008
        predict_path: str | None = None,
        source: Source = Source(),  # noqa: B008
    ):
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        source, target = as_options(Source, source), as_options(Target, target)
        if source.format not in ("folder", "streaming"):
            raise DataError(f"data.source.format={source.format!r}: expected folder or streaming")
        self.streaming_dir = source.streaming_dir or str(self.root / "streaming")
        if source.format == "folder" and not self.root.is_dir():
            raise DataError(
                f"data.root={root!r} does not exist (relative to {Path.cwd()}); "
                f"write the toy dataset with `python -m {PACKAGE} toy-data` or point data.root at your data"
            )
        splits = as_options(Splits, splits)
        if splits.num_folds is not None and (splits.num_folds < 2 or not 0 <= splits.fold < splits.num_folds):
            raise DataError(
                f"data.splits.num_folds={splits.num_folds}, data.splits.fold={splits.fold}: num_folds must be >= 2 "
                "(or null: no folds) and fold in 0 .. num_folds - 1"
            )
        self.split_options = splits
        self.streamed = None  # streaming: what optimize-data wrote (the splits' rows, the class names)
        self.target_columns, self.classes = list(target.columns), target.classes
        if source.format == "streaming":
            from .streaming import Streamed

            self.streamed = Streamed(self.streaming_dir, splits)
            if self.classes is None:
                self.classes = self.streamed.class_names  # as fitted on the folder
        self.batch_size, self.predict_path, self.image_config = batch_size, predict_path, image_config
        self.task_class = load_task_class(task_class)
        self.folder_layout = self.streamed.folder_layout if self.streamed else not (self.root / "train.csv").is_file()
        # Class folders are images: the image group's defaults apply when the config names none.
        self.image = as_options(ImageInput, image) or (ImageInput() if self.folder_layout else None)
        self.tabular, self.sequence = as_options(TabularInput, tabular), as_options(SequenceInput, sequence)
        if self.folder_layout and not self.streamed and not (self.root / "train").is_dir():
            raise DataError(f"{self.root} has neither train.csv (a manifest) nor train/ (class folders)")
        if self.folder_layout and not self.task_class.class_folder_labels:
            raise DataError(
                f"class folders hold class labels; a {self.task_class.__name__} reads {self.root}/train.csv"
            )
        if self.folder_layout and source.id_column:
            raise DataError(
                f"data.source.id_column={source.id_column!r} names a CSV column, and {self.root} holds class folders "
                "(no CSV): there a sample is named by its image file; set data.source.id_column to null"
            )
        if self.image is not None and importlib.util.find_spec(f"{__package__}.image") is None:
            # Pruned at render: said before train.csv is read for an image column this project never has.
            raise DataError("data.image is set, but this project has no image reader (data/image.py)")
        self.id_column = source.id_column
        self._train_rows: list[Row] | None = None  # train.csv, once read (inferring table columns reads it first)
        # Settings the data decided (table columns inferred from train.csv): the CLI saves them in config.yaml.
        self.inferred_settings: dict[str, dict[str, Any]] = {}
        self.tabular = self._resolved_tabular()
        # Everything is read here, not in setup(), so the model can be built from what the data holds.
        self.inputs: dict[str, Reader] = self._input_readers()
        self.target_reader = self._target_reader()
        # Streamed: the splits as optimize-data carved them. Folder: a class target is fitted on all of train.csv
        # first (stratifying needs labels).
        self.splits = self._streamed_splits() if self.streamed else self._read_splits()
        for reader in self.inputs.values():
            reader.fit(self.splits["train"])
        if self.target_reader and not self._label:
            self.target_reader.fit(self.splits["train"])  # e.g. regression target statistics, from train only
        for rows in self.splits.values():
            for reader in self._readers():
                if not (self.streamed and reader is self.inputs.get("image")):  # streamed files: checked when written
                    reader.check(rows)
        target_spec = self.target_reader.spec if self.target_reader else {"class_names": self._mask_class_names()}
        self.class_names: list[str] = target_spec["class_names"]
        self.num_classes = len(self.class_names)
        self.target_stats: dict[str, list[float]] | None = target_spec.get("target_stats")
        self.input_specs: dict[str, dict[str, Any]] = {name: reader.spec for name, reader in self.inputs.items()}
        self.fingerprint = self._fingerprint()
        self.num_workers = default_num_workers() if num_workers is None else num_workers

    # --- readers ---------------------------------------------------------------------------------------------
    def _input_readers(self) -> dict[str, Reader]:
        # Imported here: the project keeps only the modules of its own inputs.
        readers: dict[str, Reader] = {}
        if self.image is not None:
            from .image import ImageDataConfig, ImageReader

            image = self.image
            self.data_config = ImageDataConfig.for_encoder(self.image_config, image.size)
            mask = image.mask_column if self.task_class.reads_masks else None
            readers["image"] = ImageReader(self.data_config, image.column, mask, image.augment)
            if image.size_schedule:
                from .augment import SizeSchedule

                self.size_schedule = SizeSchedule(image.size_schedule, self.data_config.image_size)
        if self.tabular is not None and self.tabular.columns:
            from .tabular import TabularReader

            readers["tabular"] = TabularReader(
                list(self.tabular.numeric_columns), list(self.tabular.categorical_columns)
            )
        if self.sequence is not None:
            from .sequence import SequenceReader

            readers["sequence"] = SequenceReader(self.sequence.column, self.sequence.kind, self.sequence.max_length)
        if not readers:
            raise DataError("no input configured: set data.image, data.tabular or data.sequence")
        return readers

    def _resolved_tabular(self) -> TabularInput | None:
        """data.tabular with each null column list inferred from train.csv (data/columns.py), said in one line."""
        tabular = self.tabular
        if tabular is None or not tabular.inferred:
            return tabular
        if self.folder_layout:
            raise DataError(f"data.tabular reads table columns from {self.root}/train.csv, and there is none")
        from .columns import infer_columns

        self._train_rows = self._read_split("train")
        other_roles = {*self._required_columns(), *self.target_columns, *([self.id_column] if self.id_column else [])}
        columns = infer_columns(self._train_rows, other_roles, tabular.numeric_columns, tabular.categorical_columns)
        source = self.root / "train.csv"
        if not columns.numeric and not columns.categorical:
            raise DataError(f"{columns.describe(str(source))}: no tabular input is left")
        rank_zero_info(columns.describe(str(source)))
        resolved = TabularInput(numeric_columns=columns.numeric, categorical_columns=columns.categorical)
        self.inferred_settings = {"tabular": {key: getattr(resolved, key) for key in columns.inferred}}
        self.hparams["tabular"] = dataclasses.asdict(resolved)  # logged as it ran; plain data: checkpoints load safely
        return resolved

    def input_columns(self) -> list[str]:
        """The CSV columns of the inputs other than images (table columns, then the sequence column)."""
        columns = list(self.tabular.columns) if self.tabular is not None else []
        return columns + ([self.sequence.column] if self.sequence is not None else [])

    def _target_reader(self) -> Reader | None:
        if self.task_class.reads_masks and "image" not in self.inputs:
            raise DataError("segmentation needs images: set data.image.column (and data.image.mask_column)")
        # None: the target is read with the input (a segmentation mask, by the image reader).
        return self.task_class.target_reader(self.target_columns, self.classes)

    def _readers(self) -> list[Reader]:
        return [*self.inputs.values(), *([self.target_reader] if self.target_reader else [])]

    def _mask_class_names(self) -> list[str]:
        """Segmentation classes: data.target.classes, else class_0.. up to the largest value in the train masks."""
        if self.classes:
            return [str(name) for name in self.classes]
        from .image import load_mask

        column = self.image.mask_column
        largest = max(max(load_mask(row.path(column)).getextrema()) for row in self.splits["train"])
        return [f"class_{i}" for i in range(max(2, int(largest) + 1))]

    # --- splits ----------------------------------------------------------------------------------------------
    def _read_split(self, name: str) -> list[Row] | None:
        if self.streamed:  # inferring table columns reads train first
            return self.streamed.rows.get(name)
        if self.folder_layout:
            from .image import class_folders, scan_class_folders

            folder = self.root / name
            if not folder.is_dir():
                return None
            if name != "train":
                class_folders(folder)  # a split folder without class folders is an error, not an empty split
            return scan_class_folders(folder, self.root)
        if name == "train" and self._train_rows is not None:
            return self._train_rows
        path = self.root / f"{name}.csv"
        return read_csv(path, self._required_columns(), self.root, self.id_column) if path.is_file() else None

    def _required_columns(self) -> list[str]:
        columns = ([self.image.column] if self.image is not None else []) + self.input_columns()
        columns += [self.image.mask_column] if self.task_class.reads_masks else self.target_columns
        return [column for column in columns if column]

    def _streamed_splits(self) -> dict[str, list[Row]]:
        if self._label:
            self.target_reader.fit(self.streamed.rows["train"])  # the class names written with the splits
        return self.streamed.rows

    def _read_splits(self) -> dict[str, list[Row]]:
        options = self.split_options
        train = self._read_split("train")
        label = self._label
        if label:
            self.target_reader.fit(train)  # class names from the whole train file, before val/test are carved out
        splits: dict[str, list[Row]] = {}
        for name in ("test", "val"):
            rows = self._read_split(name)
            if name == "val" and options.num_folds:
                # Cross-validation: one fold of all non-test rows (train and any val split) validates.
                train, rows = fold_split(train + (rows or []), options.num_folds, options.fold, options.seed, label)
                if not rows or not train:
                    raise DataError(
                        f"data.splits.num_folds={options.num_folds} is more than the {len(train + rows)} non-test rows"
                    )
            elif rows is None:
                fraction = getattr(options, f"{name}_fraction")
                train, rows = split_off(train, fraction, options.seed, label)
                if not rows:
                    raise DataError(
                        f"no {name} split in {self.root} and data.splits.{name}_fraction=0: nothing to {name} on"
                    )
            splits[name] = rows
        if options.train_dev_fraction > 0:
            train, splits["train_dev"] = split_off(train, options.train_dev_fraction, options.seed, label)
        if not train:
            raise DataError(f"the train split of {self.root} is empty after carving out val/test")
        # A seeded shuffle (the same order every run): unshuffled views of train, like `overfit_batches` or the
        # sanity checks' first batch, then see every class, not just the first one.
        random.Random(options.seed).shuffle(train)
        splits["train"] = train
        return splits

    @property
    def _label(self) -> Callable[[Row], int] | None:
        """Row -> class index for classification targets (stratified splits, label statistics), else None."""
        return getattr(self.target_reader, "label", None)

    def labels(self, split: str) -> list[int] | None:
        """Class index of every row of a split (multiclass and binary), else None."""
        return [self._label(row) for row in self.splits[split]] if self._label else None

    def _fingerprint(self) -> str:
        """Identity of the data (split membership and every cell), stored in checkpoints."""
        digest = hashlib.sha256()
        for split in sorted(self.splits):
            for row in self.splits[split]:
                digest.update(f"{split}:{row.location}:{json.dumps(row.values, sort_keys=True)}\n".encode())
        return digest.hexdigest()[:16]

    # --- datasets and loaders --------------------------------------------------------------------------------
    def dataset(self, split: str, train: bool | None = None) -> RowDataset:
        """A split as a dataset; `train` (default: split == "train") switches augmentation on."""
        train = split == "train" if train is None else train
        if self.streamed:
            return self.streamed.dataset(split, self._readers(), train)
        return RowDataset(self.splits[split], self._readers(), train)

    def _loader(self, dataset: Dataset, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        if self.streamed:  # each DDP rank streams its part; the loader's position is saved in checkpoints
            self._train_loader = self.streamed.loader("train", self, shuffle=True)
            if self._train_loader_state:  # a resumed fit: continue the epoch where the checkpoint left it
                self._train_loader.load_state_dict(self._train_loader_state)
                self._train_loader_state = None
            return self._train_loader
        dataset = self.dataset("train")
        # A last batch of one sample breaks BatchNorm; drop the remainder when there is more than one batch.
        return self._loader(dataset, shuffle=True, drop_last=len(dataset) > self.batch_size)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        # Progressive resizing: each training batch at its epoch's size, resized on the device (data/augment.py).
        if self.size_schedule is not None and self.trainer is not None and self.trainer.training:
            return self.size_schedule.resize(batch, self.trainer.current_epoch)
        return batch

    # Lightning saves a resumable loader's position in checkpoints, but skips restoring it when the train data was
    # loaded before the checkpoint (the LR schedule's `estimated_stepping_batches` does that): the DataModule's own
    # state carries it instead.
    _train_loader: Any = None
    _train_loader_state: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_loader_state = state_dict.get("train_loader")

    def val_dataloader(self) -> DataLoader:
        if self.streamed:
            return self.streamed.loader("val", self)
        return self._loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        if self.streamed:
            return self.streamed.loader("test", self)
        return self._loader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        if self.predict_path is None:
            return self.test_dataloader()
        return self._loader(RowDataset(self._predict_rows(Path(self.predict_path)), list(self.inputs.values())))

    def _predict_rows(self, path: Path) -> list[Row]:
        """Rows to predict: a CSV with the input columns (no target needed), or a folder of images."""
        if path.is_file():
            required = ([self.image.column] if self.image is not None else []) + self.input_columns()
            rows = read_csv(path, [column for column in required if column], self.root, self.id_column)
        elif path.is_dir() and self.folder_layout:
            from .image import list_images

            # Absolute: the folder is where the user pointed (relative to the working folder), not under data.root.
            rows = [Row({"image": str(image.resolve())}, image, 0, self.root) for image in list_images(path)]
            if not rows:
                raise DataError(f"data.predict_path={str(path)!r} holds no images")
        elif not path.exists():
            raise DataError(f"data.predict_path={str(path)!r} does not exist (a relative path starts at {Path.cwd()})")
        else:
            raise DataError(f"data.predict_path={str(path)!r} is not a CSV file or (class-folder data) an image folder")
        for reader in self.inputs.values():
            reader.check(rows)
        return rows
