"""Framework overhead: training steps/s of the rendered project under Lightning vs. a hand-written PyTorch loop.

    python benchmarks/framework_overhead.py [--steps 36] [--warmup 4] [--repeats 5]

Both sides train the default project's toy preset (configs/default.yaml + configs/toy.yaml: resnet10t at 48 px,
batch 64, AdamW with its per-step warmup + cosine schedule) on its toy data, on the CPU:

- Lightning: the project's own `fit` command, as a user runs it, with all its callbacks (those of
  configs/default.yaml and the CLI's own) and its logger (W&B, offline without an API key). `--trainer.max_steps`
  fixes the length, and `--trainer.check_val_every_n_epoch` is set beyond the run's last epoch, because the plain
  loop has no validation: so the validation-time work (validation, checkpoints, early stopping, the callbacks'
  per-validation measurements) happens outside the comparison; time_to_model.py measures a whole real fit.
- plain: the loop in `plain_loop` below, in the same kind of process (the project's venv python, started in the
  project folder, same environment): the same `Model` and `DataModule` built from the same two config files, the
  same DataLoader (`DataModule.train_dataloader()`: batch size, workers, shuffling), the optimizer and schedule
  from `Model.configure_optimizers`, and per step the work of `Model.training_step` without Lightning: forward,
  loss, train-metric update, backward, optimizer step, scheduler step.

Both time the same window with `probes.StepWindow`: from batch start `--warmup` to batch start `--warmup +
--steps` (a batch start is when a step has its batch and is about to run forward), so process start, model build
and the first steps stay out. Repeats alternate Lightning, plain, Lightning, plain, ... so that drift in the
machine's speed hits both; the table gives medians over repeats and their ratio (goal: >= 0.95).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import yaml

from common import (
    OtherCpuUse,
    Project,
    add_load_arguments,
    default_project,
    load_1min,
    machine_description,
    markdown_table,
    median,
    read_report,
    run_checked,
    wait_for_quiet,
    write_results,
)

CONFIGS = ("configs/default.yaml", "configs/toy.yaml")
LIGHTNING, PLAIN = "Lightning (the project's `fit`)", "plain PyTorch loop"


def merge(base: dict, update: dict) -> dict:
    """`update` over `base`, key by key into nested sections, as LightningCLI merges config files (a value that is
    not a section, e.g. a list, replaces the earlier one)."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def project_config(root: Path) -> dict:
    """The seed, data and model sections of the toy preset as LightningCLI reads them: later files win, key by key."""
    merged: dict = {"seed_everything": None, "data": {}, "model": {}}
    for name in CONFIGS:
        config = yaml.safe_load((root / name).read_text(encoding="utf-8"))
        merged = merge(merged, {key: config[key] for key in merged if key in config})
    return merged


def toy_settings(config: dict) -> dict:
    """The toy preset's backbone, weights and learning rate, read from the merged model section."""
    init = config["model"]["init_args"]
    image = init["network"]["init_args"]["encoders"]["image"]
    return {
        "backbone": image["backbone"],
        "pretrained": image["pretrained"],
        "lr": init["optimizer"]["init_args"]["lr"],
    }


# --- measured code: the plain loop (runs in the project's venv, in the project folder) --------------------------


