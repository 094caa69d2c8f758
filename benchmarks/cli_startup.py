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
import re
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


def first_step_command(project: Project) -> list[str]:
    """A one-step `fit` of the toy preset that prints when its first training batch starts."""
    clock = {"class_path": "probes.FirstStepClock"}
    return project.command(
        "fit",
        *("--config", "configs/default.yaml", "--config", "configs/toy.yaml"),
        # One step in a whole epoch, not max_steps=1: an epoch cut short skips validation, and EarlyStopping
        # (configs/default.yaml) then stops the run with an error for want of val/acc.
        *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"),
        "--trainer.callbacks+=" + json.dumps(clock),
    )


# Where the time to the first step goes: each stage ends at the moment named by FirstStepClock's stamp.
STAGES = {
    "imports, config parsing, data scan and checks, model build, logger start": "setup",
    "model setup, optimizers, `on_fit_start` hooks": "sanity_start",
    "sanity validation (Lightning's 2 val batches)": "sanity_end",
    "`on_train_start` checks (sanity checks, first-batch grid), train loader start, first batch": "first_batch_start",
}


def first_step_times(project: Project) -> tuple[float, float, dict[str, float]]:
    """(seconds to the first training batch start, seconds of the whole process, seconds of each of STAGES) of a
    one-step `fit`."""
    command = first_step_command(project)
    # time.time(), not perf_counter: the other end of the interval is read in the child process.
    started = time.time()
    result = run_checked(command, project.root)
    ended = time.time()
    values = read_report(result.stdout)
    stamps = {**values["stages"], "first_batch_start": values["first_batch_start"]}
    stages, previous = {}, started
    for name, stamp in STAGES.items():
        stages[name], previous = stamps[stamp] - previous, stamps[stamp]
    return values["first_batch_start"] - started, ended - started, stages


def import_costs(project: Project, command: list[str], baseline: list[str]) -> dict[str, float]:
    """Seconds each top-level package adds to `command`'s imports beyond what `baseline` imports (`python -X
    importtime`, the modules' own times summed per top-level package), largest first."""

    def own_times(argv: list[str]) -> dict[str, float]:
        stderr = run_checked([argv[0], "-X", "importtime", *argv[1:]], project.root).stderr
        rows = re.findall(r"^import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)$", stderr, flags=re.MULTILINE)
        return {module: int(own_us) / 1e6 for own_us, module in rows}

    floor = own_times(baseline)
    added: dict[str, float] = {}
    for module, seconds in own_times(command).items():
        if module not in floor:
            top = module.split(".")[0]
            added[top] = added.get(top, 0.0) + seconds
    return dict(sorted(added.items(), key=lambda item: -item[1]))


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
        stage_times: dict[str, list[float]] = {name: [] for name in STAGES}

        print("warm-up round (not counted) ...", flush=True)
        for command in simple.values():
            wall_time(command, project.root)
        first_step_times(project)

        conditions = [wait_for_quiet(args.max_load, args.wait)]
        with OtherCpuUse() as other:
            for run in range(args.runs):
                for name, command in simple.items():
                    times[name].append(wall_time(command, project.root))
                to_first, whole, stages = first_step_times(project)
                times[first_step].append(to_first)
                times[whole_fit].append(whole)
                for name, seconds in stages.items():
                    stage_times[name].append(seconds)
                print(f"round {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
        conditions += [other.line(), f"1-min load average when measuring ended: {load_1min():.2f}"]
        machine = machine_description(project.python)
        costs = {
            "--help": import_costs(project, simple[f"python -m {package} --help"], simple[BASELINE]),
            "fit": import_costs(project, first_step_command(project), simple[BASELINE]),
        }

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
    # What the CLI imports that Lightning does not, per top-level package: where a start-up regression shows first.
    cost_rows = [
        [f"`{top}`", *(f"{costs[name].get(top, 0.0):.3f}" for name in costs)]
        for top in sorted({top for added in costs.values() for top in added}, key=lambda t: -costs["fit"].get(t, 0))
        if max(costs[name].get(top, 0.0) for name in costs) >= 0.005
    ]
    cost_rows.append(["**all**", *(f"{sum(costs[name].values()):.3f}" for name in costs)])
    cost_table = markdown_table(["package", "`--help` (s)", "`fit` (s)"], cost_rows)
    print("\n" + cost_table)
    stage_rows = [[name, f"{median(t):.2f}", f"{median(t) / baseline:.2f}"] for name, t in stage_times.items()]
    stage_table = markdown_table(["stage of `fit` before its first step", "median (s)", f"x `{BASELINE}`"], stage_rows)
    print("\n" + stage_table)
    table += (
        "\n\n## Where the time to the first step goes\n\n"
        "Each stage from the end of the previous one (the first from the process start) to the moment "
        "`probes.FirstStepClock` stamps: Lightning's `setup` hook, the sanity validation's start and end, the first "
        "training batch. Medians over the rounds; they add up to about the first step's median.\n\n" + stage_table
    )
    table += (
        "\n\n## Imports beyond `import pytorch_lightning`\n\n"
        "Each package's own import time (`python -X importtime`, one run, after the rounds above) for modules "
        "that `import pytorch_lightning` does not import; packages under 5 ms are left out, the total counts them.\n\n"
        + cost_table
    )
    write_results("cli_startup", "CLI start-up time against importing Lightning", table, method, conditions, machine)


if __name__ == "__main__":
    main()
