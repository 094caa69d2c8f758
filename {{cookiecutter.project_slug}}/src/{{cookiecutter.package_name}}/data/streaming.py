"""Streaming data (LitData): the splits as chunk files in a local folder or object storage, read as a stream.

`python -m PACKAGE optimize-data --config ...` reads the data as `fit` would (the same splits, carved the same way)
and writes, into `data.source.streaming_dir` (a folder or any URL LitData writes to, e.g. s3://bucket/toy):

    <streaming_dir>/<split>/index.json, chunk-*.bin   one sample per row: the row's cells and the raw bytes of
                                                      the files it names (image, mask), undecoded
    <streaming_dir>/manifest.json                     every row's cells, per split (no file bytes), the class names
                                                      and the data.splits settings the splits were carved with

With `data.source.format: streaming`, the DataModule reads the manifest instead of data.root (its readers learn
statistics and vocabularies from the same train cells, so the model is built exactly as from the folder), and
its loaders stream the chunks through `StreamingDataset` / `StreamingDataLoader`: each DDP rank and node reads
its own part of an epoch, and the loader's position is saved in checkpoints, so a fit stopped mid-epoch resumes
with the samples it had not seen. The project's own readers decode the stored bytes, so a streamed sample is the
folder's sample, tensor for tensor.

LitData is an optional extra: `pip install -e ".[stream]"`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError, ProjectError
from .table import Reader, Row

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
INSTALL_HINT = 'streaming data needs LitData: pip install -e ".[stream]"'


def litdata() -> Any:
    """The litdata module, or one line saying how to install it."""
    try:
        import litdata as module
    except ModuleNotFoundError:
        raise ProjectError(INSTALL_HINT) from None
    return module


def join(base: str, *parts: str) -> str:
    """`base/part/...` for a local folder or a URL (s3://, gs://, ...), without doubling slashes."""
    return "/".join([str(base).rstrip("/"), *parts])


# --- writing ---------------------------------------------------------------------------------------------------
class StoreRow:
    """Row index -> the stored sample: the row as JSON (cells, file, line) and the bytes of its file columns.

    A plain class, not a closure: LitData hands it to its worker processes."""

    def __init__(self, rows: list[Row], file_columns: list[str]):
        self.rows, self.file_columns = rows, file_columns

    def __call__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        sample: dict[str, Any] = {"row": json.dumps(row_record(row))}
        if self.file_columns:
            sample["files"] = {column: row.path(column).read_bytes() for column in self.file_columns}
        return sample


def row_record(row: Row) -> dict[str, Any]:
    """A row as JSON: its cells, where it was read from, and its data.source.id_column id (None: named by its place)."""
    return {"values": row.values, "file": str(row.file), "line": row.line, "key": row.key}


def from_record(record: dict[str, Any], root: Path, blobs: dict[str, bytes] | None = None) -> Row:
    return Row(record["values"], Path(record["file"]), record["line"], root, record["key"], blobs)


def file_columns(datamodule: Any) -> list[str]:
    """The columns whose cells name files to store (the image, and a segmentation mask)."""
    image = datamodule.inputs.get("image")
    if image is None:
        return []
    return [image.column, *([image.mask_column] if image.mask_column else [])]


def optimize_splits(
    datamodule: Any, output_dir: str, num_workers: int = 1, chunk_bytes: str = "64MB"
) -> dict[str, Any]:
    """Write every split of a folder-read DataModule as LitData chunks under `output_dir`, then the manifest."""
    ld = litdata()
    columns = file_columns(datamodule)
    for split, rows in datamodule.splits.items():
        # keep_data_ordered: the chunks hold the rows in split order (the manifest's), which `dataset()` relies on.
        ld.optimize(
            StoreRow(rows, columns),
            list(range(len(rows))),
            join(output_dir, split),
            chunk_bytes=chunk_bytes,
            num_workers=max(1, min(num_workers, len(rows))),
            keep_data_ordered=True,
            reorder_files=False,
            mode="overwrite",
            verbose=False,
            # fork starts workers in a second, without re-importing torch (spawn: the default off Linux).
            start_method="fork" if sys.platform == "linux" else None,
        )
    manifest = {
        "format_version": FORMAT_VERSION,
        "folder_layout": datamodule.folder_layout,
        "root": str(datamodule.root),
        "class_names": datamodule.class_names,
        "splits_options": dataclasses.asdict(datamodule.split_options),
        "file_columns": columns,
        "fingerprint": datamodule.fingerprint,
        "splits": {split: [row_record(row) for row in rows] for split, rows in datamodule.splits.items()},
    }
    write_text(join(output_dir, MANIFEST), json.dumps(manifest))
    return manifest


def write_text(url: str, text: str) -> None:
    import fsspec

    with fsspec.open(url, "w", encoding="utf-8", auto_mkdir=True) as file:
        file.write(text)


# --- reading ---------------------------------------------------------------------------------------------------
class Streamed:
    """What optimize-data wrote to `streaming_dir`: the rows of each split, and the streams of their samples."""

    def __init__(self, streaming_dir: str, splits_options: Any):
        import fsspec

        litdata()  # before any file is read: without the extra, say how to install it
        self.dir = str(streaming_dir)
        url = join(self.dir, MANIFEST)
        try:
            with fsspec.open(url, "r", encoding="utf-8") as file:
                manifest = json.load(file)
        except FileNotFoundError:
            raise DataError(
                f"data.source.streaming_dir={self.dir!r} has no {MANIFEST}: write it with `python -m "
                f"{__package__.split('.')[0]} optimize-data` and the same --config files as fit"
            ) from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{url} is format {manifest.get('format_version')}, expected {FORMAT_VERSION}: optimize again"
            )
        wanted = dataclasses.asdict(splits_options)
        written = manifest["splits_options"]
        changed = [
            f"{key}={wanted.get(key)!r} (written with {v!r})" for key, v in written.items() if wanted.get(key) != v
        ]
        if changed:
            raise DataError(
                f"data.splits.{', data.splits.'.join(changed)}: {self.dir} holds splits carved with other settings; "
                "run optimize-data again with these settings, or set them back"
            )
        self.manifest = manifest
        self.folder_layout: bool = manifest["folder_layout"]
        self.class_names: list[str] = manifest["class_names"]
        root = Path(manifest["root"])
        self.rows = {
            split: [from_record(record, root) for record in records] for split, records in manifest["splits"].items()
        }

    def stream(
        self,
        split: str,
        readers: list[Reader],
        train: bool,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool | None = None,
    ) -> Any:
        """A split's StreamingDataset of batch-contract samples (each DDP rank iterates its own part; drop_last
        None: LitData's default, which evens out the ranks' shares under DDP)."""
        return litdata().StreamingDataset(
            join(self.dir, split), shuffle=shuffle, seed=seed, drop_last=drop_last, transform=ReadSample(readers, train)
        )

    def loader(self, split: str, datamodule: Any, shuffle: bool = False) -> Any:
        """The StreamingDataLoader of a split, batched as the DataModule batches. Train: shuffled per epoch from
        data.splits.seed (the same order on every rank and after a resume); a remainder too small for BatchNorm
        is dropped, as from the folder. Val / test: in order, every sample kept."""
        train = split == "train"
        readers = datamodule._readers()
        # Under DDP LitData drops what does not divide over the ranks; evaluation keeps every sample.
        drop_last = None if train else False
        dataset = self.stream(split, readers, train, shuffle, datamodule.split_options.seed, drop_last)
        return litdata().StreamingDataLoader(
            dataset,
            batch_size=datamodule.batch_size,
            num_workers=datamodule.num_workers,
            drop_last=train and len(self.rows[split]) > datamodule.batch_size,
            pin_memory=torch.cuda.is_available(),
        )

    def dataset(self, split: str, readers: list[Reader], train: bool = False) -> StreamedRows:
        """A split as a map-style dataset over its rows (evaluation, diagnosis, export read these)."""
        return StreamedRows(self.rows[split], self.stream(split, readers, train))


