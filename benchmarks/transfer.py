"""Transfer learning on the toy data: training from scratch vs. from a locally pretrained backbone.

    python benchmarks/transfer.py [--seeds 3] [--epochs 15] [--target 0.9]

The default project (image classification) is rendered and installed, then:

1. source data: the toy shapes generator with all five shapes and many images (`--source-per-class`), standing in
   for a large pretraining set of related images;
2. pretraining: one `fit` on the source data from scratch (the toy preset: resnet10t at 48 px); its best
   checkpoint is the "pretrained" backbone (the timm encoder's `pretrained_file` takes a project checkpoint);
3. target data: three of the shapes with few training images (`--target-per-class`) and a larger val split;
4. on the target data, per seed, three runs of `--epochs` epochs with the same data, batch size and epochs:
   - scratch: `pretrained: false`, every layer at lr 3e-3 (the toy preset);
   - transfer, gradual: `pretrained_file: <source checkpoint>`, `finetune: gradual` (head only for the first
     epoch, then one backbone stage more per epoch, last stage first), lr 1e-3 at the head and discriminative
     LRs (`lr_ratio: 3`: each stage at a third of the next one's lr), the rendered README's recipe;
   - transfer, frozen: the same weights as a fixed feature extractor, only the head trains (lr 3e-3).

Reported per run: the validation accuracy after every epoch (CSV logger), the first epoch that reaches
`--target`, the time to get there (the fit's own seconds x that epoch's share of the epochs: epochs take about
the same time), and the final and best val accuracy; the table gives the medians over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

from common import (
    OtherCpuUse,
    Project,
    add_load_arguments,
    install,
    load_1min,
    machine_description,
    markdown_table,
    median,
    render_default,
    run_checked,
    wait_for_quiet,
    write_results,
)

TARGET_CLASSES = ("circle", "square", "triangle")


def write_data(project: Project, root: Path, classes: tuple[str, ...], sizes: dict[str, int], seed: int) -> Path:
    """Toy shapes through the project's own writer (class folders: `sizes` are images per class)."""
    code = (
        f"from {project.package}.data.toy import write_toy_dataset\n"
        f"write_toy_dataset({str(root)!r}, sizes={sizes!r}, image_size=48, classes={classes!r}, seed={seed})\n"
    )
    run_checked([str(project.python), "-c", code], cwd=project.root)
    return root


