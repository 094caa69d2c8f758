"""CLI start-up: how long the rendered project's commands take to start, against importing Lightning alone.

    python benchmarks/cli_startup.py [--runs 5]

Each command is a fresh process of the rendered project's venv python, started in the project folder:

- `python -c "import pytorch_lightning"`: the floor of any Lightning command line; the ratios are against it.
- `python -c "import torch"` and `python -c "import <package>.cli"`: where the import time goes.
- `python -m <package> --help`.
- `fit` until its first training step: `python -m <package> fit --config configs/default.yaml --config
  configs/toy.yaml --trainer.max_epochs 1 --trainer.limit_train_batches 1` plus the callback
  `probes.FirstStepClock`, which reports the wall-clock time of the first training batch start. Measured: from
  just before the process is started to that moment, i.e. everything a user waits for before training begins
  (imports, config parsing, data scan, model build, logger start, the callbacks' checks before training, the
  sanity validation, loader workers and the first batch). The rest of that one-step epoch (the step, validation
  and what runs with it, the after-fit reports) is not counted; the whole process's time is shown too.

One round runs every command once, in the order above; a first round warms the file cache and is not counted,
then `--runs` rounds are measured and the table gives medians.
"""

from __future__ import annotations

import argparse
import json
import time

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
    wall_time,
    write_results,
)

BASELINE = "import pytorch_lightning"


def first_step_times(project: Project) -> tuple[float, float]:
    """(seconds to the first training batch start, seconds of the whole process) of a one-step `fit`."""
    clock = {"class_path": "probes.FirstStepClock"}
    command = project.command(
        "fit",
        *("--config", "configs/default.yaml", "--config", "configs/toy.yaml"),
        # One step in a whole epoch, not max_steps=1: an epoch cut short skips validation, and EarlyStopping
        # (configs/default.yaml) then stops the run with an error for want of val/acc.
        *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"),
        "--trainer.callbacks+=" + json.dumps(clock),
    )
    # time.time(), not perf_counter: the other end of the interval is read in the child process.
    started = time.time()
    result = run_checked(command, project.root)
    ended = time.time()
    return read_report(result.stdout)["first_batch_start"] - started, ended - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured rounds (default 5), after one warm-up round")
    add_load_arguments(parser)
    args = parser.parse_args()

    with default_project() as project:
        python, package = str(project.python), project.package
        simple = {
            BASELINE: [python, "-c", "import pytorch_lightning"],
            "import torch": [python, "-c", "import torch"],
            f"import {package}.cli": [python, "-c", f"import {package}.cli"],
            f"python -m {package} --help": project.command("--help"),
        }
        first_step = "`fit` (toy preset) to its first training step"
        whole_fit = "the same one-step `fit`, whole process"
        times: dict[str, list[float]] = {name: [] for name in [*simple, first_step, whole_fit]}

        print("warm-up round (not counted) ...", flush=True)
        for command in simple.values():
            wall_time(command, project.root)
        first_step_times(project)

        conditions = [wait_for_quiet(args.max_load, args.wait)]
        with OtherCpuUse() as other:
            for run in range(args.runs):
                for name, command in simple.items():
                    times[name].append(wall_time(command, project.root))
                to_first, whole = first_step_times(project)
                times[first_step].append(to_first)
                times[whole_fit].append(whole)
                print(f"round {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
        conditions += [other.line(), f"1-min load average when measuring ended: {load_1min():.2f}"]
        machine = machine_description(project.python)

    baseline = median(times[BASELINE])
    rows = [
        [
            f"`{name}`" if name.startswith(("import", "python")) else name,
            f"{median(t):.2f}",
            f"{min(t):.2f}",
            f"{max(t):.2f}",
            f"{median(t) / baseline:.2f}",
        ]
        for name, t in times.items()
    ]
    table = markdown_table(["command", "median (s)", "min (s)", "max (s)", f"x `{BASELINE}`"], rows)
    print("\n" + table)

    method = [
        "Every command is a fresh process of the rendered default project's venv python, started in the project "
        "folder (the package imported as a user imports it); wall time from starting the process to its exit.",
        f"`fit` to its first training step: `python -m {package} fit --config configs/default.yaml --config "
        "configs/toy.yaml --trainer.max_epochs 1 --trainer.limit_train_batches 1` with the callback "
        "`probes.FirstStepClock`, which prints `time.time()` at the first `on_train_batch_start`; measured from "
        "just before the process starts to that moment. It includes imports, config parsing, data scan, model "
        "build, logger start (W&B offline), the callbacks' checks before training, the sanity validation, loader "
        "workers and the first batch. The rest of that run (the step, validation and what runs with it, the "
        "after-fit reports, logger shutdown) is only in the 'whole process' row.",
        f"One warm-up round (not counted), then {args.runs} rounds, each running every command once in the "
        "order of the table; median, min and max over the rounds. Ratios are medians over the median of "
        f"`{BASELINE}`.",
    ]
    write_results("cli_startup", "CLI start-up time against importing Lightning", table, method, conditions, machine)


if __name__ == "__main__":
    main()
