"""Streaming data: training samples/s read from the folder vs from LitData chunks (`data.source.format: streaming`).

    python benchmarks/stream_throughput.py [--runs 3] [--epochs 3] [--workers 0 1]

The default project's toy data (800 train images, class folders) is written with `toy-data`, then as LitData chunks
with `optimize-data` (the conversion is timed once). Each measured process builds the project's `DataModule` as the
toy preset configures it (48 px, batch 64, light augmentation) with `data.source.format` folder or streaming and reads
`--epochs` epochs of its train loader: every sample decoded, augmented, normalized and batched, no model. Reported per
setting: samples/s of the first epoch (loader start, worker start-up, LitData opening its chunks) and of the later
epochs (steady state). Settings alternate folder, streaming, folder, ... in every round; the table gives medians over
`--runs` rounds.
"""

from __future__ import annotations

import argparse
import json

from common import (
    OtherCpuUse,
    Project,
    add_load_arguments,
    default_project,
    machine_description,
    markdown_table,
    median,
    read_report,
    run_checked,
    wait_for_quiet,
    wall_time,
    write_results,
)

STREAMING_DIR = "data/toy/streaming"
TOY = ["--config", "configs/default.yaml", "--config", "configs/toy.yaml"]

# Runs in the project's venv: the train loader as the toy preset builds it, read for a few epochs.
READ_EPOCHS = """
import json, sys, time
from {package}.data.datamodule import DataModule
from {package}.models.encoders.image import ImageEncoder
from probes import report

data_format, workers, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = DataModule(
    root="data/toy", image_config=ImageEncoder.data_config("resnet10t"), image={{"size": 48}}, batch_size=64,
    num_workers=workers, source={{"format": data_format, "streaming_dir": "{streaming_dir}"}},
)
loader = data.train_dataloader()
rates = []
for _ in range(epochs):
    start, samples = time.perf_counter(), 0
    for batch in loader:
        samples += len(batch["id"])
    rates.append(samples / (time.perf_counter() - start))
report(rates=rates, samples=samples)
"""


def read_rates(project: Project, data_format: str, workers: int, epochs: int) -> list[float]:
    script = READ_EPOCHS.format(package=project.package, streaming_dir=STREAMING_DIR)
    command = [str(project.python), "-c", script, data_format, str(workers), str(epochs)]
    return read_report(run_checked(command, project.root).stdout)["rates"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured rounds (default 3), after one warm-up round")
    parser.add_argument("--epochs", type=int, default=3, help="epochs read per process (default 3)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="data.num_workers settings")
    add_load_arguments(parser)
    args = parser.parse_args()

    with default_project() as project:
        optimize = [*TOY, "--output", STREAMING_DIR, "--num_workers", "1"]
        optimize_seconds = wall_time(project.command("optimize-data", *optimize), project.root)
        settings = [(data_format, workers) for workers in args.workers for data_format in ("folder", "streaming")]
        first: dict[tuple[str, int], list[float]] = {setting: [] for setting in settings}
        later: dict[tuple[str, int], list[float]] = {setting: [] for setting in settings}

        print("warm-up round (not counted) ...", flush=True)
        for setting in settings:
            read_rates(project, *setting, epochs=1)

        conditions = [wait_for_quiet(args.max_load, args.wait)]
        with OtherCpuUse() as other:
            for run in range(args.runs):
                for setting in settings:
                    rates = read_rates(project, *setting, epochs=args.epochs)
                    first[setting].append(rates[0])
                    later[setting].append(median(rates[1:]) if len(rates) > 1 else rates[0])
                    print(f"round {run + 1}/{args.runs} {setting}: {json.dumps([round(r) for r in rates])}")
        conditions.append(other.line())

        rows = []
        for data_format, workers in settings:
            folder = median(later["folder", workers])
            steady = median(later[data_format, workers])
            rows.append(
                [
                    data_format,
                    workers,
                    f"{median(first[data_format, workers]):.0f}",
                    f"{steady:.0f}",
                    f"{steady / folder:.2f}",
                ]
            )
        headers = ["data.source.format", "num_workers", "epoch 1 samples/s", "later epochs samples/s", "vs folder"]
        table = markdown_table(headers, rows)
        print(table)
        method = [
            "The default project (multiclass, images in class folders), its toy data: 800 train images of 64 px, "
            "read at the toy preset's 48 px, batch 64, light augmentation; no model, only the train loader.",
            f"`optimize-data` wrote the chunks (3 splits, 1 worker) in {optimize_seconds:.1f} s "
            "(the whole command: start-up, reading and checking the data, writing).",
            f"Each process reads {args.epochs} epochs; `epoch 1` includes the loader's start (workers, LitData "
            "opening its chunks); `later epochs` is the median of the others. Medians over "
            f"{args.runs} rounds, settings alternating in each round after one warm-up round.",
            "`vs folder`: later-epoch samples/s over the folder's with the same num_workers.",
        ]
        write_results(
            "stream_throughput",
            "Streaming data: samples/s, folder vs LitData chunks",
            table,
            method,
            conditions,
            machine_description(project.python),
        )


if __name__ == "__main__":
    main()
