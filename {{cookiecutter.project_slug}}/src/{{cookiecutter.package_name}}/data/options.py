"""What the config says about each input, the target, where rows come from and the splits: one small group of
keys each (`data.image`, `data.tabular`, `data.sequence`, `data.target`, `data.source`, `data.splits`), so the
DataModule's own arguments stay few and a project's config shows only the groups of its inputs. An input is on
when its group is set (class folders always have images)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageInput:
    """Images, read by data/image.py.

    Args:
        column: CSV column with each image's path (relative to root); unused with class folders.
        mask_column: segmentation: CSV column with each mask's path (pixel value = class index).
        size: image side in pixels; None uses the image encoder's input size.
        augment: training-image augmentation preset: none | light | strong (data/augment.py); true / false mean
            light / none. Val, test and predict are never augmented.
        size_schedule: progressive resizing, e.g. {0: 64, 5: 128}: the training image side from each listed
            epoch on (at most `size`, which val/test keep); None: `size` throughout.
    """

    column: str = "image"
    mask_column: str = "mask"
    size: int | None = None
    augment: bool | str = "light"
    size_schedule: dict[int, int] | None = None


@dataclass(frozen=True)
class TabularInput:
    """Table columns, read by data/tabular.py.

    Args:
        numeric_columns: numeric feature columns (standardized with train statistics, missing values imputed);
            null: inferred from train.csv (data/columns.py): the other columns whose cells are all numbers.
        categorical_columns: categorical columns (embedded; values unseen in train share an unknown bucket);
            null: inferred from train.csv: the other columns that hold text. [] means none.
    """

    numeric_columns: list[str] | None = None
    categorical_columns: list[str] | None = None

    @property
    def columns(self) -> list[str]:
        """The columns listed so far (an inferred list counts once the DataModule has filled it in)."""
        return [*(self.numeric_columns or []), *(self.categorical_columns or [])]

    @property
    def inferred(self) -> bool:
        """True while a list is null: the DataModule infers it from the train split."""
        return self.numeric_columns is None or self.categorical_columns is None


@dataclass(frozen=True)
class SequenceInput:
    """A text or a numeric series per row, read by data/sequence.py.

    Args:
        column: CSV column with a text or whitespace-separated numbers.
        kind: "tokens" (text) or "numeric" (time series).
        max_length: steps kept (longer ones are truncated, shorter ones padded and masked).
    """

    column: str = "sequence"
    kind: str = "tokens"
    max_length: int = 64


@dataclass(frozen=True)
class Target:
    """What the task predicts, read by the task's `target_reader` (data/targets.py).

    Args:
        columns: the CSV column(s) to predict (regression: one output per column; multilabel: one column of
            space-separated 0/1 values). Unused by segmentation (its target is the mask) and class folders.
        classes: class / label names in output order; None: the sorted values seen in train (multiclass, binary),
            label_0.. (multilabel), class_0.. up to the largest mask value (segmentation).
    """

    columns: list[str] = field(default_factory=lambda: ["target"])
    classes: list[str] | None = None


@dataclass(frozen=True)
class Source:
    """Where the rows are read from and what names each one.

    Args:
        format: folder: read the splits from `data.root`; streaming: stream the LitData chunks `optimize-data`
            wrote to `streaming_dir` (data/streaming.py; `pip install -e ".[stream]"`), from a disk or object storage.
        streaming_dir: where `optimize-data` writes and `format: streaming` reads: a folder or a URL (s3://...);
            None: <root>/streaming.
        id_column: the CSV column that names each sample (in predictions.csv and reports); every CSV read, the
            predict CSV included, must have it. None: a sample is named by its file and line (`test.csv:7`).
    """

    format: str = "folder"
    streaming_dir: str | None = None
    id_column: str | None = None


@dataclass(frozen=True)
class Splits:
    """How val, test, train-dev and cross-validation folds are carved out.

    Args:
        val_fraction: share of train moved to val when there is no val split.
        test_fraction: share of train moved to test when there is no test split.
        seed: seed of those splits (fixed, so the splits never change between runs) and of the folds.
        num_folds: k-fold cross-validation (the `cv` command sets it): all non-test rows (train + val) are dealt
            into this many seeded folds, stratified by class where the task has classes; None: no folds.
        fold: which fold (0 .. num_folds - 1) validates; the other folds train. The test split is unchanged.
        train_dev_fraction: share of train held out as `train_dev`: same distribution as train, never trained
            on; the diagnosis compares it with val to tell over-fitting from data mismatch.
    """

    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    num_folds: int | None = None
    fold: int = 0
    train_dev_fraction: float = 0.0


def as_options(cls: type, value: object) -> object:
    """`value` as the dataclass `cls`: a dict (a config section read by hand, e.g. in a notebook) becomes one."""
    return cls(**value) if isinstance(value, dict) else value