class ReadSample:
    """A stored sample -> {"id", <input>..., "target"}: the row rebuilt, its files read from the stored bytes."""

    def __init__(self, readers: list[Reader], train: bool):
        self.readers, self.train = readers, train

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        row = stored_row(sample)
        item: dict[str, Any] = {"id": row.id}
        for reader in self.readers:
            item.update(reader.read(row, self.train))
        return item


def stored_row(sample: dict[str, Any]) -> Row:
    blobs = {column: bytes(data) for column, data in sample.get("files", {}).items()}
    return from_record(json.loads(sample["row"]), Path("."), blobs)


class StreamedRows:
    """`rows` of one split, read by position from its stream (`rows` may be narrowed, as `eval_dataset` does)."""

    def __init__(self, rows: list[Row], stream: Any):
        self.rows = rows
        self.stream = stream
        # The chunks keep the split's order; a row's place (file, line) is unique, its id need not be.
        self.position = {(row.file, row.line): i for i, row in enumerate(rows)}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        return self.stream[self.position[row.file, row.line]]


# --- command ---------------------------------------------------------------------------------------------------
def optimize_data_main(argv: list[str]) -> None:
    """`optimize-data`: the configured data (the same --config files and --data.* flags as fit) -> LitData chunks."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__.split('.')[0]} optimize-data",
        description="Write the configured splits as LitData chunks (data.source.streaming_dir) for "
        "data.source.format: streaming. "
        "Takes the same --config files and --data.* flags as fit.",
    )
    parser.add_argument("--output", help="folder or URL (s3://...) to write; default: data.source.streaming_dir")
    parser.add_argument("--num_workers", type=int, default=1, help="processes writing chunks (default 1)")
    parser.add_argument("--chunk_bytes", default="64MB", help="chunk size, e.g. 64MB (default)")
    args, rest = parser.parse_known_args(argv)
    litdata()
    datamodule = folder_datamodule(rest)
    output = args.output or str(datamodule.streaming_dir)
    optimize_splits(datamodule, output, args.num_workers, args.chunk_bytes)
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in datamodule.splits.items())
    print(
        f"Wrote {sizes} samples to {output}; train on them with "
        f"--data.source.format streaming --data.source.streaming_dir {output}"
    )


def folder_datamodule(argv: list[str]) -> Any:
    """The DataModule the fit command would build from these arguments, reading the folder (data.root)."""
    import pytorch_lightning as pl

    from ..cli import ProjectCLI
    from .datamodule import DataModule

    class DataOnly(ProjectCLI):
        """Parses like fit (config files, links from the model's task and network); builds only the data."""

        def before_instantiate_classes(self) -> None:  # no run folder, logger or trainer
            pass

        def instantiate_classes(self) -> None:
            data = self.config.data.as_dict()
            data["source"] = {**(data.get("source") or {}), "format": "folder"}  # chunks are written from the folder
            self.datamodule = DataModule(**data)

    with warnings.catch_warnings():  # LightningCLI warns when args are given while sys.argv holds the command
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = DataOnly(pl.LightningModule, DataModule, subclass_mode_model=True, run=False, args=argv)
    return cli.datamodule
