"""Rendered projects used like a new user would: install, write toy data, run the CLI and the project's tests.

Each project gets its own venv (sharing this environment's packages), so rendered packages never meet. For a
representative subset of the answers, the default suite runs the default project's whole fast suite and the
others' smoke subsets; their whole suites are `slow` (`make test-rendered`, which CI runs after `make test`).
The `slow` test_full_matrix trains every valid combination (`make test-matrix`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from conftest import bake, install_rendered, run

from hooks.pre_gen_project import CHOICES, valid_combinations

OFFLINE = {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
FAST_FIT = [
    "fit", "--config", "configs/default.yaml", "--config", "configs/toy.yaml",
    "--config", "configs/debug/fast_dev_run.yaml",
]  # fmt: skip


# One project per task type and per modality, plus one fused: five rendered suites of 300-400 tests each (4-7 min
# each on a loaded 2-core machine, the bulk of the template's test time). The fused one is
# regression/tabular+sequence/gated: of the two-input projects it is the cheapest on a CPU (no timm backbone, no
# image files to write or decode), gated is the fusion with the most moving parts, and it is the regression
# project, so regression needs no single-input project of its own (an image one would cost about as much as the
# defaults' suite). Every fusion kind is also unit-tested by each project's own tests/test_fusion.py, and
# test_full_matrix trains every combination.
REPRESENTATIVE: list[dict[str, str]] = [
    {"task_type": "multiclass", "modality": "image", "fusion": "none"},  # the defaults
    {"task_type": "binary", "modality": "tabular", "fusion": "none"},
    {"task_type": "multilabel", "modality": "sequence", "fusion": "none"},
    {"task_type": "segmentation", "modality": "image", "fusion": "none"},
    {"task_type": "regression", "modality": "tabular+sequence", "fusion": "gated"},
]
# The optional extras' tests (serve over HTTP, LitData streaming, cleanlab label issues): their `slow` parts run
# on the default project (its multi-process suite) and on the fused representative.
EXTRAS_TESTS = ["tests/test_serve.py", "tests/test_streaming.py", "tests/test_label_issues.py"]
# The optimizing metric of each task type (the `val/<metric>` every fit reports).
MONITOR = {"multiclass": "acc", "binary": "auroc", "multilabel": "map", "regression": "rmse", "segmentation": "miou"}


def combo_id(combo: dict[str, str]) -> str:
    return "-".join(combo.values())


def test_representative_subset_covers_every_task_type_and_modality() -> None:
    valid = valid_combinations()
    assert all(combo in valid for combo in REPRESENTATIVE), REPRESENTATIVE
    assert {combo["task_type"] for combo in REPRESENTATIVE} == set(CHOICES["task_type"])
    single = {combo["modality"] for combo in REPRESENTATIVE if combo["fusion"] == "none"}
    assert single == {modality for modality in CHOICES["modality"] if "+" not in modality}
    assert any(combo["fusion"] != "none" for combo in REPRESENTATIVE)
    assert set(MONITOR) == set(CHOICES["task_type"])


def rendered(cookies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **overrides: str) -> tuple[Path, Path, str]:
    project = bake(cookies, monkeypatch, **overrides)
    python = install_rendered(project, tmp_path / "venv")
    package = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))["package_name"]
    return project, python, package


def summary_counts(output: str) -> dict[str, int]:
    """pytest's closing line as counts, e.g. {"passed": 292, "skipped": 93, "warnings": 140}. A warning's text may
    contain "failed" (an exporter's fallback does); the closing line says what the run did."""
    closing = [line for line in output.strip().splitlines() if re.search(r"\d+ (passed|failed|errors?)\b", line)]
    found = re.findall(r"(\d+) (passed|failed|skipped|deselected|xfailed|xpassed|warnings?|errors?)\b", closing[-1])
    plural = {"warning": "warnings", "error": "errors"}  # "1 warning", "2 warnings"
    return {plural.get(word, word): int(n) for n, word in found}


def passed(output: str, allowed: set[str] | None = None) -> bool:
    """pytest passed something and failed nothing (and, given `allowed`, reported only those kinds of counts)."""
    counts = summary_counts(output)
    if allowed is not None:
        return bool(counts.get("passed")) and set(counts) <= allowed
    return bool(counts.get("passed")) and not counts.get("failed") and not counts.get("errors")


def rendered_pytest(python: Path, project: Path, *args: str) -> str:
    return run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=project, env=OFFLINE)


