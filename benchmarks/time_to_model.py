"""Time to a trained model: from `cookiecutter --no-input` to the toy model at its target (val/acc >= 0.90).

    python benchmarks/time_to_model.py [--repeats 1] [--fit-args "--trainer.max_epochs 1"]

The steps a new user takes, each timed from process start to exit, into a fresh temporary folder:

1. render: `cookiecutter --no-input <template>`;
2. install: a venv of the project's own and `pip install -e ".[dev]"` (scripts/rendered_env.py, no downloads);
3. import: `python -c "import <package>.cli"`, what every command below pays first (shown, not added to the
   total, since it is inside the next two steps);
4. toy data: `python -m <package> toy-data`;
5. train: `python -m <package> fit --config configs/default.yaml --config configs/toy.yaml`.

The toy-data and train steps are scripts/train_default.py's own (`run`). The fit's summary (runs/*/summary.json)
gives the final validation metrics and the fit's own seconds (from the CLI's config being parsed to the end of
fit), so `train - fit's own seconds` is what the command spends starting up and shutting down.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path

from common import (
    OtherCpuUse,
    add_load_arguments,
    install,
    load_1min,
    machine_description,
    markdown_table,
    median,
    render_default,
    wait_for_quiet,
    wall_time,
    write_results,
)
from scripts.train_default import run as run_step  # importable once common has put the template on sys.path

TARGET = 0.90  # val/acc the toy preset is meant to reach
USER_STEPS = ("render", "install", "toy data", "train")  # what a user runs, in order; "import" is inside them


def from_template_to_model(workdir: Path, fit_args: list[str]) -> tuple[dict[str, float], dict]:
    """Run every step once into `workdir`; return the seconds of each step and the fit's summary.json."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    root = render_default(workdir)
    seconds["render"] = time.perf_counter() - start

    start = time.perf_counter()
    project = install(root)
    seconds["install"] = time.perf_counter() - start

    seconds["import"] = wall_time([str(project.python), "-c", f"import {project.package}.cli"], root)
    run_step("toy data", project.command("toy-data"), root, seconds)
    fit = project.command("fit", "--config", "configs/default.yaml", "--config", "configs/toy.yaml", *fit_args)
    run_step("train", fit, root, seconds)

    summary_file = max(root.glob("runs/*/summary.json"), key=lambda path: path.stat().st_mtime)
    return seconds, json.loads(summary_file.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="whole passes, each from scratch (default 1)")
    parser.add_argument("--fit-args", default="", help='extra `fit` arguments, e.g. "--trainer.max_epochs 1"')
    add_load_arguments(parser)
    args = parser.parse_args()
    fit_args = shlex.split(args.fit_args)

    conditions = [wait_for_quiet(args.max_load, args.wait)]
    passes: list[tuple[dict[str, float], dict]] = []
    with OtherCpuUse() as other:
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="dl-template-ttm-") as tmp:
                passes.append(from_template_to_model(Path(tmp), fit_args))
                timings = ", ".join(f"{step} {value:.1f}s" for step, value in passes[-1][0].items())
                print(f"pass {repeat + 1}/{args.repeats}: {timings}", flush=True)
    conditions += [other.line(), f"1-min load average when measuring ended: {load_1min():.2f}"]
    machine = machine_description()  # the rendered venv is gone; it ran this same python and its packages

    step_seconds = {step: median([seconds[step] for seconds, _ in passes]) for step in passes[0][0]}
    total = median([sum(seconds[step] for step in USER_STEPS) for seconds, _ in passes])
    final_acc = [summary["val_metrics"].get("val/acc", float("nan")) for _, summary in passes]
    fit_own = median([summary["seconds"] for _, summary in passes])
    labels = {
        "render": "render (`cookiecutter --no-input`)",
        "install": 'install (venv + `pip install -e ".[dev]"`)',
        "import": 'import (`python -c "import <package>.cli"`; inside the next two, not added)',
        "toy data": "toy data (`python -m <package> toy-data`)",
        "train": "train (`fit` with default.yaml + toy.yaml, whole process)",
    }
    rows = [[labels[step], f"{value:.1f}"] for step, value in step_seconds.items()]
    rows += [
        ["**total: template to trained model**", f"**{total:.1f}**"],
        ["fit's own seconds (summary.json: config parsed to fit's end)", f"{fit_own:.1f}"],
    ]
    best = [summary["best_score"] for _, summary in passes]
    reached = all(acc >= TARGET for acc in final_acc)
    _, last_summary = passes[-1]
    outcome = [
        f"final val/acc: {', '.join(f'{acc:.4f}' for acc in final_acc)} "
        f"(target >= {TARGET:.2f}: {'reached' if reached else '**not reached**'})",
        f"best val/acc (the best checkpoint's): {', '.join(f'{score:.4f}' for score in best)}",
        f"epochs: {last_summary['epochs']}, steps: {last_summary['global_step']}",
    ]
    table = markdown_table(["step", "seconds" + (f" (median of {args.repeats})" if args.repeats > 1 else "")], rows)
    table += "\n\n" + "\n".join(f"- {line}" for line in outcome)
    print("\n" + table)

    method = [
        "Each step is a fresh process (render: `python -m cookiecutter --no-input <template>`; the others with the "
        "rendered project's venv python, in the project folder), timed from start to exit; toy data and train "
        "use scripts/train_default.py's `run`.",
        "The total is render + install + toy data + train: what a new user waits for, typing aside. The import "
        "row is measured on its own and is already inside the toy data and train rows.",
        "Final val/acc and fit's own seconds come from the run's summary.json, written by the project's CLI.",
        f"Passes: {args.repeats}, each from scratch in a new temporary folder"
        + ("; step times are medians over the passes" if args.repeats > 1 else "")
        + (f"; extra fit arguments: `{args.fit_args}`" if args.fit_args else "")
        + ".",
    ]
    write_results("time_to_model", "Time from the template to a trained model", table, method, conditions, machine)


if __name__ == "__main__":
    main()
