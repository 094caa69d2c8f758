"""Augmentation presets, mixup / cutmix (practices/callbacks/mixing.py) and progressive resizing: what each does to
the batches training sees."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw

from conftest import cli_args, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES, TASK_TYPE
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.errors import DataError, ProjectError
from {{ cookiecutter.package_name }}.tasks import load_task_class

IMAGE = "image" in MODALITIES
# Mixup / cutmix blend images and targets: image-only inputs and a task with soft targets (classification).
MIXABLE = MODALITIES == ("image",) and hasattr(load_task_class(TASK_TYPE), "soft_loss")
needs_image = pytest.mark.skipif(not IMAGE, reason="image augmentation and resizing: this project has no image input")
needs_mixing = pytest.mark.skipif(
    not MIXABLE, reason=f"mixup / cutmix need image-only classification; this project is {TASK_TYPE} on {MODALITIES}"
)
SIZE = 32
FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
GEOMETRIC_RAND_AUGMENT_OPS = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}


def seed(value: int) -> None:
    # torchvision draws from torch, timm's RandAugment from random, timm's Mixup from numpy.
    torch.manual_seed(value)
    random.seed(value)
    numpy.random.seed(value)


def image_config():  # noqa: ANN201 - image.py exists in image projects only
    from {{ cookiecutter.package_name }}.data.image import ImageDataConfig
    from {{ cookiecutter.package_name }}.models.encoders.image import ImageEncoder

    return ImageDataConfig.for_encoder(ImageEncoder.data_config("test_resnet"), SIZE)


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Normalized [3, H, W] -> values in 0..1 again."""
    config = image_config()
    return image * torch.tensor(config.std).view(3, 1, 1) + torch.tensor(config.mean).view(3, 1, 1)


