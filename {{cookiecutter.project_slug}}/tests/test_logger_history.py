"""A resumed fit keeps every logger's history, read back with each logger's own reader: the csv module for
metrics.csv, TensorBoard's EventAccumulator, W&B's record format for offline runs (and its CLI, `wandb sync`)."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MONITOR, cli_args
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.practices.loggers import CSVLogger

# 2 training steps an epoch, every step logged: 2 epochs, then resumed for a third -> steps 0..5, each once.
STEPS = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1"]
TRAIN_KEY = "train/loss_step"


def fit_then_resume(data: Path, runs: Path, logger: str) -> Path:
    first = main(cli_args("fit", data, runs, *STEPS, "--trainer.max_epochs", "2", logger=logger))
    resumed = main(
        cli_args("fit", data, runs, *STEPS, "--trainer.max_epochs", "3", "--ckpt_path", "last", logger=logger)
    )
    assert resumed.run_dir == first.run_dir and resumed.trainer.global_step == 6
    return first.run_dir


def csv_history(run_dir: Path) -> list[dict[str, str]]:
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def tensorboard_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (version,) = run_dir.glob("tensorboard/version_*")
    events = EventAccumulator(str(version))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def wandb_records(path: Path) -> Iterator[bytes]:
    """The records of an offline run's `.wandb` file: W&B's header, then LevelDB's log format (32 KiB blocks of
    chunks, each with a 7-byte header: checksum, length, type 1 full / 2 first / 3 middle / 4 last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            yield pending


def wandb_history(run_dir: Path) -> tuple[list[str], list[dict[str, object]]]:
    """(run id of each offline segment, oldest first; the history rows of all of them), parsed with W&B's protobuf."""
    from wandb.proto import wandb_internal_pb2

    ids, rows = [], []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for raw in wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.append(record.run.run_id)
            elif kind == "history":
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                )
    return ids, rows


def test_a_resumed_fit_keeps_the_csv_history(tiny_data: Path, tmp_path: Path) -> None:
    rows = csv_history(fit_then_resume(tiny_data, tmp_path / "runs", "csv"))
    assert [int(row["step"]) for row in rows if row.get(TRAIN_KEY)] == list(range(6))  # Lightning's kept 4, 5
    assert [int(row["epoch"]) for row in rows if row.get(f"val/{MONITOR}")] == [0, 1, 2]


def test_a_resumed_fit_keeps_the_tensorboard_history(tiny_data: Path, tmp_path: Path) -> None:
    history = tensorboard_history(fit_then_resume(tiny_data, tmp_path / "runs", "tensorboard"))
    assert [step for step, _ in history[TRAIN_KEY]] == list(range(6))
    assert len(history[f"val/{MONITOR}"]) == 3


def test_a_resumed_fit_keeps_the_wandb_history(tiny_data: Path, tmp_path: Path) -> None:
    run_dir = fit_then_resume(tiny_data, tmp_path / "runs", "wandb")
    ids, rows = wandb_history(run_dir)
    assert len(ids) == 2 and ids[0] == ids[1]  # one W&B run, two offline segments
    assert [row["trainer/global_step"] for row in rows if TRAIN_KEY in row] == list(range(6))
    assert [row["epoch"] for row in rows if f"val/{MONITOR}" in row] == [0, 1, 2]
    # The command the offline notice and the README give finds both segments, in order (W&B's own CLI).
    listed = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", *map(str, sorted(run_dir.glob("wandb/offline-run-*")))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert "Would sync 2 run(s)" in listed.stdout + listed.stderr, listed.stdout + listed.stderr


def test_rows_logged_after_the_resumed_checkpoint_are_replaced(tmp_path: Path) -> None:
    # A fit killed mid-epoch logged steps 6..9 after its last checkpoint (step 6); the resume redoes them.
    killed = CSVLogger(tmp_path, name="csv", version=0)
    for step in range(10):
        killed.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    killed.save()
    resumed = CSVLogger(tmp_path, name="csv", version=0)
    resumed.continue_from(6)
    resumed.log_metrics({"train/loss": 0.5, "val/loss": 0.7}, step=6)  # a new column: the header is rewritten
    resumed.save()
    rows = csv_history(tmp_path)
    assert [int(row["step"]) for row in rows] == list(range(7))
    assert rows[0]["train/loss"] == "1.0" and rows[-1]["val/loss"] == "0.7"


def test_tensorboard_hp_metric_is_the_kept_value_not_a_placeholder(tiny_data: Path, tmp_path: Path) -> None:
    cli = main(cli_args("fit", tiny_data, tmp_path / "runs", *STEPS, "--trainer.max_epochs", "2", logger="tensorboard"))
    hp_metric = tensorboard_history(cli.run_dir)["hp_metric"]
    summary = json.loads((cli.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert hp_metric[-1][1] == pytest.approx(summary["optimize"]["value"], rel=1e-6)
    assert hp_metric[-1][0] > 0  # logged after validation, after Lightning's -1 at step 0


def test_logging_switched_off_trains(tiny_data: Path, tmp_path: Path) -> None:
    cli = main(
        cli_args("fit", tiny_data, tmp_path / "runs", *STEPS, "--trainer.max_epochs", "1", "--trainer.logger", "false")
    )
    assert cli.trainer.loggers == [] and cli.trainer.global_step == 2
    assert (cli.run_dir / "summary.json").is_file() and (cli.run_dir / "checkpoints" / "last.ckpt").is_file()
