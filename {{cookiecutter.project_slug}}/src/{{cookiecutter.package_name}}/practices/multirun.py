"""Several fits of one configuration, reported together: `repeat` (one run per seed) and `cv` (k-fold).

    python -m PACKAGE repeat --repeats 5 --config configs/default.yaml --config configs/toy.yaml
    python -m PACKAGE repeat --seeds 1 2 3 --config configs/default.yaml
    python -m PACKAGE cv --folds 5 --config configs/default.yaml --config configs/toy.yaml

Each run is an ordinary `fit` with every argument given here plus its seed (`--seed_everything`) or fold
(`--data.splits.num_folds K --data.splits.fold k`), in its own run folder; the report folder
`runs/<time>-repeat-<id>/` (or `-cv-`) lists them in `repeat.json` / `repeat.md` (`cv.json` / `cv.md`): each
run's optimizing metric at its kept checkpoint, from the run's summary.json, and the mean ± sample standard
deviation.

The spread over seeds is the run-to-run noise of the recipe: a change that moves the mean by less than about one
standard deviation is not shown to help. Runs are sequential in this process; for multi-GPU strategies (DDP
relaunches the command per GPU) loop over `fit` with `--seed_everything` in a shell instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from ..errors import ProjectError
from . import runs

PACKAGE = __package__
SATISFICING_FILE = "satisficing.json"
Fit = Callable[[list[str] | None], Any]  # cli.main: runs a command (None: from sys.argv), returns its ProjectCLI


def kept_value(
    run_dir: Path, metric: str, checkpoint: pl.callbacks.ModelCheckpoint | None, final: dict[str, float]
) -> float | None:
    """The optimizing metric of the epoch a fit keeps (its best checkpoint), for summary.json.

    The satisficing report names that epoch when its callback runs (the checkpoint then monitors the gated score);
    else a checkpoint monitoring the metric itself has it as best score; else the last validation's value."""
    report_path = run_dir / SATISFICING_FILE
    if report_path.is_file():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        if report.get("optimize", {}).get("metric") == metric:
            return report["chosen"]["metric"]
    if checkpoint is not None and checkpoint.monitor == metric and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    return final.get(metric)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); None where there are too few values."""
    mean = statistics.fmean(values) if values else None
    return mean, statistics.stdev(values) if len(values) >= 2 else None


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"python -m {PACKAGE} {command}",
        description=description,
        epilog=f"Every other argument goes to each fit as is (see `python -m {PACKAGE} fit --help`).",
        allow_abbrev=False,  # a fit flag must never be taken for an abbreviation of ours
    )


def repeat_main(argv: list[str], fit: Fit) -> dict[str, Any]:
    parser = _parser("repeat", "Train one configuration with several seeds; report mean ± std of the metric.")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--repeats", type=int, default=3, help="runs, seeded seed_everything + 0, 1, ... (default 3)")
    seeds.add_argument("--seeds", type=int, nargs="+", help="the seeds, e.g. --seeds 1 2 3 (instead of --repeats)")
    args, rest = parser.parse_known_args(argv)
    if args.seeds is None and args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: must be >= 1")
    n = len(args.seeds) if args.seeds else args.repeats
    results, base = [], None
    for i in range(n):
        if args.seeds:
            seed = args.seeds[i]
        elif i == 0:
            seed = None  # the config's own seed_everything: the first run is the run `fit` alone would make
        else:
            seed = base + i if base is not None else None
        extra = ["--seed_everything", str(seed)] if seed is not None else []
        result = _fit_one(fit, rest, extra, f"repeat run {i + 1}/{n}")
        if i == 0 and isinstance(result["seed"], int) and not isinstance(result["seed"], bool):
            base = result["seed"]
        results.append(result)
    return _report("repeat", results)


def cv_main(argv: list[str], fit: Fit, after_fold: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """`after_fold(cli)`: called with each fold's finished fit (its model, data, trainer and run folder), e.g. to
    predict the fold's held-out rows (practices/label_issues.py)."""
    parser = _parser(
        "cv",
        "K-fold cross-validation: one fit per fold (fold k of the non-test data validates, the test split is kept "
        "aside); report each fold's metric and mean ± std. Folds are fixed by data.splits.seed, stratified by class "
        "for multiclass and binary.",
    )
    parser.add_argument("--folds", type=int, default=5, help="number of folds K (default 5)")
    args, rest = parser.parse_known_args(argv)
    if args.folds < 2:
        parser.error(f"--folds={args.folds}: must be >= 2")
    results = []
    for fold in range(args.folds):
        extra = ["--data.splits.num_folds", str(args.folds), "--data.splits.fold", str(fold)]
        results.append({"fold": fold, **_fit_one(fit, rest, extra, f"cv fold {fold + 1}/{args.folds}", after_fold)})
    return _report("cv", results)


