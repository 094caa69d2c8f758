"""W&B hyperparameter sweeps of this project's `fit` (configs/sweep.yaml, configs/sweep_bayes.yaml).

    python -m PACKAGE sweep                                   # create a sweep from configs/sweep.yaml, run an agent
    python -m PACKAGE sweep --file configs/sweep_bayes.yaml --count 20
    python -m PACKAGE sweep --dry-run                         # print one trial's command line; no W&B server

A sweep file is in W&B's own format (https://docs.wandb.ai/models/sweeps/define-sweep-configuration); its
`command` runs `fit` with each trial's values appended as `--model.optimizer.lr=0.001` overrides (W&B's
`${args}` macro).
The agent starts one `fit` process per trial, in this folder, and the W&B server picks the values.

Why a command rather than `wandb sweep FILE` then `wandb agent ID` in the Makefile:
- `wandb.sweep` returns the sweep id; the `wandb sweep` command only prints it inside a line meant for people;
- the agent starts `${interpreter}` as the bare name `python`, found on PATH: this command puts its own
  interpreter's folder first, so trials run in the environment that started the sweep;
- it refuses in one line, before W&B would prompt for a key, when there is no W&B account or W&B is offline;
- `--dry-run` builds a trial's command line the way the agent does (`trial_command`), without a server.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from ..errors import ProjectError
from .loggers import wandb_key_found, wandb_server, wandb_server_reachable

PACKAGE = __package__
DEFAULT_FILE = "configs/sweep.yaml"
# What the agent runs when a sweep file has no `command` (wandb_agent.Agent.DEFAULT_SWEEP_COMMAND).
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A sweep file, checked for what every trial needs: a program, parameters, a metric."""
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"sweep file {path} does not exist")
    sweep = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(sweep, dict):
        raise ProjectError(f"sweep file {path}: expected a mapping of W&B sweep settings")
    for key in ("program", "parameters", "metric"):
        if not sweep.get(key):
            raise ProjectError(f"sweep file {path}: `{key}` is missing")
    return sweep


def sample_values(parameters: dict[str, dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    """One trial's values, drawn like W&B's random search draws them, for the distributions sweep files here use.

    `value` is a constant and `values` a categorical choice; otherwise `distribution` (inferred from `min`/`max`
    as W&B does: ints -> int_uniform, else uniform) is uniform, int_uniform or log_uniform_values."""
    return {name: _sample(name, spec, rng) for name, spec in parameters.items()}


def _sample(name: str, spec: dict[str, Any], rng: random.Random) -> Any:
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choice(spec["values"])
    low, high = spec.get("min"), spec.get("max")
    if low is None or high is None:
        raise ProjectError(f"sweep parameter {name}: give `value`, `values`, or `min` and `max`")
    inferred = "int_uniform" if isinstance(low, int) and isinstance(high, int) else "uniform"
    distribution = spec.get("distribution", inferred)
    if distribution == "uniform":
        return rng.uniform(low, high)
    if distribution == "int_uniform":
        return rng.randint(low, high)
    if distribution == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    raise ProjectError(
        f"sweep parameter {name}: --dry-run draws uniform, int_uniform and log_uniform_values, not {distribution!r}"
    )


def trial_command(sweep: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The command line the W&B agent runs for a trial with these values (not on Windows, where `${env}` is empty).

    Mirrors wandb 0.31's `wandb_agent.Agent._command_run` with `sdk/launch/sweeps/utils.create_sweep_command_args`:
    `${envvar:NAME}` inside an item becomes the variable's value (else NAME); an item that is a whole macro becomes
    `${env}` -> /usr/bin/env, `${interpreter}` -> python, `${program}` -> the sweep's program, `${args}` ->
    --key=value per parameter, `${args_no_hyphens}` -> key=value, `${args_no_equals}` -> --key value,
    `${args_json}` -> one JSON object; any other macro is dropped. Values are written with Python's str()."""
    expansions = {
        "env": ["/usr/bin/env"],
        "interpreter": ["python"],
        "program": [str(sweep["program"])],
        "args": [f"--{key}={value}" for key, value in values.items()],
        "args_no_hyphens": [f"{key}={value}" for key, value in values.items()],
        "args_no_equals": [item for key, value in values.items() for item in (f"--{key}", str(value))],
        "args_json": [json.dumps(values)],
    }
    command: list[str] = []
    for item in sweep.get("command") or DEFAULT_COMMAND:
        item = _expand_envvars(str(item))
        if item.startswith("${") and item.endswith("}"):
            command += expansions.get(item[2:-1], [])
        else:
            command.append(item)
    return command


def _expand_envvars(item: str) -> str:
    prefix = "${envvar:"
    while prefix in item:
        start = item.index(prefix)
        end = item.index("}", start)
        name = item[start + len(prefix) : end]
        item = item[:start] + os.environ.get(name, name) + item[end + 1 :]
    return item


def run_sweep(path: str | Path, count: int | None = None) -> str:
    """Create a sweep on the W&B server from the file and run an agent here (`count` trials, or until stopped)."""
    sweep = load_sweep(path)
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        raise ProjectError(f"WANDB_MODE={os.environ['WANDB_MODE']}: sweeps need the W&B server (try --dry-run)")
    if not wandb_key_found():
        raise ProjectError("sweeps need a W&B account: run `wandb login` or set WANDB_API_KEY (or try --dry-run)")
    if not wandb_server_reachable():
        raise ProjectError(f"sweeps need the W&B server: {wandb_server()} did not answer (or try --dry-run)")
    import wandb

    # The agent runs `python` from PATH (see trial_command): make that this interpreter.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    sweep_id = wandb.sweep(sweep, project=sweep.get("project"))
    wandb.agent(sweep_id, project=sweep.get("project"), count=count)
    return sweep_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PACKAGE} sweep",
        description="Create a W&B sweep from a sweep file and run an agent on it: each trial is a `fit`.",
    )
    parser.add_argument("--file", default=DEFAULT_FILE, help=f"the sweep file (default: {DEFAULT_FILE})")
    parser.add_argument("--count", type=int, default=None, help="stop the agent after this many trials")
    parser.add_argument(
        "--dry-run", action="store_true", help="print one trial's command line with drawn values; start nothing"
    )
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        parser.error(f"--count={args.count}: must be >= 1")
    if args.dry_run:
        sweep = load_sweep(args.file)
        print(shlex.join(trial_command(sweep, sample_values(sweep["parameters"], random.Random()))))
        return
    run_sweep(args.file, args.count)