def scene() -> tuple[Image.Image, numpy.ndarray]:
    """An asymmetric two-level image (so flips and shifts show) and its mask: a thresholded copy of the image."""
    gray = Image.new("L", (48, 40), 60)
    draw = ImageDraw.Draw(gray)
    draw.polygon([(4, 6), (30, 4), (12, 34)], fill=200)
    draw.rectangle([34, 20, 44, 36], fill=200)
    mask = (numpy.array(gray) > 128).astype(numpy.int64)
    return Image.merge("RGB", (gray, gray.point(lambda v: 255 - v // 2), gray)), mask


def mask_agreement(image: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Share of pixels whose colour is nearer their own mask class's mean colour than the other's.

    Photometric ops map each colour to one new colour, so an aligned pair stays separable; a shifted or flipped
    mask is not. Pixels next to a mask edge are left out (interpolation blends the image's colours there). None
    when a class is (almost) absent or the ops merged the two colours (e.g. posterize): that says nothing."""
    labels = mask.float()[None, None]
    interior = torch.nn.functional.max_pool2d(labels, 3, 1, 1) == -torch.nn.functional.max_pool2d(-labels, 3, 1, 1)
    pixels, labels = image.flatten(1).T[interior.flatten()], mask.flatten()[interior.flatten()]
    if min((labels == 0).float().mean(), (labels == 1).float().mean()) < 0.05:
        return None
    means = torch.stack([pixels[labels == k].mean(0) for k in (0, 1)])
    if (means[0] - means[1]).norm() < 0.2:
        return None
    nearest = torch.cdist(pixels, means).argmin(1)
    return float((nearest == labels).float().mean())


# --- presets -----------------------------------------------------------------------------------------------------
@needs_image
def test_each_preset_builds_its_ops_and_the_configured_size() -> None:
    config = image_config()
    image = Image.fromarray(numpy.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=numpy.uint8))
    names = {p: [type(op).__name__ for op in config.transform(True, p).transforms] for p in ("none", "light", "strong")}
    assert names["none"] == ["Resize", "CenterCrop", "ToImage", "ToDtype", "Normalize"]  # PIL resizes: as deployed
    light = ["ToImage", "RandomResizedCrop", "RandomHorizontalFlip", "RandomCrop", "ToDtype", "Normalize"]
    assert names["light"] == light
    assert names["strong"] == [*light[:4], "ColorJitter", "OnImage", *light[4:]]
    for preset in ("none", "light", "strong"):
        for masks in (False, True):
            assert config.transform(True, preset, masks=masks)(image).shape == (3, SIZE, SIZE)
    # true / false, the former switch, still work
    assert [type(op) for op in config.transform(True, True).transforms] == [
        type(op) for op in config.transform(True, "light").transforms
    ]
    assert str(config.transform(True, False)) == str(config.transform(True, "none"))
    # RandAugment: every op for classification, filling with the mean colour; colour ops only next to masks
    classify = config.transform(True, "strong").transforms[5].pil_transform.ops
    segment = config.transform(True, "strong", masks=True).transforms[5].pil_transform.ops
    assert {op.name for op in classify} >= GEOMETRIC_RAND_AUGMENT_OPS
    assert {op.kwargs["fillcolor"] for op in classify} == {tuple(round(255 * m) for m in config.mean)}
    assert not GEOMETRIC_RAND_AUGMENT_OPS & {op.name for op in segment} and len(segment) >= 8


@needs_image
def test_eval_transform_is_deterministic_and_unaugmented() -> None:
    from torchvision.transforms.v2 import functional as F

    config = image_config()
    image = Image.fromarray(numpy.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=numpy.uint8))
    evaluate = config.transform(train=False, augment="strong")  # the preset never reaches evaluation
    seed(0)
    first = evaluate(image)
    seed(1)
    assert torch.equal(first, evaluate(image))
    expected = F.to_image(F.center_crop(F.resize(image, SIZE), SIZE))  # on the PIL image, as preprocess.py does
    assert torch.allclose(denormalize(first), expected.float() / 255, atol=1e-5)
    assert torch.equal(config.transform(train=True, augment="none")(image), first)
    light = config.transform(train=True, augment="light")
    assert any(not torch.equal(light(image), first) for _ in range(5))


@needs_image
def test_only_the_training_split_is_augmented(tiny_data: Path) -> None:
    data = project_datamodule(tiny_data, image={"augment": "strong"})
    seed(0)
    train = [data.dataset("train")[0]["image"] for _ in range(3)]
    assert not torch.equal(train[0], train[1]) or not torch.equal(train[0], train[2])
    for split in ("val", "test"):
        views = [data.dataset(split)[0]["image"] for _ in range(3)]
        assert all(torch.equal(views[0], view) for view in views[1:])
    predict = data.predict_dataloader().dataset
    assert torch.equal(predict[0]["image"], predict[0]["image"])


@needs_image
@pytest.mark.parametrize("preset", ["light", "strong"])
def test_masks_move_with_their_images(preset: str) -> None:
    from torchvision import tv_tensors

    transform = image_config().transform(train=True, augment=preset, masks=True)
    image, mask = scene()
    agreements, flipped = [], []
    for value in range(24):
        seed(value)
        out_image, out_mask = transform(image, tv_tensors.Mask(torch.from_numpy(mask)))
        assert out_mask.shape == (SIZE, SIZE) and set(out_mask.unique().tolist()) <= {0, 1}
        agreement = mask_agreement(out_image, out_mask)
        if agreement is not None:
            agreements.append(agreement)
            flipped.append(mask_agreement(out_image, out_mask.flip(-1)))
    assert len(agreements) >= 12  # enough informative draws
    assert min(agreements) > 0.95, agreements
    misaligned = [value for value in flipped if value is not None]
    assert numpy.median(misaligned) < 0.8, misaligned  # the check notices a mask flipped without its image


@needs_image
def test_shifts_pad_by_reflection_not_black() -> None:
    config = image_config()
    # A horizontal ramp 100..200: reflection keeps every pixel in that range and turns the ramp back at the
    # padded edge; black padding would bring in zeros.
    ramp = numpy.repeat(numpy.linspace(100, 200, 40, dtype=numpy.uint8)[None, :, None], 40, 0).repeat(3, 2)
    light = config.transform(train=True, augment="light")
    turned = 0
    for value in range(20):
        seed(value)
        row = denormalize(light(Image.fromarray(ramp)))[0, SIZE // 2] * 255
        assert row.min() > 95, row
        steps = row.diff()
        turned += bool((steps > 0.5).any() and (steps < -0.5).any())
    assert turned >= 3  # the padding was exercised
    # strong with masks: photometric ops keep a uniform image uniform, so any fill would show
    strong = config.transform(train=True, augment="strong", masks=True)
    for value in range(10):
        seed(value)
        out = strong(Image.new("RGB", (40, 40), (200, 120, 60)))
        assert (out.flatten(1).max(1).values - out.flatten(1).min(1).values).max() < 1e-4


@needs_image
def test_bad_augment_value_fails_with_one_line(tiny_data: Path) -> None:
    with pytest.raises(DataError) as error:
        project_datamodule(tiny_data, image={"augment": "heavy"})
    message = str(error.value)
    assert "data.image.augment='heavy'" in message and "none, light, strong" in message and "\n" not in message


# --- progressive resizing ----------------------------------------------------------------------------------------
def test_bad_image_size_schedule_fails_with_one_line(tiny_data: Path) -> None:
    schedule = {0: 2 * SIZE} if IMAGE else {0: 16}  # larger than the image size / no image at all
    with pytest.raises(DataError) as error:
        project_datamodule(tiny_data, image={"size_schedule": schedule})
    expected = "data.image.size_schedule" if IMAGE else "data.image"  # without images: no image reader at all
    assert expected in str(error.value) and "\n" not in str(error.value)


class BatchSizes(pl.Callback):
    """The image (and mask) side of every batch the model receives, per stage and epoch."""

    def __init__(self) -> None:
        self.train: dict[int, set] = {}
        self.val: set = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        sides = {batch["image"].shape[-1]}
        if TASK_TYPE == "segmentation":
            sides.add(batch["target"].shape[-1])
        self.train.setdefault(trainer.current_epoch, set()).update(sides)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self.val.add(batch["image"].shape[-1])


@needs_image
def test_progressive_resizing_follows_the_schedule_in_a_fit(tiny_data: Path) -> None:
    # One persistent loader worker: the size must not depend on state a worker copied at the first epoch.
    data = project_datamodule(tiny_data, image={"size_schedule": {0: 16, 2: 24}}, num_workers=1)
    sizes = BatchSizes()
    trainer = pl.Trainer(
        max_epochs=3, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[sizes],
    )  # fmt: skip
    trainer.fit(project_model(data), datamodule=data)
    assert sizes.train == {0: {16}, 1: {16}, 2: {24}}
    assert sizes.val == {SIZE}  # validation keeps data.image.size


# --- mixup / cutmix ----------------------------------------------------------------------------------------------
def batch_mixing(num_outputs: int, **options: object):  # noqa: ANN201 - mixing.py exists in image projects only
    """The mixing the MixupCutmix callback applies, for this project's task."""
    from {{ cookiecutter.package_name }}.practices.callbacks.mixing import BatchMixing

    options = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, **options}
    return BatchMixing(load_task_class(TASK_TYPE).mix_per_output, num_outputs, **options)


def mixup_cutmix(**options: object):  # noqa: ANN201 - mixing.py exists in image projects only
    from {{ cookiecutter.package_name }}.practices.callbacks.mixing import MixupCutmix

    return MixupCutmix(**options)


def hard_targets(batch_size: int, num_outputs: int) -> torch.Tensor:
    if TASK_TYPE == "multiclass":
        return torch.arange(batch_size) % num_outputs
    if TASK_TYPE == "binary":
        return (torch.arange(batch_size) % 2).float()
    return (torch.arange(batch_size * num_outputs).reshape(batch_size, num_outputs) % 3 == 0).float()


def dense(target: torch.Tensor, num_outputs: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(target, num_outputs).float() if TASK_TYPE == "multiclass" else target


@needs_mixing
def test_mixed_targets_are_soft_and_blend_like_the_images() -> None:
    num_outputs = 1 if TASK_TYPE == "binary" else 3
    mixing = batch_mixing(num_outputs, mixup_alpha=1.0)
    target = hard_targets(8, num_outputs)
    image = torch.randn(8, 3, SIZE, SIZE)
    seed(0)
    mixed, soft = mixing({"image": image, "target": target}, epoch=0)
    lam = float(((mixed["image"] - image.flip(0)) / (image - image.flip(0))).median())
    assert 0 < lam < 1
    assert torch.allclose(mixed["image"], lam * image + (1 - lam) * image.flip(0), atol=1e-5)
    y = dense(target, num_outputs)
    assert soft.shape == y.shape and torch.allclose(soft, lam * y + (1 - lam) * y.flip(0), atol=1e-5)
    assert soft.min() >= 0 and soft.max() <= 1
    if TASK_TYPE == "multiclass":
        assert torch.allclose(soft.sum(-1), torch.ones(8))
    # with label smoothing (timm's default would be 0.1, ours follows the task's label_smoothing) they still sum to 1
    smoothed = batch_mixing(num_outputs, cutmix_alpha=1.0, label_smoothing=0.1)
    _, soft = smoothed({"image": image, "target": target}, epoch=0)
    assert soft.min() > 0 and soft.max() < 1
    if TASK_TYPE == "multiclass":
        assert torch.allclose(soft.sum(-1), torch.ones(8))


@needs_mixing
def test_mixing_switches_off_and_skips_odd_batches() -> None:
    num_outputs = 1 if TASK_TYPE == "binary" else 3
    mixing = batch_mixing(num_outputs, mixup_alpha=1.0, off_epoch=2)
    batch = {"image": torch.randn(8, 3, SIZE, SIZE), "target": hard_targets(8, num_outputs)}
    mixed, soft = mixing(batch, epoch=1)
    assert soft is not None and not torch.equal(mixed["image"], batch["image"])
    assert mixing(batch, epoch=2) == (batch, None)  # from mixing.off_epoch on: the plain batch and the hard loss
    odd = {"image": batch["image"][:7], "target": batch["target"][:7]}
    with pytest.warns(UserWarning, match="even data.batch_size"):
        assert mixing(odd, epoch=0) == (odd, None)


@needs_mixing
@pytest.mark.filterwarnings("ignore:.*self.log")  # no Trainer attached: the step logs nothing
def test_training_step_takes_the_soft_loss_and_scores_hard_labels(tiny_data: Path) -> None:
    data = project_datamodule(tiny_data)
    model = project_model(data).train()
    callback = mixup_cutmix(mixup_alpha=1.0, cutmix_alpha=1.0)
    callback.setup(SimpleNamespace(), model, "fit")
    batch = next(iter(data.train_dataloader()))
    seed(0)
    mixed, soft = callback.mixing(batch, 0)
    with torch.no_grad():
        outputs = model(mixed)
    expected = model.task.soft_loss(outputs, soft)
    assert not torch.allclose(expected, model.task.loss(outputs, batch["target"]))
    seed(0)  # the callback mixes the batch the training step then receives, with the same draw
    callback.on_train_batch_start(SimpleNamespace(current_epoch=0), model, batch, 0)
    assert torch.equal(batch["image"], mixed["image"]) and torch.equal(batch["soft_target"], soft)
    with torch.no_grad():
        loss = model.training_step(batch, 0)
    assert torch.allclose(loss, expected)
    reference = model.task.metrics()
    reference.update(*model.task.metric_inputs(outputs, batch["target"]))
    scored = {name.removeprefix("train/"): value for name, value in model.train_metrics.compute().items()}
    assert scored.keys() == reference.compute().keys()
    assert all(torch.allclose(scored[name], value) for name, value in reference.compute().items())


@needs_mixing
def test_fit_with_mixup_and_cutmix(tiny_data: Path, tmp_path: Path) -> None:
    mixing = ["--mixing.mixup_alpha", "0.4", "--mixing.cutmix_alpha", "1.0", "--mixing.off_epoch", "1"]
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *FEW_BATCHES, "--trainer.max_epochs", "2", *mixing))
    assert cli.trainer.state.finished and cli.trainer.global_step == 4
    (callback,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "MixupCutmix"]
    assert callback.mixing is not None and callback.mixing.active(0) and not callback.mixing.active(1)
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


@needs_image
def test_mixing_config_errors_are_one_line(tiny_data: Path) -> None:
    model = project_model(project_datamodule(tiny_data))
    bad = [{"mixup_alpha": -0.2}, {"mixup_alpha": 0.2, "prob": 1.5}, {"cutmix_alpha": 1.0, "off_epoch": -1}]
    if not MIXABLE:
        bad.append({"mixup_alpha": 0.2})  # segmentation, or inputs besides the image: refused at setup
    for options in bad:
        with pytest.raises(ProjectError) as error:
            mixup_cutmix(**options).setup(SimpleNamespace(), model, "fit")
        message = str(error.value)
        assert message.startswith("mixing.") and "\n" not in message, message
    if not MIXABLE:
        assert "set both to 0" in message


@pytest.mark.skipif(IMAGE, reason="this project has image inputs")
def test_mixing_is_not_a_section_without_images(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Mixup / cutmix blend images: projects without images have no `mixing:` section.
    with pytest.raises(SystemExit) as done:
        main(cli_args("fit", tiny_data, tmp_path / "runs", "--mixing.mixup_alpha", "0.2"))
    assert done.value.code not in (0, None)
    assert "mixing" in capsys.readouterr().err