def fit(project: Project, runs: Path, data: Path, epochs: int, seed: int, *extra: str) -> dict:
    """One `fit` with the toy preset and a CSV logger; its summary plus the val accuracy after every epoch."""
    command = project.command(
        "fit",
        *("--config", "configs/default.yaml", "--config", "configs/toy.yaml", "--config", "configs/logger/csv.yaml"),
        *("--runs_dir", str(runs), "--data.root", str(data), "--seed_everything", str(seed)),
        *("--trainer.max_epochs", str(epochs)),  # early stopping's patience (15) outlasts these runs
        *extra,
    )
    run_checked(command, cwd=project.root)
    summary = json.loads(max(runs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime).read_text())
    with open(next(Path(summary["run_dir"]).glob("csv/*/metrics.csv")), encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/acc")]
    summary["val_acc_by_epoch"] = [float(row["val/acc"]) for row in sorted(rows, key=lambda r: int(r["epoch"]))]
    return summary


def reached(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose val accuracy is at least `target`."""
    return next((epoch for epoch, acc in enumerate(curve, 1) if acc >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="target runs per setting (seeds 0..n-1)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of each target run")
    parser.add_argument("--target", type=float, default=0.9, help="val accuracy to reach")
    parser.add_argument("--source-per-class", type=int, default=240, help="pretraining images per shape (5 shapes)")
    parser.add_argument("--source-epochs", type=int, default=8)
    parser.add_argument("--target-per-class", type=int, default=12, help="target training images per shape")
    add_load_arguments(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dl-template-transfer-") as tmp:
        tmp_path = Path(tmp)
        print(f"rendering and installing the default project under {tmp} ...", flush=True)
        (tmp_path / "project").mkdir()
        project = install(render_default(tmp_path / "project"))
        per_class = args.source_per_class
        source = write_data(
            project, tmp_path / "source", ("circle", "cross", "square", "star", "triangle"),
            {"train": per_class, "val": max(8, per_class // 4), "test": 2}, seed=100,
        )  # fmt: skip
        target = write_data(
            project, tmp_path / "target", TARGET_CLASSES, {"train": args.target_per_class, "val": 40, "test": 2}, seed=7
        )
        load_before = wait_for_quiet(args.max_load, args.wait)
        with OtherCpuUse() as other:
            print("pretraining on the source data ...", flush=True)
            pretrained = fit(project, tmp_path / "runs-source", source, args.source_epochs, 0)
            # The toy preset's image encoder with the source run's checkpoint as its pretrained weights.
            encoder = {"name": "timm", "backbone": "resnet10t", "pretrained_file": pretrained["best_checkpoint"]}
            weights = ("--model.network.init_args.encoders", json.dumps({"image": encoder}))
            settings = {
                "scratch (lr 3e-3)": [],
                # The README's fine-tuning recipe: a lower peak lr than from scratch, earlier stages lower still.
                "transfer: gradual, lr 1e-3, lr_ratio 3": [
                    *weights, "--finetuning.mode", "gradual",
                    *("--model.optimizer.lr", "1e-3", "--model.lr_ratio", "3"),
                ],
                "transfer: frozen backbone, lr 3e-3": [*weights, "--finetuning.mode", "frozen"],
            }  # fmt: skip
            results: dict[str, list[dict]] = {name: [] for name in settings}
            for seed in range(args.seeds):
                for name, extra in settings.items():  # interleaved: load drifts hit both settings alike
                    print(f"seed {seed}: {name} ...", flush=True)
                    runs = tmp_path / f"runs-{list(settings).index(name)}-{seed}"
                    results[name].append(fit(project, runs, target, args.epochs, seed, *extra))
        load_after = load_1min()
        machine = machine_description(project.python)  # before the temporary folder (and its venv) goes

    rows, details = [], []
    for name, runs in results.items():
        epochs = [reached(run["val_acc_by_epoch"], args.target) for run in runs]
        seconds = [run["seconds"] * e / len(run["val_acc_by_epoch"]) for run, e in zip(runs, epochs, strict=True) if e]
        hit = [e for e in epochs if e]
        rows.append(
            [
                name,
                f"{len(hit)}/{len(runs)}",
                f"{median(hit):.0f}" if hit else "never",
                f"{median(seconds):.1f}" if seconds else "-",
                f"{median([run['val_acc_by_epoch'][-1] for run in runs]):.3f}",
                f"{median([max(run['val_acc_by_epoch']) for run in runs]):.3f}",
                f"{median([run['seconds'] for run in runs]):.1f}",
            ]
        )
        for seed, run in enumerate(runs):
            curve = " ".join(f"{acc:.2f}" for acc in run["val_acc_by_epoch"])
            details.append(f"{name}, seed {seed}: val acc by epoch {curve}")
    table = markdown_table(
        [
            "setting",
            f"runs reaching val acc {args.target}",
            "epochs to target (median)",
            "seconds to target (median)",
            f"val acc after {args.epochs} epochs (median)",
            "best val acc (median)",
            "fit seconds (median)",
        ],
        rows,
    )
    print("\n" + table)
    source_acc = pretrained["val_metrics"].get("val/acc", float("nan"))
    method = [
        f"Source (pretraining) data: 5 toy shapes x {args.source_per_class} training images at 48 px (seed 100); "
        f"one fit of {args.source_epochs} epochs from scratch, val acc {source_acc:.3f}; its best checkpoint is "
        "the pretrained file.",
        f"Target data: {', '.join(TARGET_CLASSES)} x {args.target_per_class} training images, 40 val images per "
        "shape (seed 7). The target shapes are among the source's: the stand-in for ImageNet-pretrained features "
        "on a related task, not a test of transfer across domains.",
        f"Each setting: {args.seeds} seeds, {args.epochs} epochs, toy preset (resnet10t, batch 64, AdamW, cosine "
        "with warmup; lr as named), no early stopping; settings interleaved per seed.",
        "Seconds to target = the fit's own seconds x (epochs to target / epochs), epochs taking about the same time; "
        "the fit's own seconds include the checks before training and the diagnosis after it.",
        *details,
    ]
    conditions = [load_before, f"1-min load average {load_after:.2f} when measuring ended", other.line()]
    title = "Transfer learning: scratch vs. a pretrained backbone"
    write_results("transfer", title, table, method, conditions, machine)


if __name__ == "__main__":
    main()