def plain_loop(package: str, first: int, last: int) -> None:
    """Train `last + 1` steps by hand, timing batch starts `first`..`last` like the Lightning side's callback."""
    import pytorch_lightning as pl  # only for seed_everything, which the project's CLI also calls
    from jsonargparse import ArgumentParser

    from probes import StepWindow

    Model = importlib.import_module(f"{package}.module").Model
    Network = importlib.import_module(f"{package}.models.network").Network
    DataModule = importlib.import_module(f"{package}.data.datamodule").DataModule

    config = project_config(Path.cwd())
    pl.seed_everything(config["seed_everything"])
    # What the CLI does: the task class and the image encoder's data config are linked into the data, the data's
    # classes and input specs into the model (whose parts jsonargparse builds from their class paths).
    init = config["model"]["init_args"]
    image_config = Network.data_config(**init["network"]["init_args"])
    data = DataModule(**config["data"], task_class=init["task"]["class_path"], image_config=image_config)
    data.setup("fit")
    init.update(class_names=data.class_names, target_stats=data.target_stats, inputs=data.input_specs)
    parser = ArgumentParser()
    parser.add_subclass_arguments(Model, "model")
    model = parser.instantiate_classes(parser.parse_object({"model": config["model"]})).model
    model.configure_model()
    # configure_optimizers asks the Trainer only for the number of steps; this stand-in answers it, so both sides
    # step the identical AdamW param groups and per-step LambdaLR.
    model.trainer = SimpleNamespace(estimated_stepping_batches=last + 1)
    optimization = model.configure_optimizers()
    optimizer, scheduler = optimization["optimizer"], optimization["lr_scheduler"]["scheduler"]
    loader = data.train_dataloader()

    model.train()
    window = StepWindow(first, last, num_workers=loader.num_workers)
    step = 0
    while step <= last:
        for batch_idx, batch in enumerate(loader):
            window.tick(batch_idx)
            logits = model(batch)
            loss = model.task.loss(logits, batch["target"])
            model.train_metrics.update(logits.detach(), batch["target"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step > last:
                break
        # The epoch-level train metrics the project logs (log_dict(on_epoch=True)) are computed once per epoch.
        model.train_metrics.compute()
        model.train_metrics.reset()


# --- the two measured processes ---------------------------------------------------------------------------------


def lightning_command(project: Project, first: int, last: int) -> list[str]:
    clock = {"class_path": "probes.StepWindowClock", "init_args": {"first": first, "last": last}}
    return project.command(
        "fit",
        *(arg for name in CONFIGS for arg in ("--config", name)),
        *("--trainer.max_epochs", "-1", "--trainer.max_steps", str(last + 1)),
        # No validation inside the run (only the sanity check before it): more epochs than the run has steps.
        *("--trainer.check_val_every_n_epoch", str(last + 2)),
        "--trainer.callbacks+=" + json.dumps(clock),
    )


def plain_command(project: Project, first: int, last: int) -> list[str]:
    worker = ["--plain-worker", "--package", project.package, "--first", str(first), "--last", str(last)]
    return [str(project.python), __file__, *worker]


# --- the benchmark ------------------------------------------------------------------------------------------------


def summarize(reports: list[dict]) -> dict:
    """Medians over repeats of: steps/s over the window; a step inside an epoch (median: the typical step; mean:
    with periodic work such as logging steps); the extra time of a step that runs into a new epoch."""
    inside_median, inside_mean, epoch_end = [], [], []
    for r in reports:
        steps = list(zip(r["step_seconds"], r["into_new_epoch"], strict=True))
        inside = [seconds for seconds, new_epoch in steps if not new_epoch]
        crossing = [seconds for seconds, new_epoch in steps if new_epoch]
        inside_median.append(median(inside))
        inside_mean.append(sum(inside) / len(inside))
        if crossing:
            epoch_end.append(sum(crossing) / len(crossing) - inside_median[-1])
    per_run = [r["steps"] / r["seconds"] for r in reports]
    return {
        "per_run": per_run,
        "steps_s": median(per_run),
        "inside_median": median(inside_median),
        "inside_mean": median(inside_mean),
        "epoch_end": median(epoch_end) if epoch_end else None,
        "num_workers": reports[0].get("num_workers"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=36, help="steps in the timed window (default 36: three epochs)")
    parser.add_argument("--warmup", type=int, default=4, help="steps before the window (default 4)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each loop, alternating (default 5)")
    add_load_arguments(parser)
    parser.add_argument("--plain-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--package", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--last", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_worker:
        plain_loop(args.package, args.first, args.last)
        return

    first, last = args.warmup, args.warmup + args.steps
    with default_project() as project:
        config = project_config(project.root)
        loops = {LIGHTNING: lightning_command(project, first, last), PLAIN: plain_command(project, first, last)}
        conditions = [wait_for_quiet(args.max_load, args.wait)]
        reports: dict[str, list[dict]] = {name: [] for name in loops}
        with OtherCpuUse() as other:
            for repeat in range(args.repeats):
                for name, command in loops.items():  # alternating: drift in the machine's speed hits both
                    report = read_report(run_checked(command, project.root).stdout)
                    reports[name].append(report)
                    speed = report["steps"] / report["seconds"]
                    print(f"repeat {repeat + 1}/{args.repeats} {name}: {speed:.3f} steps/s", flush=True)
        conditions += [other.line(), f"1-min load average when measuring ended: {load_1min():.2f}"]
        machine = machine_description(project.python)

    results = {name: summarize(runs) for name, runs in reports.items()}
    batch = config["data"]["batch_size"]
    headers = [
        "loop",
        "steps/s (median)",
        "images/s",
        "steps/s per run",
        "step in an epoch: median / mean (ms)",
        "epoch end (ms)",
    ]
    rows = [
        [
            name,
            f"{s['steps_s']:.3f}",
            f"{s['steps_s'] * batch:.1f}",
            ", ".join(f"{v:.3f}" for v in s["per_run"]),
            f"{s['inside_median'] * 1000:.0f} / {s['inside_mean'] * 1000:.0f}",
            "none in the window" if s["epoch_end"] is None else f"{s['epoch_end'] * 1000:+.0f}",
        ]
        for name, s in results.items()
    ]
    lightning, plain = results[LIGHTNING], results[PLAIN]
    ratio = lightning["steps_s"] / plain["steps_s"]
    pair_ratios = ", ".join(f"{a / b:.3f}" for a, b in zip(lightning["per_run"], plain["per_run"], strict=True))
    table = (
        markdown_table(headers, rows)
        + f"\n\n**Lightning / plain = {ratio:.3f}** (goal >= 0.95; per repeat: {pair_ratios})."
    )
    print("\n" + table)

    data, model = config["data"], toy_settings(config)
    workers = "null" if data["num_workers"] is None else data["num_workers"]  # as the config file spells it
    method = [
        f"What runs: the rendered default project's toy preset ({' + '.join(CONFIGS)}): {model['backbone']} "
        f"(pretrained={model['pretrained']}) at {data['image']['size']} px, batch {batch}, {plain['num_workers']} "
        f"loader worker(s) (data.num_workers: {workers}), AdamW lr {model['lr']} with per-step warmup + "
        "cosine, fp32 on the CPU, toy data written by `python -m <package> toy-data`.",
        "Lightning: the project's `fit` command with all its callbacks (configs/default.yaml's and the CLI's) and "
        "its logger (W&B offline), plus the timing callback `probes.StepWindowClock`; `--trainer.max_steps` for "
        "the length; `--trainer.check_val_every_n_epoch` beyond the last epoch, so validation and what runs with "
        "it (checkpoints, early stopping, per-validation measurements) stay out, as the plain loop has none; the "
        "sanity check before training still runs (before the window).",
        "plain: a hand-written loop (`plain_loop` in the script) with the same Model, DataModule and DataLoader, the "
        "optimizer and schedule from `Model.configure_optimizers`, and training_step's work without Lightning "
        "(forward, loss, metric update, backward, optimizer and scheduler step; epoch-level metric compute).",
        f"Timed window: from batch start {first} to batch start {last} ({args.steps} steps; a batch start is when "
        "the step has its batch and is about to run forward), so process start, model build and warm-up stay out. "
        "Both loops cross the same epoch boundaries (same loader, same epoch length) inside the window.",
        f"Repeats: {args.repeats} of each loop, each in a fresh process, alternating Lightning, plain, Lightning, "
        "...; figures are medians over the repeats.",
        "'step in an epoch': time between consecutive batch starts within an epoch, median (the typical step) "
        "and mean (with work done every few steps, e.g. on logging steps). 'epoch end': the extra time of a step "
        "that runs into the next epoch (epoch-end hooks, logger, the new epoch's first batch) over the median step.",
    ]
    write_results(
        "framework_overhead",
        "Framework overhead: Lightning vs. a plain PyTorch loop",
        table,
        method,
        conditions,
        machine,
    )


if __name__ == "__main__":
    main()
