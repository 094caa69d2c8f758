"""GPU training throughput of the rendered project's Model: precision, memory layout, torch.compile, vs. plain PyTorch.

    python benchmarks/gpu_throughput.py [--repeats 3] [--steps 50] [--batch-size 128] [--no-compile]
    python benchmarks/gpu_throughput.py --device cpu --smoke      (proves the code paths on a CPU; not a benchmark)

Training steps of resnet50 at 224 px on one GPU, images/s and peak memory, for:

- the project's `Model` (its `channels_last` and `compile` arguments) under `pytorch_lightning.Trainer(precision=...)`:
  fp32 (32-true), bf16-mixed, bf16-mixed + channels_last, bf16-mixed + channels_last + compile;
- a plain PyTorch loop with the same network from timm (`timm.create_model(backbone)`) under `torch.autocast`
  bf16, without and with channels_last. timm's own train.py is not installed as a module, so this loop stands for
  "timm's reference training loop": forward, cross-entropy, backward, AdamW step, nothing else.

Data is synthetic: one random batch already on the GPU, reused every step, so no data loading is measured. Both
sides use AdamW (lr 3e-4, weight decay 0.05). The Lightning side runs without logger, checkpointing and progress
bar, but with the project's per-step metrics and logging. Without CUDA the benchmark is skipped (and says so in its
results file) unless `--device cpu --smoke` asks for a smoke run of every configuration with a tiny model.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import DataLoader

from common import (
    OtherCpuUse,
    Project,
    default_project,
    load_1min,
    machine_description,
    markdown_table,
    median,
    read_report,
    run_checked,
    write_results,
)

NUM_CLASSES = 1000  # ImageNet-sized head, as in timm's reference training


@dataclass(frozen=True)
class Setting:
    lightning: bool  # the project's Model under pl.Trainer; False: the plain loop
    precision: str  # Lightning's precision names; the plain loop maps "bf16-mixed" to torch.autocast bf16
    channels_last: bool = False
    compile: bool = False


SETTINGS = {
    "Lightning, fp32": Setting(True, "32-true"),
    "Lightning, bf16-mixed": Setting(True, "bf16-mixed"),
    "Lightning, bf16-mixed + channels_last": Setting(True, "bf16-mixed", channels_last=True),
    "Lightning, bf16-mixed + channels_last + compile": Setting(True, "bf16-mixed", channels_last=True, compile=True),
    "plain PyTorch, bf16 autocast": Setting(False, "bf16-mixed"),
    "plain PyTorch, bf16 autocast + channels_last": Setting(False, "bf16-mixed", channels_last=True),
}
# Lightning settings with a plain twin of the same precision and layout: the table gives their ratio.
PLAIN_TWIN = {
    "Lightning, bf16-mixed": "plain PyTorch, bf16 autocast",
    "Lightning, bf16-mixed + channels_last": "plain PyTorch, bf16 autocast + channels_last",
}


# --- measured code (runs in the project's venv, in the project folder) ---------------------------------------------


def synthetic_loader(args: argparse.Namespace, length: int) -> DataLoader:
    """One random batch in the project's batch contract, made once on the device and served `length` times.

    `batch_size=None` hands the prepared batch over as it is: no collation, no copies, no data loading measured.
    """
    generator = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator),
        "target": torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator),
    }
    batch = {key: value.to(args.device) for key, value in batch.items()}
    return DataLoader([batch] * length, batch_size=None)


def lightning_steps(setting: Setting, args: argparse.Namespace) -> None:
    import pytorch_lightning as pl  # here and below: imported by the measured process only

    from probes import StepWindowClock

    Model = importlib.import_module(f"{args.package}.module").Model
    network = importlib.import_module(f"{args.package}.models.network").Network
    task = importlib.import_module(f"{args.package}.tasks.multiclass").MulticlassTask()
    model = Model(
        task,
        network=functools.partial(network, encoders={"image": {"name": "timm", "backbone": args.backbone}}),
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-4, weight_decay=0.05),
        lr_scheduler=importlib.import_module(f"{args.package}.practices.schedules").Schedule(),
        class_names=[f"class_{i}" for i in range(NUM_CLASSES)],
        channels_last=setting.channels_last,
        compile=setting.compile,
    )
    first, last = args.warmup, args.warmup + args.steps
    trainer = pl.Trainer(
        accelerator=args.device,
        devices=1,
        precision=setting.precision,
        max_steps=last + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StepWindowClock(first, last, synchronize=args.device == "cuda")],
    )
    trainer.fit(model, train_dataloaders=synthetic_loader(args, last + 1))


def plain_steps(setting: Setting, args: argparse.Namespace) -> None:
    import timm

    from probes import StepWindow

    memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
    model = timm.create_model(args.backbone, num_classes=NUM_CLASSES).to(args.device, memory_format=memory_format)
    if setting.compile:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    first, last = args.warmup, args.warmup + args.steps

    model.train()
    window = StepWindow(first, last, synchronize=args.device == "cuda")
    for step, batch in enumerate(synthetic_loader(args, last + 1)):
        window.tick(step)
        images = batch["image"].contiguous(memory_format=memory_format)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=setting.precision == "bf16-mixed"):
            loss = torch.nn.functional.cross_entropy(model(images), batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


# --- the benchmark --------------------------------------------------------------------------------------------------


def worker_command(project: Project, setting: Setting, args: argparse.Namespace) -> list[str]:
    sizes = ["--backbone", args.backbone, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    window = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    worker = ["--worker", json.dumps(asdict(setting)), "--package", project.package]
    return [str(project.python), __file__, *sizes, *window, *worker]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu only with --smoke")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, to prove the code paths run")
    parser.add_argument("--backbone", help="timm model (default resnet50; smoke: test_resnet)")
    parser.add_argument("--image-size", type=int, help="pixels (default 224; smoke: 64)")
    parser.add_argument("--batch-size", type=int, help="images per step (default 128; smoke: 8)")
    parser.add_argument("--steps", type=int, help="timed steps per run (default 50; smoke: 3)")
    parser.add_argument("--warmup", type=int, help="steps before timing, compile included (default 15; smoke: 3)")
    parser.add_argument("--repeats", type=int, help="runs of each setting, interleaved (default 3; smoke: 1)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile setting")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--package", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cpu" and not (args.smoke or args.worker):
        parser.error("--device cpu is only for --smoke: CPU figures of GPU settings would mean nothing")
    defaults = {"backbone": "resnet50", "image_size": 224, "batch_size": 128, "steps": 50, "warmup": 15, "repeats": 3}
    if args.smoke:
        defaults.update(backbone="test_resnet", image_size=64, batch_size=8, steps=3, warmup=3, repeats=1)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        setting = Setting(**json.loads(args.worker))
        (lightning_steps if setting.lightning else plain_steps)(setting, args)
        return

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no GPU: skipped")
        write_results(
            "gpu_throughput",
            "GPU training throughput: skipped",
            "no GPU: skipped (CUDA is not available on this machine).",
            ["Nothing was measured. Run `python benchmarks/gpu_throughput.py` on a machine with a CUDA GPU."],
            [],
            machine_description(sys.executable),
        )
        return

    settings = {name: s for name, s in SETTINGS.items() if not (s.compile and args.no_compile)}
    with default_project(toy_data=False) as project:
        # Not waiting for a quiet CPU: GPU steps hardly depend on it; the CPU share is still recorded below.
        conditions = [f"1-min load average when measuring started: {load_1min():.2f}"]
        reports: dict[str, list[dict]] = {name: [] for name in settings}
        with OtherCpuUse() as other:
            for repeat in range(args.repeats):
                for name, setting in settings.items():  # interleaved: drift hits every setting alike
                    report = read_report(run_checked(worker_command(project, setting, args), project.root).stdout)
                    reports[name].append(report)
                    speed = report["steps"] * args.batch_size / report["seconds"]
                    print(f"repeat {repeat + 1}/{args.repeats} {name}: {speed:.1f} images/s", flush=True)
        conditions += [other.line(), f"1-min load average when measuring ended: {load_1min():.2f}"]
        machine = machine_description(project.python)

    speed = {
        name: median([r["steps"] * args.batch_size / r["seconds"] for r in runs]) for name, runs in reports.items()
    }
    rows = []
    for name, runs in reports.items():
        memory = [r["peak_memory_gib"] for r in runs if "peak_memory_gib" in r]
        twin = PLAIN_TWIN.get(name)
        rows.append(
            [
                name,
                f"{speed[name]:.1f}",
                ", ".join(f"{r['steps'] * args.batch_size / r['seconds']:.1f}" for r in runs),
                f"{max(memory):.2f}" if memory else "n/a (CPU)",
                f"{speed[name] / speed[twin]:.3f}" if twin else "",
            ]
        )
    headers = ["setting", "images/s (median)", "images/s per run", "peak memory (GiB)", "Lightning / plain"]
    table = markdown_table(headers, rows)
    if args.smoke:
        table = "**Smoke run: tiny model and sizes, to prove the code paths run. Not a benchmark.**\n\n" + table
    print("\n" + table)

    method = [
        f"Model: {args.backbone} at {args.image_size} px, batch {args.batch_size}, {NUM_CLASSES} classes, from "
        f"scratch, on {args.device}; synthetic data: one random batch made once on the device and reused.",
        "Lightning rows: the rendered project's `Model(MulticlassTask(), Network with the timm encoder (backbone, "
        "not pretrained), AdamW, the cosine Schedule, class_names, channels_last, compile)` under "
        "`pytorch_lightning.Trainer(precision=..., devices=1)`, logger, checkpointing and progress bar off; the "
        "project's per-step metric update and logging stay on.",
        "plain rows: `timm.create_model(backbone, num_classes)` with a hand-written loop (forward under "
        "`torch.autocast(bfloat16)`, cross-entropy, backward, AdamW step), standing for timm's reference "
        "train.py, which is not installed as a module. Both sides: AdamW lr 3e-4, weight decay 0.05.",
        f"Timed window: {args.steps} steps after {args.warmup} warm-up steps (compilation included in warm-up), "
        "between batch starts, with CUDA synchronized at both ends (`probes.StepWindow`).",
        "Peak memory: `torch.cuda.max_memory_allocated()` of the whole run (largest over repeats).",
        f"Repeats: {args.repeats} per setting, each a fresh process, settings interleaved; medians over repeats. "
        "Lightning / plain compares a Lightning row with the plain row of the same precision and layout.",
    ]
    title = "GPU training throughput: precision, channels_last, torch.compile"
    if args.smoke:
        title = f"Smoke run on the {args.device.upper()} (not a benchmark): " + title
    write_results("gpu_throughput", title, table, method, conditions, machine)


if __name__ == "__main__":
    main()
