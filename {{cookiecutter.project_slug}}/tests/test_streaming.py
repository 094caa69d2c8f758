"""Streaming data (LitData, the `.[stream]` extra): `optimize-data` writes the splits as chunks, and
`data.source.format: streaming` reads them back as the very samples the folder gives, in fits, across DDP ranks, and
across a resume in the middle of an epoch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from conftest import MONITOR, cli_args, project_datamodule, project_model
from {{ cookiecutter.package_name }}.answers import MODALITIES
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.data.streaming import optimize_splits
from {{ cookiecutter.package_name }}.errors import DataError

pytest.importorskip("litdata")


@pytest.fixture(scope="module")
def streamed(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny data written by `optimize-data` (as a user runs it: the fit's config files and flags)."""
    output = tmp_path_factory.mktemp("streamed") / "toy"
    main(cli_args("optimize-data", tiny_data, tmp_path_factory.mktemp("runs"), "--output", str(output)))
    return output


@pytest.fixture(scope="module")
def written(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny data written in-process from the DataModule the tests compare with (configs/default.yaml)."""
    output = tmp_path_factory.mktemp("written") / "toy"
    optimize_splits(project_datamodule(tiny_data), str(output))
    return output


def streaming(data: Path, streamed: Path, **overrides: object) -> Any:
    return project_datamodule(data, source={"format": "streaming", "streaming_dir": str(streamed)}, **overrides)


def assert_same(a: object, b: object, where: str) -> None:
    """Equal samples: the same keys, ids and values, tensors equal element for element (and in dtype)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def test_streamed_samples_are_the_folder_samples(tiny_data: Path, written: Path) -> None:
    folder, stream = project_datamodule(tiny_data), streaming(tiny_data, written)
    # What the model is built from, learned from the same train cells.
    assert (stream.class_names, stream.target_stats) == (folder.class_names, folder.target_stats)
    assert stream.input_specs == folder.input_specs
    assert stream.fingerprint == folder.fingerprint  # checkpoints see the same data
    assert stream.splits.keys() == folder.splits.keys()
    for split in folder.splits:
        expected = folder.dataset(split, train=False)
        readers = stream._readers()
        streamed_in_order = list(stream.streamed.stream(split, readers, train=False))  # as a val loader reads
        by_index = stream.dataset(split, train=False)  # as diagnosis and export read
        assert len(streamed_in_order) == len(by_index) == len(expected) > 0
        for i in range(len(expected)):
            assert_same(expected[i], streamed_in_order[i], f"{split}[{i}] streamed")
            assert_same(expected[i], by_index[i], f"{split}[{i}] by index")
    # Augmented training samples too: the same random ops on the same decoded pixels.
    augmented, streamed_augmented = folder.dataset("train", train=True), stream.dataset("train", train=True)
    for i in range(len(augmented)):
        torch.manual_seed(i)
        expected = augmented[i]
        torch.manual_seed(i)
        assert_same(expected, streamed_augmented[i], f"train[{i}] augmented")


def test_a_fit_from_the_stream_matches_the_fit_from_the_folder(tiny_data: Path, streamed: Path, tmp_path: Path) -> None:
    """Full-batch steps without augmentation: the sample order inside a batch (the folder's sampler and LitData's
    shuffle differ) does not change the step, so both fits must agree up to float summation order."""
    common = ["--trainer.max_epochs", "3", "--data.batch_size", "64", "--seed_everything", "7"]
    common += ["--data.image.augment", "none"] if "image" in MODALITIES else []
    folder = main(cli_args("fit", tiny_data, tmp_path / "folder", *common))
    streaming_args = ["--data.source.format", "streaming", "--data.source.streaming_dir", str(streamed)]
    stream = main(cli_args("fit", tiny_data, tmp_path / "stream", *common, *streaming_args))
    assert stream.trainer.global_step == folder.trainer.global_step == 3
    metrics = [{k: float(v) for k, v in cli.trainer.callback_metrics.items()} for cli in (folder, stream)]
    for name in (f"val/{MONITOR}", "val/loss"):
        assert metrics[1][name] == pytest.approx(metrics[0][name], abs=1e-3), name


def test_streaming_refuses_splits_carved_with_other_settings(tiny_data: Path, streamed: Path) -> None:
    with pytest.raises(DataError, match=r"data\.splits\.seed=5 \(written with 0\)"):
        streaming(tiny_data, streamed, splits={"seed": 5})


def test_a_missing_streaming_dir_names_the_command(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="optimize-data"):
        streaming(tiny_data, tmp_path / "nothing")


def test_without_litdata_the_command_says_how_to_install_it(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "litdata", None)  # as if the extra were not installed
    with pytest.raises(SystemExit) as exit_info:
        main(cli_args("optimize-data", tiny_data, tmp_path / "runs", "--output", str(tmp_path / "out")))
    assert exit_info.value.code == 'error: streaming data needs LitData: pip install -e ".[stream]"'
    assert not (tmp_path / "out").exists()


class RecordIds(pl.Callback):
    """The ids of every training batch, in order."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, i: int) -> None:
        self.ids += list(batch["id"])


class Killed(RuntimeError):
    pass


class KillAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed at step {self.step}")


def tiny_trainer(tmp_path: Path, *callbacks: pl.Callback, **options: Any) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=tmp_path, callbacks=list(callbacks), **options,
    )  # fmt: skip


def test_a_fit_killed_mid_epoch_resumes_with_the_samples_it_had_not_seen(
    tiny_data: Path, streamed: Path, tmp_path: Path
) -> None:
    # 36 train samples, 4 batches of 9: the epoch as an uninterrupted loader gives it.
    data = streaming(tiny_data, streamed, batch_size=9)
    epoch = [sample for batch in data.train_dataloader() for sample in batch["id"]]
    assert sorted(epoch) == sorted(row.id for row in data.splits["train"])

    torch.manual_seed(0)
    first, checkpoints = RecordIds(), ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    with pytest.raises(Killed):  # after step 3: its checkpoint is step 2's
        tiny_trainer(tmp_path, first, KillAtStep(3), checkpoints).fit(project_model(data), datamodule=data)
    (checkpoint,) = (tmp_path / "ckpt").glob("*step=2.ckpt")

    resumed = RecordIds()
    data = streaming(tiny_data, streamed, batch_size=9)
    tiny_trainer(tmp_path, resumed).fit(project_model(data), datamodule=data, ckpt_path=checkpoint, weights_only=False)
    assert first.ids[:18] == epoch[:18]
    assert resumed.ids == epoch[18:]  # the two batches not trained on before the checkpoint, and nothing else


def _ranks_read_one_epoch_each(rank: int, data: str, streamed: str, port: int, out: str) -> None:
    """One DDP rank (gloo): the train ids its loader yields in two epochs."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        loader = streaming(Path(data), Path(streamed), batch_size=9).train_dataloader()
        epochs = [[sample for batch in loader for sample in batch["id"]] for _ in range(2)]
        Path(out, f"rank{rank}.json").write_text(json.dumps(epochs))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ddp_ranks_stream_every_train_sample_once_per_epoch(
    tiny_data: Path, streamed: Path, tmp_path: Path
) -> None:
    from torch.distributed.elastic.utils.distributed import get_free_port

    torch.multiprocessing.spawn(
        _ranks_read_one_epoch_each, args=(str(tiny_data), str(streamed), get_free_port(), str(tmp_path)), nprocs=2
    )
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    train = sorted(row.id for row in streaming(tiny_data, streamed).splits["train"])
    for epoch in range(2):
        zero, one = ranks[0][epoch], ranks[1][epoch]
        assert len(zero) == len(one) == 18  # 36 samples, 18 per rank: none twice, none missed
        assert sorted(zero + one) == train, epoch
    assert ranks[0][0] != ranks[0][1]  # reshuffled each epoch