def _fit_one(
    fit: Fit, rest: list[str], extra: list[str], title: str, after: Callable[[Any], None] | None = None
) -> dict[str, Any]:
    """One fit (the user's arguments, then ours, which win), read back from its summary.json; `after(cli)` then."""
    print(f"\n===== {title}: fit {' '.join(extra)}".rstrip())
    command_line = sys.argv
    # Each fit reads its arguments as if typed (LightningCLI warns when it is given both arguments and a command line).
    sys.argv = [command_line[0], "fit", *rest, *extra]
    try:
        cli = fit(None)
    finally:
        sys.argv = command_line
    summary_path = Path(cli.run_dir) / runs.SUMMARY_FILE
    if not summary_path.is_file():
        raise ProjectError(f"{title} wrote no {summary_path} (fast_dev_run writes none): drop fast_dev_run")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if after is not None:
        after(cli)
    optimize = summary.get("optimize") or {}
    return {
        "seed": cli.config["fit"].get("seed_everything"),
        "run_dir": str(cli.run_dir),
        "metric": optimize.get("metric"),
        "mode": optimize.get("mode"),
        "value": optimize.get("value"),
        "epochs": summary.get("epochs"),
        "train_samples": len(cli.datamodule.splits["train"]),
        "val_samples": len(cli.datamodule.splits["val"]),
    }


def _report(command: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    first = results[0]
    values = [r["value"] for r in results if r["value"] is not None]
    mean, std = mean_std(values)
    report = {
        "command": command,
        "metric": first["metric"],
        "mode": first["mode"],
        "n": len(values),
        "mean": mean,
        "std": std,
        "runs": results,
    }
    folder = runs.new_run_dir(Path(first["run_dir"]).parent, command)
    markdown = to_markdown(report)
    runs.write_json(folder / f"{command}.json", report)
    (folder / f"{command}.md").write_text(markdown, encoding="utf-8")
    print(f"\n{markdown}\nReport: {folder / f'{command}.md'}")
    return report


def to_markdown(report: dict[str, Any]) -> str:
    metric, cv = report["metric"], report["command"] == "cv"
    rows = [
        f"# {report['command']}: {metric} ({report['mode']}) over {len(report['runs'])} {'folds' if cv else 'seeds'}",
        "",
        f"| {'fold' if cv else 'run'} | seed | {metric} | epochs | train / val samples | run folder |",
        "|---|---|---|---|---|---|",
    ]
    for i, run in enumerate(report["runs"]):
        value = "n/a" if run["value"] is None else f"{run['value']:.4f}"
        name = run["fold"] if cv else i + 1
        samples = f"{run['train_samples']} / {run['val_samples']}"
        rows.append(f"| {name} | {run['seed']} | {value} | {run['epochs']} | {samples} | {run['run_dir']} |")
    std = "n/a (one run)" if report["std"] is None else f"{report['std']:.4f}"
    mean = "n/a" if report["mean"] is None else f"{report['mean']:.4f}"
    rows += ["", f"**{metric}: {mean} ± {std}** (mean ± sample standard deviation, n = {report['n']})", ""]
    return "\n".join(rows)
