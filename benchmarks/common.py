"""What every benchmark shares: the rendered default project, running measured commands, medians, load checks,
the machine description and the results file.

Measured code always runs in a subprocess started with the rendered project's own venv python, so the rendered
package is imported exactly as a user imports it. Those processes report their numbers on one stdout line written
by `probes.report`; `read_report` parses it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
TEMPLATE = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
MARKER = "BENCHMARK "  # the prefix probes.report prints

sys.path.append(str(TEMPLATE))  # make `scripts` importable when a benchmark runs as a script
from scripts.rendered_env import install_rendered  # noqa: E402

# --- the rendered project -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    root: Path
    python: Path  # the project's own venv
    package: str

    def command(self, *args: str) -> list[str]:
        """`python -m <package> ARGS` with the project's python."""
        return [str(self.python), "-m", self.package, *args]


def render_default(output_dir: Path) -> Path:
    """`cookiecutter --no-input TEMPLATE` into the empty `output_dir`, as a user runs it; return the project."""
    command = [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE), "--output-dir", str(output_dir)]
    run_checked(command, cwd=output_dir)
    (project,) = [path for path in output_dir.iterdir() if path.is_dir()]
    return project


def install(root: Path) -> Project:
    """`pip install -e ".[dev]"` into the project's own venv (scripts/rendered_env.py: no downloads)."""
    python = install_rendered(root)
    package = json.loads((root / ".cookiecutter.json").read_text(encoding="utf-8"))["package_name"]
    return Project(root, python, package)


@contextmanager
def default_project(toy_data: bool = True) -> Iterator[Project]:
    """The default project rendered into a temporary folder, installed, with its toy data written; removed after."""
    with tempfile.TemporaryDirectory(prefix="dl-template-bench-") as tmp:
        print(f"rendering and installing the default project under {tmp} ...", flush=True)
        project = install(render_default(Path(tmp)))
        if toy_data:
            run_checked(project.command("toy-data"), cwd=project.root)
        yield project


# --- running measured commands ---------------------------------------------------------------------------------


def measured_env() -> dict[str, str]:
    """The environment of every measured process: ours, plus benchmarks/ on the path so `probes` imports."""
    return {**os.environ, "PYTHONPATH": str(BENCHMARKS)}


def run_checked(command: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run to completion with output captured; on failure raise with the output, which is otherwise hidden."""
    result = subprocess.run(list(command), cwd=cwd, env=measured_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def wall_time(command: Sequence[str], cwd: Path) -> float:
    """Seconds from starting the process to its exit."""
    start = time.perf_counter()
    run_checked(command, cwd)
    return time.perf_counter() - start


def read_report(stdout: str) -> dict:
    """The values a measured process reported with `probes.report` (the last report wins)."""
    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        raise RuntimeError(f"the measured process reported nothing; its output ends with:\n{stdout[-3000:]}")
    return json.loads(lines[-1][len(MARKER) :])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# --- machine load ----------------------------------------------------------------------------------------------


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-load", type=float, default=0.7, help="start measuring below this 1-min load")
    parser.add_argument("--wait", type=float, default=600, help="longest wait for that load, seconds (then go on)")


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(max_load: float, timeout_s: float) -> str:
    """Wait until the 1-minute load average drops below `max_load` (other work would skew the timings).

    Returns a line for the results file saying what the load was when measuring started.
    """
    start = time.monotonic()
    while (load := load_1min()) >= max_load and time.monotonic() - start < timeout_s:
        print(f"1-min load {load:.2f} >= {max_load}: waiting for a quiet machine ...", flush=True)
        time.sleep(15)
    waited = time.monotonic() - start
    if load < max_load:
        return f"1-min load average {load:.2f} when measuring started (below {max_load}; waited {waited:.0f} s)"
    return (
        f"**the machine never got quiet**: 1-min load average {load:.2f} when measuring started, after waiting "
        f"{waited:.0f} s for it to drop below {max_load}; the timings are slowed by other work"
    )


class OtherCpuUse:
    """Share of the machine's CPU time used by processes that are not ours, while the `with` block runs.

    All CPU time the machine spent (/proc/stat) minus our own and our finished subprocesses' (getrusage). A
    value near 0 means the measured processes had the cores to themselves.
    """

    def __enter__(self) -> OtherCpuUse:
        self.start = (_machine_cpu_seconds(), _own_cpu_seconds(), time.monotonic())
        return self

    def __exit__(self, *exc: object) -> None:
        machine, own, wall = (_machine_cpu_seconds(), _own_cpu_seconds(), time.monotonic())
        other = (machine - self.start[0]) - (own - self.start[1])
        self.share = max(0.0, other / ((wall - self.start[2]) * (os.cpu_count() or 1)))

    def line(self) -> str:
        return f"CPU time used by other processes while measuring: {self.share:.0%} of all cores"


def _machine_cpu_seconds() -> float:
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


# --- the results file ------------------------------------------------------------------------------------------

_VERSIONS = """
import json, platform, importlib.metadata as md, torch
print(json.dumps({
    "python": platform.python_version(),
    **{name: md.version(name) for name in ("torch", "pytorch-lightning", "timm", "torchvision", "torchmetrics")},
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    "torch threads": torch.get_num_threads(),
}))
"""


def machine_description(python: Path | str = sys.executable) -> list[tuple[str, str]]:
    """(name, value) rows: CPU, cores, RAM, OS, and the versions and GPU that `python` sees."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line))
    found = json.loads(
        subprocess.run([str(python), "-c", _VERSIONS], capture_output=True, text=True, check=True).stdout
    )
    os_name = platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    return [
        ("template", template_version()),
        ("CPU", cpu),
        ("cores", f"{os.cpu_count()} (torch uses {found.pop('torch threads')} threads)"),
        ("RAM", f"{kib / 2**20:.1f} GiB"),
        ("OS", f"{os_name}, kernel {platform.release()}"),
        ("GPU", found.pop("gpu")),
        *((name, version) for name, version in found.items()),
    ]


def template_version() -> str:
    """The template's git commit, and whether uncommitted changes were rendered too."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=TEMPLATE, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    return commit + (" + uncommitted changes" if git("status", "--porcelain") else "")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(
    name: str, title: str, table: str, method: Sequence[str], conditions: Sequence[str], machine: list[tuple[str, str]]
) -> Path:
    """Write benchmarks/results/<name>.md: the table, how it was measured, load while measuring, the machine."""
    command = " ".join(["python", f"benchmarks/{name}.py", *sys.argv[1:]])
    text = "\n".join(
        [
            f"# {title}",
            "",
            table,
            "",
            "## How it was measured",
            "",
            *(f"- {line}" for line in method),
            "",
            *(["## Conditions", "", *(f"- {line}" for line in conditions), ""] if conditions else []),
            "## Machine",
            "",
            markdown_table(["", ""], machine),
            "",
            f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}. "
            "This file is regenerated by running the script; do not edit it by hand.",
            "",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    partial = path.with_suffix(".md.tmp")  # written whole, then renamed: never a half-written results file
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    print(f"\nwrote {path}")
    return path
