"""Image data: labels paired with the right files, deterministic splits, normalization, and clear errors.

Class folders are tested with a multiclass DataModule whatever the project's task: every image project can read
them (the manifest CSV layout is tested in test_manifest.py)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY_BACKBONE, project_datamodule
from {{ cookiecutter.package_name }}.data.datamodule import DataModule
from {{ cookiecutter.package_name }}.data.image import IMAGENET_MEAN, IMAGENET_STD, ImageDataConfig
from {{ cookiecutter.package_name }}.data.options import ImageInput, Splits
from {{ cookiecutter.package_name }}.data.targets import ClassTarget
from {{ cookiecutter.package_name }}.errors import DataError
from {{ cookiecutter.package_name }}.models.encoders.image import ImageEncoder
from {{ cookiecutter.package_name }}.tasks import Task

PACKAGE = "{{ cookiecutter.package_name }}"

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


class FolderClasses(Task):
    """Multiclass labels from class folders, for projects rendered without tasks/multiclass.py: the data reads
    targets with the task class's `target_reader`, and nothing here trains."""

    class_folder_labels = True

    @staticmethod
    def target_reader(target_columns: list[str], classes: list[str] | None) -> ClassTarget:
        return ClassTarget(target_columns[0], classes)


# The task class path the CLI would link into data.task_class.
MULTICLASS = "multiclass" if importlib.util.find_spec(f"{PACKAGE}.tasks.multiclass") else f"{__name__}.FolderClasses"


def write_coloured_images(split_dir: Path, per_class: int, seed: int = 0) -> None:
    """Solid-colour images whose colour is the label; file names shuffled so sorted != creation order."""
    names = [f"{random.Random(seed + i).randrange(10**6):06d}_{i}.png" for i in range(per_class * len(COLOURS))]
    random.Random(seed).shuffle(names)
    for i, name in enumerate(names):
        label = sorted(COLOURS)[i % len(COLOURS)]
        (split_dir / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), COLOURS[label]).save(split_dir / label / name)


def datamodule(root: Path, **kwargs) -> DataModule:
    image_config = ImageEncoder.data_config(TINY_BACKBONE)  # what the CLI links in from the image encoder
    return DataModule(
        root=str(root),
        task_class=MULTICLASS,
        image_config=image_config,
        image=ImageInput(size=8, augment=False),
        num_workers=0,
        **kwargs,
    )


def test_every_image_keeps_its_own_label_when_names_are_unsorted(tmp_path: Path) -> None:
    write_coloured_images(tmp_path / "train", per_class=10)
    data = datamodule(tmp_path)
    assert data.class_names == ["blue", "green", "red"]
    mean = torch.tensor(data.data_config.mean).view(3, 1, 1)
    std = torch.tensor(data.data_config.std).view(3, 1, 1)
    for split in ("train", "val", "test"):
        for item in data.dataset(split):
            pixels = item["image"] * std + mean  # undo the normalization
            channel = int(pixels.mean(dim=(1, 2)).argmax())  # 0 = red, 1 = green, 2 = blue
            assert data.class_names[item["target"]] == ["red", "green", "blue"][channel], item["id"]


def test_missing_val_and_test_are_split_from_train_stratified_and_seeded(tmp_path: Path) -> None:
    write_coloured_images(tmp_path / "train", per_class=10)
    first, again = datamodule(tmp_path), datamodule(tmp_path)
    other_seed = datamodule(tmp_path, splits=Splits(seed=1))
    assert first.splits == again.splits
    assert first.splits["val"] != other_seed.splits["val"]
    # test: 0.2 of 30 = 6; val: 0.2 of the 24 left = 4.8 -> 5; each split stratified (class counts within one).
    for split, size in (("train", 19), ("val", 5), ("test", 6)):
        counts = [first.labels(split).count(c) for c in range(3)]
        assert sum(counts) == size and max(counts) - min(counts) <= 1, (split, counts)
    paths = [{row.id for row in first.splits[s]} for s in ("train", "val", "test")]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])


def test_existing_val_and_test_splits_are_used_as_they_are(tiny_data: Path) -> None:
    data = project_datamodule(tiny_data)
    assert {split: len(rows) for split, rows in data.splits.items()} == {"train": 36, "val": 12, "test": 12}


def test_normalization_and_size_follow_the_backbone() -> None:
    imagenet = ImageDataConfig.for_encoder(ImageEncoder.data_config("resnet18"))
    assert (imagenet.image_size, imagenet.mean, imagenet.std) == (224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    tiny = ImageDataConfig.for_encoder(ImageEncoder.data_config(TINY_BACKBONE), image_size=32)
    assert (tiny.image_size, tiny.mean) == (32, (0.5, 0.5, 0.5))


def test_an_image_encoder_without_a_data_config_gets_imagenet_statistics_and_needs_a_size(tmp_path: Path) -> None:
    write_coloured_images(tmp_path / "train", per_class=4)
    for image_config in (None, {}):
        data = DataModule(
            root=str(tmp_path),
            task_class=MULTICLASS,
            image_config=image_config,
            image=ImageInput(size=8),
            num_workers=0,
        )
        assert (data.data_config.image_size, data.data_config.mean, data.data_config.std) == (
            8,
            IMAGENET_MEAN,
            IMAGENET_STD,
        )
        with pytest.raises(DataError, match=r"data\.image\.size is null and the image encoder names no input size"):
            DataModule(root=str(tmp_path), task_class=MULTICLASS, image_config=image_config, num_workers=0)


def test_missing_data_folder_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does_not_exist.*toy-data"):
        datamodule(tmp_path / "does_not_exist")


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    write_coloured_images(tmp_path / "train", per_class=4)
    (tmp_path / "train" / "purple").mkdir()
    with pytest.raises(DataError, match="purple"):
        datamodule(tmp_path)


def test_class_folder_unknown_to_train_is_named(tmp_path: Path) -> None:
    write_coloured_images(tmp_path / "train", per_class=4)
    write_coloured_images(tmp_path / "val", per_class=2)
    (tmp_path / "val" / "purple").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "purple" / "a.png")
    with pytest.raises(DataError, match="purple"):
        datamodule(tmp_path)


def test_image_checks_are_remembered_per_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that passed is not reopened while its size and time stay; a changed one is; each folder keeps its own
    small record, so a run never reads what other datasets left behind."""
    from {{ cookiecutter.package_name }}.data import image_check

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    opened: list[Path] = []
    monkeypatch.setattr(image_check, "problem", lambda path: opened.append(path))  # every file passes
    write_coloured_images(tmp_path / "a", per_class=2)
    write_coloured_images(tmp_path / "b", per_class=1)
    files = sorted((tmp_path / "a").rglob("*.png"))
    assert image_check.find_bad_images(files) == {} and len(opened) == len(files)
    assert image_check.find_bad_images(files) == {} and len(opened) == len(files)  # remembered
    Image.new("RGB", (9, 9)).save(files[0])  # changed: checked again
    image_check.find_bad_images(files)
    assert opened[len(files) :] == [files[0]]
    image_check.find_bad_images(sorted((tmp_path / "b").rglob("*.png")))
    records = sorted((tmp_path / "cache").rglob("*.json"))
    assert [len(json.loads(record.read_text())) for record in records] in ([6, 3], [3, 6])


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    write_coloured_images(tmp_path / "train", per_class=4)
    broken = tmp_path / "train" / "red" / "broken.png"
    broken.write_bytes(b"not a png")
    # Found before training starts, by the check of every image file (data/image_check.py).
    with pytest.raises(DataError, match=r"1 unusable image file: \S*broken\.png cannot be read"):
        datamodule(tmp_path)