@pytest.mark.xdist_group("rendered-suite")  # with the multi-process suite below: the two long ones on one worker
def test_default_project_passes_its_own_tests(cookies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    project, python, _ = rendered(cookies, monkeypatch, tmp_path, **REPRESENTATIVE[0])
    output = rendered_pytest(python, project)
    assert passed(output), output[-3000:]


@pytest.mark.parametrize("combo", REPRESENTATIVE[1:], ids=combo_id)
def test_representative_project_passes_its_smoke_tests(
    combo: dict[str, str], cookies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`pytest -m smoke`: data, networks, fusion, tasks and a fit/test/predict through the CLI of each answer set."""
    project, python, _ = rendered(cookies, monkeypatch, tmp_path, **combo)
    output = rendered_pytest(python, project, "-m", "smoke")
    assert passed(output), output[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("combo", REPRESENTATIVE[1:], ids=combo_id)
def test_representative_project_passes_its_own_tests(
    combo: dict[str, str], cookies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The whole fast suite of each other representative (`make test-rendered`; CI runs it after `make test`)."""
    project, python, _ = rendered(cookies, monkeypatch, tmp_path, **combo)
    output = rendered_pytest(python, project)
    assert passed(output), output[-3000:]
    if combo["fusion"] != "none":  # the extras' long tests on a two-input project (the defaults' run below)
        output = rendered_pytest(python, project, "-m", "slow", *EXTRAS_TESTS)
        assert passed(output), output[-3000:]


@pytest.mark.xdist_group("rendered-suite")
def test_default_project_passes_its_multiprocess_tests(
    cookies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The rendered `pytest -m slow`: DDP on two CPU processes (gloo), SIGKILL mid-epoch and resume."""
    project, python, _ = rendered(cookies, monkeypatch, tmp_path)
    output = rendered_pytest(python, project, "-m", "slow")
    assert passed(output, allowed={"passed", "deselected", "warnings"}), output[-3000:]


@pytest.mark.parametrize("logger", ["wandb", "tensorboard", "csv"])
def test_each_logger_trains_through_the_cli(
    logger: str, cookies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project, python, package = rendered(cookies, monkeypatch, tmp_path, logger=logger)
    run([str(python), "-m", package, "toy-data", "--image-size", "32"], cwd=project)
    output = run([str(python), "-m", package, *FAST_FIT, "--data.image.size", "32"], cwd=project, env=OFFLINE)
    assert "fast_dev_run finished" in output
    help_text = run([str(python), "-m", package, "--help"], cwd=project)
    assert "toy-data" in help_text and "fit" in help_text


@pytest.mark.slow
def test_default_project_trains_to_its_target(cookies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The README's promise: the toy run reaches >= 0.90 validation accuracy (time is measured in benchmarks/)."""
    project, python, package = rendered(cookies, monkeypatch, tmp_path)
    run([str(python), "-m", package, "toy-data"], cwd=project)
    run([str(python), "-m", package, "fit", "--config", "configs/default.yaml", "--config", "configs/toy.yaml"],
        cwd=project, env=OFFLINE)  # fmt: skip
    summary = json.loads(next(project.glob("runs/*/summary.json")).read_text(encoding="utf-8"))
    assert summary["val_metrics"]["val/acc"] >= 0.90, summary
    assert Path(summary["best_checkpoint"]).is_file()
    test = run(
        [str(python), "-m", package, "test", "--config", "configs/default.yaml", "--config", "configs/toy.yaml",
         "--ckpt_path", "best"], cwd=project, env=OFFLINE,
    )  # fmt: skip
    assert "test/acc" in test


@pytest.mark.slow
@pytest.mark.parametrize("combo", valid_combinations(), ids=combo_id)
def test_full_matrix(combo: dict[str, str], cookies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every valid combination renders, installs, passes its own smoke tests, writes its toy data and trains for two
    epochs (`make test-matrix`).

    The smoke subset (`pytest -m smoke`: data, networks, fusion, tasks and a fit/test/predict through the CLI) is
    what differs between combinations; the whole rendered suites run on the representative subset (`make test`,
    `make test-rendered`).
    A real fit, not fast_dev_run: validation runs, metrics are computed, a checkpoint and summary.json are written.
    """
    project, python, package = rendered(cookies, monkeypatch, tmp_path, **combo)
    tests = rendered_pytest(python, project, "-m", "smoke")
    assert passed(tests), tests[-3000:]
    # Small images and short epochs: the matrix checks that every combination trains end to end (validation,
    # metrics, checkpoint, reports), not how well; `make test-slow` trains the default project to its target.
    image = ["--image-size", "32"] if "image" in combo["modality"] else []
    run([str(python), "-m", package, "toy-data", *image], cwd=project)
    fit = ["fit", "--config", "configs/default.yaml", "--config", "configs/toy.yaml", "--trainer.max_epochs", "2",
           "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
           *(["--data.image.size", "32"] if image else [])]  # fmt: skip
    output = run([str(python), "-m", package, *fit], cwd=project, env=OFFLINE)
    summaries = list(project.glob("runs/*/summary.json"))
    assert len(summaries) == 1, output[-4000:]
    summary = json.loads(summaries[0].read_text(encoding="utf-8"))
    assert 1 <= summary["epochs"] <= 2, summary
    metrics = summary["val_metrics"]
    assert f"val/{MONITOR[combo['task_type']]}" in metrics, summary
    assert all(math.isfinite(value) for value in metrics.values()), summary
    assert summary["best_checkpoint"] and Path(summary["best_checkpoint"]).is_file(), summary
