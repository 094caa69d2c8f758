"""The main job: render the default project outside this repository, install it, and train it on its toy data.

    python scripts/train_default.py [--output-dir DIR]      (`make train` runs it inside the template's venv)

Prints the final validation metrics, the best checkpoint, and how long each step took.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cookiecutter.main import cookiecutter

if __package__ in (None, ""):  # run as a script: make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.rendered_env import install_rendered  # noqa: E402

TEMPLATE = Path(__file__).resolve().parents[1]


def run(step: str, command: list[str], cwd: Path, timings: dict[str, float]) -> None:
    print(f"\n$ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True)
    timings[step] = time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = Path(tempfile.gettempdir()) / "dl-template-demo"
    parser.add_argument("--output-dir", type=Path, default=default_dir, help=f"where to render (default {default_dir})")
    args = parser.parse_args()
    if args.output_dir.resolve().is_relative_to(TEMPLATE):
        parser.error("--output-dir must be outside the template repository")

    timings: dict[str, float] = {}
    start = time.perf_counter()
    project = args.output_dir / "my-dl-project"
    if project.exists():
        shutil.rmtree(project)
    project = Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(args.output_dir)))
    timings["render"] = time.perf_counter() - start
    package = json.loads((project / ".cookiecutter.json").read_text())["package_name"]

    started = time.perf_counter()
    print(f"\n$ python -m venv {project / '.venv'} && pip install -e '.[dev]'", flush=True)
    python = str(install_rendered(project))
    timings["install"] = time.perf_counter() - started
    run("toy data", [python, "-m", package, "toy-data"], project, timings)
    run(
        "train",
        [python, "-m", package, "fit", "--config", "configs/default.yaml", "--config", "configs/toy.yaml"],
        project,
        timings,
    )

    total = time.perf_counter() - start
    summary = json.loads(max(project.glob("runs/*/summary.json"), key=lambda p: p.stat().st_mtime).read_text())
    print("\n=== default project trained ===")
    print(f"project:          {project}")
    for name, value in sorted(summary["val_metrics"].items()):
        print(f"{name + ':':<17} {value:.4f}")
    print(f"best checkpoint:  {summary['best_checkpoint']}")
    print("time:             " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()) + f"; total {total:.1f}s")


if __name__ == "__main__":
    main()
